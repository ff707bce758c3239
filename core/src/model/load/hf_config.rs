//! config.json → `ModelConfig`, for GPT-2 and Llama in the spellings of transformers 4 and 5.
//!
//! Every value must have the type transformers reads; a key that is absent takes the default of
//! the transformers config class (GPT2Config, LlamaConfig), so that it means what it means to
//! transformers, and `null` stands for absent only where transformers reads it so. The values are
//! then checked (`validate`) against sane ranges and, when loading, against the weights.

use std::path::Path;

use serde_json::Value;

use super::validate::{self, Key, Source};
use crate::model::{Arch, ModelConfig};
use crate::{Error, Result};

/// The bytes of a JSON file without the UTF-8 byte order mark some editors write first.
pub fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}

/// A JSON value as a message shows it: short values whole, long ones cut.
pub(super) fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() <= 60 {
        return s;
    }
    format!("{}…", s.chars().take(57).collect::<String>())
}

/// Reads fields of a config object; errors name the key, the value and the type expected.
struct Fields<'a> {
    v: &'a Value,
    path: &'a Path,
}

impl<'a> Fields<'a> {
    /// The first of `keys` present, `null` included (HF aliases: `n_embd` = `hidden_size`, ...).
    fn find<'k>(&self, keys: &[&'k str]) -> Option<(&'k str, &'a Value)> {
        keys.iter().find_map(|k| self.v.get(*k).map(|v| (*k, v)))
    }
    fn wrong(&self, key: &str, v: &Value, want: &str) -> Error {
        Error::format(self.path, format!("`{key}` is {}; expected {want}", shown(v)))
    }
    fn whole(&self, key: &str, v: &Value) -> Result<usize> {
        let n = v.as_u64().ok_or_else(|| self.wrong(key, v, "a whole number"))?;
        usize::try_from(n).map_err(|_| self.wrong(key, v, "a whole number this platform can index with"))
    }
    /// A whole number; `None` when absent, or null where `nullable`.
    fn usize_opt<'k>(&self, keys: &[&'k str], nullable: bool) -> Result<Option<(&'k str, usize)>> {
        match self.find(keys) {
            None => Ok(None),
            Some((_, Value::Null)) if nullable => Ok(None),
            Some((k, v)) => Ok(Some((k, self.whole(k, v)?))),
        }
    }
    fn usize<'k>(&self, keys: &[&'k str]) -> Result<(&'k str, usize)> {
        self.usize_opt(keys, false)?
            .ok_or_else(|| Error::format(self.path, format!("config.json has no `{}`", keys.join("` or `"))))
    }
    /// A number, or `default` (keyed by the first of `keys`) when absent.
    fn f64_or<'k>(&self, keys: &[&'k str], default: f64) -> Result<(Key, f64)> {
        match self.find(keys) {
            None => Ok((Key::defaulted(keys[0], " (the default)"), default)),
            Some((k, v)) => Ok((Key::new(k), v.as_f64().ok_or_else(|| self.wrong(k, v, "a number"))?)),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.find(&[key]) {
            None => Ok(default),
            Some((_, v)) => v.as_bool().ok_or_else(|| self.wrong(key, v, "true or false")),
        }
    }
    fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.find(&[key]) {
            None => Ok(default),
            Some((_, v)) => v.as_str().ok_or_else(|| self.wrong(key, v, "a string")),
        }
    }
    fn str_opt(&self, key: &str) -> Result<Option<&'a str>> {
        match self.find(&[key]) {
            None | Some((_, Value::Null)) => Ok(None),
            Some((_, v)) => v.as_str().map(Some).ok_or_else(|| self.wrong(key, v, "a string")),
        }
    }
    /// An object, or `None` when absent or null.
    fn object_opt(&self, key: &str) -> Result<Option<&'a Value>> {
        match self.find(&[key]) {
            None | Some((_, Value::Null)) => Ok(None),
            Some((_, v)) if v.is_object() => Ok(Some(v)),
            Some((_, v)) => Err(self.wrong(key, v, "an object")),
        }
    }
    /// A token id; Llama 3 writes a list for eos_token_id, of which the first is the main one.
    fn token_id(&self, key: &str) -> Result<Option<u32>> {
        let Some((_, v)) = self.find(&[key]) else { return Ok(None) };
        let first = match v {
            Value::Null => return Ok(None),
            Value::Array(a) => match a.first() {
                None => return Ok(None),
                Some(x) => x,
            },
            x => x,
        };
        let want = "a token id (a whole number below 2^32, or a list of them)";
        let ids = match v {
            Value::Array(a) => a.as_slice(),
            _ => std::slice::from_ref(first),
        };
        for x in ids {
            x.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| self.wrong(key, v, want))?;
        }
        Ok(first.as_u64().and_then(|n| u32::try_from(n).ok()))
    }
}

/// Parses config.json and checks each value's range; `path` is only for messages. (Loading a model
/// checks the values against its weights as well.)
pub fn parse_config(json: &[u8], path: &Path) -> Result<ModelConfig> {
    let (config, source) = parse(json, path)?;
    validate::check_ranges(&config, &source)?;
    Ok(config)
}

/// The config and the key each of its values came from; ranges are not checked yet.
pub(super) fn parse(json: &[u8], path: &Path) -> Result<(ModelConfig, Source)> {
    let v = parse_json(json, path)?;
    if !v.is_object() {
        return Err(Error::format(path, "config.json is not a JSON object"));
    }
    let f = Fields { v: &v, path };
    match detect_arch(&f)? {
        Arch::Gpt2 => gpt2(&f),
        Arch::Llama => llama(&f),
    }
}

fn parse_json(json: &[u8], path: &Path) -> Result<Value> {
    serde_json::from_slice(strip_bom(json)).map_err(|e| Error::format(path, format!("config.json is not valid JSON: {e}")))
}

fn detect_arch(f: &Fields) -> Result<Arch> {
    let archs: Vec<&str> = match f.find(&["architectures"]) {
        None | Some((_, Value::Null)) => Vec::new(),
        Some((k, v)) => {
            let list = v.as_array().ok_or_else(|| f.wrong(k, v, "a list of strings"))?;
            list.iter().map(|a| a.as_str().ok_or_else(|| f.wrong(k, v, "a list of strings"))).collect::<Result<_>>()?
        }
    };
    let model_type = f.str_opt("model_type")?;
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

/// Keys read the same way by both families.
struct Common {
    vocab: (Key, usize),
    tied: bool,
    bos: Option<u32>,
    eos: Option<u32>,
}

fn common(f: &Fields, tied_default: bool) -> Result<Common> {
    let (k, vocab) = f.usize(&["vocab_size"])?;
    Ok(Common {
        vocab: (Key::new(k), vocab),
        tied: f.bool_or("tie_word_embeddings", tied_default)?,
        bos: f.token_id("bos_token_id")?,
        eos: f.token_id("eos_token_id")?,
    })
}

fn gpt2(f: &Fields) -> Result<(ModelConfig, Source)> {
    let act = f.str_or("activation_function", "gelu_new")?;
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
    let (dk, d) = f.usize(&["n_embd", "hidden_size"])?;
    let (hk, n_heads) = f.usize(&["n_head", "num_attention_heads"])?;
    let (lk, n_layers) = f.usize(&["n_layer", "num_hidden_layers"])?;
    // transformers writes `n_inner: null` for the default 4·d.
    let (fk, d_ff) = match f.usize_opt(&["n_inner"], true)? {
        Some((k, n)) => (Key::new(k), n),
        None => (Key::defaulted("n_inner", " (absent, so 4 × the width)"), d.saturating_mul(4)),
    };
    let (ck, n_ctx) = f.usize(&["n_positions", "n_ctx", "max_position_embeddings"])?;
    let (ek, eps) = f.f64_or(&["layer_norm_epsilon"], 1e-5)?;
    let c = common(f, true)?;
    let cfg = ModelConfig {
        arch: Arch::Gpt2,
        n_layers,
        n_heads,
        n_kv_heads: n_heads,
        head_dim: d.checked_div(n_heads).unwrap_or(0),
        d_model: d,
        d_ff,
        vocab: c.vocab.1,
        n_ctx,
        norm_eps: eps as f32,
        rope_theta: 10000.0,
        tied_embeddings: c.tied,
        bos_token_id: c.bos,
        eos_token_id: c.eos,
    };
    let src = Source {
        file: f.path.to_path_buf(),
        n_layers: Key::new(lk),
        n_heads: Key::new(hk),
        n_kv_heads: Key::new(hk),
        head_dim: None,
        d_model: Key::new(dk),
        d_ff: fk,
        vocab: c.vocab.0,
        n_ctx: Key::new(ck),
        norm_eps: ek,
        norm_eps_raw: eps,
        rope_theta: Key::default(),
        rope_theta_raw: 10000.0,
        bos: Key::new("bos_token_id"),
        eos: Key::new("eos_token_id"),
    };
    Ok((cfg, src))
}

fn llama(f: &Fields) -> Result<(ModelConfig, Source)> {
    let act = f.str_or("hidden_act", "silu")?;
    if act != "silu" {
        return Err(Error::Unsupported(format!("{}: Llama activation `{act}` (carve runs silu)", f.path.display())));
    }
    check_rope_scaling(f)?;
    let (_, d) = f.usize(&["hidden_size"])?;
    let (_, n_heads) = f.usize(&["num_attention_heads"])?;
    let (head_key, head_dim) = match f.usize_opt(&["head_dim"], true)? {
        Some((k, h)) => (Some(Key::new(k)), h),
        None => (None, d.checked_div(n_heads).unwrap_or(0)),
    };
    let (kv_key, n_kv_heads) = match f.usize_opt(&["num_key_value_heads"], true)? {
        Some((k, n)) => (Key::new(k), n),
        None => (Key::defaulted("num_key_value_heads", " (absent, so one per attention head)"), n_heads),
    };
    let (ctx_key, n_ctx) = match f.usize_opt(&["max_position_embeddings"], false)? {
        Some((k, n)) => (Key::new(k), n),
        None => (Key::defaulted("max_position_embeddings", " (the default)"), 2048),
    };
    let (theta_key, theta) = rope_theta(f)?;
    let (eps_key, eps) = f.f64_or(&["rms_norm_eps"], 1e-6)?;
    let (_, n_layers) = f.usize(&["num_hidden_layers"])?;
    let (_, d_ff) = f.usize(&["intermediate_size"])?;
    // LlamaConfig's default is untied.
    let c = common(f, false)?;
    let cfg = ModelConfig {
        arch: Arch::Llama,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        d_model: d,
        d_ff,
        vocab: c.vocab.1,
        n_ctx,
        norm_eps: eps as f32,
        rope_theta: theta as f32,
        tied_embeddings: c.tied,
        bos_token_id: c.bos,
        eos_token_id: c.eos,
    };
    let src = Source {
        file: f.path.to_path_buf(),
        n_layers: Key::new("num_hidden_layers"),
        n_heads: Key::new("num_attention_heads"),
        n_kv_heads: kv_key,
        head_dim: head_key,
        d_model: Key::new("hidden_size"),
        d_ff: Key::new("intermediate_size"),
        vocab: c.vocab.0,
        n_ctx: ctx_key,
        norm_eps: eps_key,
        norm_eps_raw: eps,
        rope_theta: theta_key,
        rope_theta_raw: theta,
        bos: Key::new("bos_token_id"),
        eos: Key::new("eos_token_id"),
    };
    Ok((cfg, src))
}

/// transformers 5 moved rope_theta into rope_parameters; transformers 4 has it at the top.
fn rope_theta(f: &Fields) -> Result<(Key, f64)> {
    if let Some(p) = f.object_opt("rope_parameters")? {
        match p.get("rope_theta") {
            None | Some(Value::Null) => {}
            Some(v) => {
                let key = "rope_parameters.rope_theta";
                return Ok((Key::new(key), v.as_f64().ok_or_else(|| f.wrong(key, v, "a number"))?));
            }
        }
    }
    f.f64_or(&["rope_theta"], 10000.0)
}

/// RoPE scaling (Llama 3's `llama3`, `linear`, `yarn`...) changes the frequencies at every length;
/// `ModelConfig` has no field for it, so such a model is refused rather than run wrongly.
fn check_rope_scaling(f: &Fields) -> Result<()> {
    let kind = |key: &str, v: &Value| -> Result<Option<String>> {
        match v.get("rope_type").or_else(|| v.get("type")) {
            None | Some(Value::Null) => Ok(None),
            Some(t) => t.as_str().map(|s| Some(s.to_string())).ok_or_else(|| f.wrong(&format!("{key}.rope_type"), t, "a string")),
        }
    };
    let scaling = match f.object_opt("rope_scaling")? {
        Some(v) => Some(kind("rope_scaling", v)?.unwrap_or_else(|| "unknown".into())),
        None => None,
    };
    let params = match f.object_opt("rope_parameters")? {
        Some(v) => kind("rope_parameters", v)?,
        None => None,
    };
    match scaling.or(params) {
        Some(t) if t != "default" => {
            Err(Error::Unsupported(format!("{}: RoPE scaling `{t}` is not supported yet", f.path.display())))
        }
        _ => Ok(()),
    }
}

/// The edges file an edge model's config.json names (`carve_edges`), if any: a plain file name
/// beside it.
pub fn edges_file(json: &[u8], path: &Path) -> Result<Option<String>> {
    let v = parse_json(json, path)?;
    match v.get("carve_edges") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && !s.contains(['/', '\\']) && s != "." && s != ".." => Ok(Some(s.clone())),
        Some(other) => Err(Error::format(path, format!("`carve_edges` is {other}: it names the edges file beside config.json"))),
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

/// The `carve_layers` of a pruned model's config.json, checked against its config (no layer wider
/// than the model); None for an ordinary model.
pub fn parse_layout(json: &[u8], path: &Path, cfg: &ModelConfig) -> Result<Option<Vec<LayerLayout>>> {
    let v = parse_json(json, path)?;
    let Some(layers) = v.get("carve_layers").filter(|l| !l.is_null()) else { return Ok(None) };
    let bad = |msg: String| Error::format(path, format!("`carve_layers` {msg}"));
    let layers = layers.as_array().ok_or_else(|| bad("is not a list".into()))?;
    if layers.len() != cfg.n_layers {
        return Err(bad(format!("has {} entries for {} layers", layers.len(), cfg.n_layers)));
    }
    let mut out = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        if !l.is_object() {
            return Err(bad(format!("entry {i} is {}; expected an object", shown(l))));
        }
        let f = Fields { v: l, path };
        let n = |k: &str| {
            f.usize(&[k]).map(|(_, n)| n).map_err(|_| bad(format!("entry {i} has no whole number `{k}`")))
        };
        let lay = LayerLayout { n_heads: n("n_heads")?, n_kv_heads: n("n_kv_heads")?, d_ff: n("d_ff")? };
        let grouped = lay.n_kv_heads > 0 && lay.n_heads.is_multiple_of(lay.n_kv_heads);
        if (lay.n_heads == 0) != (lay.n_kv_heads == 0) || (lay.n_heads > 0 && !grouped) {
            let msg = format!("entry {i}: `n_heads` = {} query heads cannot share `n_kv_heads` = {} KV heads evenly", lay.n_heads, lay.n_kv_heads);
            return Err(bad(msg));
        }
        if cfg.arch == Arch::Gpt2 && lay.n_heads != lay.n_kv_heads {
            return Err(bad(format!("entry {i}: GPT-2 layers have as many KV heads as query heads")));
        }
        let over = |what: &str, n: usize, full: usize| bad(format!("entry {i}: {what} {n} is more than the model's {full}"));
        if lay.n_heads > cfg.n_heads {
            return Err(over("`n_heads`", lay.n_heads, cfg.n_heads));
        }
        if lay.d_ff > cfg.d_ff {
            return Err(over("`d_ff`", lay.d_ff, cfg.d_ff));
        }
        out.push(lay);
    }
    Ok(Some(out))
}
