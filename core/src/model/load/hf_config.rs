//! config.json → `ModelConfig`, for GPT-2 and Llama in the spellings of transformers 4 and 5.
//!
//! Defaults follow the transformers config classes (GPT2Config, LlamaConfig), so a file that leaves
//! a key out means what it means to transformers.

use std::path::Path;

use serde_json::Value;

use crate::model::{Arch, ModelConfig};
use crate::{Error, Result};

/// Reads fields of the config object; errors name the key and the file.
struct Fields<'a> {
    v: &'a Value,
    path: &'a Path,
}

impl Fields<'_> {
    /// The first of `keys` present and not null (HF aliases: `n_embd` = `hidden_size`, ...).
    fn find(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter().find_map(|k| self.v.get(*k).filter(|v| !v.is_null()))
    }
    fn usize_opt(&self, keys: &[&str]) -> Result<Option<usize>> {
        match self.find(keys) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| self.bad(keys[0], v)),
        }
    }
    fn usize(&self, keys: &[&str]) -> Result<usize> {
        self.usize_opt(keys)?
            .ok_or_else(|| Error::format(self.path, format!("config.json has no `{}`", keys.join("` or `"))))
    }
    fn f32_or(&self, keys: &[&str], default: f32) -> Result<f32> {
        match self.find(keys) {
            None => Ok(default),
            Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| self.bad(keys[0], v)),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.find(&[key]) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(key, v)),
        }
    }
    fn str(&self, key: &str) -> Option<&str> {
        self.find(&[key]).and_then(Value::as_str)
    }
    /// A token id; Llama 3 writes a list for eos_token_id, of which the first is the main one.
    fn token_id(&self, key: &str) -> Option<u32> {
        let v = self.find(&[key])?;
        let v = v.as_array().and_then(|a| a.first()).unwrap_or(v);
        v.as_u64().and_then(|n| u32::try_from(n).ok())
    }
    fn bad(&self, key: &str, v: &Value) -> Error {
        Error::format(self.path, format!("config.json: `{key}` has an unexpected value {v}"))
    }
}

/// Parses config.json; `path` is only for messages.
pub fn parse_config(json: &[u8], path: &Path) -> Result<ModelConfig> {
    let v: Value =
        serde_json::from_slice(json).map_err(|e| Error::format(path, format!("config.json is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::format(path, "config.json is not a JSON object"));
    }
    let f = Fields { v: &v, path };
    match detect_arch(&f)? {
        Arch::Gpt2 => gpt2(&f),
        Arch::Llama => llama(&f),
    }
}

fn detect_arch(f: &Fields) -> Result<Arch> {
    let archs: Vec<&str> =
        f.find(&["architectures"]).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let model_type = f.str("model_type");
    for a in &archs {
        match *a {
            "GPT2LMHeadModel" | "GPT2Model" => return Ok(Arch::Gpt2),
            "LlamaForCausalLM" | "LlamaModel" => return Ok(Arch::Llama),
            _ => {}
        }
    }
    match model_type {
        Some("gpt2") => Ok(Arch::Gpt2),
        Some("llama") => Ok(Arch::Llama),
        _ => Err(Error::Unsupported(format!(
            "{}: architecture {archs:?} (model_type {}); carve runs GPT-2 (GPT2LMHeadModel) and Llama \
             (LlamaForCausalLM) models",
            f.path.display(),
            model_type.map_or("not given".to_string(), |m| format!("`{m}`")),
        ))),
    }
}

fn gpt2(f: &Fields) -> Result<ModelConfig> {
    let act = f.str("activation_function").unwrap_or("gelu_new");
    if !matches!(act, "gelu_new" | "gelu_pytorch_tanh") {
        return Err(Error::Unsupported(format!(
            "{}: GPT-2 activation `{act}` (carve runs gelu_new)",
            f.path.display()
        )));
    }
    // Options that change GPT-2's attention arithmetic, which the forward does not implement.
    if !f.bool_or("scale_attn_weights", true)? || f.bool_or("scale_attn_by_inverse_layer_idx", false)? {
        let msg = "GPT-2 attention without the usual 1/sqrt(head_dim) scaling";
        return Err(Error::Unsupported(format!("{}: {msg}", f.path.display())));
    }
    let d = f.usize(&["n_embd", "hidden_size"])?;
    let n_heads = f.usize(&["n_head", "num_attention_heads"])?;
    let cfg = ModelConfig {
        arch: Arch::Gpt2,
        n_layers: f.usize(&["n_layer", "num_hidden_layers"])?,
        n_heads,
        n_kv_heads: n_heads,
        head_dim: whole_heads(f, d, n_heads)?,
        d_model: d,
        // transformers writes `n_inner: null` for the default 4·d.
        d_ff: f.usize_opt(&["n_inner"])?.unwrap_or(4 * d),
        vocab: f.usize(&["vocab_size"])?,
        n_ctx: f.usize(&["n_positions", "n_ctx", "max_position_embeddings"])?,
        norm_eps: f.f32_or(&["layer_norm_epsilon"], 1e-5)?,
        rope_theta: 10000.0,
        tied_embeddings: f.bool_or("tie_word_embeddings", true)?,
        bos_token_id: f.token_id("bos_token_id"),
        eos_token_id: f.token_id("eos_token_id"),
    };
    Ok(cfg)
}

fn llama(f: &Fields) -> Result<ModelConfig> {
    let act = f.str("hidden_act").unwrap_or("silu");
    if act != "silu" {
        return Err(Error::Unsupported(format!("{}: Llama activation `{act}` (carve runs silu)", f.path.display())));
    }
    check_rope_scaling(f)?;
    let d = f.usize(&["hidden_size"])?;
    let n_heads = f.usize(&["num_attention_heads"])?;
    let head_dim = match f.usize_opt(&["head_dim"])? {
        Some(h) => h,
        None => whole_heads(f, d, n_heads)?,
    };
    // transformers 5 moved rope_theta into rope_parameters; transformers 4 has it at the top.
    let theta = match f.v.get("rope_parameters").and_then(|p| p.get("rope_theta")).and_then(Value::as_f64) {
        Some(t) => t as f32,
        None => f.f32_or(&["rope_theta"], 10000.0)?,
    };
    Ok(ModelConfig {
        arch: Arch::Llama,
        n_layers: f.usize(&["num_hidden_layers"])?,
        n_heads,
        n_kv_heads: f.usize_opt(&["num_key_value_heads"])?.unwrap_or(n_heads),
        head_dim,
        d_model: d,
        d_ff: f.usize(&["intermediate_size"])?,
        vocab: f.usize(&["vocab_size"])?,
        n_ctx: f.usize_opt(&["max_position_embeddings"])?.unwrap_or(2048),
        norm_eps: f.f32_or(&["rms_norm_eps"], 1e-6)?,
        rope_theta: theta,
        // LlamaConfig's default is untied.
        tied_embeddings: f.bool_or("tie_word_embeddings", false)?,
        bos_token_id: f.token_id("bos_token_id"),
        eos_token_id: f.token_id("eos_token_id"),
    })
}

fn whole_heads(f: &Fields, d: usize, n_heads: usize) -> Result<usize> {
    if n_heads == 0 || !d.is_multiple_of(n_heads) {
        return Err(Error::format(f.path, format!("config.json: {n_heads} heads do not divide d = {d}")));
    }
    Ok(d / n_heads)
}

/// RoPE scaling (Llama 3's `llama3`, `linear`, `yarn`...) changes the frequencies at every length;
/// `ModelConfig` has no field for it, so such a model is refused rather than run wrongly.
fn check_rope_scaling(f: &Fields) -> Result<()> {
    let kind = |v: &Value| v.get("rope_type").or_else(|| v.get("type")).and_then(Value::as_str).map(str::to_string);
    let scaling = f.find(&["rope_scaling"]).map(|v| kind(v).unwrap_or_else(|| "unknown".into()));
    let params = f.find(&["rope_parameters"]).and_then(kind);
    match scaling.or(params) {
        Some(t) if t != "default" => {
            Err(Error::Unsupported(format!("{}: RoPE scaling `{t}` is not supported yet", f.path.display())))
        }
        _ => Ok(()),
    }
}

/// Per-layer widths of a pruned model (`carve_layers` in config.json, written by `prune`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerLayout {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_ff: usize,
}

impl LayerLayout {
    /// Every layer of an unpruned model.
    pub fn full(cfg: &ModelConfig) -> Self {
        LayerLayout { n_heads: cfg.n_heads, n_kv_heads: cfg.n_kv_heads, d_ff: cfg.d_ff }
    }
}

/// The `carve_layers` of a pruned model's config.json, checked against its config; None for an
/// ordinary model.
pub fn parse_layout(json: &[u8], path: &Path, cfg: &ModelConfig) -> Result<Option<Vec<LayerLayout>>> {
    let v: Value = serde_json::from_slice(json).map_err(|e| Error::format(path, format!("config.json is not valid JSON: {e}")))?;
    let Some(layers) = v.get("carve_layers").filter(|l| !l.is_null()) else { return Ok(None) };
    let bad = |msg: String| Error::format(path, format!("config.json: `carve_layers` {msg}"));
    let layers = layers.as_array().ok_or_else(|| bad("is not a list".into()))?;
    if layers.len() != cfg.n_layers {
        return Err(bad(format!("has {} entries for {} layers", layers.len(), cfg.n_layers)));
    }
    let mut out = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let f = Fields { v: l, path };
        let n = |k: &str| f.usize(&[k]).map_err(|_| bad(format!("entry {i} has no whole number `{k}`")));
        let lay = LayerLayout { n_heads: n("n_heads")?, n_kv_heads: n("n_kv_heads")?, d_ff: n("d_ff")? };
        let grouped = lay.n_kv_heads > 0 && lay.n_heads.is_multiple_of(lay.n_kv_heads);
        if (lay.n_heads == 0) != (lay.n_kv_heads == 0) || (lay.n_heads > 0 && !grouped) {
            return Err(bad(format!("entry {i}: {} query heads cannot share {} KV heads evenly", lay.n_heads, lay.n_kv_heads)));
        }
        if cfg.arch == Arch::Gpt2 && lay.n_heads != lay.n_kv_heads {
            return Err(bad(format!("entry {i}: GPT-2 layers have as many KV heads as query heads")));
        }
        out.push(lay);
    }
    Ok(Some(out))
}
