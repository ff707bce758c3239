//! The edge forward (edge-prune): the residual stream kept apart as its writers' outputs, and each
//! reader's input mixed from them edge by edge (writers and readers: `mask::edges`):
//!
//! in_r = Σ_{w read by r} z_rw·h_w + (1 − z_rw)·a_w = Σ_w z_rw·(h_w − a_w) + Σ_w a_w
//!
//! with h_w the writer's output, a_w its ablation value (zero, a mean row, or a corrupted run's
//! rows) and z_rw the edge's gate. Each reader normalises its own input (a query head's, a KV
//! head's key and value inputs, the MLP's, the logits'), and each head projects its own input with
//! its slice of W_Q, W_K or W_V; a head's output is its z times its slice of W_O, plus b_O / H
//! (GPT-2's output bias split evenly over the heads), so that with every gate at 1 the writers sum
//! to the plain forward's residual stream. (So under zero ablation, cutting every edge out of a head
//! also removes its share of b_O, where ablating the head as a node keeps all of b_O; with mean
//! values the two agree.)
//!
//! The mixing is matrix products: writers come in groups (the embeddings; a layer's heads; a layer's
//! MLP), each group a stack `[n, rows·d]` of its h_w − a_w, and the readers of a layer take
//! `gates [readers, n] · stack` summed over the groups they read, plus the Σ a_w of those groups
//! (`[1, d]`, or one row per row), which `gated_sum` adds along each reader's rows as it writes
//! them. A call's gates on all its groups are one table, uploaded once (`GateTable`) and read in
//! place by the forward's products and by the backward's (`backend::Gates`). A layer's MLP reader
//! reads what its heads' readers read and then the heads' group, so it joins their product with
//! one more row of gates and adds the heads' group after (`AttnTape::fused`): each layer streams
//! the stacks once, in the forward and in the backward.
//!
//! A layer's heads run together, each on its own blocks (`Backend::matmul_blocks`): one product
//! takes every query head's reader's rows of the normalised inputs to that head's columns of q (one
//! for k, one for v), attention runs once over all the heads, and one product takes each head's
//! columns of z through its columns of W_O to its own rows of the heads' group's stack.

mod backward;
mod forward;
mod standalone;

pub use forward::EdgeTape;
pub use standalone::EdgeModel;

use crate::backend::Backend;
use crate::mask::EdgeLayout;
use crate::model::forward::Model;
use crate::model::ModelWeights;
use crate::{Error, HostTensor, Result};

/// What the edge forward adds to the model's own weights: b_O / H per layer (each head's share of
/// the output bias), and the model's writers, readers and edges.
pub struct EdgeWeights<T> {
    pub layout: EdgeLayout,
    /// b_O / H per layer (None without a bias, or without heads).
    pub(crate) bo: Vec<Option<T>>,
    /// A standalone edge model's folded constants, `[readers, d]`, added to each reader's input
    /// (`prune::edges`); None in a full model.
    pub(crate) reader_bias: Option<T>,
}

impl<T: Clone> EdgeWeights<T> {
    /// Uploads b_O / H per layer; the heads' projections read the model's own weights, a head's
    /// rows of W_Q, W_K, W_V (columns of W_O) its block for `matmul_blocks`.
    pub fn new<B: Backend<Tensor = T>>(be: &B, model: &Model<B>, w: &ModelWeights<HostTensor>) -> Result<EdgeWeights<T>> {
        if model.edges.is_some() {
            return Err(Error::Unsupported(
                "this is a standalone edge model: edge-prune and edge circuits run on the full model it was cut from".into(),
            ));
        }
        let (mut n_heads, mut n_kv, mut has_mlp, mut bos) = (vec![], vec![], vec![], vec![]);
        for (l, lw) in w.layers.iter().enumerate() {
            let d_ff = lw.w_up.shape[0];
            if d_ff == 0 && lw.b_down.is_some() || lw.n_heads == 0 && lw.bo.is_some() {
                return Err(Error::Unsupported(format!(
                    "edge-prune needs a model whose blocks are whole: layer {l} keeps a pruned block's folded bias"
                )));
            }
            n_heads.push(lw.n_heads);
            n_kv.push(lw.n_kv_heads);
            has_mlp.push(d_ff > 0);
            bos.push(match &lw.bo {
                Some(b) if lw.n_heads > 0 => {
                    let s = 1.0 / lw.n_heads as f32;
                    Some(be.upload(&HostTensor::new(b.shape.clone(), b.data.iter().map(|v| v * s).collect()))?)
                }
                _ => None,
            });
        }
        let layout = EdgeLayout::new(&n_heads, &n_kv, &has_mlp, w.wpe.is_some())?;
        Ok(EdgeWeights { layout, bo: bos, reader_bias: None })
    }

    /// With a constant added to each reader's input (`[readers, d]`).
    pub fn with_reader_bias<B: Backend<Tensor = T>>(mut self, be: &B, bias: &HostTensor, d: usize) -> Result<Self> {
        let want = vec![self.layout.readers.len(), d];
        if bias.shape != want {
            return Err(Error::Input(format!("reader biases of shape {:?} for an edge layout that needs {want:?}", bias.shape)));
        }
        self.reader_bias = Some(be.upload(bias)?);
        Ok(self)
    }
}

