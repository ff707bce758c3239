//! Elementwise ops (one thread per element): add, gelu_new, silu_mul, mix, rope.

use super::pipelines::Kernel;
use super::recorder::lock_err;
use super::tensor::{shape_err, u32p, GpuTensor};
use super::WgpuBackend;
use crate::backend::{Backend, RowMap};
use crate::{HostTensor, Result};

impl WgpuBackend {
    pub(super) fn op_unary(&self, op: &str, k: Kernel, x: &GpuTensor) -> Result<GpuTensor> {
        let limit = self.limit();
        let xb = x.single(op, "x", limit)?;
        let out = self.output(op, x.shape().to_vec())?;
        let n = x.numel();
        let params = [u32p(op, n)?, 0, 0, 0, 0, 0, 0, 0];
        self.run(k, out.single(op, "out", limit)?, &[xb], None, &params, self.groups_for(n)?)?;
        Ok(out)
    }

    pub(super) fn op_binary(&self, op: &str, k: Kernel, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        if a.shape() != b.shape() {
            return Err(shape_err(op, format!("shapes differ: {:?} vs {:?}", a.shape(), b.shape())));
        }
        let limit = self.limit();
        let inputs = [a.single(op, "a", limit)?, b.single(op, "b", limit)?];
        let out = self.output(op, a.shape().to_vec())?;
        let n = a.numel();
        let params = [u32p(op, n)?, 0, 0, 0, 0, 0, 0, 0];
        self.run(k, out.single(op, "out", limit)?, &inputs, None, &params, self.groups_for(n)?)?;
        Ok(out)
    }

    pub(super) fn op_mix(&self, x: &GpuTensor, mask: &GpuTensor, mr: RowMap, abl: &GpuTensor, ar: RowMap) -> Result<GpuTensor> {
        const OP: &str = "mix";
        let (_, cols) = x.rows_cols();
        let (m_rows, m_cols) = mask.rows_cols();
        let (a_rows, a_cols) = abl.rows_cols();
        if x.shape().is_empty() || m_cols != cols || a_cols != cols || (x.numel() > 0 && (m_rows == 0 || a_rows == 0)) {
            return Err(shape_err(
                OP,
                format!("x {:?}, mask {:?} and abl {:?} must share the last dimension, with at least one row each", x.shape(), mask.shape(), abl.shape()),
            ));
        }
        let limit = self.limit();
        let inputs = [x.single(OP, "x", limit)?, mask.single(OP, "mask", limit)?, abl.single(OP, "abl", limit)?];
        let out = self.output(OP, x.shape().to_vec())?;
        let n = x.numel();
        let u = |v: usize| u32p(OP, v);
        let params = [u(n)?, u(cols)?, u(mr.div.max(1))?, u(m_rows)?, u(ar.div.max(1))?, u(a_rows)?, 0, 0];
        self.run(Kernel::Mix, out.single(OP, "out", limit)?, &inputs, None, &params, self.groups_for(n)?)?;
        Ok(out)
    }

    /// The (cos, sin) table `[seq, head_dim/2, 2]`, computed in f64 and cached per (seq, dim, θ).
    fn rope_table(&self, seq: usize, head_dim: usize, theta: f32) -> Result<GpuTensor> {
        let key = (seq, head_dim, theta.to_bits());
        let mut cache = self.rope_tables.lock().map_err(lock_err)?;
        if let Some(t) = cache.get(&key) {
            return Ok(t.clone());
        }
        let half = head_dim / 2;
        let mut data = Vec::with_capacity(seq * half * 2);
        for pos in 0..seq {
            for i in 0..half {
                let inv = (theta as f64).powf(-2.0 * i as f64 / head_dim as f64);
                let (s, c) = (pos as f64 * inv).sin_cos();
                data.extend([c as f32, s as f32]);
            }
        }
        let t = self.upload(&HostTensor::new(vec![seq, half, 2], data))?;
        if cache.len() >= 16 {
            cache.clear(); // a handful of sequence lengths in practice; never grow without bound
        }
        cache.insert(key, t.clone());
        Ok(t)
    }

    pub(super) fn op_rope(&self, x: &GpuTensor, seq: usize, n_heads: usize, head_dim: usize, theta: f32) -> Result<GpuTensor> {
        self.rope_turn("rope", x, seq, n_heads, head_dim, theta, false)
    }

    /// `rope` (`inverse` false) or its backward (`inverse` true: every pair turned by the opposite
    /// angle, the transpose of the rotation).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rope_turn(&self, op: &str, x: &GpuTensor, seq: usize, n_heads: usize, head_dim: usize, theta: f32,
        inverse: bool) -> Result<GpuTensor> {
        let (rows, cols) = x.rows_cols();
        let ok = seq > 0 && head_dim > 0 && head_dim.is_multiple_of(2) && cols == n_heads * head_dim && rows.is_multiple_of(seq);
        if x.shape().len() != 2 || !ok {
            return Err(shape_err(
                op,
                format!("input {:?} must be [batch*seq, n_heads*head_dim] with seq {seq}, n_heads {n_heads}, even head_dim {head_dim}", x.shape()),
            ));
        }
        let limit = self.limit();
        let xb = x.single(op, "x", limit)?;
        let table = self.rope_table(seq, head_dim, theta)?;
        let tb = table.single(op, "cos/sin table", limit)?;
        let out = self.output(op, x.shape().to_vec())?;
        let pairs = x.numel() / 2;
        let u = |v: usize| u32p(op, v);
        let params = [u(pairs)?, u(seq)?, u(n_heads)?, u(head_dim / 2)?, inverse as u32, 0, 0, 0];
        self.run(Kernel::Rope, out.single(op, "out", limit)?, &[xb, tb], None, &params, self.groups_for(pairs)?)?;
        Ok(out)
    }
}
