//! Backward ops on wgpu.

use super::{GpuTensor, WgpuBackend};
use crate::backend::{AttnShape, RowMap};
use crate::{Error, Result};

fn missing<T>(op: &str) -> Result<T> {
    Err(Error::Unsupported(format!("{op} has no wgpu kernel yet: use --backend cpu for gradients")))
}

impl WgpuBackend {
    pub(super) fn op_matmul_backward(&self, _dy: &GpuTensor, _w: &GpuTensor) -> Result<GpuTensor> {
        missing("matmul_backward")
    }
    pub(super) fn op_norm_backward(&self, op: &str, _x: &GpuTensor, _w: &GpuTensor, _dy: &GpuTensor, _rms: bool, _eps: f32)
        -> Result<GpuTensor> {
        missing(op)
    }
    pub(super) fn op_gelu_new_backward(&self, _x: &GpuTensor, _dy: &GpuTensor) -> Result<GpuTensor> {
        missing("gelu_new_backward")
    }
    pub(super) fn op_silu_mul_backward(&self, _gate: &GpuTensor, _up: &GpuTensor, _dy: &GpuTensor)
        -> Result<(GpuTensor, GpuTensor)> {
        missing("silu_mul_backward")
    }
    pub(super) fn op_rope_backward(&self, _dy: &GpuTensor, _seq: usize, _n_heads: usize, _head_dim: usize, _theta: f32)
        -> Result<GpuTensor> {
        missing("rope_backward")
    }
    pub(super) fn op_attn_scores_backward(&self, _q: &GpuTensor, _k: &GpuTensor, _p: &GpuTensor, _dp: &GpuTensor,
        _s: AttnShape) -> Result<(GpuTensor, GpuTensor)> {
        missing("attn_scores_backward")
    }
    pub(super) fn op_attn_apply_backward(&self, _p: &GpuTensor, _v: &GpuTensor, _dout: &GpuTensor, _s: AttnShape)
        -> Result<(GpuTensor, GpuTensor)> {
        missing("attn_apply_backward")
    }
    #[allow(clippy::too_many_arguments)]
    pub(super) fn op_mix_backward(&self, _x: &GpuTensor, _mask: &GpuTensor, _mrows: RowMap, _abl: &GpuTensor,
        _arows: RowMap, _dy: &GpuTensor) -> Result<(GpuTensor, GpuTensor)> {
        missing("mix_backward")
    }
    pub(super) fn op_scatter_rows(&self, _src: &GpuTensor, _ids: &[u32], _rows: usize) -> Result<GpuTensor> {
        missing("scatter_rows")
    }
}
