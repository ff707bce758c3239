//! `layer_norm_backward` and `rms_norm_backward`: row kernels laid out as the forwards (a row per
//! `lanes` invocations, see `row_launch`).

use super::super::pipelines::Kernel;
use super::super::tensor::{shape_err, u32p, GpuTensor};
use super::super::WgpuBackend;
use crate::Result;

impl WgpuBackend {
    /// LayerNorm: `dx = r·(g − mean(g) − x̂·mean(g·x̂))`; RMSNorm (`rms`): `dx = r·g − x·r³·mean(g·x)`,
    /// with `g = dy·w` and `r` the forward's inverse deviation.
    pub(in crate::backend::wgpu) fn op_norm_backward(&self, op: &str, x: &GpuTensor, w: &GpuTensor, dy: &GpuTensor,
        rms: bool, eps: f32) -> Result<GpuTensor> {
        if x.shape().is_empty() {
            return Err(shape_err(op, "x must have at least one dimension"));
        }
        let (rows, cols) = x.rows_cols();
        if w.numel() != cols {
            return Err(shape_err(op, format!("weight {:?} must have {cols} values for x {:?}", w.shape(), x.shape())));
        }
        if dy.shape() != x.shape() {
            return Err(shape_err(op, format!("dy {:?} must have the shape of x {:?}", dy.shape(), x.shape())));
        }
        let limit = self.limit();
        let inputs = [x.single(op, "x", limit)?, w.single(op, "weight", limit)?, dy.single(op, "dy", limit)?];
        let kern = if rms { Kernel::RmsNormBackward } else { Kernel::LayerNormBackward };
        let out = self.output(op, x.shape().to_vec())?;
        let (lanes, groups) = self.row_launch(rows, cols)?;
        let params = [u32p(op, rows)?, u32p(op, cols)?, eps.to_bits(), lanes];
        self.run(kern, out.single(op, "out", limit)?, &inputs, None, &params, groups)?;
        Ok(out)
    }
}
