//! Elementwise and row-local ops: add, activations, the masked mix, rotary embeddings.

use super::vector::{self, simd};
use super::{check, rows_per_task, CpuBackend, CpuTensor};
use crate::backend::RowMap;
use crate::Result;
use rayon::prelude::*;

pub(super) fn map(be: &CpuBackend, x: &CpuTensor, f: impl Fn(f32) -> f32 + Sync) -> CpuTensor {
    let mut out = be.out(x.0.data.len());
    out.par_chunks_mut(16384).zip(x.0.data.par_chunks(16384)).for_each(|(o, i)| {
        simd(|| {
            for (o, &v) in o.iter_mut().zip(i) {
                *o = f(v);
            }
        })
    });
    CpuBackend::wrap(x.0.shape.clone(), out)
}

pub(super) fn zip(be: &CpuBackend, op: &str, a: &CpuTensor, b: &CpuTensor, f: impl Fn(f32, f32) -> f32 + Sync)
    -> Result<CpuTensor> {
    check(a.0.shape == b.0.shape, op, || format!("shapes {:?} and {:?} differ", a.0.shape, b.0.shape))?;
    let mut out = be.out(a.0.data.len());
    out.par_chunks_mut(16384)
        .zip(a.0.data.par_chunks(16384).zip(b.0.data.par_chunks(16384)))
        .for_each(|(o, (x, y))| {
            simd(|| {
                for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                    *o = f(x, y);
                }
            })
        });
    Ok(CpuBackend::wrap(a.0.shape.clone(), out))
}

pub(super) fn gelu_new(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/π)
    0.5 * x * (1.0 + vector::tanh(C * (x + 0.044715 * x * x * x)))
}

pub(super) fn mix(be: &CpuBackend, x: &CpuTensor, mask: &CpuTensor, mrows: RowMap, abl: &CpuTensor, arows: RowMap)
    -> Result<CpuTensor> {
    let (_, c) = x.rows_cols();
    let (mr, mc) = mask.rows_cols();
    let (ar, ac) = abl.rows_cols();
    check(mc == c && ac == c && mr > 0 && ar > 0, "mix", || {
        format!("x {:?} with mask {:?} and ablation {:?}", x.0.shape, mask.0.shape, abl.0.shape)
    })?;
    let mut out = be.out(x.0.data.len());
    let per = rows_per_task(c);
    out.par_chunks_mut(per * c).enumerate().for_each(|(task, o)| simd(|| {
        for (i, orow) in o.chunks_mut(c).enumerate() {
            let r = task * per + i;
            let xr = x.0.row(r);
            let m = mask.0.row(mrows.index(r, mr));
            let a = abl.0.row(arows.index(r, ar));
            for (((o, &x), &m), &a) in orow.iter_mut().zip(xr).zip(m).zip(a) {
                *o = m * x + (1.0 - m) * a;
            }
        }
    }));
    Ok(CpuBackend::wrap(x.0.shape.clone(), out))
}

/// Turns every pair by `sign ·` its angle: 1 is the forward, −1 its backward (the inverse rotation).
pub(super) fn rope(be: &CpuBackend, x: &CpuTensor, seq: usize, n_heads: usize, head_dim: usize, theta: f32, sign: f32)
    -> Result<CpuTensor> {
    let (_, c) = x.rows_cols();
    check(c == n_heads * head_dim && head_dim % 2 == 0 && seq > 0, "rope", || {
        format!("x {:?} as {n_heads} heads of {head_dim} at seq {seq}", x.0.shape)
    })?;
    let half = head_dim / 2;
    // Inverse frequencies as HF computes them: theta^(-2i/d) in f32; the angles once per
    // (position, frequency), not per row and head.
    let inv: Vec<f32> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32)).collect();
    let table: Vec<(f32, f32)> = (0..seq).flat_map(|p| inv.iter().map(move |f| (p as f32 * f).sin_cos())).collect();
    let mut out = be.out(x.0.data.len());
    out.par_chunks_mut(c.max(1)).enumerate().for_each(|(r, orow)| {
        let angles = &table[(r % seq) * half..][..half];
        let xr = x.0.row(r);
        for h in 0..n_heads {
            let (xh, oh) = (&xr[h * head_dim..(h + 1) * head_dim], &mut orow[h * head_dim..(h + 1) * head_dim]);
            for (i, &(sin, cos)) in angles.iter().enumerate() {
                let sin = sign * sin;
                oh[i] = xh[i] * cos - xh[i + half] * sin;
                oh[i + half] = xh[i + half] * cos + xh[i] * sin;
            }
        }
    });
    Ok(CpuBackend::wrap(x.0.shape.clone(), out))
}
