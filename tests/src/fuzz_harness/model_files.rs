//! Model files: an HF model (config.json + model.safetensors) and a GGUF file, loaded whole by
//! the loaders behind `carve --model`, then run for one token on the CPU backend when they load.

use carve_core::backend::cpu::CpuBackend;
use carve_core::model::load::{load_gguf_bytes, load_hf_bytes, LoadedModel};
use carve_core::model::{Batch, ForwardArgs, Model};

/// Input: [`super::split2`] of config.json and model.safetensors. The bytes go through
/// `load_hf_bytes`, which shares every check with the directory loader (only the file reading
/// differs).
pub fn safetensors_config(data: &[u8]) {
    let (config, weights) = super::split2(data);
    if let Ok(m) = load_hf_bytes(config, &[weights], None) {
        forward_one_token(&m);
    }
}

/// Input: a GGUF file, weights and tokenizer. A tokenizer that loads encodes and decodes a line.
pub fn gguf(data: &[u8]) {
    let Ok(m) = load_gguf_bytes(data) else { return };
    if let Some(tok) = &m.tokenizer {
        if let Ok(ids) = tok.encode("a ab 12 ba!", true) {
            let _ = tok.decode(&ids);
        }
    }
    forward_one_token(&m);
}

/// Token 0 through the whole model (every loaded model has a first embedding row, or says why not).
fn forward_one_token(m: &LoadedModel) {
    let be = CpuBackend::new();
    let Ok(model) = Model::upload(&be, m.config.clone(), &m.weights) else { return };
    let Ok(batch) = Batch::new(&[vec![0]], &m.config) else { return };
    let _ = model.forward(&be, &batch, &ForwardArgs::default());
}
