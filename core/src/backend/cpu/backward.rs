//! Backward ops: each is its forward read bottom-up (same argument names, `dy` in, `dx` out).
//! Row reductions accumulate in f32 like their forwards; the mask gradient, a sum over every row,
//! accumulates in f64.

use super::elementwise::zip;
use super::norms::rowwise_with;
use super::attention::{causal_dots, weighted_sum, Rows};
use super::vector::{self, dot, simd};
use super::{check, rows_per_task, CpuBackend, CpuTensor};
use crate::backend::{AttnShape, RowMap};
use crate::Result;
use rayon::prelude::*;

pub(super) fn layer_norm_backward(be: &CpuBackend, x: &CpuTensor, w: &CpuTensor, dy: &CpuTensor, eps: f32)
    -> Result<CpuTensor> {
    let (_, c) = x.rows_cols();
    check(w.0.data.len() == c && dy.0.shape == x.0.shape, "layer_norm_backward", || {
        format!("x {:?} with weight {:?} and dy {:?}", x.0.shape, w.0.shape, dy.0.shape)
    })?;
    let w = &w.0.data;
    Ok(rowwise_with(be, x, dy, |xr, g, o| {
        let n = c as f32;
        let mean = vector::sum(xr) / n;
        for j in 0..c {
            o[j] = xr[j] - mean;
        }
        let var = dot(o, o) / n;
        let r = 1.0 / (var + eps).sqrt();
        // o holds x − mean until the last loop overwrites it.
        let mg = dot(g, w) / n;
        let mgx = vector::dot3(g, w, o) * r / n;
        for j in 0..c {
            o[j] = r * (g[j] * w[j] - mg - o[j] * r * mgx);
        }
    }))
}

pub(super) fn rms_norm_backward(be: &CpuBackend, x: &CpuTensor, w: &CpuTensor, dy: &CpuTensor, eps: f32)
    -> Result<CpuTensor> {
    let (_, c) = x.rows_cols();
    check(w.0.data.len() == c && dy.0.shape == x.0.shape, "rms_norm_backward", || {
        format!("x {:?} with weight {:?} and dy {:?}", x.0.shape, w.0.shape, dy.0.shape)
    })?;
    let w = &w.0.data;
    Ok(rowwise_with(be, x, dy, |xr, g, o| {
        let n = c as f32;
        let r = 1.0 / (dot(xr, xr) / n + eps).sqrt();
        let mgx = vector::dot3(g, w, xr) / n;
        for j in 0..c {
            o[j] = r * g[j] * w[j] - xr[j] * r * r * r * mgx;
        }
    }))
}

pub(super) fn gelu_new_backward(be: &CpuBackend, x: &CpuTensor, dy: &CpuTensor) -> Result<CpuTensor> {
    const C: f32 = 0.797_884_6; // sqrt(2/π)
    zip(be, "gelu_new_backward", x, dy, |x, g| {
        let t = vector::tanh(C * (x + 0.044715 * x * x * x));
        g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C * (1.0 + 3.0 * 0.044715 * x * x))
    })
}

/// With s = σ(gate): dgate = dy·s·(1 + gate·(1 − s))·up, dup = dy·gate·s, in one pass.
pub(super) fn silu_mul_backward(be: &CpuBackend, gate: &CpuTensor, up: &CpuTensor, dy: &CpuTensor)
    -> Result<(CpuTensor, CpuTensor)> {
    check(up.0.shape == gate.0.shape && dy.0.shape == gate.0.shape, "silu_mul_backward", || {
        format!("gate {:?}, up {:?}, dy {:?}", gate.0.shape, up.0.shape, dy.0.shape)
    })?;
    let n = gate.0.data.len();
    let (mut dgate, mut dup) = (be.out(n), be.out(n));
    let inputs = gate.0.data.par_chunks(16384).zip(up.0.data.par_chunks(16384)).zip(dy.0.data.par_chunks(16384));
    dgate.par_chunks_mut(16384).zip(dup.par_chunks_mut(16384)).zip(inputs).for_each(|((dg, du), ((g, u), d))| {
        simd(|| {
            for ((((dg, du), &g), &u), &d) in dg.iter_mut().zip(du.iter_mut()).zip(g).zip(u).zip(d) {
                let s = 1.0 / (1.0 + vector::exp(-g));
                *dg = d * s * (1.0 + g * (1.0 - s)) * u;
                *du = d * g * s;
            }
        })
    });
    Ok((CpuBackend::wrap(gate.0.shape.clone(), dgate), CpuBackend::wrap(gate.0.shape.clone(), dup)))
}

pub(super) fn attn_scores_backward(be: &CpuBackend, q: &CpuTensor, k: &CpuTensor, p: &CpuTensor, dp: &CpuTensor,
    s: AttnShape) -> Result<(CpuTensor, CpuTensor)> {
    let g = super::attention::group(&s)?;
    super::attention::check_shape("attn_scores_backward q", q, &s, s.n_heads)?;
    super::attention::check_shape("attn_scores_backward k", k, &s, s.n_kv_heads)?;
    let (t, d) = (s.seq, s.head_dim);
    let np = s.batch * s.n_heads * t * t;
    check(p.0.data.len() == np && dp.0.data.len() == np, "attn_scores_backward", || {
        format!("probabilities {:?} and dprobs {:?} for {} prompts, {} heads, {t} positions", p.0.shape, dp.0.shape,
            s.batch, s.n_heads)
    })?;
    let (qc, kc) = (s.n_heads * d, s.n_kv_heads * d);
    // ds per (prompt, head): the softmax's input gradient, scaled.
    let mut ds = vec![0f32; np];
    let prec = be.precision;
    ds.par_chunks_mut((t * t).max(1)).enumerate().for_each(|(bh, dsb)| {
        for i in 0..t {
            let row = ((bh * t) + i) * t;
            let (pr, dpr) = (&p.0.data[row..row + t], &dp.0.data[row..row + t]);
            let dot: f32 = (0..=i).map(|j| pr[j] * dpr[j]).sum();
            for j in 0..=i {
                dsb[i * t + j] = prec.round(pr[j] * (dpr[j] - dot) * s.scale);
            }
        }
    });
    // dq: one task per (prompt, position) row, every head.
    let mut dq = be.out(s.batch * t * qc);
    dq.par_chunks_mut(qc.max(1)).enumerate().for_each(|(bi, orow)| simd(|| {
        let (b, i) = (bi / t.max(1), bi % t.max(1));
        for h in 0..s.n_heads {
            let dsr = &ds[((b * s.n_heads + h) * t + i) * t..][..t];
            let ks = Rows { data: &k.0.data, stride: kc, off: b * t * kc + (h / g) * d, d };
            weighted_sum(&mut orow[h * d..(h + 1) * d], || (0..=i).map(|j| (dsr[j], ks.row(j))));
        }
    }));
    // dk: one task per (prompt, position) row, every kv head, summed over its query heads.
    let mut dk = be.out(s.batch * t * kc);
    dk.par_chunks_mut(kc.max(1)).enumerate().for_each(|(bj, orow)| simd(|| {
        let (b, j) = (bj / t.max(1), bj % t.max(1));
        for (kh, o) in orow.chunks_mut(d.max(1)).enumerate() {
            let qs = |h: usize| Rows { data: &q.0.data, stride: qc, off: b * t * qc + h * d, d };
            let ds = &ds;
            weighted_sum(o, || {
                (kh * g..(kh + 1) * g).flat_map(move |h| (j..t).map(move |i| (ds[((b * s.n_heads + h) * t + i) * t + j], qs(h).row(i))))
            });
        }
    }));
    Ok((CpuBackend::wrap(q.0.shape.clone(), dq), CpuBackend::wrap(k.0.shape.clone(), dk)))
}

pub(super) fn attn_apply_backward(be: &CpuBackend, p: &CpuTensor, v: &CpuTensor, dout: &CpuTensor, s: AttnShape)
    -> Result<(CpuTensor, CpuTensor)> {
    let g = super::attention::group(&s)?;
    super::attention::check_shape("attn_apply_backward v", v, &s, s.n_kv_heads)?;
    super::attention::check_shape("attn_apply_backward dout", dout, &s, s.n_heads)?;
    let (t, d) = (s.seq, s.head_dim);
    check(p.0.data.len() == s.batch * s.n_heads * t * t, "attn_apply_backward", || {
        format!("probabilities {:?} for {} prompts, {} heads, {t} positions", p.0.shape, s.batch, s.n_heads)
    })?;
    let (oc, vc) = (s.n_heads * d, s.n_kv_heads * d);
    let mut dp = be.out(s.batch * s.n_heads * t * t);
    dp.par_chunks_mut((t * t).max(1)).enumerate().for_each_init(Vec::new, |bt, (bh, dpb)| simd(|| {
        let (b, h) = (bh / s.n_heads, bh % s.n_heads);
        let douts = Rows { data: &dout.0.data, stride: oc, off: b * t * oc + h * d, d };
        let vs = Rows { data: &v.0.data, stride: vc, off: b * t * vc + (h / g) * d, d };
        causal_dots(t, douts, vs, 1.0, dpb, bt);
    }));
    let mut dv = be.out(s.batch * t * vc);
    dv.par_chunks_mut(vc.max(1)).enumerate().for_each(|(bj, orow)| simd(|| {
        let (b, j) = (bj / t.max(1), bj % t.max(1));
        for (kh, o) in orow.chunks_mut(d.max(1)).enumerate() {
            let douts = |h: usize| Rows { data: &dout.0.data, stride: oc, off: b * t * oc + h * d, d };
            weighted_sum(o, || {
                (kh * g..(kh + 1) * g).flat_map(move |h| {
                    (j..t).map(move |i| (p.0.data[((b * s.n_heads + h) * t + i) * t + j], douts(h).row(i)))
                })
            });
        }
    }));
    Ok((CpuBackend::wrap(vec![s.batch * s.n_heads * t, t], dp), CpuBackend::wrap(v.0.shape.clone(), dv)))
}

pub(super) fn mix_backward(be: &CpuBackend, x: &CpuTensor, mask: &CpuTensor, mrows: RowMap, abl: &CpuTensor,
    arows: RowMap, dy: &CpuTensor) -> Result<(CpuTensor, CpuTensor)> {
    let (r, c) = x.rows_cols();
    let (mr, mc) = mask.rows_cols();
    let (ar, ac) = abl.rows_cols();
    check(mc == c && ac == c && mr > 0 && ar > 0 && dy.0.shape == x.0.shape, "mix_backward", || {
        format!("x {:?} with mask {:?}, ablation {:?} and dy {:?}", x.0.shape, mask.0.shape, abl.0.shape, dy.0.shape)
    })?;
    let mut dx = be.out(x.0.data.len());
    let per = rows_per_task(c);
    dx.par_chunks_mut(per * c.max(1)).enumerate().for_each(|(task, o)| simd(|| {
        for (i, orow) in o.chunks_mut(c.max(1)).enumerate() {
            let row = task * per + i;
            let m = mask.0.row(mrows.index(row, mr));
            for ((o, &g), &m) in orow.iter_mut().zip(dy.0.row(row)).zip(m) {
                *o = m * g;
            }
        }
    }));
    // The mask gradient: blocks of columns in parallel, every row summed in f64 in row order,
    // a block's columns side by side (so the sums vectorize across columns).
    const BLOCK: usize = 32;
    let mut dmask = be.out(mr * c);
    for k in 0..mr {
        let rows: Vec<usize> = (0..r).filter(|&row| mrows.index(row, mr) == k).collect();
        dmask[k * c..(k + 1) * c].par_chunks_mut(BLOCK).enumerate().for_each(|(b, o)| simd(|| {
            let (j0, w) = (b * BLOCK, o.len());
            let mut sum = [0f64; BLOCK];
            for &row in &rows {
                let a = &abl.0.data[arows.index(row, ar) * c + j0..][..w];
                let (g, xr) = (&dy.0.data[row * c + j0..][..w], &x.0.data[row * c + j0..][..w]);
                for (((s, &g), &xv), &a) in sum.iter_mut().zip(g).zip(xr).zip(a) {
                    *s += g as f64 * (xv - a) as f64;
                }
            }
            for (o, s) in o.iter_mut().zip(sum) {
                *o = s as f32;
            }
        }));
    }
    Ok((CpuBackend::wrap(x.0.shape.clone(), dx), CpuBackend::wrap(mask.0.shape.clone(), dmask)))
}

pub(super) fn scatter_rows(be: &CpuBackend, src: &CpuTensor, ids: &[u32], rows: usize) -> Result<CpuTensor> {
    let (n, c) = src.rows_cols();
    check(n == ids.len(), "scatter_rows", || format!("{} ids for {n} rows of {:?}", ids.len(), src.0.shape))?;
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= rows) {
        return Err(crate::Error::Backend(format!("scatter_rows: id {bad} out of range for {rows} rows")));
    }
    let mut out = be.out(rows * c);
    if ids.windows(2).all(|w| w[0] < w[1]) {
        // Each row written once (a batch's real rows put back among its padding): row by row in
        // parallel, a copy or zeros. `0.0 + v` would turn −0 into +0; a copy keeps it.
        let mut from = vec![u32::MAX; rows];
        for (i, &id) in ids.iter().enumerate() {
            from[id as usize] = i as u32;
        }
        let per = rows_per_task(c);
        out.par_chunks_mut(per * c.max(1)).zip(from.par_chunks(per)).for_each(|(o, from)| {
            for (o, &i) in o.chunks_mut(c.max(1)).zip(from) {
                if i == u32::MAX {
                    o.fill(0.0);
                } else {
                    o.copy_from_slice(src.0.row(i as usize));
                }
            }
        });
        return Ok(CpuBackend::wrap(vec![rows, c], out));
    }
    out.fill(0.0);
    for (i, &id) in ids.iter().enumerate() {
        for (o, &v) in out[id as usize * c..(id as usize + 1) * c].iter_mut().zip(src.0.row(i)) {
            *o += v;
        }
    }
    Ok(CpuBackend::wrap(vec![rows, c], out))
}
