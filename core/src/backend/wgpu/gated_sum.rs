//! `gated_sum`, the edge forward's mixing, on its own kernel (shaders/gated_sum.wgsl): one launch
//! per group of writers, the first writing the output and the rest adding to it, so each stack is
//! read once and no per-group product is written out and summed. The backward's dstacks
//! (`acc + gatesᵀ·dy`) is the same launch with the gradient so far as its base.

use super::pipelines::Kernel;
use crate::backend::gated_groups;
use super::recorder::Binding;
use super::tensor::{shape_err, u32p, GpuTensor};
use super::WgpuBackend;
use crate::Result;

/// Readers per invocation (`R` in the shader).
const READERS: usize = 16;

/// What a launch adds its product to.
pub(super) enum Base<'a> {
    /// Nothing: the launch writes the output.
    Zero,
    /// What the output holds (an earlier group's launch).
    Out,
    /// Another tensor of the output's shape (a gradient gathered so far).
    Tensor(&'a GpuTensor),
}

/// Checks the groups (`gated_groups`); returns (n, C).
pub(super) fn group_shapes(op: &str, gates: &[&GpuTensor], stacks: &[&GpuTensor], transposed: bool) -> Result<(usize, usize)> {
    let (gs, ss): (Vec<&[usize]>, Vec<&[usize]>) = (gates.iter().map(|t| t.shape()).collect(), stacks.iter().map(|t| t.shape()).collect());
    gated_groups(op, &gs, &ss, transposed)
}

impl WgpuBackend {
    /// `out [n, C] = Σ_g gates_g · stacks_g`.
    pub(super) fn op_gated_sum(&self, gates: &[&GpuTensor], stacks: &[&GpuTensor]) -> Result<GpuTensor> {
        const OP: &str = "gated_sum";
        let (n, c) = group_shapes(OP, gates, stacks, false)?;
        let out = self.output(OP, vec![n, c])?;
        let mut wrote = false;
        for (z, s) in gates.iter().zip(stacks) {
            let k = s.rows_cols().0;
            if k > 0 {
                self.gated_launch(OP, &out, z, s, if wrote { Base::Out } else { Base::Zero })?;
                wrote = true;
            }
        }
        if !wrote {
            self.zero_fill(OP, &out)?; // no rows: an empty sum
        }
        Ok(out)
    }

    /// One group's launch: `out [n, C] = base + z [n, k] · s [k, C]`.
    pub(super) fn gated_launch(&self, op: &str, out: &GpuTensor, z: &GpuTensor, s: &GpuTensor, base: Base<'_>) -> Result<()> {
        let (n, k) = z.rows_cols();
        let c = s.rows_cols().1;
        if n == 0 || c == 0 {
            return Ok(());
        }
        let u = |v: usize| u32p(op, v);
        u(n * c)?;
        u(k * c)?;
        u(n * k)?;
        let limit = self.limit();
        let dummy = Binding::whole(&self.dummy, 16);
        let (mode, bb) = match base {
            Base::Zero => (0, dummy),
            Base::Out => (1, dummy),
            Base::Tensor(t) => (2, t.single(op, "gradient so far", limit)?),
        };
        let inputs = [z.single(op, "gates", limit)?, s.single(op, "stack", limit)?, bb];
        let mut groups = self.ctx.grid(c.div_ceil(256) as u64)?;
        let blocks = n.div_ceil(READERS);
        if blocks > self.ctx.limits.max_compute_workgroups_per_dimension as usize {
            return Err(shape_err(op, format!("{n} readers need {blocks} workgroups in z, over this adapter's limit")));
        }
        groups[2] = blocks as u32;
        let params = [u(n)?, u(k)?, u(c)?, mode];
        self.run(Kernel::GatedSum, out.single(op, "out", limit)?, &inputs, None, &params, groups)
    }
}
