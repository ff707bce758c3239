//! A parsed GGUF → `ModelConfig` + canonical `ModelWeights`, for the `llama` and `gpt2` architectures
//! (tensor names as llama.cpp's `gguf-py/gguf/constants.py` defines them).

use super::assemble::{check_shape, split_rows, unpermute_rope_rows, width};
use super::gguf::{GgufFile, GgufValue};
use super::validate::{self, Key, Shapes, Source};
use crate::model::{Arch, LayerWeights, ModelConfig, ModelWeights};
use crate::{Error, HostTensor, Result};

/// A metadata value as a message shows it.
pub(super) fn shown(v: &GgufValue) -> String {
    match v {
        GgufValue::String(s) => format!("the string {s:?}"),
        GgufValue::Array(a) => format!("an array of {} values", a.len()),
        GgufValue::Bool(b) => format!("the boolean {b}"),
        other => format!("{other:?}"),
    }
}

/// The error for metadata `key` holding `v` where `want` was expected.
pub(super) fn wrong(f: &GgufFile, key: &str, v: &GgufValue, want: &str) -> Error {
    Error::format(f.path(), format!("GGUF metadata `{key}` is {}; expected {want}", shown(v)))
}

/// A token id (`tokenizer.ggml.bos_token_id`...), when present.
pub(super) fn token_id(f: &GgufFile, key: &str) -> Result<Option<u32>> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => {
            let id = v.as_u64().and_then(|n| u32::try_from(n).ok());
            id.map(Some).ok_or_else(|| wrong(f, key, v, "an unsigned integer below 2^32"))
        }
    }
}

/// Metadata lookups under the architecture's prefix (`llama.block_count`...); errors name the key
/// and the type expected.
struct Meta<'f, 'a> {
    f: &'f GgufFile<'a>,
    arch: &'f str,
}

impl Meta<'_, '_> {
    fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.arch)
    }
    fn get(&self, key: &str) -> Option<&GgufValue> {
        self.f.get(&self.key(key))
    }
    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                let n = v.as_u64().and_then(|n| usize::try_from(n).ok());
                n.map(Some).ok_or_else(|| wrong(self.f, &self.key(key), v, "an unsigned integer"))
            }
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        let missing = || Error::format(self.f.path(), format!("GGUF metadata has no `{}`", self.key(key)));
        self.usize_opt(key)?.ok_or_else(missing)
    }
    /// A number and its key, or `default` (noted as such) when absent.
    fn f64_or(&self, key: &str, default: f64) -> Result<(Key, f64)> {
        match self.get(key) {
            None => Ok((Key::defaulted(self.key(key), " (the default)"), default)),
            Some(v) => {
                let x = v.as_f64().ok_or_else(|| wrong(self.f, &self.key(key), v, "a number"))?;
                Ok((Key::new(self.key(key)), x))
            }
        }
    }
    fn str_opt(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| wrong(self.f, &self.key(key), v, "a string")),
        }
    }
}

/// The config of a GGUF file's metadata, checked against its tensor infos (`validate`).
pub fn config(f: &GgufFile) -> Result<ModelConfig> {
    let arch_name = match f.get("general.architecture") {
        None => "(none)",
        Some(v) => v.as_str().ok_or_else(|| wrong(f, "general.architecture", v, "a string"))?,
    };
    let (arch, naming) = match arch_name {
        "llama" => (Arch::Llama, &validate::GGUF_LLAMA),
        "gpt2" => (Arch::Gpt2, &validate::GGUF_GPT2),
        other => {
            return Err(Error::Unsupported(format!(
                "{}: GGUF architecture `{other}`; carve runs `llama` and `gpt2`",
                f.path().display()
            )))
        }
    };
    let m = Meta { f, arch: arch_name };
    // The embedding is the truth for the vocabulary: `vocab_size` is often absent.
    let embd = f.info("token_embd.weight").ok_or_else(|| missing(f, "token_embd.weight"))?;
    let [vocab, _] = embd.shape[..] else {
        let msg = format!("tensor `token_embd.weight` has shape {:?}; expected [vocab, embedding_length]", embd.shape);
        return Err(Error::format(f.path(), msg));
    };
    let d = m.usize("embedding_length")?;
    let n_heads = m.usize("attention.head_count")?;
    let (head_key, head_dim) = match m.usize_opt("attention.key_length")? {
        Some(h) => (Some(Key::new(m.key("attention.key_length"))), h),
        None => (None, d.checked_div(n_heads).unwrap_or(0)),
    };
    let (kv_key, n_kv_heads) = match m.usize_opt("attention.head_count_kv")? {
        Some(n) => (Key::new(m.key("attention.head_count_kv")), n),
        None => (Key::defaulted(m.key("attention.head_count_kv"), " (absent, so one per attention head)"), n_heads),
    };
    let eps_name = match arch {
        Arch::Llama => "attention.layer_norm_rms_epsilon",
        Arch::Gpt2 => "attention.layer_norm_epsilon",
    };
    let (eps_key, eps) = m.f64_or(eps_name, 1e-5)?;
    let (theta_key, theta) = m.f64_or("rope.freq_base", 10000.0)?;
    let cfg = ModelConfig {
        arch,
        n_layers: m.usize("block_count")?,
        n_heads,
        n_kv_heads,
        head_dim,
        d_model: d,
        d_ff: m.usize("feed_forward_length")?,
        vocab,
        n_ctx: m.usize("context_length")?,
        norm_eps: eps as f32,
        rope_theta: theta as f32,
        tied_embeddings: tied(f),
        bos_token_id: token_id(f, "tokenizer.ggml.bos_token_id")?,
        eos_token_id: token_id(f, "tokenizer.ggml.eos_token_id")?,
    };
    let src = Source {
        file: f.path().to_path_buf(),
        n_layers: Key::new(m.key("block_count")),
        n_heads: Key::new(m.key("attention.head_count")),
        n_kv_heads: kv_key,
        head_dim: head_key,
        d_model: Key::new(m.key("embedding_length")),
        d_ff: Key::new(m.key("feed_forward_length")),
        vocab: Key::new("rows of token_embd.weight"),
        n_ctx: Key::new(m.key("context_length")),
        norm_eps: eps_key,
        norm_eps_raw: eps,
        rope_theta: theta_key,
        rope_theta_raw: theta,
        bos: Key::new("tokenizer.ggml.bos_token_id"),
        eos: Key::new("tokenizer.ggml.eos_token_id"),
    };
    let mut shapes = Shapes::new(f.path());
    for t in &f.tensors {
        shapes.insert(&t.name, &t.name, &t.shape);
    }
    validate::check(&cfg, &src, naming, &shapes, None)?;
    if arch == Arch::Llama {
        check_rope(&m, &cfg, &src)?;
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

/// RoPE must rotate whole heads at unscaled frequencies: a dimension count that contradicts the
/// head size is named as such, partial rotary and scaled frequencies are refused by name.
fn check_rope(m: &Meta, cfg: &ModelConfig, src: &Source) -> Result<()> {
    let dims_key = m.key("rope.dimension_count");
    let dims = m.usize_opt("rope.dimension_count")?.unwrap_or(cfg.head_dim);
    let scaling = m.str_opt("rope.scaling.type")?.unwrap_or("none");
    let hd = match &src.head_dim {
        Some(k) => k.is(cfg.head_dim),
        None => format!("head_dim {} ({} / {})", cfg.head_dim, src.d_model.is(cfg.d_model), src.n_heads.is(cfg.n_heads)),
    };
    if dims != cfg.head_dim {
        let agree = match dims {
            0 => String::new(),
            n if src.head_dim.is_none() && cfg.d_model.is_multiple_of(n) => {
                format!("; {} heads of {n} would agree with it", cfg.d_model / n)
            }
            _ => String::new(),
        };
        let msg = format!("`{dims_key}` = {dims} contradicts {hd}{agree} (carve runs RoPE on whole heads only)");
        return Err(Error::format(m.f.path(), msg));
    }
    let why = if scaling != "none" {
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

/// The shape is checked before anything is dequantized.
fn opt(f: &GgufFile, name: &str, want: &[usize]) -> Result<Option<HostTensor>> {
    let Some(info) = f.info(name) else { return Ok(None) };
    check_shape(f.path(), name, &info.shape, want)?;
    f.tensor(info).map(Some)
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
    let (q, kv) = (width(cfg.n_heads, cfg.head_dim)?, width(cfg.n_kv_heads, cfg.head_dim)?);
    let qkv = width(kv, 2)?.checked_add(q).ok_or_else(|| Error::Input(format!("a fused QKV of {q} + 2 × {kv} rows overflows")))?;
    let name = |s: &str, suffix: &str| format!("blk.{i}.{s}.{suffix}");
    let w = |s: &str, out: usize, inp: usize| get(f, &name(s, "weight"), &[out, inp]);
    let b = |s: &str, out: usize| opt(f, &name(s, "bias"), &[out]);
    let (wq, wk, wv, bq, bk, bv) = if cfg.arch == Arch::Gpt2 {
        // GPT-2 keeps Q, K and V fused (already `[out, in]`: the converter transposed Conv1D).
        let [wq, wk, wv] = three(split_rows(&w("attn_qkv", qkv, d)?, &[q, kv, kv]));
        let bias = b("attn_qkv", qkv)?.map(|t| three(split_rows(&t, &[q, kv, kv])));
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
