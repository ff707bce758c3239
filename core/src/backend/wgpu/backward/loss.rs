//! `kl_hinge`, the training loss at the last-position logits and its gradient, in two launches:
//! each row's terms (a row reduction), then the gradient from them (elementwise). The loss stays on
//! the device until the step's one read.

use super::super::pipelines::Kernel;
use super::super::tensor::{shape_err, u32p, GpuTensor};
use super::super::WgpuBackend;
use crate::Result;

impl WgpuBackend {
    /// `(dlogits [B, V], terms [B, 4])`; see `Backend::kl_hinge`.
    pub(in crate::backend::wgpu) fn op_kl_hinge(&self, logits: &GpuTensor, full: &GpuTensor, pairs: &[Option<(u32, u32)>],
        margin: f32, weight: f32) -> Result<(GpuTensor, GpuTensor)> {
        const OP: &str = "kl_hinge";
        if logits.shape().len() != 2 || full.shape() != logits.shape() {
            return Err(shape_err(
                OP,
                format!("logits {:?} and reference logits {:?} must be the same [rows, vocab]", logits.shape(), full.shape()),
            ));
        }
        let (b, v) = (logits.shape()[0], logits.shape()[1]);
        if v == 0 {
            return Err(shape_err(OP, "logits of no columns have no distribution"));
        }
        if pairs.len() != b {
            return Err(shape_err(OP, format!("{} answer pairs for {b} rows of logits", pairs.len())));
        }
        if let Some((a, w)) = pairs.iter().flatten().find(|(a, w)| *a as usize >= v || *w as usize >= v) {
            return Err(shape_err(OP, format!("answer pair ({a}, {w}) is past the vocabulary of {v}")));
        }
        let limit = self.limit();
        let (xb, fb) = (logits.single(OP, "logits", limit)?, full.single(OP, "reference logits", limit)?);
        let terms = self.output(OP, vec![b, 4])?;
        let dlogits = self.output(OP, vec![b, v])?;
        if b == 0 {
            return Ok((dlogits, terms));
        }
        let plan: Vec<u32> = pairs.iter().flat_map(|p| p.map_or([u32::MAX, u32::MAX], |(a, w)| [a, w])).collect();
        let (lanes, groups) = self.row_launch(b, v)?;
        let params = [u32p(OP, b)?, u32p(OP, v)?, lanes, margin.to_bits()];
        self.run(Kernel::KlHingeRows, terms.single(OP, "terms", limit)?, &[xb, fb], Some(bytemuck::cast_slice(&plan)), &params, groups)?;
        let n = b * v;
        let params = [u32p(OP, n)?, u32p(OP, v)?, (weight / b as f32).to_bits(), 0];
        let tb = terms.single(OP, "terms", limit)?;
        self.run(Kernel::KlHingeGrad, dlogits.single(OP, "dlogits", limit)?, &[xb, fb, tb], Some(bytemuck::cast_slice(&plan)), &params, self.groups_for(n)?)?;
        Ok((dlogits, terms))
    }
}
