//! `matmul_backward`: dx [M, K] = dy [M, N] · w [N, K], on the tiled GEMM with w read as its
//! `[K, N]` operand. A weight stored as row-chunks (the embedding / LM head over the binding limit)
//! splits the sum over N: each chunk multiplies its own columns of dy, the first chunk writes and
//! the others accumulate. Grids are split where a dimension would pass the workgroup-count limit.

use super::super::matmul::MmParams;
use super::super::pipelines::Gemm;
use super::super::recorder::Binding;
use super::super::tensor::{shape_err, u32p, GpuTensor};
use super::super::WgpuBackend;
use crate::Result;

impl WgpuBackend {
    /// `dx [M, K] = dy [M, N] · w [N, K]`, summed over `w`'s row-chunks.
    pub(in crate::backend::wgpu) fn op_matmul_backward(&self, dy: &GpuTensor, w: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "matmul_backward";
        if dy.shape().is_empty() {
            return Err(shape_err(OP, "dy must have at least one dimension"));
        }
        let (m, n) = dy.rows_cols();
        let ws = w.shape();
        if ws.len() != 2 || ws[0] != n {
            return Err(shape_err(OP, format!("dy {:?} needs w [{n}, K], got w {ws:?}", dy.shape())));
        }
        let k = ws[1];
        let limit = self.limit();
        let dyb = dy.single(OP, "dy", limit)?;
        let mut oshape = dy.shape().to_vec();
        *oshape.last_mut().expect("non-empty") = k;
        let out = self.output(OP, oshape)?;
        if n == 0 {
            self.zero_fill(OP, &out)?; // an empty sum
            return Ok(out);
        }
        let ob = out.single(OP, "out", limit)?;
        let u = |v: usize| u32p(OP, v);
        u(m * n)?;
        u(n * k)?;
        for (ci, c) in w.chunks().iter().enumerate() {
            let wb = Binding::whole(&c.buf.buf, c.buf.bytes);
            let inputs = [dyb, wb, Binding::whole(&self.dummy, 16)];
            let (kern, tile) = self.gemm(Gemm { w_kn: true, accumulate: ci > 0, ..Gemm::default() }, m, k, 1);
            let span = self.ctx.limits.max_compute_workgroups_per_dimension.max(1) as usize * tile;
            for m0 in (0..m).step_by(span) {
                let mm = span.min(m - m0);
                for k0 in (0..k).step_by(span) {
                    let kk = span.min(k - k0);
                    // Rows m0.. of dy, its columns row0.. (this chunk's rows of w), times the
                    // chunk read as [rows, K] = [K_gemm, N_gemm], columns k0.. of it.
                    let p = MmParams {
                        m: u(mm)?,
                        n: u(kk)?,
                        k: u(c.rows)?,
                        x: [u(m0 * n + c.row0)?, u(n)?, 0, 0],
                        w: [u(k0)?, u(k)?, 0, 0],
                        o: [u(m0 * k + k0)?, u(k)?, 0, 0],
                        ..Default::default()
                    };
                    let groups = [kk.div_ceil(tile) as u32, mm.div_ceil(tile) as u32, 1];
                    self.run_gemm(kern, ob, &inputs, &p, groups)?;
                }
            }
        }
        Ok(out)
    }
}
