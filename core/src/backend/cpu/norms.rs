//! Row reductions: LayerNorm, RMSNorm, log-softmax. Sums in f32 as PyTorch does on CPU, pairwise
//! enough for rows of a few thousand.

use super::{check, rows_per_task, CpuBackend, CpuTensor};
use crate::Result;
use rayon::prelude::*;

fn rowwise(be: &CpuBackend, x: &CpuTensor, f: impl Fn(&[f32], &mut [f32]) + Sync) -> CpuTensor {
    let (_, c) = x.rows_cols();
    let mut out = be.out(x.0.data.len());
    if c > 0 {
        let per = rows_per_task(c);
        out.par_chunks_mut(per * c).zip(x.0.data.par_chunks(per * c)).for_each(|(o, i)| {
            for (orow, irow) in o.chunks_mut(c).zip(i.chunks(c)) {
                f(irow, orow);
            }
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
                for ((orow, irow), grow) in o.chunks_mut(c).zip(i.chunks(c)).zip(g.chunks(c)) {
                    f(irow, grow, orow);
                }
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
        let mean = i.iter().sum::<f32>() / c as f32;
        let var = i.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for j in 0..c {
            o[j] = (i[j] - mean) * inv * w[j] + b[j];
        }
    }))
}

pub(super) fn rms_norm(be: &CpuBackend, x: &CpuTensor, w: &CpuTensor, eps: f32) -> Result<CpuTensor> {
    let (_, c) = x.rows_cols();
    check(w.0.data.len() == c, "rms_norm", || format!("x {:?} with weight {:?}", x.0.shape, w.0.shape))?;
    let w = &w.0.data;
    Ok(rowwise(be, x, |i, o| {
        let ms = i.iter().map(|v| v * v).sum::<f32>() / c as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for j in 0..c {
            o[j] = i[j] * inv * w[j];
        }
    }))
}

pub(super) fn log_softmax(be: &CpuBackend, x: &CpuTensor) -> Result<CpuTensor> {
    Ok(rowwise(be, x, |i, o| {
        let max = i.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let lse = max + i.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
        for (o, v) in o.iter_mut().zip(i) {
            *o = v - lse;
        }
    }))
}
