//! The checks every loader's config passes before a tensor is read or a buffer allocated: each value
//! agreeing with the tensor shapes that the weight files' headers declare, then each in a sane range.
//! config.json and GGUF metadata both come here; errors name the key, its value and, where the
//! weights decide, what they say. Every product of config values is computed with checked
//! arithmetic, so a huge value is reported, never wrapped.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::path::PathBuf;

use super::hf_config::LayerLayout;
use crate::model::{Arch, ModelConfig};
use crate::{Error, Result};

/// The key a config value was read from, in its file's spelling.
#[derive(Clone, Debug, Default)]
pub struct Key {
    pub name: String,
    /// Said after the value when the key was absent and a default stands in for it.
    pub note: &'static str,
}

impl Key {
    pub fn new(name: impl Into<String>) -> Self {
        Key { name: name.into(), note: "" }
    }
    /// A key that was absent; `note` says what stood in for it.
    pub fn defaulted(name: impl Into<String>, note: &'static str) -> Self {
        Key { name: name.into(), note }
    }
    /// "`name` = value", with the default's note when there is one.
    pub fn is(&self, v: impl Display) -> String {
        format!("`{}` = {v}{}", self.name, self.note)
    }
}

/// Where a config came from: its file and the key of each value, for messages.
#[derive(Clone, Debug, Default)]
pub struct Source {
    pub file: PathBuf,
    pub n_layers: Key,
    pub n_heads: Key,
    pub n_kv_heads: Key,
    /// None when the head size is derived as d_model / n_heads.
    pub head_dim: Option<Key>,
    pub d_model: Key,
    pub d_ff: Key,
    pub vocab: Key,
    pub n_ctx: Key,
    pub norm_eps: Key,
    /// The epsilon and RoPE base as written, before rounding to f32.
    pub norm_eps_raw: f64,
    pub rope_theta: Key,
    pub rope_theta_raw: f64,
    pub bos: Key,
    pub eos: Key,
}

/// Tensor shapes as the weight files' headers declare them, by name without prefix.
pub struct Shapes {
    by_name: HashMap<String, (String, Vec<usize>)>,
    /// What messages call the files (the safetensors file or index, the GGUF file).
    origin: PathBuf,
}

impl Shapes {
    pub fn new(origin: &std::path::Path) -> Self {
        Shapes { by_name: HashMap::new(), origin: origin.to_path_buf() }
    }
    /// Records `stored` (the name in the file) under `short`; the first of a name is kept.
    pub fn insert(&mut self, short: &str, stored: &str, shape: &[usize]) {
        self.by_name.entry(short.to_string()).or_insert_with(|| (stored.to_string(), shape.to_vec()));
    }
    fn get(&self, name: &str) -> Option<(&str, &[usize])> {
        self.by_name.get(name).map(|(s, sh)| (s.as_str(), sh.as_slice()))
    }
}

/// How a family names the tensors whose shapes fix the config's values.
pub struct Naming {
    /// Layer tensors are named `{layer}.{i}.…`.
    pub layer: &'static str,
    pub embedding: &'static str,
    pub positions: Option<&'static str>,
    pub lm_head: &'static str,
    /// Q, K and V in one matrix (rows Q, K, V), or the Q and K matrices.
    pub attn: Attn,
    /// The MLP's input projection (gate or up), `[d_ff, d_model]`.
    pub mlp: &'static str,
    /// Matrices stored `[in, out]` (GPT-2's Conv1D) instead of `[out, in]`.
    pub in_out: bool,
}

pub enum Attn {
    Fused(&'static str),
    Split { q: &'static str, k: &'static str },
}

pub const HF_GPT2: Naming = Naming {
    layer: "h",
    embedding: "wte.weight",
    positions: Some("wpe.weight"),
    lm_head: "lm_head.weight",
    attn: Attn::Fused("attn.c_attn.weight"),
    mlp: "mlp.c_fc.weight",
    in_out: true,
};
pub const HF_LLAMA: Naming = Naming {
    layer: "layers",
    embedding: "embed_tokens.weight",
    positions: None,
    lm_head: "lm_head.weight",
    attn: Attn::Split { q: "self_attn.q_proj.weight", k: "self_attn.k_proj.weight" },
    mlp: "mlp.gate_proj.weight",
    in_out: false,
};
pub const GGUF_GPT2: Naming = Naming {
    layer: "blk",
    embedding: "token_embd.weight",
    positions: Some("position_embd.weight"),
    lm_head: "output.weight",
    attn: Attn::Fused("attn_qkv.weight"),
    mlp: "ffn_up.weight",
    in_out: false,
};
pub const GGUF_LLAMA: Naming = Naming {
    layer: "blk",
    embedding: "token_embd.weight",
    positions: None,
    lm_head: "output.weight",
    attn: Attn::Split { q: "attn_q.weight", k: "attn_k.weight" },
    mlp: "ffn_gate.weight",
    in_out: false,
};

/// The largest context carve accepts: positions are 32-bit everywhere.
const MAX_CTX: usize = u32::MAX as usize;

/// An expected dimension: its value (None when the product overflows) and where it comes from.
#[derive(Clone)]
struct Dim {
    n: Option<usize>,
    why: String,
    product: bool,
}

impl Dim {
    fn key(k: &Key, n: usize) -> Dim {
        Dim { n: Some(n), why: k.is(n), product: false }
    }
    fn times(&self, o: &Dim) -> Dim {
        let n = self.n.zip(o.n).and_then(|(a, b)| a.checked_mul(b));
        Dim { n, why: format!("{} × {}", self.why, o.why), product: true }
    }
    fn plus_twice(&self, o: &Dim) -> Dim {
        let n = self.n.zip(o.n).and_then(|(a, b)| b.checked_mul(2).and_then(|b2| a.checked_add(b2)));
        Dim { n, why: format!("({}) + 2 × ({})", self.why, o.why), product: true }
    }
    fn describe(&self) -> String {
        match (self.n, self.product) {
            (None, _) => format!("{} overflows", self.why),
            (Some(n), true) => format!("{} = {n}", self.why),
            (Some(_), false) => self.why.clone(),
        }
    }
}

/// Checks `cfg` against the weights' shapes, then every value against its range. `layout` is a
/// pruned model's per-layer widths (None: the config's widths everywhere).
pub fn check(cfg: &ModelConfig, src: &Source, naming: &Naming, shapes: &Shapes, layout: Option<&[LayerLayout]>) -> Result<()> {
    let v = Validator { cfg, src, naming, shapes };
    v.embedding()?;
    whole_heads(cfg, src)?;
    let present = v.layer_numbers(layout.is_some())?;
    if let Some(p) = naming.positions {
        v.matrix(p, &Dim::key(&src.n_ctx, cfg.n_ctx), &v.d())?;
    }
    if !cfg.tied_embeddings {
        v.matrix(naming.lm_head, &Dim::key(&src.vocab, cfg.vocab), &v.d())?;
    }
    v.layers(&present, layout)?;
    check_ranges(cfg, src)
}

struct Validator<'a> {
    cfg: &'a ModelConfig,
    src: &'a Source,
    naming: &'a Naming,
    shapes: &'a Shapes,
}

impl Validator<'_> {
    fn err(&self, msg: String) -> Error {
        Error::format(&self.src.file, msg)
    }

    fn d(&self) -> Dim {
        Dim::key(&self.src.d_model, self.cfg.d_model)
    }

    /// The head size, as given or as d_model / n_heads.
    fn head_dim(&self) -> Dim {
        match &self.src.head_dim {
            Some(k) => Dim::key(k, self.cfg.head_dim),
            None => {
                let why = format!(
                    "head_dim {} ({} / {})",
                    self.cfg.head_dim,
                    self.src.d_model.is(self.cfg.d_model),
                    self.src.n_heads.is(self.cfg.n_heads)
                );
                Dim { n: Some(self.cfg.head_dim), why, product: false }
            }
        }
    }

    /// `[rows, cols]` of the tensor `name`, when the files have it (a missing one is reported by
    /// the loader that needs it).
    fn matrix(&self, name: &str, rows: &Dim, cols: &Dim) -> Result<()> {
        let Some((stored, got)) = self.shapes.get(name) else { return Ok(()) };
        let want = [rows, cols];
        let wrong: Vec<String> = want
            .iter()
            .zip(got)
            .filter(|(w, g)| w.n != Some(**g))
            .map(|(w, _)| w.describe())
            .collect();
        if got.len() == 2 && wrong.is_empty() {
            return Ok(());
        }
        let wrong = if wrong.is_empty() { want.iter().map(|w| w.describe()).collect() } else { wrong };
        let expected = match (rows.n, cols.n) {
            (Some(r), Some(c)) => format!(" where [{r}, {c}] was expected"),
            _ => String::new(),
        };
        Err(self.err(format!("{}, but `{stored}` has shape {got:?}{expected}", wrong.join(" and "))))
    }

    /// A matrix stored `[out, in]`, or `[in, out]` for Conv1D families.
    fn out_in(&self, name: &str, out: &Dim, inp: &Dim) -> Result<()> {
        if self.naming.in_out {
            self.matrix(name, inp, out)
        } else {
            self.matrix(name, out, inp)
        }
    }

    /// The embedding is `[vocab, d_model]`; it must exist, as the anchor of d_model.
    fn embedding(&self) -> Result<()> {
        let name = self.naming.embedding;
        if self.shapes.get(name).is_none() {
            return Err(Error::MissingTensor { name: name.to_string(), path: self.shapes.origin.clone() });
        }
        self.matrix(name, &Dim::key(&self.src.vocab, self.cfg.vocab), &self.d())
    }

    /// The layers that the files hold tensors of (`{layer}.{i}.…`), in order: none at or past the
    /// count, and for an unpruned model every one below it.
    fn layer_numbers(&self, pruned: bool) -> Result<Vec<usize>> {
        let prefix = format!("{}.", self.naming.layer);
        let mut present: BTreeMap<usize, &str> = BTreeMap::new();
        for (short, (stored, _)) in &self.shapes.by_name {
            let Some(rest) = short.strip_prefix(&prefix) else { continue };
            let num = rest.split_once('.').map(|(n, _)| n).filter(|n| canonical_number(n));
            let Some(i) = num.and_then(|n| n.parse::<usize>().ok()) else {
                return Err(self.err(format!("tensor `{stored}` does not name a layer as `{prefix}N.…`")));
            };
            let e = present.entry(i).or_insert(stored);
            if stored.as_str() < *e {
                *e = stored;
            }
        }
        let n = self.cfg.n_layers;
        let key = &self.src.n_layers;
        if let Some((&last, example)) = present.last_key_value().filter(|(&l, _)| l >= n) {
            let msg = if present.len() == last + 1 {
                format!("{}, but the weights hold {} layers (`{example}` is in layer {last})", key.is(n), last + 1)
            } else {
                format!("{}, but the weights have a tensor of layer {last}: `{example}`", key.is(n))
            };
            return Err(self.err(msg));
        }
        let first_missing = (0..).find(|i| !present.contains_key(i)).unwrap_or(usize::MAX);
        if !pruned && first_missing < n {
            let msg = if present.len() == first_missing {
                format!("{}, but the weights hold {first_missing} layers", key.is(n))
            } else {
                format!("{}, but the weights have no tensor of layer {first_missing}", key.is(n))
            };
            return Err(self.err(msg));
        }
        Ok(present.into_keys().collect())
    }

    /// The attention and MLP input matrices of each layer in `present`.
    fn layers(&self, present: &[usize], layout: Option<&[LayerLayout]>) -> Result<()> {
        let (c, s) = (self.cfg, self.src);
        let hd = self.head_dim();
        let full = LayerLayout::full(c);
        for &i in present {
            let p = |name: &str| format!("{}.{i}.{name}", self.naming.layer);
            let (heads, kv, ff) = match layout {
                None => (Dim::key(&s.n_heads, c.n_heads), Dim::key(&s.n_kv_heads, c.n_kv_heads), Dim::key(&s.d_ff, c.d_ff)),
                Some(l) => {
                    let l = l.get(i).copied().unwrap_or(full);
                    let k = |w: &str, n: usize| Dim::key(&Key::new(format!("carve_layers[{i}].{w}")), n);
                    (k("n_heads", l.n_heads), k("n_kv_heads", l.n_kv_heads), k("d_ff", l.d_ff))
                }
            };
            let (q, k) = (heads.times(&hd), kv.times(&hd));
            match self.naming.attn {
                Attn::Fused(qkv) => self.out_in(&p(qkv), &q.plus_twice(&k), &self.d())?,
                Attn::Split { q: qn, k: kn } => {
                    self.out_in(&p(qn), &q, &self.d())?;
                    self.out_in(&p(kn), &k, &self.d())?;
                }
            }
            self.out_in(&p(self.naming.mlp), &ff, &self.d())?;
        }
        Ok(())
    }
}

/// A derived head size needs the heads to split d_model evenly.
fn whole_heads(cfg: &ModelConfig, src: &Source) -> Result<()> {
    let (d, h) = (cfg.d_model, cfg.n_heads);
    if src.head_dim.is_none() && (h == 0 || !d.is_multiple_of(h)) {
        let msg = format!("{} does not split {} into whole heads", src.n_heads.is(h), src.d_model.is(d));
        return Err(Error::format(&src.file, msg));
    }
    Ok(())
}

/// Digits without a leading zero (`0` itself excepted): the only spelling of a layer number.
fn canonical_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

/// Each value in its range, without the weights: widths of at least 1, heads that group evenly, a
/// positive finite epsilon and RoPE base, token ids inside the vocabulary.
pub fn check_ranges(cfg: &ModelConfig, src: &Source) -> Result<()> {
    let err = |msg: String| Err(Error::format(&src.file, msg));
    whole_heads(cfg, src)?;
    let at_least_one = [
        (&src.d_model, cfg.d_model, "the model has no width"),
        (&src.n_heads, cfg.n_heads, "a model needs at least one attention head"),
        (&src.n_kv_heads, cfg.n_kv_heads, "a model needs at least one key/value head"),
        (&src.d_ff, cfg.d_ff, "the MLP has no neurons"),
        (&src.vocab, cfg.vocab, "the vocabulary is empty"),
        (&src.n_ctx, cfg.n_ctx, "the context holds no token"),
    ];
    for (key, n, why) in at_least_one {
        if n == 0 {
            return err(format!("{}: {why}", key.is(n)));
        }
    }
    if !cfg.n_heads.is_multiple_of(cfg.n_kv_heads) {
        return err(format!(
            "{} does not divide {}: query heads share key/value heads in equal groups",
            src.n_kv_heads.is(cfg.n_kv_heads),
            src.n_heads.is(cfg.n_heads)
        ));
    }
    let head_key = src.head_dim.clone().unwrap_or_else(|| Key::new("head_dim"));
    if cfg.head_dim == 0 || (cfg.arch == Arch::Llama && !cfg.head_dim.is_multiple_of(2)) {
        return err(format!("{}: RoPE needs a positive, even head size", head_key.is(cfg.head_dim)));
    }
    if cfg.n_ctx > MAX_CTX {
        return err(format!("{}: carve takes contexts of at most {MAX_CTX} tokens", src.n_ctx.is(cfg.n_ctx)));
    }
    if cfg.vocab as u64 > u64::from(u32::MAX) + 1 {
        return err(format!("{}: token ids are 32-bit", src.vocab.is(cfg.vocab)));
    }
    positive(src, &src.norm_eps, src.norm_eps_raw, cfg.norm_eps)?;
    if cfg.arch == Arch::Llama {
        positive(src, &src.rope_theta, src.rope_theta_raw, cfg.rope_theta)?;
    }
    for (key, id) in [(&src.bos, cfg.bos_token_id), (&src.eos, cfg.eos_token_id)] {
        if let Some(id) = id.filter(|&id| id as usize >= cfg.vocab) {
            return err(format!("{}, but the embedding has only {} rows", key.is(id), cfg.vocab));
        }
    }
    Ok(())
}

/// A value used as a divisor or a base: positive and finite as the f32 the forward uses.
fn positive(src: &Source, key: &Key, raw: f64, v: f32) -> Result<()> {
    if v > 0.0 && v.is_finite() {
        return Ok(());
    }
    // A positive value that f32 cannot hold is named as such.
    let as_f32 = if raw > 0.0 && raw.is_finite() { format!(" (which is {v} as f32)") } else { String::new() };
    let msg = format!("{}{as_f32}: expected a positive, finite number", key.is(format!("{raw:?}")));
    Err(Error::format(&src.file, msg))
}
