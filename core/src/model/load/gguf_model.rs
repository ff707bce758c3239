//! A parsed GGUF → `ModelConfig` + canonical `ModelWeights`, for the `llama` and `gpt2` architectures
//! (tensor names as llama.cpp's `gguf-py/gguf/constants.py` defines them).

use super::assemble::{check_shape, split_rows, unpermute_rope_rows};
use super::gguf::{GgufFile, GgufValue};
use crate::model::{Arch, LayerWeights, ModelConfig, ModelWeights};
use crate::{Error, HostTensor, Result};

/// Metadata lookups under the architecture's prefix (`llama.block_count`...).
struct Meta<'f, 'a> {
    f: &'f GgufFile<'a>,
    arch: &'f str,
}

impl Meta<'_, '_> {
    fn get(&self, key: &str) -> Option<&GgufValue> {
        self.f.get(&format!("{}.{key}", self.arch))
    }
    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| self.bad(key, v)),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        let missing = || Error::format(self.f.path(), format!("GGUF metadata has no `{}.{key}`", self.arch));
        self.usize_opt(key)?.ok_or_else(missing)
    }
    fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| self.bad(key, v)),
        }
    }
    fn bad(&self, key: &str, v: &GgufValue) -> Error {
        Error::format(self.f.path(), format!("GGUF metadata `{}.{key}` has an unexpected value {v:?}", self.arch))
    }
}

fn token_id(f: &GgufFile, key: &str) -> Option<u32> {
    f.get(key).and_then(GgufValue::as_u64).and_then(|n| u32::try_from(n).ok())
}

pub fn config(f: &GgufFile) -> Result<ModelConfig> {
    let arch_name = f.get("general.architecture").and_then(GgufValue::as_str).unwrap_or("(none)");
    let arch = match arch_name {
        "llama" => Arch::Llama,
        "gpt2" => Arch::Gpt2,
        other => {
            return Err(Error::Unsupported(format!(
                "{}: GGUF architecture `{other}`; carve runs `llama` and `gpt2`",
                f.path().display()
            )))
        }
    };
    let m = Meta { f, arch: arch_name };
    let d = m.usize("embedding_length")?;
    let n_heads = m.usize("attention.head_count")?;
    if n_heads == 0 || !d.is_multiple_of(n_heads) {
        return Err(Error::format(f.path(), format!("{n_heads} heads do not divide d = {d}")));
    }
    let head_dim = m.usize_opt("attention.key_length")?.unwrap_or(d / n_heads);
    let embd = f.info("token_embd.weight").ok_or_else(|| missing(f, "token_embd.weight"))?;
    let cfg = ModelConfig {
        arch,
        n_layers: m.usize("block_count")?,
        n_heads,
        n_kv_heads: m.usize_opt("attention.head_count_kv")?.unwrap_or(n_heads),
        head_dim,
        d_model: d,
        d_ff: m.usize("feed_forward_length")?,
        // The embedding is the truth: `vocab_size` is often absent.
        vocab: embd.shape[0],
        n_ctx: m.usize("context_length")?,
        norm_eps: match arch {
            Arch::Llama => m.f32_or("attention.layer_norm_rms_epsilon", 1e-5)?,
            Arch::Gpt2 => m.f32_or("attention.layer_norm_epsilon", 1e-5)?,
        },
        rope_theta: m.f32_or("rope.freq_base", 10000.0)?,
        tied_embeddings: tied(f),
        bos_token_id: token_id(f, "tokenizer.ggml.bos_token_id"),
        eos_token_id: token_id(f, "tokenizer.ggml.eos_token_id"),
    };
    if arch == Arch::Llama {
        check_rope(&m, &cfg)?;
    }
    Ok(cfg)
}

/// Tied when there is no `output.weight`, or when it is a byte-for-byte copy of the embedding
/// (llama.cpp's GPT-2 converter writes the tied matrix twice).
fn tied(f: &GgufFile) -> bool {
    let (Some(out), Some(emb)) = (f.info("output.weight"), f.info("token_embd.weight")) else {
        return true;
    };
    out.ty == emb.ty && out.shape == emb.shape && f.tensor_bytes(out).ok() == f.tensor_bytes(emb).ok()
}

/// Partial rotary or scaled frequencies would run silently wrong: refuse them by name.
fn check_rope(m: &Meta, cfg: &ModelConfig) -> Result<()> {
    let dims = m.usize_opt("rope.dimension_count")?.unwrap_or(cfg.head_dim);
    let scaling = m.get("rope.scaling.type").and_then(GgufValue::as_str).unwrap_or("none");
    let why = if dims != cfg.head_dim {
        format!("RoPE on {dims} of {} head dimensions", cfg.head_dim)
    } else if scaling != "none" {
        format!("RoPE scaling `{scaling}`")
    } else if m.f.info("rope_freqs.weight").is_some() {
        "RoPE frequency factors (`rope_freqs.weight`, Llama 3 scaling)".to_string()
    } else {
        return Ok(());
    };
    Err(Error::Unsupported(format!("{}: {why} is not supported yet", m.f.path().display())))
}

fn missing(f: &GgufFile, name: &str) -> Error {
    Error::MissingTensor { name: name.to_string(), path: f.path().to_path_buf() }
}

/// A tensor by name, dequantized and checked against `want`.
fn get(f: &GgufFile, name: &str, want: &[usize]) -> Result<HostTensor> {
    opt(f, name, want)?.ok_or_else(|| missing(f, name))
}

fn opt(f: &GgufFile, name: &str, want: &[usize]) -> Result<Option<HostTensor>> {
    let Some(info) = f.info(name) else { return Ok(None) };
    let t = f.tensor(info)?;
    check_shape(name, &t, want)?;
    Ok(Some(t))
}

pub fn weights(f: &GgufFile, cfg: &ModelConfig) -> Result<ModelWeights<HostTensor>> {
    let (d, v) = (cfg.d_model, cfg.vocab);
    let layers = (0..cfg.n_layers).map(|i| layer(f, cfg, i)).collect::<Result<_>>()?;
    let gpt2 = cfg.arch == Arch::Gpt2;
    Ok(ModelWeights {
        wte: get(f, "token_embd.weight", &[v, d])?,
        wpe: if gpt2 { Some(get(f, "position_embd.weight", &[cfg.n_ctx, d])?) } else { None },
        layers,
        ln_f_w: get(f, "output_norm.weight", &[d])?,
        ln_f_b: opt(f, "output_norm.bias", &[d])?,
        lm_head: if cfg.tied_embeddings { None } else { Some(get(f, "output.weight", &[v, d])?) },
    })
}

fn layer(f: &GgufFile, cfg: &ModelConfig, i: usize) -> Result<LayerWeights<HostTensor>> {
    let (d, ff) = (cfg.d_model, cfg.d_ff);
    let (q, kv) = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim);
    let name = |s: &str, suffix: &str| format!("blk.{i}.{s}.{suffix}");
    let w = |s: &str, out: usize, inp: usize| get(f, &name(s, "weight"), &[out, inp]);
    let b = |s: &str, out: usize| opt(f, &name(s, "bias"), &[out]);
    let (wq, wk, wv, bq, bk, bv) = if cfg.arch == Arch::Gpt2 {
        // GPT-2 keeps Q, K and V fused (already `[out, in]`: the converter transposed Conv1D).
        let [wq, wk, wv] = three(split_rows(&w("attn_qkv", q + 2 * kv, d)?, &[q, kv, kv]));
        let bias = b("attn_qkv", q + 2 * kv)?.map(|t| three(split_rows(&t, &[q, kv, kv])));
        let [bq, bk, bv] = bias.map_or([None, None, None], |b| b.map(Some));
        (wq, wk, wv, bq, bk, bv)
    } else {
        // llama.cpp permuted Q and K rows for its RoPE layout; undo it per head group.
        let wq = unpermute_rope_rows(&w("attn_q", q, d)?, cfg.n_heads)?;
        let wk = unpermute_rope_rows(&w("attn_k", kv, d)?, cfg.n_kv_heads)?;
        let bq = b("attn_q", q)?.map(|t| unpermute_rope_rows(&t, cfg.n_heads)).transpose()?;
        let bk = b("attn_k", kv)?.map(|t| unpermute_rope_rows(&t, cfg.n_kv_heads)).transpose()?;
        (wq, wk, w("attn_v", kv, d)?, bq, bk, b("attn_v", kv)?)
    };
    let gate = if cfg.arch == Arch::Llama { Some(w("ffn_gate", ff, d)?) } else { None };
    Ok(LayerWeights {
        n_heads: cfg.n_heads,
        n_kv_heads: cfg.n_kv_heads,
        ln1_w: get(f, &name("attn_norm", "weight"), &[d])?,
        ln1_b: b("attn_norm", d)?,
        wq,
        bq,
        wk,
        bk,
        wv,
        bv,
        wo: w("attn_output", d, q)?,
        bo: b("attn_output", d)?,
        ln2_w: get(f, &name("ffn_norm", "weight"), &[d])?,
        ln2_b: b("ffn_norm", d)?,
        w_gate: gate,
        w_up: w("ffn_up", ff, d)?,
        b_up: b("ffn_up", ff)?,
        w_down: w("ffn_down", d, ff)?,
        b_down: b("ffn_down", d)?,
    })
}

fn three(v: Vec<HostTensor>) -> [HostTensor; 3] {
    v.try_into().expect("split into three parts")
}
