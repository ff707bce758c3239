//! Model loading: HF directories in their several spellings, sharded checkpoints, GGUF files
//! (a hand-written one and SmolLM2's), dequantization and the hub cache layout.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use carve_core::model::load::dequant::{dequantize, GgmlType};
use carve_core::model::load::gguf::{GgufFile, GgufValue};
use carve_core::model::load::{load_gguf_bytes, load_hf_bytes, load_path, resolve_hub_cache_in, LoadedModel};
use carve_core::model::{Arch, ModelWeights};
use carve_core::HostTensor;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};

#[path = "../fixtures/support.rs"]
mod support;
use carve_tests::{fixture, smollm2_gguf};
use support::{gstr, scratch, Gguf};

/// A fixture's tensors as (name → (shape, f32 values)), read directly with the safetensors crate.
fn raw(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let f = v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            (n, (v.shape().to_vec(), f))
        })
        .collect()
}

/// Writes F32 tensors as a safetensors file.
fn write_st(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (n.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn sorted(m: HashMap<String, (Vec<usize>, Vec<f32>)>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut v: Vec<_> = m.into_iter().map(|(n, (s, d))| (n, s, d)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Every tensor of two loads, in a fixed order, for exact comparison.
fn flat(w: &ModelWeights<HostTensor>) -> Vec<HostTensor> {
    let mut v = Vec::new();
    let _ = w.try_map(|t| -> Result<(), ()> {
        v.push(t.clone());
        Ok(())
    });
    v
}

fn assert_same(a: &LoadedModel, b: &LoadedModel) {
    assert_eq!(a.config, b.config);
    assert_eq!(flat(&a.weights), flat(&b.weights));
}

fn col(t: &(Vec<usize>, Vec<f32>), r: usize, c: usize) -> f32 {
    t.1[r * t.0[1] + c]
}

#[test]
fn tiny_gpt2_config_shapes_and_conv1d_transpose() {
    let dir = fixture("tiny-gpt2");
    let m = load_path(&dir).unwrap();
    let c = &m.config;
    assert_eq!((c.arch, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim), (Arch::Gpt2, 2, 4, 4, 16));
    assert_eq!((c.d_model, c.d_ff, c.vocab, c.n_ctx, c.norm_eps), (64, 256, 512, 64, 1e-5));
    assert!(c.tied_embeddings && m.weights.lm_head.is_none());
    assert_eq!((c.bos_token_id, c.eos_token_id), (Some(511), Some(511)));
    assert!(m.tokenizer.is_none());
    let w = &m.weights;
    assert_eq!(w.wte.shape, [512, 64]);
    assert_eq!(w.wpe.as_ref().unwrap().shape, [64, 64]);
    let raw = raw(&dir.join("model.safetensors"));
    for (i, l) in w.layers.iter().enumerate() {
        assert_eq!(
            (l.wq.shape.clone(), l.wk.shape.clone(), l.wv.shape.clone()),
            (vec![64, 64], vec![64, 64], vec![64, 64])
        );
        assert_eq!((l.w_up.shape.clone(), l.w_down.shape.clone()), (vec![256, 64], vec![64, 256]));
        assert!(l.w_gate.is_none());
        let attn = &raw[&format!("transformer.h.{i}.attn.c_attn.weight")];
        let bias = &raw[&format!("transformer.h.{i}.attn.c_attn.bias")].1;
        for (part, t) in [&l.wq, &l.wk, &l.wv].into_iter().enumerate() {
            for (r, c) in [(0, 0), (5, 63), (63, 1), (17, 40)] {
                assert_eq!(t.data[r * 64 + c], col(attn, c, part * 64 + r), "layer {i} part {part} ({r},{c})");
            }
        }
        assert_eq!(l.bk.as_ref().unwrap().data, bias[64..128]);
        let fc = &raw[&format!("transformer.h.{i}.mlp.c_fc.weight")];
        assert_eq!(l.w_up.data[200 * 64 + 3], col(fc, 3, 200));
        let proj = &raw[&format!("transformer.h.{i}.mlp.c_proj.weight")];
        assert_eq!(l.w_down.data[3 * 256 + 200], col(proj, 200, 3));
        assert_eq!(l.ln1_b.as_ref().unwrap().data, raw[&format!("transformer.h.{i}.ln_1.bias")].1);
    }
    assert_eq!(w.wte.data, raw["transformer.wte.weight"].1);
}

#[test]
fn tiny_llama_config_and_values() {
    let dir = fixture("tiny-llama");
    let m = load_path(&dir).unwrap();
    let c = &m.config;
    assert_eq!((c.arch, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim), (Arch::Llama, 2, 4, 2, 16));
    assert_eq!((c.d_model, c.d_ff, c.vocab, c.n_ctx), (64, 128, 512, 128));
    assert_eq!((c.norm_eps, c.rope_theta, c.tied_embeddings), (1e-5, 10000.0, true));
    assert_eq!((c.bos_token_id, c.eos_token_id), (Some(1), Some(2)));
    let raw = raw(&dir.join("model.safetensors"));
    let l = &m.weights.layers[1];
    assert_eq!(l.wk.shape, [32, 64]);
    assert_eq!(l.wk.data, raw["model.layers.1.self_attn.k_proj.weight"].1);
    assert_eq!(l.w_gate.as_ref().unwrap().data, raw["model.layers.1.mlp.gate_proj.weight"].1);
    assert_eq!(l.w_down.shape, [64, 128]);
    assert!(l.bq.is_none() && l.ln1_b.is_none() && m.weights.wpe.is_none());
    assert_eq!(m.weights.ln_f_w.data, raw["model.norm.weight"].1);
}

#[test]
fn gpt2_hub_spelling_loads_identically() {
    let fx = fixture("tiny-gpt2");
    let dir = scratch("gpt2-hub");
    std::fs::copy(fx.join("config.json"), dir.join("config.json")).unwrap();
    let mut tensors = sorted(raw(&fx.join("model.safetensors")));
    for t in &mut tensors {
        t.0 = t.0.trim_start_matches("transformer.").to_string();
    }
    for i in 0..2 {
        // The causal-mask buffers that older checkpoints carry: to be ignored.
        tensors.push((format!("h.{i}.attn.bias"), vec![1, 1, 64, 64], vec![1.0; 4096]));
        tensors.push((format!("h.{i}.attn.masked_bias"), vec![], vec![-1e4]));
    }
    write_st(&dir.join("model.safetensors"), &tensors);
    assert_same(&load_path(&fx).unwrap(), &load_path(&dir).unwrap());
}

#[test]
fn llama_transformers4_config_loads_identically() {
    let fx = fixture("tiny-llama");
    let dir = scratch("llama-t4");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(fx.join("config.json")).unwrap()).unwrap();
    let o = cfg.as_object_mut().unwrap();
    o.remove("rope_parameters");
    o.remove("head_dim"); // transformers 4 often leaves it out: hidden / heads
    o.insert("rope_theta".into(), json!(10000.0));
    o.insert("rope_scaling".into(), Value::Null);
    o.insert("transformers_version".into(), json!("4.46.0"));
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    std::fs::copy(fx.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    assert_same(&load_path(&fx).unwrap(), &load_path(&dir).unwrap());

    cfg["rope_theta"] = json!(500000.0);
    let m = load_hf_bytes(
        &serde_json::to_vec(&cfg).unwrap(),
        &[&std::fs::read(fx.join("model.safetensors")).unwrap()],
        None,
    );
    assert_eq!(m.unwrap().config.rope_theta, 500000.0);
}

#[test]
fn sharded_index_and_bytes_load_identically() {
    let fx = fixture("tiny-llama");
    let dir = scratch("llama-shards");
    std::fs::copy(fx.join("config.json"), dir.join("config.json")).unwrap();
    let tensors = sorted(raw(&fx.join("model.safetensors")));
    let (a, b) = tensors.split_at(tensors.len() / 2);
    let files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    let mut map = serde_json::Map::new();
    for (part, file) in [a, b].into_iter().zip(files) {
        write_st(&dir.join(file), part);
        for t in part {
            map.insert(t.0.clone(), json!(file));
        }
    }
    let index = json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let full = load_path(&fx).unwrap();
    assert_same(&full, &load_path(&dir).unwrap());
    let (s1, s2) = (std::fs::read(dir.join(files[1])).unwrap(), std::fs::read(dir.join(files[0])).unwrap());
    let cfg = std::fs::read(fx.join("config.json")).unwrap();
    assert_same(&full, &load_hf_bytes(&cfg, &[&s1, &s2], None).unwrap());
}

#[test]
fn half_precision_safetensors_convert_exactly() {
    let fx = fixture("tiny-llama");
    let mut tensors = sorted(raw(&fx.join("model.safetensors")));
    // bf16 = the top half of an f32; f16 values chosen to be exact: 1, -2, 0.5, 2^-24 (subnormal).
    let f16_bits: Vec<u16> = (0..64).map(|i| [0x3C00, 0xC000, 0x3800, 0x0001][i % 4]).collect();
    let f16_vals: Vec<f32> = (0..64).map(|i| [1.0, -2.0, 0.5, 2f32.powi(-24)][i % 4]).collect();
    let mut views = Vec::new();
    let mut want = HashMap::new();
    for (n, s, d) in &mut tensors {
        let (dt, bytes): (Dtype, Vec<u8>) = if n == "model.norm.weight" {
            want.insert(n.clone(), f16_vals.clone());
            (Dtype::F16, f16_bits.iter().flat_map(|b| b.to_le_bytes()).collect())
        } else if n == "model.embed_tokens.weight" {
            let top: Vec<u16> = d.iter().map(|x| (x.to_bits() >> 16) as u16).collect();
            want.insert(n.clone(), top.iter().map(|&b| f32::from_bits((b as u32) << 16)).collect());
            (Dtype::BF16, top.iter().flat_map(|b| b.to_le_bytes()).collect())
        } else {
            (Dtype::F32, d.iter().flat_map(|x| x.to_le_bytes()).collect())
        };
        views.push((n.clone(), dt, s.clone(), bytes));
    }
    let st = safetensors::serialize(
        views.iter().map(|(n, dt, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap())),
        None,
    )
    .unwrap();
    let m = load_hf_bytes(&std::fs::read(fx.join("config.json")).unwrap(), &[&st], None).unwrap();
    assert_eq!(m.weights.ln_f_w.data, want["model.norm.weight"]);
    assert_eq!(m.weights.wte.data, want["model.embed_tokens.weight"]);
}

#[test]
fn dequantize_hand_made_blocks() {
    // Q8_0: d = 0.5 (f16 0x3800), q = -128, -127, ..., x = d·q.
    let mut q8 = vec![0x00, 0x38];
    q8.extend((0..32).map(|j: i32| (j * 8 - 128) as i8 as u8));
    let want: Vec<f32> = (0..32).map(|j| 0.5 * (j * 8 - 128) as f32).collect();
    assert_eq!(dequantize(GgmlType::Q8_0, &q8).unwrap(), want);
    // Q4_0: d = 2 (0x4000); byte j = low nibble j, high nibble 15 - j; x = d·(nibble − 8).
    let mut q40 = vec![0x00, 0x40];
    q40.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let mut want: Vec<f32> = (0..16).map(|j| 2.0 * (j as f32 - 8.0)).collect();
    want.extend((0..16).map(|j| 2.0 * ((15 - j) as f32 - 8.0)));
    assert_eq!(dequantize(GgmlType::Q4_0, &q40).unwrap(), want);
    // Q4_1: d = 0.25 (0x3400), m = -1.5 (0xBE00); x = d·nibble + m. Two blocks.
    let mut q41 = vec![0x00, 0x34, 0x00, 0xBE];
    q41.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    q41.extend_from_slice(&q41.clone());
    let mut want: Vec<f32> = (0..16).map(|j| 0.25 * j as f32 - 1.5).collect();
    want.extend((0..16).map(|j| 0.25 * (15 - j) as f32 - 1.5));
    want.extend_from_slice(&want.clone());
    assert_eq!(dequantize(GgmlType::Q4_1, &q41).unwrap(), want);
    // F16: 1, -2, 65504 (largest), 2^-24 (smallest subnormal), -0.
    let f16: Vec<u8> = [0x3C00u16, 0xC000, 0x7BFF, 0x0001, 0x8000].iter().flat_map(|b| b.to_le_bytes()).collect();
    let got = dequantize(GgmlType::F16, &f16).unwrap();
    assert_eq!(got, [1.0, -2.0, 65504.0, 2f32.powi(-24), -0.0]);
    assert!(got[4].is_sign_negative());
    assert_eq!(GgmlType::Q4_1.byte_size(64), Some(40));
    assert_eq!(GgmlType::Q8_0.byte_size(33), None);
    assert!(dequantize(GgmlType(12), &[0; 144]).is_none());
    assert_eq!(GgmlType(12).name(), "Q4_K");
}

/// llama.cpp's converter permutation, written from its numpy form:
/// `w.reshape(nh, 2, rows/nh/2, cols).swapaxes(1, 2).reshape(rows, cols)`.
fn llama_cpp_permute(w: &HostTensor, nh: usize) -> HostTensor {
    let (rows, cols) = (w.shape[0], w.shape[1]);
    let half = rows / nh / 2;
    let mut out = Vec::with_capacity(w.data.len());
    for h in 0..nh {
        for i in 0..half {
            for two in 0..2 {
                // Output index (h, i, two) after the swap reads input (h, two, i).
                let r = (h * 2 + two) * half + i;
                out.extend_from_slice(&w.data[r * cols..(r + 1) * cols]);
            }
        }
    }
    HostTensor::new(vec![rows, cols], out)
}

#[test]
fn written_llama_gguf_round_trips_with_qk_unpermuted() {
    let hf = load_path(&fixture("tiny-llama")).unwrap();
    let (c, w) = (&hf.config, &hf.weights);
    let mut g = Gguf::default();
    g.str("general.architecture", "llama").u32("llama.block_count", 2).u32("llama.context_length", 128);
    g.u32("llama.embedding_length", 64).u32("llama.feed_forward_length", 128);
    g.u32("llama.attention.head_count", 4).u32("llama.attention.head_count_kv", 2);
    g.kv("llama.attention.layer_norm_rms_epsilon", 6, &1e-5f32.to_le_bytes());
    g.kv("llama.rope.freq_base", 6, &10000f32.to_le_bytes());
    g.u32("tokenizer.ggml.bos_token_id", 1).u32("tokenizer.ggml.eos_token_id", 2);
    // One of each remaining value type, arrays included, to exercise the metadata reader.
    g.kv("t.u8", 0, &[7]).kv("t.i8", 1, &[0xFF]).kv("t.u16", 2, &9u16.to_le_bytes()).kv(
        "t.i16",
        3,
        &(-3i16).to_le_bytes(),
    );
    g.kv("t.i32", 5, &(-5i32).to_le_bytes()).kv("t.bool", 7, &[1]).kv("t.u64", 10, &(1u64 << 40).to_le_bytes());
    g.kv("t.i64", 11, &(-1i64).to_le_bytes()).kv("t.f64", 12, &0.25f64.to_le_bytes());
    let mut arr = 8u32.to_le_bytes().to_vec();
    arr.extend(2u64.to_le_bytes());
    gstr(&mut arr, "a");
    gstr(&mut arr, "bc");
    g.kv("t.strs", 9, &arr);
    g.f32("token_embd.weight", &w.wte).f32("output_norm.weight", &w.ln_f_w);
    for (i, l) in w.layers.iter().enumerate() {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        g.f32(&n("attn_norm"), &l.ln1_w).f32(&n("ffn_norm"), &l.ln2_w);
        g.f32(&n("attn_q"), &llama_cpp_permute(&l.wq, c.n_heads));
        g.f32(&n("attn_k"), &llama_cpp_permute(&l.wk, c.n_kv_heads));
        g.f32(&n("attn_v"), &l.wv).f32(&n("attn_output"), &l.wo).f32(&n("ffn_gate"), l.w_gate.as_ref().unwrap());
        g.f32(&n("ffn_up"), &l.w_up).f32(&n("ffn_down"), &l.w_down);
    }
    let bytes = g.bytes();
    let file = GgufFile::parse(&bytes, Path::new("t.gguf")).unwrap();
    assert_eq!(file.version, 3);
    assert_eq!(file.get("t.i8"), Some(&GgufValue::I8(-1)));
    assert_eq!(file.get("t.i16"), Some(&GgufValue::I16(-3)));
    assert_eq!(file.get("t.u64").and_then(GgufValue::as_u64), Some(1 << 40));
    assert_eq!(file.get("t.strs").and_then(GgufValue::as_array).unwrap()[1].as_str(), Some("bc"));
    assert_eq!(file.info("blk.0.attn_k.weight").unwrap().shape, [32, 64]);
    let g = load_gguf_bytes(&bytes).unwrap();
    assert_same(&hf, &g);
    assert!(g.tokenizer.is_none());
}

#[test]
fn written_gpt2_gguf_matches_hf_and_detects_tied_output() {
    let hf = load_path(&fixture("tiny-gpt2")).unwrap();
    let w = &hf.weights;
    let mut g = Gguf::default();
    g.str("general.architecture", "gpt2").u32("gpt2.block_count", 2).u32("gpt2.context_length", 64);
    g.u32("gpt2.embedding_length", 64).u32("gpt2.feed_forward_length", 256).u32("gpt2.attention.head_count", 4);
    g.kv("gpt2.attention.layer_norm_epsilon", 6, &1e-5f32.to_le_bytes());
    g.u32("tokenizer.ggml.bos_token_id", 511).u32("tokenizer.ggml.eos_token_id", 511);
    g.f32("token_embd.weight", &w.wte).f32("position_embd.weight", w.wpe.as_ref().unwrap());
    g.f32("output_norm.weight", &w.ln_f_w).f32("output_norm.bias", w.ln_f_b.as_ref().unwrap());
    g.f32("output.weight", &w.wte); // llama.cpp writes the tied matrix twice
    let cat = |ts: [&HostTensor; 3]| {
        let d: Vec<f32> = ts.iter().flat_map(|t| t.data.clone()).collect();
        let mut s = ts[0].shape.clone();
        s[0] *= 3;
        HostTensor::new(s, d)
    };
    for (i, l) in w.layers.iter().enumerate() {
        let n = |s: &str, k: &str| format!("blk.{i}.{s}.{k}");
        let b = |t: &Option<HostTensor>| t.clone().unwrap();
        g.f32(&n("attn_norm", "weight"), &l.ln1_w).f32(&n("attn_norm", "bias"), &b(&l.ln1_b));
        g.f32(&n("attn_qkv", "weight"), &cat([&l.wq, &l.wk, &l.wv]));
        g.f32(&n("attn_qkv", "bias"), &cat([&b(&l.bq), &b(&l.bk), &b(&l.bv)]));
        g.f32(&n("attn_output", "weight"), &l.wo).f32(&n("attn_output", "bias"), &b(&l.bo));
        g.f32(&n("ffn_norm", "weight"), &l.ln2_w).f32(&n("ffn_norm", "bias"), &b(&l.ln2_b));
        g.f32(&n("ffn_up", "weight"), &l.w_up).f32(&n("ffn_up", "bias"), &b(&l.b_up));
        g.f32(&n("ffn_down", "weight"), &l.w_down).f32(&n("ffn_down", "bias"), &b(&l.b_down));
    }
    assert_same(&hf, &load_gguf_bytes(&g.bytes()).unwrap());
}

#[test]
fn smollm2_gguf_loads() {
    let path = smollm2_gguf();
    let t0 = Instant::now();
    let m = load_path(&path).unwrap();
    eprintln!("SmolLM2-135M Q4_1 GGUF loaded in {:.2?}", t0.elapsed());
    let c = &m.config;
    assert_eq!((c.arch, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim), (Arch::Llama, 30, 9, 3, 64));
    assert_eq!((c.d_model, c.d_ff, c.vocab, c.n_ctx), (576, 1536, 49152, 8192));
    assert_eq!((c.rope_theta, c.norm_eps), (100000.0, 1e-5));
    assert!(c.tied_embeddings && m.weights.lm_head.is_none());
    assert_eq!((c.bos_token_id, c.eos_token_id), (Some(1), Some(2)));
    let l = &m.weights.layers[29];
    assert_eq!(
        (l.wq.shape.clone(), l.wk.shape.clone(), l.w_down.shape.clone()),
        (vec![576, 576], vec![192, 576], vec![576, 1536])
    );
    let tok = m.tokenizer.as_ref().unwrap();
    assert_eq!(tok.kind, "byte-level BPE, 49152 tokens");
    assert!(m.weights.wte.data.iter().all(|x| x.is_finite()));
}

#[test]
fn hub_cache_layout_resolves() {
    let cache = scratch("hub");
    let repo = cache.join("models--HuggingFaceTB--SmolLM2-135M");
    let snap = repo.join("snapshots").join("abc123");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
    let fx = fixture("tiny-llama");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fx.join(f), snap.join(f)).unwrap();
    }
    let dir = resolve_hub_cache_in(&cache, "HuggingFaceTB/SmolLM2-135M").unwrap();
    assert_eq!(dir, snap);
    assert_eq!(load_path(&dir).unwrap().config.n_layers, 2);
    assert!(resolve_hub_cache_in(&cache, "../etc").is_err());
}
