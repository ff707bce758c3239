//! config.json values checked before anything is allocated: each in a sane range, each agreeing
//! with the shapes the safetensors header declares, each of the type transformers reads. Errors
//! name the key, its value and what the weights say; nothing panics or aborts.

use carve_core::model::load::{load_hf_bytes, load_path, parse_config, LoadedModel};
use carve_core::Result;
use serde_json::{json, Map, Value};

#[path = "../fixtures/support.rs"]
mod support;
use carve_tests::fixture;
use support::{err_text, has_all, scratch};

fn read(name: &str, file: &str) -> Vec<u8> {
    std::fs::read(fixture(name).join(file)).unwrap()
}

/// The fixture `name` loaded from bytes with its config.json edited by `edit`.
fn load_with(name: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> Result<LoadedModel> {
    let mut c: Value = serde_json::from_slice(&read(name, "config.json")).unwrap();
    edit(c.as_object_mut().unwrap());
    load_hf_bytes(&serde_json::to_vec(&c).unwrap(), &[&read(name, "model.safetensors")], None)
}

/// The error of loading `name` with `key` set to `v`.
fn with_key(name: &str, key: &str, v: Value) -> String {
    err_text(load_with(name, |c| {
        c.insert(key.into(), v);
    }))
}

#[test]
fn huge_dimensions_are_refused_before_allocation() {
    for v in [1u64 << 63, 1_000_000_000_000, u64::MAX] {
        let s = v.to_string();
        has_all(&with_key("tiny-gpt2", "n_embd", json!(v)), &["n_embd", &s, "transformer.wte.weight", "[512, 64]"]);
        has_all(&with_key("tiny-gpt2", "n_positions", json!(v)), &["n_positions", &s, "transformer.wpe.weight", "[64, 64]"]);
        has_all(&with_key("tiny-llama", "hidden_size", json!(v)), &["hidden_size", &s, "embed_tokens.weight", "[512, 64]"]);
        has_all(&with_key("tiny-llama", "vocab_size", json!(v)), &["vocab_size", &s, "embed_tokens.weight", "[512, 64]"]);
        has_all(
            &with_key("tiny-llama", "intermediate_size", json!(v)),
            &["intermediate_size", &s, "layers.0.mlp.gate_proj.weight", "[128, 64]"],
        );
        has_all(&with_key("tiny-llama", "head_dim", json!(v)), &["head_dim", &s, "q_proj.weight", "[64, 64]"]);
        has_all(&with_key("tiny-llama", "num_key_value_heads", json!(v)), &["num_key_value_heads", &s, "k_proj.weight"]);
        has_all(&with_key("tiny-llama", "num_hidden_layers", json!(v)), &["num_hidden_layers", &s, "2 layers"]);
        has_all(&with_key("tiny-gpt2", "n_layer", json!(v)), &["n_layer", &s, "2 layers"]);
        has_all(&with_key("tiny-llama", "max_position_embeddings", json!(v)), &["max_position_embeddings", &s]);
    }
    // The product of heads and head size is reported as overflowing, not wrapped around to 0.
    let msg = with_key("tiny-llama", "num_attention_heads", json!(1u64 << 63));
    has_all(&msg, &["num_attention_heads", "9223372036854775808", "q_proj.weight", "[64, 64]"]);
    assert!(!msg.contains("[0, 64]"), "a wrapped product: {msg}");
}

#[test]
fn values_contradicting_the_weights_name_key_value_and_weights() {
    let cases: [(&str, &str, Value, &[&str]); 10] = [
        ("tiny-llama", "num_attention_heads", json!(0), &["`num_attention_heads` = 0", "q_proj.weight", "[64, 64]"]),
        ("tiny-llama", "intermediate_size", json!(0), &["`intermediate_size` = 0", "gate_proj.weight", "[128, 64]"]),
        ("tiny-gpt2", "n_inner", json!(0), &["`n_inner` = 0", "mlp.c_fc.weight", "[64, 256]"]),
        ("tiny-gpt2", "n_inner", json!(128), &["`n_inner` = 128", "mlp.c_fc.weight", "[64, 256]"]),
        ("tiny-llama", "num_hidden_layers", json!(1), &["`num_hidden_layers` = 1", "model.layers.1.", "2 layers"]),
        ("tiny-gpt2", "n_layer", json!(1), &["`n_layer` = 1", "transformer.h.1.", "2 layers"]),
        ("tiny-llama", "num_hidden_layers", json!(3), &["`num_hidden_layers` = 3", "2 layers"]),
        ("tiny-llama", "num_key_value_heads", json!(3), &["`num_key_value_heads` = 3", "k_proj.weight", "[32, 64]"]),
        ("tiny-llama", "vocab_size", json!(600), &["`vocab_size` = 600", "embed_tokens.weight", "[512, 64]"]),
        ("tiny-llama", "head_dim", json!(8), &["`head_dim` = 8", "q_proj.weight", "[64, 64]"]),
    ];
    for (model, key, v, parts) in cases {
        has_all(&with_key(model, key, v), parts);
    }
    // GPT-2's head count is not in its weights' shapes, but must still divide the width.
    for n in [0, 3] {
        has_all(&with_key("tiny-gpt2", "n_head", json!(n)), &[&format!("`n_head` = {n}"), "`n_embd` = 64"]);
    }
}

#[test]
fn layer_tensors_beyond_the_layer_count_are_refused() {
    let st = read("tiny-gpt2", "model.safetensors");
    let parsed = safetensors::SafeTensors::deserialize(&st).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
        parsed.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    tensors.push(("transformer.h.7.ln_1.weight".into(), vec![64], vec![0u8; 256]));
    let views = tensors.iter().map(|(n, s, d)| {
        (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())
    });
    let extra = safetensors::serialize(views, None).unwrap();
    let msg = err_text(load_hf_bytes(&read("tiny-gpt2", "config.json"), &[&extra], None));
    has_all(&msg, &["`n_layer` = 2", "transformer.h.7.ln_1.weight"]);
}

#[test]
fn pruned_layer_widths_are_checked_without_overflow() {
    let layer = |h: u64, kv: u64, ff: u64| json!({"n_heads": h, "n_kv_heads": kv, "d_ff": ff});
    for (bad, key) in [(layer(1 << 62, 2, 128), "n_heads"), (layer(4, 2, 1 << 62), "d_ff"), (layer(4, 1 << 62, 128), "n_kv_heads")] {
        let msg = err_text(load_with("tiny-llama", |c| {
            c.insert("carve_layers".into(), json!([bad.clone(), layer(4, 2, 128)]));
        }));
        has_all(&msg, &["carve_layers", key]);
    }
}

#[test]
fn non_positive_epsilons_and_rope_theta_are_refused() {
    for eps in [-1e-5, 0.0, 1e-50, 1e39] {
        has_all(&with_key("tiny-llama", "rms_norm_eps", json!(eps)), &["`rms_norm_eps`", "positive"]);
        has_all(&with_key("tiny-gpt2", "layer_norm_epsilon", json!(eps)), &["`layer_norm_epsilon`", "positive"]);
    }
    for theta in [0.0, -10000.0, 1e39] {
        let msg = err_text(load_with("tiny-llama", |c| {
            c["rope_parameters"]["rope_theta"] = json!(theta);
        }));
        has_all(&msg, &["`rope_parameters.rope_theta`", "positive"]);
        // transformers 4 writes it at the top level.
        let msg = err_text(load_with("tiny-llama", |c| {
            c.remove("rope_parameters");
            c.insert("rope_theta".into(), json!(theta));
        }));
        has_all(&msg, &["`rope_theta`", "positive"]);
    }
}

#[test]
fn wrongly_typed_values_are_refused_with_the_expected_type() {
    let cases: [(&str, &str, Value, &[&str]); 14] = [
        ("tiny-gpt2", "activation_function", json!(5), &["`activation_function`", "5", "a string"]),
        ("tiny-llama", "hidden_act", json!(["X"]), &["`hidden_act`", "[\"X\"]", "a string"]),
        ("tiny-gpt2", "n_embd", json!("64"), &["`n_embd`", "\"64\"", "a whole number"]),
        ("tiny-llama", "num_hidden_layers", json!(2.0), &["`num_hidden_layers`", "2.0", "a whole number"]),
        ("tiny-llama", "num_hidden_layers", json!(-2), &["`num_hidden_layers`", "-2", "a whole number"]),
        ("tiny-llama", "rms_norm_eps", json!("1e-5"), &["`rms_norm_eps`", "\"1e-5\"", "a number"]),
        ("tiny-llama", "rms_norm_eps", Value::Null, &["`rms_norm_eps`", "null", "a number"]),
        ("tiny-gpt2", "tie_word_embeddings", json!("yes"), &["`tie_word_embeddings`", "true or false"]),
        ("tiny-gpt2", "scale_attn_weights", json!(1), &["`scale_attn_weights`", "true or false"]),
        ("tiny-llama", "bos_token_id", json!("1"), &["`bos_token_id`", "\"1\"", "a token id"]),
        ("tiny-llama", "eos_token_id", json!(["2"]), &["`eos_token_id`", "a token id"]),
        ("tiny-llama", "architectures", json!("LlamaForCausalLM"), &["`architectures`", "a list of strings"]),
        ("tiny-llama", "model_type", json!(5), &["`model_type`", "a string"]),
        ("tiny-llama", "rope_scaling", json!("linear"), &["`rope_scaling`", "an object"]),
    ];
    for (model, key, v, parts) in cases {
        has_all(&with_key(model, key, v), parts);
    }
    let msg = err_text(load_with("tiny-llama", |c| {
        c["rope_parameters"]["rope_theta"] = json!("big");
    }));
    has_all(&msg, &["`rope_parameters.rope_theta`", "\"big\"", "a number"]);
    // A token id past the embedding would index out of it.
    has_all(&with_key("tiny-llama", "eos_token_id", json!(512)), &["`eos_token_id` = 512", "512 rows"]);
}

#[test]
fn absent_keys_take_the_transformers_defaults() {
    let m = load_with("tiny-llama", |c| {
        c.remove("rms_norm_eps");
        c.remove("hidden_act");
        c.remove("max_position_embeddings");
        c.insert("eos_token_id".into(), json!([2, 5]));
    })
    .unwrap();
    assert_eq!((m.config.norm_eps, m.config.n_ctx, m.config.eos_token_id), (1e-6, 2048, Some(2)));
    let m = load_with("tiny-gpt2", |c| {
        c.remove("layer_norm_epsilon");
        c.remove("activation_function");
        c.insert("n_inner".into(), Value::Null);
    })
    .unwrap();
    assert_eq!((m.config.norm_eps, m.config.d_ff), (1e-5, 256));
    // LlamaConfig's default KV-head count is the head count, which these weights contradict.
    let msg = err_text(load_with("tiny-llama", |c| {
        c.remove("num_key_value_heads");
    }));
    has_all(&msg, &["`num_key_value_heads` = 4", "k_proj.weight", "[32, 64]"]);
}

#[test]
fn config_json_with_a_utf8_bom_loads() {
    let cfg = read("tiny-llama", "config.json");
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(&cfg);
    let st = read("tiny-llama", "model.safetensors");
    let plain = load_hf_bytes(&cfg, &[&st], None).unwrap();
    assert_eq!(load_hf_bytes(&bom, &[&st], None).unwrap().config, plain.config);
    assert_eq!(parse_config(&bom, "config.json".as_ref()).unwrap(), plain.config);
    let dir = scratch("bom");
    std::fs::write(dir.join("config.json"), &bom).unwrap();
    std::fs::write(dir.join("model.safetensors"), &st).unwrap();
    assert_eq!(load_path(&dir).unwrap().config, plain.config);
}
