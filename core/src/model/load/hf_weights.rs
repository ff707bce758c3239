//! HF checkpoints (GPT2LMHeadModel, LlamaForCausalLM) → canonical `ModelWeights`.
//! Names are given without the `transformer.` / `model.` prefix; `StTensors` finds either spelling.
//! Buffers such as GPT-2's `attn.bias` causal masks are never looked up, so they are ignored.

use super::assemble::{split_rows, transpose};
use super::safetensors::StTensors;
use crate::model::{Arch, LayerWeights, ModelConfig, ModelWeights};
use crate::{HostTensor, Result};

pub fn build(cfg: &ModelConfig, st: &StTensors) -> Result<ModelWeights<HostTensor>> {
    match cfg.arch {
        Arch::Gpt2 => gpt2(cfg, st),
        Arch::Llama => llama(cfg, st),
    }
}

/// The unembedding: `lm_head.weight` unless the embeddings are tied.
fn lm_head(cfg: &ModelConfig, st: &StTensors) -> Result<Option<HostTensor>> {
    if cfg.tied_embeddings {
        return Ok(None);
    }
    st.get("lm_head.weight", &[cfg.vocab, cfg.d_model]).map(Some)
}

fn gpt2(cfg: &ModelConfig, st: &StTensors) -> Result<ModelWeights<HostTensor>> {
    let (d, v) = (cfg.d_model, cfg.vocab);
    let layers = (0..cfg.n_layers).map(|i| gpt2_layer(cfg, st, i)).collect::<Result<_>>()?;
    Ok(ModelWeights {
        wte: st.get("wte.weight", &[v, d])?,
        wpe: Some(st.get("wpe.weight", &[cfg.n_ctx, d])?),
        layers,
        ln_f_w: st.get("ln_f.weight", &[d])?,
        ln_f_b: Some(st.get("ln_f.bias", &[d])?),
        lm_head: lm_head(cfg, st)?,
    })
}

/// GPT-2's Conv1D weights are `[in, out]`: each is checked in that shape, then transposed.
fn gpt2_layer(cfg: &ModelConfig, st: &StTensors, i: usize) -> Result<LayerWeights<HostTensor>> {
    let (d, ff) = (cfg.d_model, cfg.d_ff);
    let hd = cfg.n_heads * cfg.head_dim;
    let p = |s: &str| format!("h.{i}.{s}");
    let conv = |s: &str, din: usize, dout: usize| st.get(&p(s), &[din, dout]).map(|t| transpose(&t));
    let vec = |s: &str, n: usize| st.get(&p(s), &[n]);
    // c_attn fuses Q, K and V along the output dimension.
    let qkv = split_rows(&conv("attn.c_attn.weight", d, 3 * hd)?, &[hd, hd, hd]);
    let qkv_b = split_rows(&vec("attn.c_attn.bias", 3 * hd)?, &[hd, hd, hd]);
    let [wq, wk, wv]: [HostTensor; 3] = qkv.try_into().expect("three parts");
    let [bq, bk, bv]: [HostTensor; 3] = qkv_b.try_into().expect("three parts");
    Ok(LayerWeights {
        n_heads: cfg.n_heads,
        n_kv_heads: cfg.n_kv_heads,
        ln1_w: vec("ln_1.weight", d)?,
        ln1_b: Some(vec("ln_1.bias", d)?),
        wq,
        bq: Some(bq),
        wk,
        bk: Some(bk),
        wv,
        bv: Some(bv),
        wo: conv("attn.c_proj.weight", hd, d)?,
        bo: Some(vec("attn.c_proj.bias", d)?),
        ln2_w: vec("ln_2.weight", d)?,
        ln2_b: Some(vec("ln_2.bias", d)?),
        w_gate: None,
        w_up: conv("mlp.c_fc.weight", d, ff)?,
        b_up: Some(vec("mlp.c_fc.bias", ff)?),
        w_down: conv("mlp.c_proj.weight", ff, d)?,
        b_down: Some(vec("mlp.c_proj.bias", d)?),
    })
}

fn llama(cfg: &ModelConfig, st: &StTensors) -> Result<ModelWeights<HostTensor>> {
    let (d, v) = (cfg.d_model, cfg.vocab);
    let layers = (0..cfg.n_layers).map(|i| llama_layer(cfg, st, i)).collect::<Result<_>>()?;
    Ok(ModelWeights {
        wte: st.get("embed_tokens.weight", &[v, d])?,
        wpe: None,
        layers,
        ln_f_w: st.get("norm.weight", &[d])?,
        ln_f_b: None,
        lm_head: lm_head(cfg, st)?,
    })
}

/// Biases are optional (`attention_bias` / `mlp_bias` models have them): taken when present.
fn llama_layer(cfg: &ModelConfig, st: &StTensors, i: usize) -> Result<LayerWeights<HostTensor>> {
    let (d, ff) = (cfg.d_model, cfg.d_ff);
    let (q, kv) = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim);
    let p = |s: &str| format!("layers.{i}.{s}");
    let w = |s: &str, out: usize, inp: usize| st.get(&p(&format!("{s}.weight")), &[out, inp]);
    let b = |s: &str, out: usize| st.opt(&p(&format!("{s}.bias")), &[out]);
    if st.contains(&p("mlp.gate_proj.bias")) {
        return Err(crate::Error::Unsupported(format!("{}: a bias on the MLP gate", p("mlp.gate_proj"))));
    }
    Ok(LayerWeights {
        n_heads: cfg.n_heads,
        n_kv_heads: cfg.n_kv_heads,
        ln1_w: st.get(&p("input_layernorm.weight"), &[d])?,
        ln1_b: None,
        wq: w("self_attn.q_proj", q, d)?,
        bq: b("self_attn.q_proj", q)?,
        wk: w("self_attn.k_proj", kv, d)?,
        bk: b("self_attn.k_proj", kv)?,
        wv: w("self_attn.v_proj", kv, d)?,
        bv: b("self_attn.v_proj", kv)?,
        wo: w("self_attn.o_proj", d, q)?,
        bo: b("self_attn.o_proj", d)?,
        ln2_w: st.get(&p("post_attention_layernorm.weight"), &[d])?,
        ln2_b: None,
        w_gate: Some(w("mlp.gate_proj", ff, d)?),
        w_up: w("mlp.up_proj", ff, d)?,
        b_up: b("mlp.up_proj", ff)?,
        w_down: w("mlp.down_proj", d, ff)?,
        b_down: b("mlp.down_proj", d)?,
    })
}
