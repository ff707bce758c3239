//! NaN or ±inf out of a forward is an error that says where it first appeared, never a printed
//! result: a tiny Llama whose layer-1 MLP down projection overflows f32.

mod common;

use common::*;
use std::path::Path;

/// Sets every value of tensor `name` in `model.safetensors` under `dir` to `v`.
fn fill_tensor(dir: &Path, name: &str, v: f32) {
    let p = dir.join("model.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let h: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let off = &h[name]["data_offsets"];
    let (s, e) = (off[0].as_u64().unwrap() as usize + 8 + n, off[1].as_u64().unwrap() as usize + 8 + n);
    for c in b[s..e].chunks_exact_mut(4) {
        c.copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&p, b).unwrap();
}

#[test]
fn non_finite_logits_are_an_error_naming_where_they_began() {
    let d = scratch("nonfinite");
    let (model, task) = (tiny_model(&d), task_file(&d));
    // Finite weights, but their products overflow: inf first appears in layer 1's MLP output.
    fill_tensor(&model, "model.layers.1.mlp.down_proj.weight", 3e38);
    let where_ = "layer 1's MLP output";
    fails(&["run", "--model", s(&model), "--prompt", PROMPT, "--backend", "cpu"], where_);
    fails(&["run", "--model", s(&model), "--prompt", PROMPT, "--json", "--backend", "cpu"], "NaN or infinite");
    let ids = d.join("ids.json");
    std::fs::write(&ids, "[[5, 17, 40], [41, 42]]").unwrap();
    let out = d.join("logits.safetensors");
    fails(&["logits", "--model", s(&model), "--token-ids", s(&ids), "--out", s(&out), "--backend", "cpu"], where_);
    assert!(!out.exists(), "no logits file is written");
    fails(&["eval", "--model", s(&model), "--task", s(&task), "--backend", "cpu", "--n", "24"], where_);
    fails(&extract_args(s(&model), s(&task), s(&d.join("run")), &[]), where_);
    // The embeddings themselves.
    let emb = d.join("emb");
    std::fs::create_dir_all(&emb).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(model.join(f), emb.join(f)).unwrap();
    }
    fill_tensor(&emb, "model.embed_tokens.weight", f32::NAN);
    fails(&["run", "--model", s(&emb), "--prompt", PROMPT, "--backend", "cpu"], "the embeddings");
}
