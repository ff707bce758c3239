//! Bad inputs give errors that name the problem, never panics.
//!
//! Loader part: truncated and lying safetensors files, missing tensors, shapes that disagree with
//! config.json, unknown architectures, unsupported or truncated GGUF files, a missing hub model.

use std::path::Path;

use carve_core::model::load::{load_gguf_bytes, load_hf_bytes, load_path, resolve_hub_cache_in, LoadedModel};
use carve_core::Result;
use serde_json::{json, Value};

#[path = "../fixtures/support.rs"]
mod support;
use carve_tests::fixture;
use support::{scratch, Gguf};

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// The error message of a load that must fail (a panic fails the test on its own).
fn err_msg(r: Result<LoadedModel>) -> String {
    match r {
        Ok(_) => panic!("loading succeeded, but an error was expected"),
        Err(e) => e.to_string(),
    }
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message lacks `{p}`: {msg}");
    }
}

fn llama() -> (Vec<u8>, Vec<u8>) {
    let fx = fixture("tiny-llama");
    (read(fx.join("config.json")), read(fx.join("model.safetensors")))
}

#[test]
fn truncated_safetensors() {
    let (cfg, st) = llama();
    for len in [0, 5, 8, 100, st.len() / 2, st.len() - 1] {
        let msg = err_msg(load_hf_bytes(&cfg, &[&st[..len]], None));
        assert_has(&msg, &["model.safetensors", "truncated"]);
    }
    // Through a directory, the message names the file's path.
    let dir = scratch("bad-trunc");
    std::fs::write(dir.join("config.json"), &cfg).unwrap();
    std::fs::write(dir.join("model.safetensors"), &st[..st.len() - 10]).unwrap();
    assert_has(&err_msg(load_path(&dir)), &[&dir.join("model.safetensors").display().to_string(), "truncated"]);
}

#[test]
fn safetensors_header_offsets_past_the_end() {
    let header =
        json!({"model.embed_tokens.weight": {"dtype": "F32", "shape": [512, 64], "data_offsets": [0, 131072]}});
    let h = header.to_string().into_bytes();
    let mut st = (h.len() as u64).to_le_bytes().to_vec();
    st.extend(&h);
    st.extend([0u8; 64]); // far less than the 131072 bytes the header promises
    let msg = err_msg(load_hf_bytes(&llama().0, &[&st], None));
    assert_has(&msg, &["model.safetensors", "offsets"]);
    // A header length that points past the end of the file.
    let mut lying = (1u64 << 40).to_le_bytes().to_vec();
    lying.extend(b"{}");
    assert_has(&err_msg(load_hf_bytes(&llama().0, &[&lying], None)), &["truncated", "header says"]);
}

#[test]
fn missing_tensor() {
    let (cfg, st) = llama();
    let parsed = safetensors::SafeTensors::deserialize(&st).unwrap();
    let kept = parsed.tensors().into_iter().filter(|(n, _)| n != "model.layers.1.mlp.down_proj.weight");
    let st2 = safetensors::serialize(kept, None).unwrap();
    let msg = err_msg(load_hf_bytes(&cfg, &[&st2], None));
    assert_has(&msg, &["missing tensor", "layers.1.mlp.down_proj.weight"]);
    // Untied embeddings need an lm_head.
    let mut c: Value = serde_json::from_slice(&cfg).unwrap();
    c["tie_word_embeddings"] = json!(false);
    let msg = err_msg(load_hf_bytes(&serde_json::to_vec(&c).unwrap(), &[&st], None));
    assert_has(&msg, &["missing tensor", "lm_head.weight"]);
}

#[test]
fn shape_disagrees_with_config() {
    let (cfg, st) = llama();
    let mut c: Value = serde_json::from_slice(&cfg).unwrap();
    c["intermediate_size"] = json!(96);
    let msg = err_msg(load_hf_bytes(&serde_json::to_vec(&c).unwrap(), &[&st], None));
    assert_has(&msg, &["model.layers.0.mlp.gate_proj.weight", "[128, 64]", "[96, 64]"]);
    let gpt2 = fixture("tiny-gpt2");
    let mut c: Value = serde_json::from_slice(&read(gpt2.join("config.json"))).unwrap();
    c["n_positions"] = json!(1024);
    let msg = err_msg(load_hf_bytes(&serde_json::to_vec(&c).unwrap(), &[&read(gpt2.join("model.safetensors"))], None));
    assert_has(&msg, &["transformer.wpe.weight", "[64, 64]", "[1024, 64]"]);
}

#[test]
fn unknown_architecture_and_bad_config() {
    let (cfg, st) = llama();
    let mut c: Value = serde_json::from_slice(&cfg).unwrap();
    c["architectures"] = json!(["MambaForCausalLM"]);
    c["model_type"] = json!("mamba");
    let msg = err_msg(load_hf_bytes(&serde_json::to_vec(&c).unwrap(), &[&st], None));
    assert_has(&msg, &["unsupported", "MambaForCausalLM", "mamba"]);
    assert_has(&err_msg(load_hf_bytes(b"{not json", &[&st], None)), &["config.json", "JSON"]);
    let mut c: Value = serde_json::from_slice(&cfg).unwrap();
    c.as_object_mut().unwrap().remove("hidden_size");
    assert_has(&err_msg(load_hf_bytes(&serde_json::to_vec(&c).unwrap(), &[&st], None)), &["hidden_size"]);
    c = serde_json::from_slice(&cfg).unwrap();
    c["rope_scaling"] = json!({"rope_type": "llama3", "factor": 32.0});
    assert_has(&err_msg(load_hf_bytes(&serde_json::to_vec(&c).unwrap(), &[&st], None)), &["llama3"]);
    assert_has(&err_msg(load_path(&fixture("gpt2-tokenizer"))), &["no config.json"]);
    let gpt2 = fixture("tiny-gpt2");
    let (cfg, st) = (read(gpt2.join("config.json")), read(gpt2.join("model.safetensors")));
    let mut c: Value = serde_json::from_slice(&cfg).unwrap();
    c["scale_attn_by_inverse_layer_idx"] = json!(true);
    assert_has(&err_msg(load_hf_bytes(&serde_json::to_vec(&c).unwrap(), &[&st], None)), &["scaling"]);
    // A tokenizer with more ids than the embedding has rows.
    let tok = read(fixture("gpt2-tokenizer/tokenizer.json"));
    assert_has(&err_msg(load_hf_bytes(&cfg, &[&st], Some(&tok))), &["50257 tokens", "512 rows"]);
    assert_has(&err_msg(load_hf_bytes(&cfg, &[&st], Some(b"{}"))), &["tokenizer.json"]);
}

/// A minimal valid llama GGUF: 1 layer, d = 32 (one quant block per row), 2 heads, vocab 4.
fn tiny_gguf(embd_type: u32, embd_bytes: &[u8]) -> Vec<u8> {
    let mut g = Gguf::default();
    g.str("general.architecture", "llama").u32("llama.block_count", 1).u32("llama.context_length", 16);
    g.u32("llama.embedding_length", 32).u32("llama.feed_forward_length", 32).u32("llama.attention.head_count", 2);
    g.tensor("token_embd.weight", &[4, 32], embd_type, embd_bytes);
    let mat = vec![0u8; 32 * 32 * 4];
    for n in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
        g.tensor(&format!("blk.0.{n}.weight"), &[32, 32], 0, &mat);
    }
    for n in ["blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"] {
        g.tensor(n, &[32], 0, &[0u8; 128]);
    }
    g.bytes()
}

#[test]
fn gguf_unsupported_quant_type() {
    assert!(load_gguf_bytes(&tiny_gguf(0, &[0u8; 4 * 32 * 4])).is_ok());
    // Q4_K (type 12): 256-value super-blocks of 144 bytes.
    let msg = err_msg(load_gguf_bytes(&tiny_gguf(12, &[0u8; 144])));
    assert_has(&msg, &["token_embd.weight", "Q4_K"]);
    assert_has(&err_msg(load_gguf_bytes(&tiny_gguf(99, &[0u8; 16]))), &["token_embd.weight", "type 99"]);
}

#[test]
fn truncated_gguf() {
    let good = tiny_gguf(0, &[0u8; 4 * 32 * 4]);
    for len in (0..good.len()).step_by(7).chain([good.len() - 1]) {
        let msg = err_msg(load_gguf_bytes(&good[..len]));
        assert!(msg.contains("model.gguf") || msg.contains("GGUF"), "{len}: {msg}");
    }
    assert_has(&err_msg(load_gguf_bytes(&good[..good.len() - 1])), &["truncated", "output_norm.weight"]);
    assert_has(&err_msg(load_gguf_bytes(&good[..3])), &["truncated"]);
    assert_has(&err_msg(load_gguf_bytes(b"GGML\x03\0\0\0")), &["not a GGUF file"]);
    // A count far beyond what the file holds must not allocate or loop for it.
    let mut huge = b"GGUF".to_vec();
    huge.extend(3u32.to_le_bytes());
    huge.extend(u64::MAX.to_le_bytes());
    huge.extend(0u64.to_le_bytes());
    assert_has(&err_msg(load_gguf_bytes(&huge)), &["more than the file can hold"]);
    let dir = scratch("bad-gguf");
    std::fs::write(dir.join("m.gguf"), &good[..100]).unwrap();
    assert_has(&err_msg(load_path(&dir.join("m.gguf"))), &["m.gguf", "truncated"]);
}

#[test]
fn missing_hub_model() {
    let cache = scratch("bad-hub");
    let e = resolve_hub_cache_in(&cache, "someorg/no-such-model").unwrap_err().to_string();
    assert_has(&e, &["someorg/no-such-model", "models--someorg--no-such-model", "config.json", "model.safetensors"]);
    assert_has(&e, &["tokenizer.json", "snapshots", "refs/main"]);
    // A snapshot without weights: the message says which file is missing.
    let snap = cache.join("models--gpt2/snapshots/x");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::write(snap.join("config.json"), "{}").unwrap();
    assert_has(&resolve_hub_cache_in(&cache, "gpt2").unwrap_err().to_string(), &["lacks model.safetensors"]);
    assert!(resolve_hub_cache_in(&cache, "/abs/path").is_err());
}
