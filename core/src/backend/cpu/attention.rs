//! Causal attention: probabilities per (prompt, head), then the probability-weighted values.
//! Parallel over (prompt, head) or over output rows. Its small products, here and in the backward,
//! are two kernels: [`causal_dots`] (every a_i · b_j below the diagonal, summed in registers a block
//! of rows and a tile of columns at a time) and [`weighted_sum`] (Σ w·x over rows, 64 columns at a
//! time in registers).

use super::vector::{self, simd};
use super::{check, CpuBackend, CpuTensor};
use crate::backend::AttnShape;
use crate::Result;
use rayon::prelude::*;

pub(super) fn check_shape(op: &str, t: &CpuTensor, s: &AttnShape, heads: usize) -> Result<()> {
    check(t.0.data.len() == s.batch * s.seq * heads * s.head_dim, op, || {
        format!("{:?} is not [{}·{}, {}·{}]", t.0.shape, s.batch, s.seq, heads, s.head_dim)
    })
}

pub(super) fn group(s: &AttnShape) -> Result<usize> {
    check(s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0, "attention", || {
        format!("{} heads do not share {} kv heads evenly", s.n_heads, s.n_kv_heads)
    })?;
    Ok(s.n_heads / s.n_kv_heads)
}

pub(super) fn scores(be: &CpuBackend, q: &CpuTensor, k: &CpuTensor, s: AttnShape) -> Result<CpuTensor> {
    let g = group(&s)?;
    check_shape("attn_scores q", q, &s, s.n_heads)?;
    check_shape("attn_scores k", k, &s, s.n_kv_heads)?;
    let (t, d) = (s.seq, s.head_dim);
    let (qc, kc) = (s.n_heads * d, s.n_kv_heads * d);
    let mut out = be.out(s.batch * s.n_heads * t * t);
    out.par_chunks_mut((t * t).max(1)).enumerate().for_each_init(Vec::new, |bt, (bh, p)| simd(|| {
        let (b, h) = (bh / s.n_heads, bh % s.n_heads);
        let kh = h / g;
        let qs = Rows { data: &q.0.data, stride: qc, off: b * t * qc + h * d, d };
        let ks = Rows { data: &k.0.data, stride: kc, off: b * t * kc + kh * d, d };
        causal_dots(t, qs, ks, s.scale, p, bt);
        for i in 0..t {
            let row = &mut p[i * t..(i + 1) * t];
            let max = row[..=i].iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            for v in &mut row[..=i] {
                *v = vector::exp(*v - max);
            }
            let inv = 1.0 / vector::sum(&row[..=i]);
            for v in &mut row[..=i] {
                *v *= inv;
            }
        }
    }));
    Ok(CpuBackend::wrap(vec![s.batch * s.n_heads * t, t], out))
}

pub(super) fn apply(be: &CpuBackend, p: &CpuTensor, v: &CpuTensor, s: AttnShape) -> Result<CpuTensor> {
    let g = group(&s)?;
    check_shape("attn_apply v", v, &s, s.n_kv_heads)?;
    let (t, d) = (s.seq, s.head_dim);
    check(p.0.data.len() == s.batch * s.n_heads * t * t, "attn_apply", || {
        format!("probabilities {:?} for {} prompts, {} heads, {t} positions", p.0.shape, s.batch, s.n_heads)
    })?;
    let (oc, vc) = (s.n_heads * d, s.n_kv_heads * d);
    let mut out = be.out(s.batch * t * oc);
    // One task per output row (prompt b, position i): every head of that row.
    out.par_chunks_mut(oc.max(1)).enumerate().for_each(|(bi, orow)| simd(|| {
        let (b, i) = (bi / t.max(1), bi % t.max(1));
        for h in 0..s.n_heads {
            let prow = &p.0.data[((b * s.n_heads + h) * t + i) * t..][..t];
            let vs = Rows { data: &v.0.data, stride: vc, off: b * t * vc + (h / g) * d, d };
            weighted_sum(&mut orow[h * d..(h + 1) * d], || (0..=i).map(|j| (prow[j], vs.row(j))));
        }
    }));
    Ok(CpuBackend::wrap(vec![s.batch * t, oc], out))
}

/// Rows of `d` values at a stride: row `i` is `data[off + i·stride..][..d]` (a head's columns of
/// one prompt's positions).
#[derive(Clone, Copy)]
pub(super) struct Rows<'a> {
    pub data: &'a [f32],
    pub stride: usize,
    pub off: usize,
    pub d: usize,
}

impl<'a> Rows<'a> {
    #[inline(always)]
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[self.off + i * self.stride..][..self.d]
    }
}

/// Rows of out a block summed together, and columns a tile: 4 × 16 sums in registers.
const DOT_ROWS: usize = 4;
const DOT_COLS: usize = 16;

/// `out[i·t + j] = scale · a_i · b_j` for j ≤ i < t, and 0 above the diagonal. b is first copied
/// transposed into `bt` (a column of it per dot-product index, padded to whole tiles), so that a
/// block of rows times a tile of columns is summed in registers, one multiply-add per element per
/// index, with no sums across lanes. Each dot product is summed over its index in order.
pub(super) fn causal_dots(t: usize, a: Rows, b: Rows, scale: f32, out: &mut [f32], bt: &mut Vec<f32>) {
    let d = a.d;
    let tp = t.div_ceil(DOT_COLS) * DOT_COLS;
    bt.clear();
    bt.resize(d * tp, 0.0);
    for j in 0..t {
        for (c, &x) in b.row(j).iter().enumerate() {
            bt[c * tp + j] = x;
        }
    }
    out[..t * t].fill(0.0);
    for i0 in (0..t).step_by(DOT_ROWS) {
        let rows = DOT_ROWS.min(t - i0);
        // Row i0 stands in for the rows past t (their sums are not written).
        let ar: [&[f32]; DOT_ROWS] = std::array::from_fn(|r| a.row(if r < rows { i0 + r } else { i0 }));
        for j0 in (0..i0 + rows).step_by(DOT_COLS) {
            let mut acc = [[0f32; DOT_COLS]; DOT_ROWS];
            for c in 0..d {
                let bv: &[f32; DOT_COLS] = bt[c * tp + j0..][..DOT_COLS].try_into().unwrap();
                for r in 0..DOT_ROWS {
                    let av = ar[r][c];
                    for l in 0..DOT_COLS {
                        acc[r][l] += av * bv[l];
                    }
                }
            }
            for (r, sums) in acc.iter().enumerate().take(rows) {
                let i = i0 + r;
                for (l, &v) in sums.iter().enumerate().take((i + 1).saturating_sub(j0).min(DOT_COLS)) {
                    out[i * t + j0 + l] = v * scale;
                }
            }
        }
    }
}

/// Columns of a weighted sum kept in registers at a time.
const SUM_COLS: usize = 64;

/// `o = Σ w·x` over the terms `(w, x)` that `terms()` yields, in their order; the sum of each
/// column starts from 0 and adds the terms one by one. `terms` is called once per 64 columns of o.
#[inline(always)]
pub(super) fn weighted_sum<'a, I: Iterator<Item = (f32, &'a [f32])>>(o: &mut [f32], terms: impl Fn() -> I) {
    for (c0, oc) in (0..o.len()).step_by(SUM_COLS).zip(o.chunks_mut(SUM_COLS)) {
        let mut acc = [0f32; SUM_COLS];
        if oc.len() == SUM_COLS {
            for (w, x) in terms() {
                let x: &[f32; SUM_COLS] = x[c0..c0 + SUM_COLS].try_into().unwrap();
                for l in 0..SUM_COLS {
                    acc[l] += w * x[l];
                }
            }
        } else {
            for (w, x) in terms() {
                for (a, &x) in acc.iter_mut().zip(&x[c0..c0 + oc.len()]) {
                    *a += w * x;
                }
            }
        }
        oc.copy_from_slice(&acc[..oc.len()]);
    }
}
