//! Elementwise backward ops (one thread per element): gelu_new, silu_mul, rope (the forward's
//! kernel turning the other way), and the masked mix with its mask gradient (one thread per mask
//! element, summing over the rows that read it).

use super::super::pipelines::Kernel;
use super::super::tensor::{shape_err, u32p, GpuTensor};
use super::super::WgpuBackend;
use crate::backend::RowMap;
use crate::Result;

impl WgpuBackend {
    /// One launch of `k` over the elements of `like`, with same-shaped `inputs`.
    fn zip_backward(&self, op: &str, k: Kernel, like: &GpuTensor, inputs: &[(&str, &GpuTensor)]) -> Result<GpuTensor> {
        let limit = self.limit();
        let mut bindings = Vec::with_capacity(inputs.len());
        for (name, t) in inputs {
            if t.shape() != like.shape() {
                return Err(shape_err(op, format!("`{name}` is {:?}, expected {:?}", t.shape(), like.shape())));
            }
            bindings.push(t.single(op, name, limit)?);
        }
        let out = self.output(op, like.shape().to_vec())?;
        let n = like.numel();
        let params = [u32p(op, n)?, 0, 0, 0];
        self.run(k, out.single(op, "out", limit)?, &bindings, None, &params, self.groups_for(n)?)?;
        Ok(out)
    }

    /// `dx = dy · gelu_new'(x)`.
    pub(in crate::backend::wgpu) fn op_gelu_new_backward(&self, x: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        self.zip_backward("gelu_new_backward", Kernel::GeluBackward, x, &[("x", x), ("dy", dy)])
    }

    /// `dgate = dy·up·σ(g)·(1 + g·(1 − σ(g)))`, `dup = dy·silu(g)`: two launches.
    pub(in crate::backend::wgpu) fn op_silu_mul_backward(&self, gate: &GpuTensor, up: &GpuTensor, dy: &GpuTensor)
        -> Result<(GpuTensor, GpuTensor)> {
        const OP: &str = "silu_mul_backward";
        let dgate = self.zip_backward(OP, Kernel::SiluMulBackwardGate, gate, &[("gate", gate), ("up", up), ("dy", dy)])?;
        let dup = self.zip_backward(OP, Kernel::SiluMulBackwardUp, gate, &[("gate", gate), ("dy", dy)])?;
        Ok((dgate, dup))
    }

    /// `dy` turned by the opposite angle (the rotation's transpose).
    pub(in crate::backend::wgpu) fn op_rope_backward(&self, dy: &GpuTensor, seq: usize, n_heads: usize, head_dim: usize,
        theta: f32) -> Result<GpuTensor> {
        self.rope_turn("rope_backward", dy, seq, n_heads, head_dim, theta, true)
    }

    /// `dx[r, c] = m·dy[r, c]` and `dmask[k, c] = Σ_{r: mask row of r is k} dy[r, c]·(x[r, c] − a)`.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::backend::wgpu) fn op_mix_backward(&self, x: &GpuTensor, mask: &GpuTensor, mr: RowMap, abl: &GpuTensor,
        ar: RowMap, dy: &GpuTensor) -> Result<(GpuTensor, GpuTensor)> {
        const OP: &str = "mix_backward";
        let (rows, cols) = x.rows_cols();
        let (m_rows, m_cols) = mask.rows_cols();
        let (a_rows, a_cols) = abl.rows_cols();
        if x.shape().is_empty() || m_cols != cols || a_cols != cols || (x.numel() > 0 && (m_rows == 0 || a_rows == 0)) {
            return Err(shape_err(
                OP,
                format!("x {:?}, mask {:?} and abl {:?} must share the last dimension, with at least one row each", x.shape(), mask.shape(), abl.shape()),
            ));
        }
        if dy.shape() != x.shape() {
            return Err(shape_err(OP, format!("dy {:?} must have the shape of x {:?}", dy.shape(), x.shape())));
        }
        let limit = self.limit();
        let (xb, mb, ab, dyb) =
            (x.single(OP, "x", limit)?, mask.single(OP, "mask", limit)?, abl.single(OP, "abl", limit)?, dy.single(OP, "dy", limit)?);
        let u = |v: usize| u32p(OP, v);
        // A div past the row count picks the same rows as div = rows; clamping keeps the kernel's
        // row arithmetic inside u32.
        let (mdiv, adiv) = (mr.div.clamp(1, rows.max(1)), ar.div.clamp(1, rows.max(1)));
        let mut params = [0, u(cols)?, u(rows)?, u(mdiv)?, u(m_rows)?, u(adiv)?, u(a_rows)?, u(rows.div_ceil(mdiv))?];

        let dx = self.output(OP, x.shape().to_vec())?;
        params[0] = u(x.numel())?;
        self.run(Kernel::MixBackwardX, dx.single(OP, "dx", limit)?, &[mb, dyb], None, &params, self.groups_for(x.numel())?)?;

        let dmask = self.output(OP, mask.shape().to_vec())?;
        params[0] = u(mask.numel())?;
        let groups = self.groups_for(mask.numel())?;
        self.run(Kernel::MixBackwardMask, dmask.single(OP, "dmask", limit)?, &[xb, ab, dyb], None, &params, groups)?;
        Ok((dx, dmask))
    }
}
