//! `concat`: the parts' bytes copied one after another into a fresh tensor (buffer copies recorded
//! into the pending encoder, after every dispatch before them); `reshape`: the same buffer under
//! another shape where the tensor is its only holder.

use std::sync::Arc;

use super::recorder::lock_err;
use super::tensor::{rows_cols, shape_err, Chunk, GpuTensor, Inner};
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

    /// `t` as `shape`: its one buffer kept when nothing else holds `t`, else `concat`'s copy.
    pub(super) fn op_reshape(&self, t: GpuTensor, shape: Vec<usize>) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        if n != t.numel() {
            return Err(shape_err("reshape", format!("a tensor of {} elements as shape {shape:?} ({n})", t.numel())));
        }
        let t = match t.chunk_count() {
            1 => match Arc::try_unwrap(t.0) {
                Ok(Inner { mut chunks, .. }) => {
                    let Chunk { buf, .. } = chunks.pop().expect("one chunk");
                    let rows = rows_cols(&shape).0;
                    return Ok(GpuTensor::new(shape, vec![Chunk { row0: 0, rows, buf }]));
                }
                Err(shared) => GpuTensor(shared),
            },
            _ => t,
        };
        self.op_concat(&[&t], shape)
    }
}
