//! Attention backward. The four products run on the tiled GEMM batched over (prompt, head) as in
//! the forward (see attention.rs for the stride layout):
//!   dprobs = dout·vᵀ (tiles above the diagonal skipped, then the upper triangle zeroed),
//!   dv = pᵀ·dout and dk = dsᵀ·q (x read as [K, M]), one launch per query head of a kv group, the
//!   later ones accumulating: the sum over the query heads that share the kv head,
//!   dq = ds·k (k read as [K, N], as v in attn_apply),
//! with ds, the causal softmax's input gradient, from a row kernel.

use super::super::attention::{check_shape, want};
use super::super::matmul::MmParams;
use super::super::pipelines::{Gemm, Kernel};
use super::super::recorder::Binding;
use super::super::tensor::{u32p, GpuTensor};
use super::super::WgpuBackend;
use crate::backend::AttnShape;
use crate::Result;

impl WgpuBackend {
    /// `out [B·T, KVH·D]` row `b·T + j`, kv head `c`: `Σ_{h in c's group} Σ_i a[(b·H + h)·T + i, j] · y[b·T + i, h]`,
    /// with `a` a `[B·H·T, T]` causal matrix and `y` a `[B·T, H·D]` tensor: dk (a = ds, y = q) and
    /// dv (a = p, y = dout).
    fn attn_transposed_product(&self, op: &str, a: Binding<'_>, y: Binding<'_>, s: &AttnShape) -> Result<GpuTensor> {
        let (b, t, h, kvh, d) = (s.batch, s.seq, s.n_heads, s.n_kv_heads, s.head_dim);
        let g = h / kvh;
        let out = self.output(op, vec![b * t, kvh * d])?;
        let ob = out.single(op, "out", self.limit())?;
        let u = |v: usize| u32p(op, v);
        for gi in 0..g {
            // z = b·KVH + c; query head h = c·G + gi. M = T (j), K = T (i), N = D.
            let p = MmParams {
                m: u(t)?,
                n: u(d)?,
                k: u(t)?,
                heads: u(kvh)?,
                group: 1,
                x: [u(gi * t * t)?, u(t)?, u(h * t * t)?, u(g * t * t)?],
                w: [u(gi * d)?, u(h * d)?, u(t * h * d)?, u(g * d)?],
                o: [0, u(kvh * d)?, u(t * kvh * d)?, u(d)?],
                ..Default::default()
            };
            let variant = Gemm { w_kn: true, x_km: true, accumulate: gi > 0, ..Gemm::default() };
            let (kern, groups) = self.batch_gemm(op, s, variant, kvh, d, t)?;
            self.run_gemm(kern, ob, &[a, y, Binding::whole(&self.dummy, 16)], &p, groups)?;
        }
        Ok(out)
    }

    /// `ds_ij = p_ij·(dp_ij − Σ_j' p_ij'·dp_ij')·scale`, `dq_i = Σ_j ds_ij·k_j`, `dk_j = Σ_i ds_ij·q_i` (over the
    /// query heads of the kv head).
    pub(in crate::backend::wgpu) fn op_attn_scores_backward(&self, q: &GpuTensor, k: &GpuTensor, p: &GpuTensor,
        dp: &GpuTensor, s: AttnShape) -> Result<(GpuTensor, GpuTensor)> {
        const OP: &str = "attn_scores_backward";
        check_shape(OP, &s)?;
        let (b, t, h, kvh, d) = (s.batch, s.seq, s.n_heads, s.n_kv_heads, s.head_dim);
        want(OP, "q", q, [b * t, h * d], &s)?;
        want(OP, "k", k, [b * t, kvh * d], &s)?;
        want(OP, "probs", p, [b * h * t, t], &s)?;
        want(OP, "dprobs", dp, [b * h * t, t], &s)?;
        let limit = self.limit();
        let (qb, kb) = (q.single(OP, "q", limit)?, k.single(OP, "k", limit)?);
        let (pb, dpb) = (p.single(OP, "probs", limit)?, dp.single(OP, "dprobs", limit)?);
        let u = |v: usize| u32p(OP, v);

        let ds = self.output(OP, vec![b * h * t, t])?;
        let dsb = ds.single(OP, "ds", limit)?;
        let rows = b * h * t;
        let (lanes, groups) = self.row_launch(rows, t)?;
        self.run(Kernel::SoftmaxBackward, dsb, &[pb, dpb], None, &[u(rows)?, u(t)?, s.scale.to_bits(), lanes], groups)?;

        // dq: row i of head (b, h) is Σ_j ds[i, j]·k[b·T + j, kvh·D + ·]; k is the [K = T, N = D] operand.
        let dq = self.output(OP, vec![b * t, h * d])?;
        let p = MmParams {
            m: u(t)?,
            n: u(d)?,
            k: u(t)?,
            heads: u(h)?,
            group: u(h / kvh)?,
            x: [0, u(t)?, u(h * t * t)?, u(t * t)?],
            w: [0, u(kvh * d)?, u(t * kvh * d)?, u(d)?],
            o: [0, u(h * d)?, u(t * h * d)?, u(d)?],
            ..Default::default()
        };
        let (kern, groups) = self.batch_gemm(OP, &s, Gemm { w_kn: true, ..Gemm::default() }, h, d, t)?;
        self.run_gemm(kern, dq.single(OP, "dq", limit)?, &[dsb, kb, Binding::whole(&self.dummy, 16)], &p, groups)?;

        let dk = self.attn_transposed_product(OP, dsb, qb, &s)?;
        Ok((dq, dk))
    }

    /// `dp_ij = dout_i·v_j` for `j ≤ i`, else 0; `dv_j = Σ_i p_ij·dout_i` (over the query heads of the kv head).
    pub(in crate::backend::wgpu) fn op_attn_apply_backward(&self, p: &GpuTensor, v: &GpuTensor, dout: &GpuTensor,
        s: AttnShape) -> Result<(GpuTensor, GpuTensor)> {
        const OP: &str = "attn_apply_backward";
        check_shape(OP, &s)?;
        let (b, t, h, kvh, d) = (s.batch, s.seq, s.n_heads, s.n_kv_heads, s.head_dim);
        want(OP, "probs", p, [b * h * t, t], &s)?;
        want(OP, "v", v, [b * t, kvh * d], &s)?;
        want(OP, "dout", dout, [b * t, h * d], &s)?;
        let limit = self.limit();
        let (pb, vb, db) = (p.single(OP, "probs", limit)?, v.single(OP, "v", limit)?, dout.single(OP, "dout", limit)?);
        let u = |v: usize| u32p(OP, v);

        // dprobs [i, j] of head (b, h) = dout_i · v_j, as attn_scores' q·kᵀ.
        let dp = self.output(OP, vec![b * h * t, t])?;
        let dpb = dp.single(OP, "dprobs", limit)?;
        let mp = MmParams {
            m: u(t)?,
            n: u(t)?,
            k: u(d)?,
            heads: u(h)?,
            group: u(h / kvh)?,
            x: [0, u(h * d)?, u(t * h * d)?, u(d)?],
            w: [0, u(kvh * d)?, u(t * kvh * d)?, u(d)?],
            o: [0, u(t)?, u(h * t * t)?, u(t * t)?],
            ..Default::default()
        };
        let (kern, groups) = self.batch_gemm(OP, &s, Gemm { causal_skip: true, ..Gemm::default() }, h, t, t)?;
        self.run_gemm(kern, dpb, &[db, vb, Binding::whole(&self.dummy, 16)], &mp, groups)?;
        let n = dp.numel();
        self.run(Kernel::CausalZero, dpb, &[], None, &[u(n)?, u(t)?, 0, 0], self.groups_for(n)?)?;

        let dv = self.attn_transposed_product(OP, pb, db, &s)?;
        Ok((dp, dv))
    }
}
