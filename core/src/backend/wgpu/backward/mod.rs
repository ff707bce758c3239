//! Backward ops on wgpu: gradients with respect to activations (weights are frozen), recorded into
//! the pending encoder like the forwards (no submits, no reads). Products run on the tiled GEMM of
//! matmul.wgsl; the rest on the kernels of shaders/backward_*.wgsl. Each op's formula is on its
//! `Backend` method.

mod attention;
mod elementwise;
mod gated_sum;
mod matmul;
mod norms;
mod loss;
mod scatter;

use super::pipelines::Kernel;
use super::tensor::{u32p, GpuTensor};
use super::WgpuBackend;
use crate::Result;

impl WgpuBackend {
    /// Records `out[..] = 0` over all of `t`.
    pub(super) fn zero_fill(&self, op: &str, t: &GpuTensor) -> Result<()> {
        let n = t.numel();
        if n == 0 {
            return Ok(());
        }
        let params = [u32p(op, n)?, 0f32.to_bits(), 0, 0, 0, 0, 0, 0];
        self.run(Kernel::Fill, t.single(op, "out", self.limit())?, &[], None, &params, self.groups_for(n)?)
    }
}
