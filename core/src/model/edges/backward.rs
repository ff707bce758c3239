//! The edge forward read bottom-up: from the logits' gradient to every edge gate's. A reader's
//! input is `Σ_g gates_g · stack_g`, so its gradient `dx` gives the gates' `dx · stack_gᵀ` and
//! the stacks' `gates_gᵀ · dx`; a stack's rows are its writers' h_w − a_w, whose gradient flows
//! back through the writer (a head, an MLP) to the readers below it.

use super::forward::{GateTable, Group};
use super::{EdgeTape, EdgeWeights};
use crate::backend::{Backend, BlockProduct, Blocks};
use crate::model::batch::Batch;
use crate::model::forward::Model;
use crate::model::Arch;
use crate::{Error, HostTensor, Result};
use std::ops::Range;

/// Gradients gathered on the way down: each group's stack, and the gate blocks to read back.
struct Grads<T> {
    stacks: Vec<Option<T>>,
    /// (first reader, readers, groups, `dgates [readers, the groups' writers]`).
    blocks: Vec<(usize, usize, Range<usize>, T)>,
    /// The gates are hard-concrete samples (see `Model::edge_backward`).
    sampled: bool,
}

impl<T: Clone> Grads<T> {
    /// Rows `i0..i0 + n` of gate table `t` (readers `t.r0 + i0..`) with input gradient
    /// `dx [n, rows·d]`, on groups `gs` of those the table holds.
    fn reader<B: Backend<Tensor = T>>(&mut self, be: &B, groups: &[Group<T>], t: &GateTable<T>, i0: usize, gs: Range<usize>,
        dx: &T) -> Result<()> {
        let n = be.shape(dx)[0];
        let stacks: Vec<&T> = groups[gs.clone()].iter().map(|g| &g.stack).collect();
        let acc: Vec<Option<T>> = gs.clone().map(|gi| self.stacks[gi].take()).collect();
        let (dz, ds) = be.gated_sum_backward(t.view(i0, n, gs.start), &stacks, dx, acc, self.sampled)?;
        for (gi, ds) in gs.clone().zip(ds) {
            self.stacks[gi] = Some(ds);
        }
        self.blocks.push((t.r0 + i0, n, gs, dz));
        Ok(())
    }

    /// The gradient of group `gi`'s writers stacked as rows, `[n·rows, d]` (the group's last use).
    fn take<B: Backend<Tensor = T>>(&mut self, be: &B, gi: usize, rows: usize, d: usize) -> Result<T> {
        let s = self.stacks[gi].take().ok_or_else(|| Error::Backend("edge backward: a writer no reader reads".into()))?;
        be.reshape(s, vec![rows, d])
    }
}

impl<B: Backend> Model<B> {
    /// The gradient of a loss with respect to every edge gate (in the layout's order) at the gates
    /// the tape's forward ran with, given `dlogits`, its gradient with respect to `tape.logits`;
    /// `also` is read back in the same read. With `sampled` those gates are hard-concrete
    /// samples, whose gradient is only needed where they are strictly between 0 and 1 (elsewhere
    /// the sample has none): there it may be 0.
    #[allow(clippy::too_many_arguments)]
    pub async fn edge_backward(&self, be: &B, ew: &EdgeWeights<B::Tensor>, batch: &Batch, tape: EdgeTape<B::Tensor>,
        sampled: bool, dlogits: &B::Tensor, also: &[&B::Tensor]) -> Result<(Vec<f32>, Vec<HostTensor>)> {
        let lay = &ew.layout;
        let (c, w) = (&self.config, &self.weights);
        let (pack, d) = (&tape.pack, be.shape(&w.wte)[1]);
        // Rows of the residual stream's parts, as in the forward.
        let n_rows = pack.len();
        let asked = tape.asked.as_ref().map_or(tape.at.len(), Vec::len);
        if be.shape(dlogits) != [asked, c.vocab] {
            return Err(Error::Input(format!("logit gradient {:?} for {asked} rows of {} logits", be.shape(dlogits), c.vocab)));
        }
        let groups = &tape.groups;
        let mut g = Grads { stacks: (0..groups.len()).map(|_| None).collect(), blocks: Vec::new(), sampled };
        let flat = |t: B::Tensor, n: usize| be.reshape(t, vec![n, n_rows * d]);

        // The logits reader: logits = norm_f(x[rows])·W_U (padding rows left out hold zeros).
        let dlogits = match &tape.asked {
            Some(places) => &be.gather_rows(dlogits, places)?,
            None => dlogits,
        };
        let dhf = be.matmul_backward(dlogits, w.lm_head.as_ref().unwrap_or(&w.wte))?;
        let dlast = self.norm_bwd(be, &tape.last, &w.ln_f_w, &dhf)?;
        let dx = be.scatter_rows(&dlast, &tape.at, n_rows)?;
        let t = &tape.logits_gates;
        g.reader(be, groups, t, 0, 0..t.n_groups(), &flat(dx, 1)?)?;

        // A fused MLP reader's input gradient, mixed back with its layer's heads' readers'.
        let mut mlp_dx: Option<B::Tensor> = None;
        for l in (0..w.layers.len()).rev() {
            let lw = &w.layers[l];
            let fused = tape.attn[l].as_ref().filter(|t| t.fused);
            // MLP, bottom-up: out = act(norm2(x)·W_up)·W_down.
            if let Some(t) = &tape.mlp[l] {
                let dout = g.take(be, t.group, n_rows, d)?;
                let dact = be.matmul_backward(&dout, &lw.w_down)?;
                let dh2 = match (&t.gate, &lw.w_gate) {
                    (Some(gate), Some(wg)) => {
                        let (dgate, dup) = be.silu_mul_backward(gate, &t.up, &dact)?;
                        be.add(&be.matmul_backward(&dup, &lw.w_up)?, &be.matmul_backward(&dgate, wg)?)?
                    }
                    _ => be.matmul_backward(&be.gelu_new_backward(&t.up, &dact)?, &lw.w_up)?,
                };
                let dx = flat(self.norm_bwd(be, &t.x, &lw.ln2_w, &dh2)?, 1)?;
                match (fused, &t.gates) {
                    // The heads' group now (the last row of the heads' readers' table); the groups
                    // before it with the heads' readers.
                    (Some(a), _) => {
                        g.reader(be, groups, &a.gates, t.r - a.r0, a.group..a.group + 1, &dx)?;
                        mlp_dx = Some(dx);
                    }
                    (None, Some(own)) => g.reader(be, groups, own, 0, 0..own.n_groups(), &dx)?,
                    (None, None) => return Err(Error::Backend(format!("edge backward: layer {l}'s MLP reader has no gates"))),
                }
            }
            // Heads, bottom-up: o_h = attention(q_h, k_g, v_g)·W_O_hᵀ, every head in one product.
            if let Some(t) = &tape.attn[l] {
                let (nq, nkv, hd) = (lw.n_heads, lw.n_kv_heads, c.head_dim);
                // The heads' outputs' gradients, stacked as the group's rows: to z's columns.
                let dout = g.take(be, t.group, nq * n_rows, d)?;
                let o = BlockProduct { n: nq, m: n_rows, k: d, cols: hd, x: Blocks::Rows, x_first: 0, w: Blocks::Cols, w_kn: true, out: Blocks::Cols };
                let dz = pack.scatter(be, &be.matmul_blocks(&dout, &lw.wo, None, &o)?)?;
                let (dp, dv) = be.attn_apply_backward(&t.p, &t.v, &dz, t.s)?;
                let (dq, dk) = be.attn_scores_backward(&t.q, &t.k, &t.p, &dp, t.s)?;
                // The forward's `rope`, read the other way: to the packed rows of q or k.
                let rope_bwd = |dt: B::Tensor, heads: usize| -> Result<B::Tensor> {
                    let dt = match c.arch {
                        Arch::Llama => be.rope_backward(&dt, batch.seq, heads, hd, c.rope_theta)?,
                        Arch::Gpt2 => dt,
                    };
                    pack.gather(be, &dt)
                };
                // Each head's columns back to its own reader's rows: `[heads·rows, d]`.
                let to_inputs = |dt: B::Tensor, heads: usize, wt: &B::Tensor| {
                    let p = BlockProduct { n: heads, m: n_rows, k: hd, cols: d, x: Blocks::Cols, x_first: 0, w: Blocks::Rows, w_kn: true,
                        out: Blocks::Rows };
                    be.matmul_blocks(&dt, wt, None, &p)
                };
                let dins = [
                    to_inputs(rope_bwd(dq, nq)?, nq, &lw.wq)?,
                    to_inputs(rope_bwd(dk, nkv)?, nkv, &lw.wk)?,
                    to_inputs(pack.gather(be, &dv)?, nkv, &lw.wv)?,
                ];
                let n = nq + 2 * nkv;
                let dh = be.concat(&dins.iter().collect::<Vec<_>>(), vec![n * n_rows, d])?;
                let dx = self.norm_bwd(be, &t.x, &lw.ln1_w, &dh)?;
                let dx = match mlp_dx.take() {
                    Some(m) => be.concat(&[&dx, &m], vec![n + 1, n_rows * d])?,
                    None => flat(dx, n)?,
                };
                // The groups before the heads' (a fused MLP reader's table also holds theirs).
                let read = t.gates.n_groups() - t.fused as usize;
                g.reader(be, groups, &t.gates, 0, 0..read, &dx)?;
            }
        }

        // Every gate block in one read, with whatever the caller asked for.
        let refs: Vec<&B::Tensor> = g.blocks.iter().map(|b| &b.3).chain(also.iter().copied()).collect();
        let host = be.read_many(&refs).await?;
        let mut grad = vec![0.0f32; lay.n_edges()];
        for ((r0, n, gs, _), h) in g.blocks.iter().zip(&host) {
            let width: usize = groups[gs.clone()].iter().map(|g| g.n).sum();
            let mut c0 = 0;
            for grp in &groups[gs.clone()] {
                for i in 0..*n {
                    let at = lay.first[r0 + i] + grp.first;
                    grad[at..at + grp.n].copy_from_slice(&h.data[i * width + c0..i * width + c0 + grp.n]);
                }
                c0 += grp.n;
            }
        }
        let rest = host[g.blocks.len()..].to_vec();
        Ok((grad, rest))
    }
}
