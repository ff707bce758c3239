//! `gated_sum`, the edge forward's mixing, on its own kernel (shaders/gated_sum.wgsl): one launch
//! per group of writers, the first writing the output and the rest adding to it, so each stack is
//! read once and no per-group product is written out and summed. The backward's dstacks
//! (`acc + gatesᵀ·dy`) is the same launch with the gradient so far as its base.

use super::pipelines::Kernel;
use crate::backend::{check_base, gated_shapes, GatedShapes, Gates};
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
    /// A vector of L elements repeated along each row (L divides C): `base[c mod L]`.
    Repeated(&'a GpuTensor),
}

/// Checks the view against the stacks (`gated_shapes`).
pub(super) fn group_shapes(op: &str, gates: Gates<'_, GpuTensor>, stacks: &[&GpuTensor]) -> Result<GatedShapes> {
    let ss: Vec<&[usize]> = stacks.iter().map(|t| t.shape()).collect();
    gated_shapes(op, gates.table.numel(), gates.offset, gates.stride, gates.rows, &ss)
}

/// Where a launch reads its `z [n, k]`: element (i, j) at `table[offset + i·row + j·col]` (the
/// forward's gates: `col` 1; their transpose for the backward's dstacks: `row` 1).
pub(super) struct ZView<'a> {
    pub table: &'a GpuTensor,
    pub offset: usize,
    pub row: usize,
    pub col: usize,
    pub n: usize,
    pub k: usize,
}

impl WgpuBackend {
    /// `out [n, C] = Σ_g Z_g · stacks_g (+ base repeated along each row)`.
    pub(super) fn op_gated_sum(&self, gates: Gates<'_, GpuTensor>, stacks: &[&GpuTensor], base: Option<&GpuTensor>)
        -> Result<GpuTensor> {
        const OP: &str = "gated_sum";
        let sh = group_shapes(OP, gates, stacks)?;
        if let Some(b) = base {
            check_base(OP, b.numel(), sh.c)?;
        }
        let out = self.output(OP, vec![sh.n, sh.c])?;
        let mut wrote = false;
        for ((s, &k), &at) in stacks.iter().zip(&sh.ks).zip(&sh.starts) {
            // The first launch writes (with the base, even of an empty group); the rest add.
            if k > 0 || (!wrote && base.is_some()) {
                let z = ZView { table: gates.table, offset: gates.offset + at, row: gates.stride, col: 1, n: sh.n, k };
                let first = match base {
                    Some(b) => Base::Repeated(b),
                    None => Base::Zero,
                };
                self.gated_launch(OP, &out, &z, s, if wrote { Base::Out } else { first })?;
                wrote = true;
            }
        }
        if !wrote {
            self.zero_fill(OP, &out)?; // no rows: an empty sum
        }
        Ok(out)
    }

    /// One group's launch: `out [n, C] = base + z [n, k] · s [k, C]`.
    pub(super) fn gated_launch(&self, op: &str, out: &GpuTensor, z: &ZView<'_>, s: &GpuTensor, base: Base<'_>) -> Result<()> {
        let (n, k) = (z.n, z.k);
        let c = s.rows_cols().1;
        if n == 0 || c == 0 {
            return Ok(());
        }
        let u = |v: usize| u32p(op, v);
        u(n * c)?;
        u(k * c)?;
        u(z.table.numel())?;
        let limit = self.limit();
        let dummy = Binding::whole(&self.dummy, 16);
        let (mode, bb, blen) = match base {
            Base::Zero => (0, dummy, 0),
            Base::Out => (1, dummy, 0),
            Base::Tensor(t) => (2, t.single(op, "gradient so far", limit)?, 0),
            Base::Repeated(t) => (3, t.single(op, "base", limit)?, u(t.numel())?),
        };
        // An empty group (only launched to write the base) binds nothing of its own.
        let (zb, sb) = if k == 0 { (dummy, dummy) } else { (z.table.single(op, "gates", limit)?, s.single(op, "stack", limit)?) };
        let inputs = [zb, sb, bb];
        let mut groups = self.ctx.grid(c.div_ceil(256) as u64)?;
        let blocks = n.div_ceil(READERS);
        if blocks > self.ctx.limits.max_compute_workgroups_per_dimension as usize {
            return Err(shape_err(op, format!("{n} readers need {blocks} workgroups in z, over this adapter's limit")));
        }
        groups[2] = blocks as u32;
        let params = [u(n)?, u(k)?, u(c)?, mode, u(z.offset)?, u(z.row)?, u(z.col)?, blen];
        self.run(Kernel::GatedSum, out.single(op, "out", limit)?, &inputs, None, &params, groups)
    }
}
