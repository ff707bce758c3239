//! Causal attention: probabilities per (prompt, head), then the probability-weighted values.
//! Sequences here are short (tens of tokens), so plain loops parallel over (prompt, head) suffice;
//! the matmuls around attention dominate the time.

use super::vector::{self, dot, simd};
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
    out.par_chunks_mut((t * t).max(1)).enumerate().for_each(|(bh, p)| simd(|| {
        let (b, h) = (bh / s.n_heads, bh % s.n_heads);
        let kh = h / g;
        for i in 0..t {
            let qi = &q.0.data[(b * t + i) * qc + h * d..][..d];
            let row = &mut p[i * t..(i + 1) * t];
            let mut max = f32::NEG_INFINITY;
            for j in 0..=i {
                let kj = &k.0.data[(b * t + j) * kc + kh * d..][..d];
                row[j] = dot(qi, kj) * s.scale;
                max = max.max(row[j]);
            }
            for v in &mut row[..=i] {
                *v = vector::exp(*v - max);
            }
            let inv = 1.0 / vector::sum(&row[..=i]);
            for v in &mut row[..=i] {
                *v *= inv;
            }
            row[i + 1..].fill(0.0);
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
            let o = &mut orow[h * d..(h + 1) * d];
            o.fill(0.0);
            for (j, &pj) in prow.iter().enumerate().take(i + 1) {
                let vj = &v.0.data[(b * t + j) * vc + (h / g) * d..][..d];
                for (o, &x) in o.iter_mut().zip(vj) {
                    *o += pj * x;
                }
            }
        }
    }));
    Ok(CpuBackend::wrap(vec![s.batch * t, oc], out))
}
