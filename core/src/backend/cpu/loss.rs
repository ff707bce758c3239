//! `kl_hinge`: the training loss at the last-position logits and its gradient, a row at a time in
//! f64 (the rows are few; the vocabulary is long).

use super::{check, CpuBackend, CpuTensor};
use crate::Result;
use rayon::prelude::*;

fn log_sum_exp(row: &[f32]) -> f64 {
    let m = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
}

pub(super) fn kl_hinge(be: &CpuBackend, logits: &CpuTensor, full: &CpuTensor, pairs: &[Option<(u32, u32)>], margin: f32,
    weight: f32) -> Result<(CpuTensor, CpuTensor)> {
    const OP: &str = "kl_hinge";
    check(logits.0.shape.len() == 2 && full.0.shape == logits.0.shape, OP, || {
        format!("logits {:?} and reference logits {:?} must be the same [rows, vocab]", logits.0.shape, full.0.shape)
    })?;
    let (b, v) = (logits.0.shape[0], logits.0.shape[1]);
    check(v > 0, OP, || "logits of no columns have no distribution".into())?;
    check(pairs.len() == b, OP, || format!("{} answer pairs for {b} rows of logits", pairs.len()))?;
    if let Some((a, w)) = pairs.iter().flatten().find(|(a, w)| *a as usize >= v || *w as usize >= v) {
        return Err(crate::Error::Backend(format!("{OP}: answer pair ({a}, {w}) is past the vocabulary of {v}")));
    }
    let (mut d, mut terms) = (be.out(b * v), be.out(b * 4));
    {
        let (margin, weight) = (margin as f64, weight as f64);
        d.par_chunks_mut(v).zip(terms.par_chunks_mut(4)).enumerate().for_each(|(r, (d, t))| {
            let (x, f) = (logits.0.row(r), full.0.row(r));
            let (lq, lp) = (log_sum_exp(x), log_sum_exp(f));
            let mut g = vec![0.0f64; v];
            let mut kl = 0.0;
            for j in 0..v {
                let (lpj, lqj) = (f[j] as f64 - lp, x[j] as f64 - lq);
                let p = lpj.exp();
                if p > 0.0 {
                    kl += p * (lpj - lqj);
                }
                g[j] = weight * ((lqj.exp() - p) / b as f64);
            }
            let mut h = 0.0;
            if let Some((a, w)) = pairs[r] {
                let diff = x[a as usize] as f64 - x[w as usize] as f64;
                if margin - diff > 0.0 {
                    h = margin - diff;
                    g[a as usize] -= weight / b as f64;
                    g[w as usize] += weight / b as f64;
                }
            }
            for (o, gj) in d.iter_mut().zip(&g) {
                *o = *gj as f32;
            }
            t.copy_from_slice(&[kl.max(0.0) as f32, h as f32, lq as f32, lp as f32]);
        });
    }
    Ok((CpuBackend::wrap(vec![b, v], d), CpuBackend::wrap(vec![b, 4], terms)))
}
