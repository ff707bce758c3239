//! HF checkpoints (GPT2LMHeadModel, LlamaForCausalLM) → canonical `ModelWeights`.
//! Names are given without the `transformer.` / `model.` prefix; `StTensors` finds either spelling.
//! Buffers such as GPT-2's `attn.bias` causal masks are never looked up, so they are ignored.
//!
//! A pruned model (`carve_layers` in config.json) gives each layer its own head, KV-head and MLP
//! widths. A block with none left has no weights in the file, only, where a removed component's
//! value was folded into it, its output bias (`o_proj.bias` / `attn.c_proj.bias`).

use super::assemble::{split_rows, width};
use super::hf_config::LayerLayout;
use super::safetensors::StTensors;
use crate::model::{Arch, LayerWeights, ModelConfig, ModelWeights};
use crate::{Error, HostTensor, Result};

/// `layout`: per-layer widths of a pruned model; None for the config's widths everywhere.
pub fn build(cfg: &ModelConfig, layout: Option<&[LayerLayout]>, st: &StTensors) -> Result<ModelWeights<HostTensor>> {
    let lay = |i: usize| layout.map_or(LayerLayout::full(cfg), |l| l[i]);
    match cfg.arch {
        Arch::Gpt2 => gpt2(cfg, st, &lay),
        Arch::Llama => llama(cfg, st, &lay),
    }
}

/// An attention block without heads (wq etc. with 0 rows); `bo` is its folded constant, if any.
/// The norm weights are never read.
fn no_heads(l: &mut LayerWeights<HostTensor>, d: usize, bo: Option<HostTensor>) {
    let empty = |r: usize, c: usize| HostTensor::new(vec![r, c], vec![]);
    (l.n_heads, l.n_kv_heads, l.ln1_w, l.ln1_b) = (0, 0, HostTensor::new(vec![d], vec![1.0; d]), None);
    (l.wq, l.wk, l.wv, l.wo, l.bq, l.bk, l.bv, l.bo) = (empty(0, d), empty(0, d), empty(0, d), empty(d, 0), None, None, None, bo);
}

/// An MLP block without neurons; `b_down` is its folded constant, if any.
fn no_mlp(l: &mut LayerWeights<HostTensor>, d: usize, b_down: Option<HostTensor>) {
    let empty = |r: usize, c: usize| HostTensor::new(vec![r, c], vec![]);
    (l.ln2_w, l.ln2_b, l.w_gate, l.b_up) = (HostTensor::new(vec![d], vec![1.0; d]), None, l.w_gate.as_ref().map(|_| empty(0, d)), None);
    (l.w_up, l.w_down, l.b_down) = (empty(0, d), empty(d, 0), b_down);
}

/// A layer with every block empty, filled in by the family's loader.
fn empty_layer(d: usize, gated: bool) -> LayerWeights<HostTensor> {
    let e = || HostTensor::new(vec![0], vec![]);
    let mut l = LayerWeights {
        n_heads: 0, n_kv_heads: 0, ln1_w: e(), ln1_b: None, wq: e(), bq: None, wk: e(), bk: None, wv: e(), bv: None,
        wo: e(), bo: None, ln2_w: e(), ln2_b: None, w_gate: gated.then(e), w_up: e(), b_up: None, w_down: e(), b_down: None,
    };
    no_heads(&mut l, d, None);
    no_mlp(&mut l, d, None);
    l
}

/// The unembedding: `lm_head.weight` unless the embeddings are tied.
fn lm_head(cfg: &ModelConfig, st: &StTensors) -> Result<Option<HostTensor>> {
    if cfg.tied_embeddings {
        return Ok(None);
    }
    st.get("lm_head.weight", &[cfg.vocab, cfg.d_model]).map(Some)
}

fn gpt2(cfg: &ModelConfig, st: &StTensors, lay: &dyn Fn(usize) -> LayerLayout) -> Result<ModelWeights<HostTensor>> {
    let (d, v) = (cfg.d_model, cfg.vocab);
    let layers = (0..cfg.n_layers).map(|i| gpt2_layer(cfg, st, i, lay(i))).collect::<Result<_>>()?;
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
fn gpt2_layer(cfg: &ModelConfig, st: &StTensors, i: usize, lay: LayerLayout) -> Result<LayerWeights<HostTensor>> {
    let (d, ff) = (cfg.d_model, lay.d_ff);
    let hd = width(lay.n_heads, cfg.head_dim)?;
    let p = |s: &str| format!("h.{i}.{s}");
    let vec = |s: &str, n: usize| st.get(&p(s), &[n]);
    let mut l = empty_layer(d, false);
    if lay.n_heads > 0 {
        gpt2_attention(st, &p, d, hd, lay.n_heads, &mut l)?;
    } else {
        no_heads(&mut l, d, st.opt(&p("attn.c_proj.bias"), &[d])?);
    }
    if ff > 0 {
        let conv = |s: &str, din: usize, dout: usize| st.get(&p(s), &[din, dout]).map(|t| t.transposed());
        (l.ln2_w, l.ln2_b) = (vec("ln_2.weight", d)?, Some(vec("ln_2.bias", d)?));
        (l.w_up, l.b_up) = (conv("mlp.c_fc.weight", d, ff)?, Some(vec("mlp.c_fc.bias", ff)?));
        (l.w_down, l.b_down) = (conv("mlp.c_proj.weight", ff, d)?, Some(vec("mlp.c_proj.bias", d)?));
    } else {
        no_mlp(&mut l, d, st.opt(&p("mlp.c_proj.bias"), &[d])?);
    }
    Ok(l)
}

fn gpt2_attention(st: &StTensors, p: &dyn Fn(&str) -> String, d: usize, hd: usize, n_heads: usize,
    l: &mut LayerWeights<HostTensor>) -> Result<()> {
    let conv = |s: &str, din: usize, dout: usize| st.get(&p(s), &[din, dout]).map(|t| t.transposed());
    let vec = |s: &str, n: usize| st.get(&p(s), &[n]);
    // c_attn fuses Q, K and V along the output dimension.
    let hd3 = width(hd, 3)?;
    let qkv = split_rows(&conv("attn.c_attn.weight", d, hd3)?, &[hd, hd, hd]);
    let qkv_b = split_rows(&vec("attn.c_attn.bias", hd3)?, &[hd, hd, hd]);
    let [wq, wk, wv]: [HostTensor; 3] = qkv.try_into().expect("three parts");
    let [bq, bk, bv]: [HostTensor; 3] = qkv_b.try_into().expect("three parts");
    (l.n_heads, l.n_kv_heads) = (n_heads, n_heads);
    (l.ln1_w, l.ln1_b) = (vec("ln_1.weight", d)?, Some(vec("ln_1.bias", d)?));
    (l.wq, l.bq, l.wk, l.bk, l.wv, l.bv) = (wq, Some(bq), wk, Some(bk), wv, Some(bv));
    (l.wo, l.bo) = (conv("attn.c_proj.weight", hd, d)?, Some(vec("attn.c_proj.bias", d)?));
    Ok(())
}

fn llama(cfg: &ModelConfig, st: &StTensors, lay: &dyn Fn(usize) -> LayerLayout) -> Result<ModelWeights<HostTensor>> {
    let (d, v) = (cfg.d_model, cfg.vocab);
    let layers = (0..cfg.n_layers).map(|i| llama_layer(cfg, st, i, lay(i))).collect::<Result<_>>()?;
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
fn llama_layer(cfg: &ModelConfig, st: &StTensors, i: usize, lay: LayerLayout) -> Result<LayerWeights<HostTensor>> {
    let (d, ff) = (cfg.d_model, lay.d_ff);
    let (q, kv) = (width(lay.n_heads, cfg.head_dim)?, width(lay.n_kv_heads, cfg.head_dim)?);
    let p = |s: &str| format!("layers.{i}.{s}");
    let w = |s: &str, out: usize, inp: usize| st.get(&p(&format!("{s}.weight")), &[out, inp]);
    let b = |s: &str, out: usize| st.opt(&p(&format!("{s}.bias")), &[out]);
    if st.contains(&p("mlp.gate_proj.bias")) {
        return Err(Error::Unsupported(format!("{}: a bias on the MLP gate", p("mlp.gate_proj"))));
    }
    let mut l = empty_layer(d, true);
    if lay.n_heads > 0 {
        (l.n_heads, l.n_kv_heads) = (lay.n_heads, lay.n_kv_heads);
        l.ln1_w = st.get(&p("input_layernorm.weight"), &[d])?;
        (l.wq, l.bq) = (w("self_attn.q_proj", q, d)?, b("self_attn.q_proj", q)?);
        (l.wk, l.bk) = (w("self_attn.k_proj", kv, d)?, b("self_attn.k_proj", kv)?);
        (l.wv, l.bv) = (w("self_attn.v_proj", kv, d)?, b("self_attn.v_proj", kv)?);
        (l.wo, l.bo) = (w("self_attn.o_proj", d, q)?, b("self_attn.o_proj", d)?);
    } else {
        no_heads(&mut l, d, b("self_attn.o_proj", d)?);
    }
    if ff > 0 {
        l.ln2_w = st.get(&p("post_attention_layernorm.weight"), &[d])?;
        l.w_gate = Some(w("mlp.gate_proj", ff, d)?);
        (l.w_up, l.b_up) = (w("mlp.up_proj", ff, d)?, b("mlp.up_proj", ff)?);
        (l.w_down, l.b_down) = (w("mlp.down_proj", d, ff)?, b("mlp.down_proj", d)?);
    } else {
        no_mlp(&mut l, d, b("mlp.down_proj", d)?);
    }
    Ok(l)
}
