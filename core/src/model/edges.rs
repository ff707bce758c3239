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
//! to the plain forward's residual stream.
//!
//! The mixing is matrix products: writers come in groups (the embeddings; a layer's heads; a layer's
//! MLP), each group a stack `[n, rows·d]` of its h_w − a_w plus one row of its Σ a_w, and the
//! readers of a layer take `gates [readers, n + 1] · stack` summed over the groups they read.

use crate::backend::{AttnShape, Backend, RowMap};
use crate::mask::{EdgeLayout, Reader};
use crate::model::batch::Batch;
use crate::model::forward::Model;
use crate::model::{Arch, ModelWeights};
use crate::{Error, HostTensor, Result};

/// Per-head slices of the attention weights, and the model's writers, readers and edges.
pub struct EdgeWeights<T> {
    pub layout: EdgeLayout,
    layers: Vec<EdgeLayer<T>>,
}

/// One layer's attention weights by head: W_Q, b_Q per query head, W_K, b_K, W_V, b_V per KV
/// head, W_O per query head (`[d, head_dim]`), and b_O / H.
struct EdgeLayer<T> {
    wq: Vec<T>,
    bq: Vec<Option<T>>,
    wk: Vec<T>,
    bk: Vec<Option<T>>,
    wv: Vec<T>,
    bv: Vec<Option<T>>,
    wo: Vec<T>,
    bo: Option<T>,
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
        Ok(EdgeWeights { layout, layers })
    }
}

/// What an edge forward returns: the logits at the rows asked for, and with `capture` every
/// writer's output `[rows, d]` in writer order (for measuring means).
pub struct EdgeOut<T> {
    pub logits: T,
    pub writers: Vec<T>,
}

/// A group of consecutive writers: `stack [n (+ 1), rows·d]` of h_w − a_w (and Σ a_w).
struct Group<T> {
    first: usize,
    n: usize,
    stack: T,
    has_sum: bool,
}

/// Constants made once per forward.
struct Consts<T> {
    /// `[1, d]` of 0 and of −1, as masks and values for `mix`.
    zero: T,
    minus: T,
}

impl<B: Backend> Model<B> {
    /// The edge forward of `batch` with one gate per edge (`gates[i]` for edge i of
    /// `ew.layout`), ablation values per writer (`[1, d]` or `[rows, d]`; None: zero), logits at
    /// `rows` of the batch.
    #[allow(clippy::too_many_arguments)]
    pub fn edge_forward(&self, be: &B, ew: &EdgeWeights<B::Tensor>, batch: &Batch, gates: &[f32], values: Option<&[B::Tensor]>,
        rows: &[u32], capture: bool) -> Result<EdgeOut<B::Tensor>> {
        let lay = &ew.layout;
        let c = &self.config;
        let w = &self.weights;
        if gates.len() != lay.n_edges() {
            return Err(Error::Input(format!("{} edge gates for a model of {} edges", gates.len(), lay.n_edges())));
        }
        if let Some(v) = values {
            if v.len() != lay.writers.len() {
                return Err(Error::Input(format!("{} ablation values for {} writers", v.len(), lay.writers.len())));
            }
        }
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= batch.rows()) {
            return Err(Error::Input(format!("row {r} is past the batch's {} rows", batch.rows())));
        }
        let (n_rows, d) = (batch.rows(), be.shape(&w.wte)[1]);
        let k = Consts {
            zero: be.upload(&HostTensor::zeros(vec![1, d]))?,
            minus: be.upload(&HostTensor::new(vec![1, d], vec![-1.0; d]))?,
        };
        let value = |i: usize| values.map(|v| &v[i]);
        let mut groups: Vec<Group<B::Tensor>> = Vec::new();
        let mut captured = Vec::new();

        // The embeddings: one group of emb (and pos).
        let mut emb = vec![be.gather_rows(&w.wte, &batch.ids)?];
        if let Some(wpe) = &w.wpe {
            emb.push(be.gather_rows(wpe, &batch.positions())?);
        }
        groups.push(self.group(be, &k, 0, &emb, value, n_rows, d)?);
        if capture {
            captured.extend(emb);
        }

        let mut reader = 0;
        for (l, el) in ew.layers.iter().enumerate() {
            let lw = &w.layers[l];
            let (nq, nkv) = (lw.n_heads, lw.n_kv_heads);
            if nq > 0 {
                // The layer's q, k and v readers: each normalises its own input.
                let n = nq + 2 * nkv;
                let x = self.reader_inputs(be, lay, &groups, gates, reader, n, n_rows, d)?;
                let h = self.norm_fwd(be, &x, &lw.ln1_w, lw.ln1_b.as_ref())?;
                let input = |i: usize| -> Result<B::Tensor> {
                    let ids: Vec<u32> = (i * n_rows..(i + 1) * n_rows).map(|r| r as u32).collect();
                    be.gather_rows(&h, &ids)
                };
                let s = AttnShape {
                    batch: batch.size(),
                    seq: batch.seq,
                    n_heads: 1,
                    n_kv_heads: 1,
                    head_dim: c.head_dim,
                    scale: 1.0 / (c.head_dim as f32).sqrt(),
                };
                let rope = |t: B::Tensor| -> Result<B::Tensor> {
                    match c.arch {
                        Arch::Llama => be.rope(&t, batch.seq, 1, c.head_dim, c.rope_theta),
                        Arch::Gpt2 => Ok(t),
                    }
                };
                let mut keys = Vec::with_capacity(nkv);
                let mut vals = Vec::with_capacity(nkv);
                for g in 0..nkv {
                    keys.push(rope(be.matmul(&input(nq + g)?, &el.wk[g], el.bk[g].as_ref())?)?);
                    vals.push(be.matmul(&input(nq + nkv + g)?, &el.wv[g], el.bv[g].as_ref())?);
                }
                let mut outs = Vec::with_capacity(nq);
                for hq in 0..nq {
                    let q = rope(be.matmul(&input(hq)?, &el.wq[hq], el.bq[hq].as_ref())?)?;
                    let g = hq / (nq / nkv.max(1)).max(1);
                    let p = be.attn_scores(&q, &keys[g], s)?;
                    let z = be.attn_apply(&p, &vals[g], s)?;
                    outs.push(be.matmul(&z, &el.wo[hq], el.bo.as_ref())?);
                }
                let first = groups.last().map_or(0, |g| g.first + g.n);
                groups.push(self.group(be, &k, first, &outs, value, n_rows, d)?);
                if capture {
                    captured.extend(outs);
                }
                reader += n;
            }
            if lay.readers.get(reader) == Some(&Reader::Mlp { layer: l }) {
                let x = self.reader_inputs(be, lay, &groups, gates, reader, 1, n_rows, d)?;
                let h2 = self.norm_fwd(be, &x, &lw.ln2_w, lw.ln2_b.as_ref())?;
                let up = be.matmul(&h2, &lw.w_up, lw.b_up.as_ref())?;
                let act = match &lw.w_gate {
                    Some(g) => be.silu_mul(&be.matmul(&h2, g, None)?, &up)?,
                    None => be.gelu_new(&up)?,
                };
                let out = be.matmul(&act, &lw.w_down, lw.b_down.as_ref())?;
                let first = groups.last().map_or(0, |g| g.first + g.n);
                groups.push(self.group(be, &k, first, std::slice::from_ref(&out), value, n_rows, d)?);
                if capture {
                    captured.push(out);
                }
                reader += 1;
            }
        }
        debug_assert_eq!(lay.readers[reader], Reader::Logits);
        let x = self.reader_inputs(be, lay, &groups, gates, reader, 1, n_rows, d)?;
        let last = be.gather_rows(&x, rows)?;
        let hf = self.norm_fwd(be, &last, &w.ln_f_w, w.ln_f_b.as_ref())?;
        let logits = be.matmul(&hf, w.lm_head.as_ref().unwrap_or(&w.wte), None)?;
        Ok(EdgeOut { logits, writers: captured })
    }

    /// The group of writers `first..first + outs.len()`: their h_w − a_w stacked as rows, and a
    /// last row of Σ a_w when there are values.
    #[allow(clippy::too_many_arguments)]
    fn group<'a>(&self, be: &B, k: &Consts<B::Tensor>, first: usize, outs: &[B::Tensor],
        value: impl Fn(usize) -> Option<&'a B::Tensor>, n_rows: usize, d: usize) -> Result<Group<B::Tensor>>
    where
        B::Tensor: 'a,
    {
        let n = outs.len();
        let mut rows: Vec<B::Tensor> = Vec::with_capacity(n + 1);
        let mut sum: Option<B::Tensor> = None;
        for (i, h) in outs.iter().enumerate() {
            match value(first + i) {
                None => rows.push(h.clone()),
                Some(a) => {
                    // −a on every row (a row of values broadcast, or a corrupted run's rows).
                    let minus_a = be.mix(a, &k.minus, RowMap::SHARED, &k.zero, RowMap::SHARED)?;
                    let minus_a = be.mix(h, &k.zero, RowMap::SHARED, &minus_a, RowMap::SHARED)?;
                    rows.push(be.add(h, &minus_a)?);
                    let a_rows = be.mix(h, &k.zero, RowMap::SHARED, a, RowMap::SHARED)?;
                    sum = Some(match sum {
                        None => a_rows,
                        Some(s) => be.add(&s, &a_rows)?,
                    });
                }
            }
        }
        let has_sum = sum.is_some();
        rows.extend(sum);
        let refs: Vec<&B::Tensor> = rows.iter().collect();
        let stack = be.concat(&refs, vec![rows.len(), n_rows * d])?;
        Ok(Group { first, n, stack, has_sum })
    }

    /// The inputs of readers `r0..r0 + n` (which read the same writers), `[n·rows, d]`: the
    /// products of their gates with every group they read, summed.
    #[allow(clippy::too_many_arguments)]
    fn reader_inputs(&self, be: &B, lay: &EdgeLayout, groups: &[Group<B::Tensor>], gates: &[f32], r0: usize, n: usize,
        n_rows: usize, d: usize) -> Result<B::Tensor> {
        let reads = lay.reads[r0];
        let mut x: Option<B::Tensor> = None;
        for g in groups.iter().filter(|g| g.first + g.n <= reads) {
            let cols = g.n + g.has_sum as usize;
            let mut z = Vec::with_capacity(n * cols);
            for r in r0..r0 + n {
                let at = lay.first[r] + g.first;
                z.extend_from_slice(&gates[at..at + g.n]);
                if g.has_sum {
                    z.push(1.0);
                }
            }
            let z = be.upload(&HostTensor::new(vec![n, cols], z))?;
            let part = be.matmul_backward(&z, &g.stack)?;
            x = Some(match x {
                None => part,
                Some(x) => be.add(&x, &part)?,
            });
        }
        let x = x.ok_or_else(|| Error::Input(format!("reader {} reads no writer", lay.readers[r0])))?;
        be.concat(&[&x], vec![n * n_rows, d])
    }
}
