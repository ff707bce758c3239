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

/// Per-head slices of the attention weights, and the model's writers, readers and edges.
pub struct EdgeWeights<T> {
    pub layout: EdgeLayout,
    pub(crate) layers: Vec<EdgeLayer<T>>,
    /// A standalone edge model's folded constants, `[readers, d]`, added to each reader's input
    /// (`prune::edges`); None in a full model.
    pub(crate) reader_bias: Option<T>,
}

/// One layer's attention weights by head: W_Q, b_Q per query head, W_K, b_K, W_V, b_V per KV
/// head, W_O per query head (`[d, head_dim]`), and b_O / H.
pub(crate) struct EdgeLayer<T> {
    pub(crate) wq: Vec<T>,
    pub(crate) bq: Vec<Option<T>>,
    pub(crate) wk: Vec<T>,
    pub(crate) bk: Vec<Option<T>>,
    pub(crate) wv: Vec<T>,
    pub(crate) bv: Vec<Option<T>>,
    pub(crate) wo: Vec<T>,
    pub(crate) bo: Option<T>,
}

/// Rows `[r0, r1)` of a matrix (a bias is a matrix of one row here).
fn rows_of(t: &HostTensor, r0: usize, r1: usize) -> HostTensor {
    let (_, c) = t.rows_cols();
    HostTensor::new(vec![r1 - r0, c], t.data[r0 * c..r1 * c].to_vec())
}

/// Elements `[c0, c1)` of a vector, as a vector.
fn slice_of(t: &HostTensor, c0: usize, c1: usize) -> HostTensor {
    HostTensor::new(vec![c1 - c0], t.data[c0..c1].to_vec())
}

/// Columns `[c0, c1)` of a matrix.
fn cols_of(t: &HostTensor, c0: usize, c1: usize) -> HostTensor {
    let (r, c) = t.rows_cols();
    let data = (0..r).flat_map(|i| t.data[i * c + c0..i * c + c1].iter().copied()).collect();
    HostTensor::new(vec![r, c1 - c0], data)
}

impl<T: Clone> EdgeWeights<T> {
    /// Slices `w` by head and uploads the slices (the model's own weights stay as they are).
    pub fn new<B: Backend<Tensor = T>>(be: &B, model: &Model<B>, w: &ModelWeights<HostTensor>) -> Result<EdgeWeights<T>> {
        if model.edges.is_some() {
            return Err(Error::Unsupported(
                "this is a standalone edge model: edge-prune and edge circuits run on the full model it was cut from".into(),
            ));
        }
        let c = &model.config;
        let hd = c.head_dim;
        let (mut n_heads, mut n_kv, mut has_mlp, mut layers) = (vec![], vec![], vec![], vec![]);
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
            let up = |t: HostTensor| be.upload(&t);
            let by = |m: &HostTensor, b: &Option<HostTensor>, n: usize| -> Result<(Vec<T>, Vec<Option<T>>)> {
                let ws = (0..n).map(|h| up(rows_of(m, h * hd, (h + 1) * hd))).collect::<Result<_>>()?;
                let bs = (0..n).map(|h| b.as_ref().map(|b| up(slice_of(b, h * hd, (h + 1) * hd))).transpose()).collect::<Result<_>>()?;
                Ok((ws, bs))
            };
            let (wq, bq) = by(&lw.wq, &lw.bq, lw.n_heads)?;
            let (wk, bk) = by(&lw.wk, &lw.bk, lw.n_kv_heads)?;
            let (wv, bv) = by(&lw.wv, &lw.bv, lw.n_kv_heads)?;
            let wo = (0..lw.n_heads).map(|h| up(cols_of(&lw.wo, h * hd, (h + 1) * hd))).collect::<Result<_>>()?;
            let bo = match &lw.bo {
                Some(b) if lw.n_heads > 0 => {
                    let s = 1.0 / lw.n_heads as f32;
                    Some(up(HostTensor::new(b.shape.clone(), b.data.iter().map(|v| v * s).collect()))?)
                }
                _ => None,
            };
            layers.push(EdgeLayer { wq, bq, wk, bk, wv, bv, wo, bo });
        }
        let layout = EdgeLayout::new(&n_heads, &n_kv, &has_mlp, w.wpe.is_some())?;
        Ok(EdgeWeights { layout, layers, reader_bias: None })
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

