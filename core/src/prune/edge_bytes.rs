//! A standalone edge model read from bytes (the web app has no file system: it fetches or is given
//! config.json, model.safetensors and the edges file that config.json names), and such a model's
//! edge layout and gates read from config.json and the edges file alone, without its weights
//! (the CLI's share links).

use std::path::Path;

use serde_json::Value;

use super::EdgeModelWeights;
use crate::mask::EdgeLayout;
use crate::model::load::{load_hf_bytes, parse_config, parse_layout, strip_bom, LayerLayout, LoadedModel};
use crate::model::{Arch, ModelWeights};
use crate::{Error, HostTensor, Result};

fn json(config_json: &[u8]) -> Result<Value> {
    serde_json::from_slice(strip_bom(config_json)).map_err(|e| Error::format(Path::new("config.json"), format!("invalid JSON: {e}")))
}

/// The edges file a standalone edge model's config.json names (`carve_edges`), if any: a plain
/// file name beside it.
pub fn edges_name(config_json: &[u8]) -> Result<Option<String>> {
    match json(config_json)?.get("carve_edges") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && !s.contains(['/', '\\']) && s != "." && s != ".." => Ok(Some(s.clone())),
        Some(other) => Err(Error::format(Path::new("config.json"), format!("`carve_edges` is {other}: it names the edges file beside config.json"))),
    }
}

/// The edge layout of a model with these layers; `pos`: GPT-2's position embedding is a writer.
pub fn edge_layout(layers: &[LayerLayout], pos: bool) -> Result<EdgeLayout> {
    let n_heads: Vec<usize> = layers.iter().map(|l| l.n_heads).collect();
    let n_kv: Vec<usize> = layers.iter().map(|l| l.n_kv_heads).collect();
    let has_mlp: Vec<bool> = layers.iter().map(|l| l.d_ff > 0).collect();
    EdgeLayout::new(&n_heads, &n_kv, &has_mlp, pos)
}

/// The edge layout of a model's weights (a pruned model's own).
pub fn weights_edge_layout(w: &ModelWeights<HostTensor>) -> Result<EdgeLayout> {
    let layers: Vec<LayerLayout> =
        w.layers.iter().map(|l| LayerLayout { n_heads: l.n_heads, n_kv_heads: l.n_kv_heads, d_ff: l.w_up.shape[0] }).collect();
    edge_layout(&layers, w.wpe.is_some())
}

/// An HF model from bytes, as `load_hf_bytes` reads it, with the edges file (`edges`) that a
/// standalone edge model's config.json names. Without `edges` it is `load_hf_bytes` (which
/// refuses an edge model, naming the file it lacks); edges given for a model whose config.json
/// names none are refused.
pub fn load_hf_bytes_with_edges(config_json: &[u8], safetensors_files: &[&[u8]], tokenizer_json: Option<&[u8]>, edges: Option<&[u8]>)
    -> Result<LoadedModel> {
    let Some(edges) = edges else { return load_hf_bytes(config_json, safetensors_files, tokenizer_json) };
    let Some(name) = edges_name(config_json)? else {
        return Err(Error::Input(
            "an edges file was given, but config.json names none (`carve_edges`): this is not a standalone edge model".into(),
        ));
    };
    // The weights load as a plain pruned model; the edges are read against their layout.
    let mut v = json(config_json)?;
    v["carve_edges"] = Value::Null;
    let plain = serde_json::to_vec(&v).map_err(|e| Error::Input(format!("config.json: {e}")))?;
    let mut m = load_hf_bytes(&plain, safetensors_files, tokenizer_json)?;
    let layout = weights_edge_layout(&m.weights)?;
    m.edges = Some(EdgeModelWeights::from_bytes(edges, &name, &layout, m.config.d_model)?);
    Ok(m)
}

/// A standalone edge model's edge layout and gates from its config.json and edges file, without
/// its weights.
pub fn edge_model_gates(config_json: &[u8], edges: &[u8]) -> Result<(EdgeLayout, Vec<f32>)> {
    let path = Path::new("config.json");
    let name = edges_name(config_json)?.ok_or_else(|| Error::format(path, "it names no edges file (`carve_edges`): not a standalone edge model"))?;
    let cfg = parse_config(config_json, path)?;
    let layers = parse_layout(config_json, path, &cfg)?.unwrap_or_else(|| vec![LayerLayout::full(&cfg); cfg.n_layers]);
    let layout = edge_layout(&layers, cfg.arch == Arch::Gpt2)?;
    let e = EdgeModelWeights::from_bytes(edges, &name, &layout, cfg.d_model)?;
    Ok((layout, e.gates))
}
