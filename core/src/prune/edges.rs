//! The standalone edge model (edge-prune with zero or mean ablation): a removed edge carries its
//! writer's constant value, so each reader's input is its kept writers' outputs plus constants:
//!
//! in_r = Σ_{w kept} z_wr·h_w + (1 − z_wr)·a_w + c_r,   c_r = Σ_{w removed, before r} a_w
//!
//! over the writers the pruned model keeps (z the gates) and those it removed. Heads and MLPs with
//! no kept edge out, KV heads whose query heads are all gone and layers with nothing left are
//! physically removed (`prune`, as for node circuits); their values fold into `c_r`. The kept
//! writers' own values stay, so that an edge between two kept components can still be toggled (the
//! web app does). The model directory holds what a pruned model holds, and `edges.safetensors`:
//!
//! - `gates` `[edges]`: 1 on each kept edge of the pruned model's own edge layout (its writers and
//!   readers, `mask::edges`, from `carve_layers`), 0 elsewhere;
//! - `writer_values` `[writers, d]`: each kept writer's a_w (absent under zero ablation);
//! - `reader_bias` `[readers, d]`: each reader's `c_r`, in the layout's reader order;
//!
//! and `config.json` says `"carve_edges": "edges.safetensors"`, so no loader runs the weights
//! without their edges. A kept head carries its share b_O / H of GPT-2's output bias (H: the source
//! layer's heads), as in the edge forward; a removed head's share is in its value.

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::{prune, PrunedModel};
use crate::circuit::edges::live_components;
use crate::circuit::{Ablation, EdgeCircuit, ModelShape};
use crate::mask::{Component, Edge, EdgeLayout, Reader, Writer};
use crate::model::{ModelConfig, ModelWeights};
use crate::{Error, HostTensor, Result};

pub const EDGES_FILE: &str = "edges.safetensors";
const FORMAT: &str = "carve-edge-model";

/// A standalone edge model's edges, on its own (pruned) edge layout.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeModelWeights {
    /// 0 or 1 per edge.
    pub gates: Vec<f32>,
    /// `[writers, d]`: the kept writers' values (None: zero ablation).
    pub writer_values: Option<HostTensor>,
    /// `[readers, d]`: the removed writers' values each reader reads.
    pub reader_bias: HostTensor,
}

/// Prunes `weights` to the edge circuit `circuit` (found on a model of `shape`): the components
/// with no kept edge out go, and every cut edge's value (`values`, one `[1, d]` per writer of the
/// full layout; None: zero ablation) folds into its reader's bias.
pub fn prune_edges(config: &ModelConfig, weights: &ModelWeights<HostTensor>, shape: &ModelShape, circuit: &EdgeCircuit,
    values: Option<&[HostTensor]>) -> Result<PrunedModel> {
    let full = circuit.layout(shape)?;
    let d = config.d_model;
    if let Some(v) = values {
        if v.len() != full.writers.len() || v.iter().any(|t| t.data.len() != d) {
            return Err(Error::Input(format!("edge values: {} of them for {} writers, each of {d} numbers", v.len(), full.writers.len())));
        }
    }
    let gates = circuit.gates(&full)?;
    let kept = live_components(&full, &gates);
    let removed: Vec<Component> = shape.components(false).into_iter().filter(|c| !kept.contains(c)).collect();
    let masks = shape.masks_without(&removed)?;
    // A kept head keeps its share of b_O (H: the source layer's heads); a removed block leaves
    // nothing behind (its value reaches each reader through c_r).
    let mut w = weights.clone();
    for (l, lw) in w.layers.iter_mut().enumerate() {
        let heads = shape.n_heads[l];
        let kept_heads = (0..heads).filter(|&h| kept.contains(&Component::Head { layer: l, head: h })).count();
        lw.bo = match (&lw.bo, kept_heads) {
            (Some(b), k) if k > 0 => {
                let s = k as f32 / heads as f32;
                Some(HostTensor::new(b.shape.clone(), b.data.iter().map(|x| x * s).collect()))
            }
            _ => None,
        };
        if !kept.contains(&Component::Mlp { layer: l }) {
            lw.b_down = None;
        }
    }
    let mut pruned = prune(config, &w, &masks, &Ablation::Zero)?;
    let layers: Vec<(usize, usize, bool)> = pruned.layers.iter().map(|p| (p.n_heads, p.n_kv_heads, p.d_ff > 0)).collect();
    let n_heads: Vec<usize> = layers.iter().map(|x| x.0).collect();
    let n_kv: Vec<usize> = layers.iter().map(|x| x.1).collect();
    let has_mlp: Vec<bool> = layers.iter().map(|x| x.2).collect();
    let own = EdgeLayout::new(&n_heads, &n_kv, &has_mlp, full.writers.contains(&Writer::Pos))?;
    // The pruned model's writers and readers by their names in the full model.
    let src_writer = |w: Writer| match w {
        Writer::Head { layer, head } => Writer::Head { layer: pruned.layers[layer].source_layer, head: pruned.layers[layer].heads[head] },
        Writer::Mlp { layer } => Writer::Mlp { layer: pruned.layers[layer].source_layer },
        other => other,
    };
    let src_reader = |r: Reader| match r {
        Reader::Q { layer, head } => Reader::Q { layer: pruned.layers[layer].source_layer, head: pruned.layers[layer].heads[head] },
        Reader::K { layer, kv } => Reader::K { layer: pruned.layers[layer].source_layer, kv: pruned.layers[layer].kv_heads[kv] },
        Reader::V { layer, kv } => Reader::V { layer: pruned.layers[layer].source_layer, kv: pruned.layers[layer].kv_heads[kv] },
        Reader::Mlp { layer } => Reader::Mlp { layer: pruned.layers[layer].source_layer },
        Reader::Logits => Reader::Logits,
    };
    let full_writer = |w: Writer| full.writers.iter().position(|&x| x == src_writer(w)).expect("a kept writer is in the full model");
    let kept_writers: Vec<usize> = own.writers.iter().map(|&w| full_writer(w)).collect();
    let mut own_gates = vec![0.0f32; own.n_edges()];
    let mut bias = vec![0.0f64; own.readers.len() * d];
    for (r, &reader) in own.readers.iter().enumerate() {
        let fr = src_reader(reader);
        let fr_i = full.readers.iter().position(|&x| x == fr).ok_or_else(|| Error::Input(format!("reader {fr} is not in the circuit's model")))?;
        for w in 0..own.reads[r] {
            let e = Edge { writer: src_writer(own.writers[w]), reader: fr };
            own_gates[own.first[r] + w] = gates[full.index(e)?];
        }
        // The writers the full reader reads that the pruned model removed (all their edges are cut).
        if let Some(v) = values {
            for fw in (0..full.reads[fr_i]).filter(|fw| !kept_writers.contains(fw)) {
                debug_assert_eq!(gates[full.first[fr_i] + fw], 0.0);
                for (b, &x) in bias[r * d..(r + 1) * d].iter_mut().zip(&v[fw].data) {
                    *b += x as f64;
                }
            }
        }
    }
    let writer_values = values.map(|v| HostTensor::new(vec![kept_writers.len(), d], kept_writers.iter().flat_map(|&w| v[w].data.iter().copied()).collect()));
    pruned.edges = Some(EdgeModelWeights {
        gates: own_gates,
        writer_values,
        reader_bias: HostTensor::new(vec![own.readers.len(), d], bias.into_iter().map(|x| x as f32).collect()),
    });
    Ok(pruned)
}

impl EdgeModelWeights {
    /// `edges.safetensors`.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let n = self.gates.len();
        let mut views = vec![
            ("gates", TensorView::new(Dtype::F32, vec![n], bytemuck::cast_slice(&self.gates))),
            ("reader_bias", TensorView::new(Dtype::F32, self.reader_bias.shape.clone(), bytemuck::cast_slice(&self.reader_bias.data))),
        ];
        if let Some(v) = &self.writer_values {
            views.push(("writer_values", TensorView::new(Dtype::F32, v.shape.clone(), bytemuck::cast_slice(&v.data))));
        }
        let views: Vec<(&str, TensorView)> = views
            .into_iter()
            .map(|(name, v)| v.map(|v| (name, v)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Input(format!("cannot lay out the edges: {e}")))?;
        let meta = std::collections::HashMap::from([("format".to_string(), FORMAT.to_string())]);
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::Input(format!("cannot write the edges: {e}")))
    }

    /// Reads `edges.safetensors` (`name` for messages) for a model with edge layout `layout` and
    /// width `d`: gates and reader biases present (writer values optional), f32, of the layout's
    /// sizes, gates 0 or 1, values finite.
    pub fn from_bytes(bytes: &[u8], name: &str, layout: &EdgeLayout, d: usize) -> Result<EdgeModelWeights> {
        let bad = |m: String| Error::Input(format!("{name}: {m}"));
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let read = |t: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let v = st.tensor(t).map_err(|_| bad(format!("it has no `{t}` tensor")))?;
            if v.dtype() != Dtype::F32 {
                return Err(bad(format!("`{t}` is {:?}, expected F32", v.dtype())));
            }
            if v.shape() != shape {
                return Err(bad(format!("`{t}` has shape {:?}; this model's edge layout needs {shape:?}", v.shape())));
            }
            Ok(v.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        };
        let gates = read("gates", &[layout.n_edges()])?;
        if let Some((i, g)) = gates.iter().enumerate().find(|(_, &g)| g != 0.0 && g != 1.0) {
            return Err(bad(format!("gate {i} ({}) is {g}: an edge model's gates are 0 or 1", layout.edge(i).map_or(String::new(), |e| e.to_string()))));
        }
        let n_r = layout.readers.len();
        let bias = read("reader_bias", &[n_r, d])?;
        if let Some(i) = bias.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!("`reader_bias` of {} is not finite", layout.readers[i / d.max(1)])));
        }
        let n_w = layout.writers.len();
        let values = match st.tensor("writer_values") {
            Err(_) => None,
            Ok(_) => {
                let v = read("writer_values", &[n_w, d])?;
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(bad(format!("`writer_values` of {} is not finite", layout.writers[i / d.max(1)])));
                }
                Some(HostTensor::new(vec![n_w, d], v))
            }
        };
        Ok(EdgeModelWeights { gates, writer_values: values, reader_bias: HostTensor::new(vec![n_r, d], bias) })
    }
}
