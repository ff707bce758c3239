//! Attention: both products run on the tiled GEMM of matmul.wgsl, batched over (batch, head)
//! through its stride parameters, with grouped-query heads mapped by `h / (H / KVH)`.
//! attn_scores = GEMM q·kᵀ (tiles above the diagonal skipped) + in-place causal softmax.
//! attn_apply  = GEMM p·v, v read as a [K, N] operand.
//! attention   = attention_fused.wgsl: the two in one pass without the probabilities (heads of
//!               up to 128 dimensions, a multiple of 4; otherwise the two ops).

use super::matmul::MmParams;
use super::pipelines::{Gemm, Kernel, FUSED_MAX_HEAD_DIM};
use super::recorder::Binding;
use super::tensor::{shape_err, u32p, GpuTensor};
use super::WgpuBackend;
use crate::backend::AttnShape;
use crate::Result;

pub(super) fn check_shape(op: &str, s: &AttnShape) -> Result<()> {
    let ok = s.batch > 0
        && s.seq > 0
        && s.n_heads > 0
        && s.n_kv_heads > 0
        && s.head_dim > 0
        && s.n_heads.is_multiple_of(s.n_kv_heads);
    if !ok {
        return Err(shape_err(op, format!("invalid {s:?}: sizes must be positive and n_heads a multiple of n_kv_heads")));
    }
    Ok(())
}

pub(super) fn want(op: &str, name: &str, t: &GpuTensor, shape: [usize; 2], s: &AttnShape) -> Result<()> {
    if t.shape() != shape {
        return Err(shape_err(op, format!("`{name}` is {:?}, expected {shape:?} for {s:?}", t.shape())));
    }
    Ok(())
}

impl WgpuBackend {
    /// The tiled GEMM of variant `g` for an `[m, n]` product per (prompt, head), over `heads`
    /// heads, and its grid.
    pub(super) fn batch_gemm(&self, op: &str, s: &AttnShape, g: Gemm, heads: usize, n: usize, m: usize) -> Result<(Kernel, [u32; 3])> {
        let (kern, tile) = self.gemm(g, m, n, s.batch * heads);
        let max = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        let g = [n.div_ceil(tile), m.div_ceil(tile), s.batch * heads];
        if g.iter().any(|&v| v > max) {
            return Err(shape_err(op, format!("{s:?} needs {g:?} workgroups, over the adapter's {max} per dimension")));
        }
        Ok((kern, [g[0] as u32, g[1] as u32, g[2] as u32]))
    }

    pub(super) fn op_attn_scores(&self, q: &GpuTensor, k: &GpuTensor, s: AttnShape) -> Result<GpuTensor> {
        const OP: &str = "attn_scores";
        check_shape(OP, &s)?;
        let (b, t, h, kvh, d) = (s.batch, s.seq, s.n_heads, s.n_kv_heads, s.head_dim);
        want(OP, "q", q, [b * t, h * d], &s)?;
        want(OP, "k", k, [b * t, kvh * d], &s)?;
        let limit = self.limit();
        let (qb, kb) = (q.single(OP, "q", limit)?, k.single(OP, "k", limit)?);
        let out = self.output(OP, vec![b * h * t, t])?;
        let ob = out.single(OP, "out", limit)?;
        let u = |v: usize| u32p(OP, v);
        let p = MmParams {
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
        self.run_gemm(kern, ob, &[qb, kb, Binding::whole(&self.dummy, 16)], &p, groups)?;

        let rows = b * h * t;
        let (lanes, groups) = self.row_launch(rows, t)?;
        let params = [u(rows)?, u(t)?, s.scale.to_bits(), lanes];
        self.run(Kernel::CausalSoftmax, ob, &[], None, &params, groups)?;
        Ok(out)
    }

    pub(super) fn op_attn_apply(&self, probs: &GpuTensor, v: &GpuTensor, s: AttnShape) -> Result<GpuTensor> {
        const OP: &str = "attn_apply";
        check_shape(OP, &s)?;
        let (b, t, h, kvh, d) = (s.batch, s.seq, s.n_heads, s.n_kv_heads, s.head_dim);
        want(OP, "probs", probs, [b * h * t, t], &s)?;
        want(OP, "v", v, [b * t, kvh * d], &s)?;
        let limit = self.limit();
        let (pb, vb) = (probs.single(OP, "probs", limit)?, v.single(OP, "v", limit)?);
        let out = self.output(OP, vec![b * t, h * d])?;
        let ob = out.single(OP, "out", limit)?;
        let u = |v: usize| u32p(OP, v);
        // Row i of head (b, h): Σ_j p[i, j] · v[b·T + j, kvh·D + d]; v is the [K = T, N = D] operand.
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
        self.run_gemm(kern, ob, &[pb, vb, Binding::whole(&self.dummy, 16)], &p, groups)?;
        Ok(out)
    }

    pub(super) fn op_attention(&self, q: &GpuTensor, k: &GpuTensor, v: &GpuTensor, s: AttnShape) -> Result<GpuTensor> {
        const OP: &str = "attention";
        check_shape(OP, &s)?;
        if s.head_dim > FUSED_MAX_HEAD_DIM || !s.head_dim.is_multiple_of(4) {
            let p = self.op_attn_scores(q, k, s)?;
            return self.op_attn_apply(&p, v, s);
        }
        let (b, t, h, kvh, d) = (s.batch, s.seq, s.n_heads, s.n_kv_heads, s.head_dim);
        want(OP, "q", q, [b * t, h * d], &s)?;
        want(OP, "k", k, [b * t, kvh * d], &s)?;
        want(OP, "v", v, [b * t, kvh * d], &s)?;
        let limit = self.limit();
        let (qb, kb, vb) = (q.single(OP, "q", limit)?, k.single(OP, "k", limit)?, v.single(OP, "v", limit)?);
        let out = self.output(OP, vec![b * t, h * d])?;
        let ob = out.single(OP, "out", limit)?;
        let u = |v: usize| u32p(OP, v);
        let max = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        let groups = [t.div_ceil(64), b * h, 1];
        if groups.iter().any(|&g| g > max) {
            return Err(shape_err(OP, format!("{s:?} needs {groups:?} workgroups, over the adapter's {max} per dimension")));
        }
        let params = [u(t)?, u(h)?, u(h / kvh)?, u(kvh)?, s.scale.to_bits(), 0, 0, 0];
        let kern = Kernel::AttentionFused { head_dim: u(d)? };
        self.run(kern, ob, &[qb, kb, vb], None, &params, [groups[0] as u32, groups[1] as u32, 1])?;
        Ok(out)
    }
}
