//! A standalone edge model (`prune::edges`) on a backend, and its forward. With gates z and
//! writer values a fixed, every reader's input is its kept writers' outputs plus a constant:
//!
//! in_r = Σ_{w: z_rw ≠ 0} z_rw·h_w + c_r,   c_r = bias_r + Σ_w (1 − z_rw)·a_w
//!
//! (`bias_r`: the removed writers' values, folded when the model was cut). The constants are
//! folded once per set of gates, so the forward mixes only the outputs of the kept edges, with no
//! ablation values on the way; the edge forward with the same gates and values gives the same
//! logits (the masked formula, `model::edges`, regrouped).

use super::EdgeWeights;
use crate::backend::Backend;
use crate::mask::EdgeLayout;
use crate::model::batch::Batch;
use crate::model::forward::Model;
use crate::{Error, HostTensor, Result};

/// The edges a standalone edge model runs with: its per-head weights with the readers' folded
/// constants, a gate per edge (0 or 1 as cut), and its writers' values (`[1, d]` each; None: zero).
pub struct EdgeModel<T> {
    pub weights: EdgeWeights<T>,
    pub values: Option<Vec<T>>,
    gates: Vec<f32>,
    /// `[writers, d]` (None: zero) and `[readers, d]`, kept to fold new gates.
    host_values: Option<HostTensor>,
    host_bias: HostTensor,
    /// `[readers, d]`: each reader's c_r for `gates`.
    folded: T,
}

impl<T> EdgeModel<T> {
    /// `weights` with the model's own reader biases; `values` `[writers, d]` (None: zero).
    pub fn new<B: Backend<Tensor = T>>(be: &B, weights: EdgeWeights<T>, gates: Vec<f32>, values: Option<HostTensor>,
        reader_bias: HostTensor) -> Result<Self> {
        let lay = &weights.layout;
        let d = reader_bias.shape.last().copied().unwrap_or(0);
        if reader_bias.shape != [lay.readers.len(), d] {
            return Err(Error::Input(format!("reader biases of shape {:?} for {} readers", reader_bias.shape, lay.readers.len())));
        }
        if let Some(v) = &values {
            if v.shape != [lay.writers.len(), d] {
                return Err(Error::Input(format!("writer values of shape {:?} for {} writers of width {d}", v.shape, lay.writers.len())));
            }
        }
        let dev = values
            .as_ref()
            .map(|v| (0..lay.writers.len()).map(|w| be.upload(&HostTensor::new(vec![1, d], v.data[w * d..(w + 1) * d].to_vec()))).collect())
            .transpose()?;
        let folded = be.upload(&fold(lay, &gates, values.as_ref(), &reader_bias)?)?;
        Ok(EdgeModel { weights, values: dev, gates, host_values: values, host_bias: reader_bias, folded })
    }

    /// A gate per edge of the model's own layout.
    pub fn gates(&self) -> &[f32] {
        &self.gates
    }

    /// Runs the model with other gates from now on (the constants are folded again).
    pub fn set_gates<B: Backend<Tensor = T>>(&mut self, be: &B, gates: Vec<f32>) -> Result<()> {
        self.folded = be.upload(&fold(&self.weights.layout, &gates, self.host_values.as_ref(), &self.host_bias)?)?;
        self.gates = gates;
        Ok(())
    }
}

/// c_r = bias_r + Σ_w (1 − z_rw)·a_w for every reader, `[readers, d]` (in f64, rounded once).
fn fold(lay: &EdgeLayout, gates: &[f32], values: Option<&HostTensor>, bias: &HostTensor) -> Result<HostTensor> {
    if gates.len() != lay.n_edges() {
        return Err(Error::Input(format!("{} edge gates for a model of {} edges", gates.len(), lay.n_edges())));
    }
    if let Some(&g) = gates.iter().find(|g| !g.is_finite()) {
        return Err(Error::Input(format!("an edge gate of {g}: gates must be finite")));
    }
    let d = bias.shape.last().copied().unwrap_or(0);
    let mut out = Vec::with_capacity(bias.data.len());
    let mut acc = vec![0f64; d];
    for r in 0..lay.readers.len() {
        acc.iter_mut().zip(&bias.data[r * d..(r + 1) * d]).for_each(|(a, &b)| *a = b as f64);
        if let Some(v) = values {
            for w in 0..lay.reads[r] {
                let off = 1.0 - gates[lay.first[r] + w] as f64;
                if off != 0.0 {
                    acc.iter_mut().zip(&v.data[w * d..(w + 1) * d]).for_each(|(a, &x)| *a += off * x as f64);
                }
            }
        }
        out.extend(acc.iter().map(|&x| x as f32));
    }
    Ok(HostTensor::new(bias.shape.clone(), out))
}

impl<B: Backend> Model<B> {
    /// A standalone edge model's logits at `rows` of `batch` (the model runs only whole).
    pub(crate) fn standalone_edge_logits(&self, be: &B, e: &EdgeModel<B::Tensor>, batch: &Batch, rows: &[u32]) -> Result<B::Tensor> {
        Ok(self.edge_forward_with(be, &e.weights, Some(&e.folded), batch, &e.gates, None, rows, false)?.logits)
    }
}
