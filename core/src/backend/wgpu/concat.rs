//! `concat`: the parts' bytes copied one after another into a fresh tensor (buffer copies recorded
//! into the pending encoder, after every dispatch before them).

use super::recorder::lock_err;
use super::tensor::{shape_err, GpuTensor};
use super::WgpuBackend;
use crate::Result;

impl WgpuBackend {
    pub(super) fn op_concat(&self, parts: &[&GpuTensor], shape: Vec<usize>) -> Result<GpuTensor> {
        const OP: &str = "concat";
        let n: usize = shape.iter().product();
        let total: usize = parts.iter().map(|p| p.numel()).sum();
        if n != total {
            return Err(shape_err(OP, format!("parts of {total} elements in all as a tensor of shape {shape:?} ({n})")));
        }
        let limit = self.limit();
        for p in parts {
            p.single(OP, "part", limit)?;
        }
        let out = self.output(OP, shape)?;
        let dst = &out.chunks()[0].buf.buf;
        let mut rec = self.rec.lock().map_err(lock_err)?;
        let mut at = 0u64;
        for p in parts.iter().filter(|p| p.numel() > 0) {
            rec.copy(&self.ctx.device, &p.chunks()[0].buf.buf, dst, at, p.bytes());
            at += p.bytes();
        }
        Ok(out)
    }
}
