//! `means.safetensors`: a circuit's position-independent ablation values, shipped beside its
//! `circuit.json` so that a full model can be ablated as the circuit was found (and a pruned
//! model's remaining components toggled alike). One f32 tensor `[1, width]` per site and layer,
//! named `z.{l}`, `hidden.{l}`, `attn_out.{l}`, `mlp_out.{l}`; a site left out means zero.

use std::collections::HashMap;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::{AblationValues, ModelShape};
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
        .flat_map(|(site, ts)| ts.iter().enumerate().filter_map(move |(l, t)| t.as_ref().map(|t| (format!("{site}.{l}"), t))))
        .collect();
    let views = named
        .iter()
        .map(|(n, t)| TensorView::new(Dtype::F32, t.shape.clone(), bytemuck::cast_slice(&t.data)).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Input(format!("cannot lay out the means: {e}")))?;
    let meta = HashMap::from([("format".to_string(), "carve-means".to_string())]);
    safetensors::serialize(views, Some(meta)).map_err(|e| Error::Input(format!("cannot write the means: {e}")))
}

/// Reads a means file for a model of `shape` (`head_dim`, `d_model`), checking every tensor's
/// name and width so that a file of another model is refused with the tensor named.
pub fn from_bytes(bytes: &[u8], shape: &ModelShape, head_dim: usize, d_model: usize) -> Result<AblationValues> {
    let bad = |msg: String| Error::Input(format!("{MEANS_FILE}: {msg}"));
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let n = shape.n_layers();
    let mut v = AblationValues { z: vec![None; n], hidden: vec![None; n], attn_out: vec![None; n], mlp_out: vec![None; n] };
    for (name, view) in st.tensors() {
        let (site, l) = name.split_once('.').ok_or_else(|| bad(format!("unexpected tensor `{name}`")))?;
        let l: usize = l.parse().map_err(|_| bad(format!("unexpected tensor `{name}`")))?;
        if l >= n {
            return Err(bad(format!("`{name}` is for layer {l}, but the model has {n} layers: a file of another model?")));
        }
        let width = match site {
            "z" => shape.n_heads[l] * head_dim,
            "hidden" => shape.d_ff[l],
            "attn_out" | "mlp_out" => d_model,
            _ => return Err(bad(format!("unexpected tensor `{name}`"))),
        };
        if view.dtype() != Dtype::F32 || view.shape() != [1, width] {
            return Err(bad(format!(
                "`{name}` is {:?} {:?}; this model needs F32 [1, {width}]: a file of another model?",
                view.dtype(),
                view.shape()
            )));
        }
        let data: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
        if data.iter().any(|x| !x.is_finite()) {
            return Err(bad(format!("`{name}` holds NaN or infinite values")));
        }
        let t = Some(HostTensor::new(vec![1, width], data));
        match site {
            "z" => v.z[l] = t,
            "hidden" => v.hidden[l] = t,
            "attn_out" => v.attn_out[l] = t,
            _ => v.mlp_out[l] = t,
        }
    }
    Ok(v)
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
