//! The forward against HF transformers: tiny GPT-2 and Llama (every activation) and SmolLM2-135M
//! (logits), on the CPU backend and on wgpu.

use carve_core::backend::Backend;
use carve_core::model::load::load_path;
use carve_core::model::{Batch, Capture, ForwardArgs, LogitsAt, Model};
use carve_tests::*;

/// Every stored activation and the logits within 1e-4 of the reference, relative to each tensor's
/// max magnitude.
fn check_tiny<B: Backend>(be: &B, name: &str) {
    let m = load_path(&fixture(name)).unwrap();
    let model = Model::upload(be, m.config.clone(), &m.weights).unwrap();
    let refs = read_safetensors(&fixture(name).join("reference.safetensors"));
    let batch = Batch::new(&id_rows(get(&refs, "input_ids")), &m.config).unwrap();
    let args = ForwardArgs { capture: Capture::ALL, ..ForwardArgs::default() };
    let out = model.forward(be, &batch, &args).unwrap();
    let read = |t: &B::Tensor| pollster::block_on(be.read(t)).unwrap().data;
    let tol = 1e-4;
    assert_close(&format!("{name} logits"), &read(out.logits.as_ref().unwrap()), &get(&refs, "logits").data, tol);
    let c = &out.captured;
    for l in 0..m.config.n_layers {
        let cmp = |what: &str, t: &Option<B::Tensor>| {
            let want = &get(&refs, &format!("{what}.{l}")).data;
            assert_close(&format!("{name} {what}.{l}"), &read(t.as_ref().unwrap()), want, tol);
        };
        cmp("attn_out", &c.attn_out[l]);
        cmp("mlp_out", &c.mlp_out[l]);
        cmp("attn_pattern", &c.pattern[l]);
        cmp("resid_post", &c.resid[l + 1]);
    }
}

/// The three reference prompts: logits within 1e-3 relative, and the expected top token.
fn check_smollm2<B: Backend>(be: &B) {
    let m = load_path(&smollm2_gguf()).unwrap();
    let model = Model::upload(be, m.config.clone(), &m.weights).unwrap();
    let tok = m.tokenizer.as_ref().unwrap();
    let refs = read_safetensors(&fixture("smollm2-135m/reference.safetensors"));
    let tops = [" Paris", " Mary", "3"];
    let mut prompts = Vec::new();
    for (i, top) in tops.iter().enumerate() {
        let ids = id_rows(get(&refs, &format!("input_ids.{i}"))).remove(0);
        let want = get(&refs, &format!("logits.{i}"));
        let batch = Batch::new(std::slice::from_ref(&ids), &m.config).unwrap();
        let out = model.forward(be, &batch, &ForwardArgs::default()).unwrap();
        let got = pollster::block_on(be.read(out.logits.as_ref().unwrap())).unwrap();
        assert_close(&format!("SmolLM2 prompt {i} logits"), &got.data, &want.data, 1e-3);
        let last = got.row(ids.len() - 1);
        let arg = (0..last.len()).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap();
        assert_eq!(tok.decode(&[arg as u32]).unwrap(), *top, "top token of prompt {i}");
        prompts.push((ids, want.clone()));
    }
    // The same three prompts padded into one batch give each prompt's last-position logits.
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.0.clone()).collect();
    let batch = Batch::new(&ids, &m.config).unwrap();
    let args = ForwardArgs { logits: LogitsAt::Last, ..ForwardArgs::default() };
    let out = pollster::block_on(be.read(model.forward(be, &batch, &args).unwrap().logits.as_ref().unwrap())).unwrap();
    for (i, (ids, want)) in prompts.iter().enumerate() {
        assert_close(&format!("batched prompt {i}"), out.row(i), want.row(ids.len() - 1), 1e-3);
    }
}

#[test]
fn tiny_gpt2_cpu() {
    check_tiny(&cpu(), "tiny-gpt2");
}
#[test]
fn tiny_llama_cpu() {
    check_tiny(&cpu(), "tiny-llama");
}
#[test]
fn tiny_gpt2_gpu() {
    check_tiny(gpu(), "tiny-gpt2");
}
#[test]
fn tiny_llama_gpu() {
    check_tiny(gpu(), "tiny-llama");
}
#[test]
fn smollm2_cpu() {
    check_smollm2(&cpu());
}
#[test]
fn smollm2_gpu() {
    check_smollm2(gpu());
}
