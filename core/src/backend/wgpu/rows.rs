//! Row-wise ops (a row per `lanes` invocations, see `row_launch`): layer_norm, rms_norm, log_softmax.

use super::pipelines::Kernel;
use super::tensor::{shape_err, u32p, GpuTensor};
use super::WgpuBackend;
use crate::Result;

impl WgpuBackend {
    pub(super) fn op_norm(&self, op: &str, x: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>, eps: f32) -> Result<GpuTensor> {
        let (rows, cols) = x.rows_cols();
        if x.shape().is_empty() {
            return Err(shape_err(op, "x must have at least one dimension"));
        }
        for (name, t) in [("weight", Some(w)), ("bias", b)] {
            if let Some(t) = t {
                if t.numel() != cols {
                    return Err(shape_err(op, format!("{name} {:?} must have {cols} values for x {:?}", t.shape(), x.shape())));
                }
            }
        }
        let limit = self.limit();
        let mut inputs = vec![x.single(op, "x", limit)?, w.single(op, "weight", limit)?];
        if let Some(b) = b {
            inputs.push(b.single(op, "bias", limit)?);
        }
        let kern = if b.is_some() { Kernel::LayerNorm } else { Kernel::RmsNorm };
        let out = self.output(op, x.shape().to_vec())?;
        let (lanes, groups) = self.row_launch(rows, cols)?;
        let params = [u32p(op, rows)?, u32p(op, cols)?, eps.to_bits(), lanes];
        self.run(kern, out.single(op, "out", limit)?, &inputs, None, &params, groups)?;
        Ok(out)
    }

    pub(super) fn op_log_softmax(&self, x: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "log_softmax";
        if x.shape().is_empty() {
            return Err(shape_err(OP, "x must have at least one dimension"));
        }
        let (rows, cols) = x.rows_cols();
        let limit = self.limit();
        let xb = x.single(OP, "x", limit)?;
        let out = self.output(OP, x.shape().to_vec())?;
        let (lanes, groups) = self.row_launch(rows, cols)?;
        let params = [u32p(OP, rows)?, u32p(OP, cols)?, lanes, 0];
        self.run(Kernel::LogSoftmax, out.single(OP, "out", limit)?, &[xb], None, &params, groups)?;
        Ok(out)
    }
}
