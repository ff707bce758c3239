//! Row reductions: LayerNorm, RMSNorm, log-softmax. Sums in f32 as PyTorch does on CPU, over 16
//! lanes (as its vectorized sums do), enough for rows of a few thousand.

use super::vector::{self, dot, simd};
use super::{check, rows_per_task, CpuBackend, CpuTensor};
use crate::Result;
use rayon::prelude::*;

fn rowwise(be: &CpuBackend, x: &CpuTensor, f: impl Fn(&[f32], &mut [f32]) + Sync) -> CpuTensor {
    let (_, c) = x.rows_cols();
    let mut out = be.out(x.0.data.len());
    if c > 0 {
        let per = rows_per_task(c);
        out.par_chunks_mut(per * c).zip(x.0.data.par_chunks(per * c)).for_each(|(o, i)| {
            simd(|| {
                for (orow, irow) in o.chunks_mut(c).zip(i.chunks(c)) {
                    f(irow, orow);
                }
            })
        });
    }
    CpuBackend::wrap(x.0.shape.clone(), out)
}

/// `f(x row, dy row, out row)` over the rows of two same-shaped tensors (the row backward ops).
pub(super) fn rowwise_with(be: &CpuBackend, x: &CpuTensor, dy: &CpuTensor, f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync)
    -> CpuTensor {
    let (_, c) = x.rows_cols();
    let mut out = be.out(x.0.data.len());
    if c > 0 {
        let per = rows_per_task(c);
        out.par_chunks_mut(per * c).zip(x.0.data.par_chunks(per * c).zip(dy.0.data.par_chunks(per * c))).for_each(
            |(o, (i, g))| {
                simd(|| {
                    for ((orow, irow), grow) in o.chunks_mut(c).zip(i.chunks(c)).zip(g.chunks(c)) {
                        f(irow, grow, orow);
                    }
                })
            },
        );
    }
    CpuBackend::wrap(x.0.shape.clone(), out)
}

pub(super) fn layer_norm(be: &CpuBackend, x: &CpuTensor, w: &CpuTensor, b: &CpuTensor, eps: f32) -> Result<CpuTensor> {
    let (_, c) = x.rows_cols();
    check(w.0.data.len() == c && b.0.data.len() == c, "layer_norm", || {
        format!("x {:?} with weight {:?} and bias {:?}", x.0.shape, w.0.shape, b.0.shape)
    })?;
    let (w, b) = (&w.0.data, &b.0.data);
    Ok(rowwise(be, x, |i, o| {
        let mean = vector::sum(i) / c as f32;
        for j in 0..c {
            o[j] = i[j] - mean;
        }
        let inv = 1.0 / (dot(o, o) / c as f32 + eps).sqrt();
        for j in 0..c {
            o[j] = o[j] * inv * w[j] + b[j];
        }
    }))
}

pub(super) fn rms_norm(be: &CpuBackend, x: &CpuTensor, w: &CpuTensor, eps: f32) -> Result<CpuTensor> {
    let (_, c) = x.rows_cols();
    check(w.0.data.len() == c, "rms_norm", || format!("x {:?} with weight {:?}", x.0.shape, w.0.shape))?;
    let w = &w.0.data;
    Ok(rowwise(be, x, |i, o| {
        let ms = dot(i, i) / c as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for j in 0..c {
            o[j] = i[j] * inv * w[j];
        }
    }))
}

pub(super) fn log_softmax(be: &CpuBackend, x: &CpuTensor) -> Result<CpuTensor> {
    Ok(rowwise(be, x, |i, o| {
        let max = i.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for (o, v) in o.iter_mut().zip(i) {
            *o = vector::exp(v - max);
        }
        let lse = max + vector::sum(o).ln();
        for (o, v) in o.iter_mut().zip(i) {
            *o = v - lse;
        }
    }))
}
