//! Malformed safetensors headers: every error names the file and the tensor it concerns.

use carve_core::model::load::{load_hf_bytes, load_path};
use serde_json::{json, Value};

#[path = "../fixtures/support.rs"]
mod support;
use carve_tests::fixture;
use support::{err_text, has_all, scratch};

fn llama_config() -> Vec<u8> {
    std::fs::read(fixture("tiny-llama").join("config.json")).unwrap()
}

/// A safetensors file from header text (written as given, so that it may repeat a key) and
/// `data_len` zero bytes.
fn st_file(header: &str, data_len: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(vec![0u8; data_len]);
    b
}

fn err_for(header: Value, data_len: usize) -> String {
    err_text(load_hf_bytes(&llama_config(), &[&st_file(&header.to_string(), data_len)], None))
}

#[test]
fn header_errors_name_the_tensor() {
    let norm = "model.norm.weight";
    // Offsets that do not span shape × dtype.
    let msg = err_for(json!({norm: {"dtype": "F32", "shape": [64], "data_offsets": [0, 100]}}), 100);
    has_all(&msg, &["model.safetensors", norm, "256 bytes", "[0, 100]"]);
    // A shape whose byte size overflows.
    let huge = 1u64 << 62;
    let msg = err_for(json!({norm: {"dtype": "F32", "shape": [huge, huge], "data_offsets": [0, 0]}}), 0);
    has_all(&msg, &["model.safetensors", norm, "overflow"]);
    // Data past the end of the file.
    let msg = err_for(json!({norm: {"dtype": "F32", "shape": [64], "data_offsets": [0, 256]}}), 64);
    has_all(&msg, &["model.safetensors", norm, "past the end"]);
    // Two tensors sharing bytes.
    let a = json!({"dtype": "F32", "shape": [64], "data_offsets": [0, 256]});
    let b = json!({"dtype": "F32", "shape": [64], "data_offsets": [128, 384]});
    let msg = err_for(json!({norm: a, "model.embed_tokens.weight": b}), 384);
    has_all(&msg, &["model.safetensors", norm, "model.embed_tokens.weight", "overlap"]);
    // Bytes that no tensor covers.
    let b = json!({"dtype": "F32", "shape": [64], "data_offsets": [512, 768]});
    let msg = err_for(json!({norm: a, "model.embed_tokens.weight": b}), 768);
    has_all(&msg, &["model.safetensors", "model.embed_tokens.weight", "256..512"]);
    // An unknown dtype, a negative dimension, an entry that is not an object.
    let msg = err_for(json!({norm: {"dtype": "F99", "shape": [64], "data_offsets": [0, 256]}}), 256);
    has_all(&msg, &["model.safetensors", norm, "F99"]);
    let msg = err_for(json!({norm: {"dtype": "F32", "shape": [-64], "data_offsets": [0, 256]}}), 256);
    has_all(&msg, &["model.safetensors", norm, "shape"]);
    has_all(&err_for(json!({norm: 5}), 0), &["model.safetensors", norm]);
    // The same name twice (the JSON reader would keep the second silently).
    let t = r#"{"dtype": "F32", "shape": [64], "data_offsets": [0, 256]}"#;
    let text = format!(r#"{{"{norm}": {t}, "{norm}": {t}}}"#);
    let msg = err_text(load_hf_bytes(&llama_config(), &[&st_file(&text, 256)], None));
    has_all(&msg, &["model.safetensors", norm, "twice"]);
}

#[test]
fn shape_errors_name_the_file() {
    let fx = fixture("tiny-llama");
    let st = std::fs::read(fx.join("model.safetensors")).unwrap();
    let parsed = safetensors::SafeTensors::deserialize(&st).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
        parsed.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    for t in &mut tensors {
        if t.0 == "model.norm.weight" {
            (t.1, t.2) = (vec![32], vec![0u8; 128]);
        }
    }
    let views = tensors.iter().map(|(n, s, d)| {
        (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())
    });
    let bad = safetensors::serialize(views, None).unwrap();
    let dir = scratch("st-shape");
    std::fs::copy(fx.join("config.json"), dir.join("config.json")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bad).unwrap();
    let msg = err_text(load_path(&dir));
    has_all(&msg, &[&dir.join("model.safetensors").display().to_string(), "model.norm.weight", "[32]", "[64]"]);
}

#[test]
fn a_missing_embedding_is_named_in_the_weights_file() {
    let st = std::fs::read(fixture("tiny-llama").join("model.safetensors")).unwrap();
    let parsed = safetensors::SafeTensors::deserialize(&st).unwrap();
    let kept = parsed.tensors().into_iter().filter(|(n, _)| n != "model.embed_tokens.weight");
    let st2 = safetensors::serialize(kept, None).unwrap();
    // The embedding anchors the width: without it a huge width is still refused, not allocated.
    let mut c: Value = serde_json::from_slice(&llama_config()).unwrap();
    c["hidden_size"] = json!(1u64 << 62);
    let msg = err_text(load_hf_bytes(&serde_json::to_vec(&c).unwrap(), &[&st2], None));
    has_all(&msg, &["missing tensor", "embed_tokens.weight", "model.safetensors"]);
}
