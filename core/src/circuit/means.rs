//! `means.safetensors`: a circuit's position-independent ablation values, shipped beside its
//! `circuit.json` so that a full model can be ablated as the circuit was found (and a pruned
//! model's remaining components toggled alike). One f32 tensor `[1, width]` per site and layer,
//! named `z.{l}`, `hidden.{l}`, `attn_out.{l}`, `mlp_out.{l}`; a site left out means zero.

use std::collections::HashMap;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::file::shown;
use super::{AblationValues, ModelShape, Site};
use crate::prune::PrunedLayer;
use crate::{Error, HostTensor, Result};

/// The file's name beside `circuit.json` and in a pruned model's directory.
pub const MEANS_FILE: &str = "means.safetensors";

/// Serializes `v`; only position-independent (one-row) values can be shipped.
pub fn to_bytes(v: &AblationValues) -> Result<Vec<u8>> {
    if !v.position_independent() {
        return Err(Error::Input("only position-independent means can be shipped: these values have a row per position or prompt".into()));
    }
    let named: Vec<(String, &HostTensor)> = v
        .sites()
        .into_iter()
        .flat_map(|(site, ts)| ts.iter().enumerate().filter_map(move |(l, t)| t.as_ref().map(|t| (format!("{}.{l}", site.name()), t))))
        .collect();
    let views = named
        .iter()
        .map(|(n, t)| TensorView::new(Dtype::F32, t.shape.clone(), bytemuck::cast_slice(&t.data)).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Input(format!("cannot lay out the means: {e}")))?;
    let meta = HashMap::from([("format".to_string(), "carve-means".to_string())]);
    safetensors::serialize(views, Some(meta)).map_err(|e| Error::Input(format!("cannot write the means: {e}")))
}

/// Reads a means file for a model of `shape` (`head_dim`, `d_model`). Refused, with the tensor
/// named: a name that is not `{site}.{layer}` spelled as [`to_bytes`] spells it (a known site, the
/// layer in plain decimal), a name given twice, a layer past the model's, a dtype other than F32,
/// a shape other than `[1, width]` (the site's width in this model, which may be 0: a layer whose
/// heads were all removed), and NaN or infinite values.
pub fn from_bytes(bytes: &[u8], shape: &ModelShape, head_dim: usize, d_model: usize) -> Result<AblationValues> {
    let bad = |msg: String| Error::Input(format!("{MEANS_FILE}: {msg}"));
    if let Some(dup) = duplicate_name(bytes) {
        return Err(bad(format!("tensor `{}` is given twice", shown(&dup))));
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let n = shape.n_layers();
    let mut v = AblationValues::none(n);
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, view) in tensors {
        let unexpected = || bad(format!("unexpected tensor `{}`: names are z.L, hidden.L, attn_out.L or mlp_out.L, L a layer", shown(&name)));
        let (site, l) = name.split_once('.').ok_or_else(unexpected)?;
        let site = Site::parse(site).ok_or_else(unexpected)?;
        let l = layer_index(l).ok_or_else(unexpected)?;
        if l >= n {
            return Err(bad(format!("`{name}` is for layer {l}, but the model has {n} layers: a file of another model?")));
        }
        let width = match site {
            Site::Z => shape.heads_in(l).checked_mul(head_dim),
            Site::Hidden => Some(shape.d_ff_in(l)),
            Site::AttnOut | Site::MlpOut => Some(d_model),
        }
        .ok_or_else(|| bad(format!("`{name}`: the model's width for it overflows")))?;
        if view.dtype() != Dtype::F32 || view.shape() != [1, width] {
            return Err(bad(format!(
                "`{name}` is {:?} {:?}; this model needs F32 [1, {width}]: a file of another model?",
                view.dtype(),
                view.shape()
            )));
        }
        let data: Vec<f32> = view.data().chunks_exact(4).filter_map(|b| b.try_into().ok().map(f32::from_le_bytes)).collect();
        if data.len() != width {
            return Err(bad(format!("`{name}` holds {} values, its shape says {width}", data.len())));
        }
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!("`{name}` holds NaN or infinite values (the first at column {i})")));
        }
        let t = Some(HostTensor::new(vec![1, width], data));
        *v.site_mut(site).get_mut(l).ok_or_else(unexpected)? = t;
    }
    Ok(v)
}

/// A layer index as [`to_bytes`] writes it: decimal digits, no sign, space or leading zero.
fn layer_index(s: &str) -> Option<usize> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// The first tensor name that the header of a safetensors file (already parsed whole by
/// `SafeTensors::deserialize`) gives twice; a JSON map would keep only one of them.
fn duplicate_name(bytes: &[u8]) -> Option<String> {
    struct Names(Option<String>);
    impl<'de> serde::Deserialize<'de> for Names {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Names, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Names;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a safetensors header")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> std::result::Result<Names, A::Error> {
                    let mut seen = std::collections::HashSet::new();
                    let mut dup = None;
                    while let Some(k) = m.next_key::<String>()? {
                        m.next_value::<serde::de::IgnoredAny>()?;
                        if !seen.insert(k.clone()) && dup.is_none() {
                            dup = Some(k);
                        }
                    }
                    Ok(Names(dup))
                }
            }
            d.deserialize_map(V)
        }
    }
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = usize::try_from(len).ok()?.checked_add(8)?;
    let header = bytes.get(8..end)?;
    serde_json::from_slice::<Names>(header).ok()?.0
}

/// The source model's values for a pruned model: its layers, and in each its kept heads' slices
/// of `z` and kept neurons of `hidden`.
pub fn for_pruned(v: &AblationValues, layers: &[PrunedLayer], head_dim: usize) -> AblationValues {
    let pick = |t: &Option<HostTensor>, cols: &dyn Fn() -> Vec<usize>| {
        t.as_ref().map(|t| {
            let c = cols();
            HostTensor::new(vec![1, c.len()], c.into_iter().map(|i| t.data[i]).collect())
        })
    };
    let mut out = AblationValues::default();
    for pl in layers {
        let s = pl.source_layer;
        let get = |site: &Vec<Option<HostTensor>>| site.get(s).cloned().flatten();
        let heads = || pl.heads.iter().flat_map(|&h| h * head_dim..(h + 1) * head_dim).collect();
        out.z.push(pick(&get(&v.z), &heads));
        let neurons = || match &pl.neurons {
            Some(n) => n.clone(),
            None => (0..pl.d_ff).collect(),
        };
        out.hidden.push(pick(&get(&v.hidden), &neurons));
        out.attn_out.push(get(&v.attn_out));
        out.mlp_out.push(get(&v.mlp_out));
    }
    out
}
