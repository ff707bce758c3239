//! `gated_sum_backward`: per group, the gates' gradient `dy · stacksᵀ` as a reduction over the
//! columns split across workgroups (shaders/gated_sum_dgates.wgsl), where a GEMM would give the
//! whole long sum to the one workgroup of its small output, written into the group's columns of
//! one `dgates` for all groups (one tensor to read back); and the stacks' gradient
//! `acc + gatesᵀ · dy` on the forward's kernel with the gradient so far as its base, reading the
//! forward's gates transposed where they lie. Every gate's gradient is computed, sampled or not.

use super::super::gated_sum::{group_shapes, Base, ZView};
use super::super::pipelines::Kernel;
use super::super::tensor::{shape_err, u32p, GpuTensor};
use super::super::WgpuBackend;
use crate::backend::Gates;
use crate::Result;

/// Columns per workgroup of the gates' gradient, and the most chunks one sum gathers.
const CHUNK: usize = 4096;
const MAX_PARTS: usize = 256;

impl WgpuBackend {
    #[allow(clippy::type_complexity)]
    pub(in crate::backend::wgpu) fn op_gated_sum_backward(&self, gates: Gates<'_, GpuTensor>, stacks: &[&GpuTensor], dy: &GpuTensor,
        acc: Vec<Option<GpuTensor>>) -> Result<(GpuTensor, Vec<GpuTensor>)> {
        const OP: &str = "gated_sum_backward";
        if acc.len() != stacks.len() {
            return Err(shape_err(OP, format!("{} gradients so far for {} stacks", acc.len(), stacks.len())));
        }
        let sh = group_shapes(OP, gates, stacks)?;
        let (n, c) = (sh.n, sh.c);
        if dy.rows_cols() != (n, c) {
            return Err(shape_err(OP, format!("dy {:?} must be [{n}, {c}] for these gates and stacks", dy.shape())));
        }
        let dz = self.output(OP, vec![n, sh.width()])?;
        if c == 0 {
            self.zero_fill(OP, &dz)?; // empty sums
        }
        let mut ds = Vec::with_capacity(stacks.len());
        for (((s, a), &k), &at) in stacks.iter().zip(acc).zip(&sh.ks).zip(&sh.starts) {
            if let Some(a) = &a {
                if a.shape() != s.shape() {
                    return Err(shape_err(OP, format!("a gradient so far {:?} for a stack {:?}", a.shape(), s.shape())));
                }
            }
            self.dgates(OP, &dz, at, dy, s)?;
            let d = self.output(OP, vec![k, c])?;
            // Zᵀ: the same table with its strides swapped.
            let zt = ZView { table: gates.table, offset: gates.offset + at, row: 1, col: gates.stride, n: k, k: n };
            self.gated_launch(OP, &d, &zt, dy, a.as_ref().map_or(Base::Zero, Base::Tensor))?;
            ds.push(d);
        }
        Ok((dz, ds))
    }

    /// Columns `at..at + k` of `dz [n, K]` = `dy [n, C] · s [k, C]ᵀ`: partial sums per chunk of
    /// columns, then their sum.
    fn dgates(&self, op: &str, dz: &GpuTensor, at: usize, dy: &GpuTensor, s: &GpuTensor) -> Result<()> {
        let (n, width) = dz.rows_cols();
        let (k, c) = s.rows_cols();
        if n == 0 || k == 0 || c == 0 {
            return Ok(());
        }
        let u = |v: usize| u32p(op, v);
        u(n * c)?;
        u(k * c)?;
        u(n * width)?;
        let parts = c.div_ceil(CHUNK).min(MAX_PARTS);
        let chunk = c.div_ceil(parts);
        let part = self.output(op, vec![parts, n, k])?;
        let limit = self.limit();
        let (dyb, sb) = (dy.single(op, "dy", limit)?, s.single(op, "stack", limit)?);
        let pb = part.single(op, "partial sums", limit)?;
        let tiles_k = k.div_ceil(4);
        let tiles = n.div_ceil(4) * tiles_k;
        let max = self.ctx.limits.max_compute_workgroups_per_dimension.max(1) as usize;
        for t0 in (0..tiles).step_by(max) {
            let tt = max.min(tiles - t0);
            let params = [u(n)?, u(k)?, u(c)?, u(chunk)?, u(tiles_k)?, u(t0)?, u(parts)?, 0, 0, 0, 0, 0];
            self.run(Kernel::DgatesPart, pb, &[dyb, sb], None, &params, [parts as u32, tt as u32, 1])?;
        }
        let params = [u(n)?, u(k)?, u(c)?, u(chunk)?, u(tiles_k)?, 0, u(parts)?, u(at)?, u(width)?, 0, 0, 0];
        self.run(Kernel::DgatesSum, dz.single(op, "dgates", limit)?, &[pb], None, &params, self.groups_for(n * k)?)
    }
}
