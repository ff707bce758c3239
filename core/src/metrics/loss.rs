//! Training losses at each prompt's last position, and their gradients with respect to the logits,
//! in f64 on the host (a batch's last-position logits are `[batch, vocab]`: small next to a step).
//! Every loss is a mean over prompts, so a batch of prompts of different lengths gives what
//! running each alone and averaging gives.

use crate::{Error, HostTensor, Result};

use super::log_softmax;

/// A loss and its gradient `∂loss/∂logits`, shaped like the logits.
pub struct LossGrad {
    pub loss: f64,
    pub dlogits: Vec<f64>,
}

impl LossGrad {
    pub fn zeros(n: usize) -> LossGrad {
        LossGrad { loss: 0.0, dlogits: vec![0.0; n] }
    }
    /// `self += w · other`.
    pub fn add_scaled(&mut self, other: &LossGrad, w: f64) {
        self.loss += w * other.loss;
        for (a, b) in self.dlogits.iter_mut().zip(&other.dlogits) {
            *a += w * b;
        }
    }
    pub fn dlogits_tensor(&self, shape: &[usize]) -> HostTensor {
        HostTensor::new(shape.to_vec(), self.dlogits.iter().map(|&v| v as f32).collect())
    }
}

fn check_same(full: &HostTensor, logits: &HostTensor) -> Result<()> {
    if full.shape != logits.shape || logits.shape.len() != 2 {
        return Err(Error::Input(format!("reference logits {:?} and logits {:?} differ in shape", full.shape, logits.shape)));
    }
    Ok(())
}

/// Mean over rows of KL(P ‖ Q), P = softmax(full row), Q = softmax(logits row);
/// `∂/∂logits = (Q − P) / rows`.
pub fn kl_mean(full: &HostTensor, logits: &HostTensor) -> Result<LossGrad> {
    check_same(full, logits)?;
    let (b, v) = (logits.shape[0], logits.shape[1]);
    let mut out = LossGrad::zeros(b * v);
    for r in 0..b {
        let (lp, lq) = (log_softmax(full.row(r)), log_softmax(logits.row(r)));
        let mut kl = 0.0;
        for j in 0..v {
            let (p, q) = (lp[j].exp(), lq[j].exp());
            if p > 0.0 {
                kl += p * (lp[j] - lq[j]);
            }
            out.dlogits[r * v + j] = (q - p) / b as f64;
        }
        out.loss += kl.max(0.0) / b as f64;
    }
    Ok(out)
}

/// Mean over rows of `relu(margin − (logit[answer] − logit[wrong]))`, for rows that have a wrong
/// answer (`None`: the row adds 0); the mean is over all rows.
pub fn margin_mean(logits: &HostTensor, pairs: &[Option<(u32, u32)>], margin: f64) -> Result<LossGrad> {
    let (b, v) = (logits.shape[0], logits.shape[1]);
    if pairs.len() != b {
        return Err(Error::Input(format!("{} answer pairs for {b} rows of logits", pairs.len())));
    }
    let mut out = LossGrad::zeros(b * v);
    for (r, p) in pairs.iter().enumerate() {
        let Some((a, w)) = *p else { continue };
        let row = logits.row(r);
        let diff = row[a as usize] as f64 - row[w as usize] as f64;
        if margin - diff > 0.0 {
            out.loss += (margin - diff) / b as f64;
            out.dlogits[r * v + a as usize] -= 1.0 / b as f64;
            out.dlogits[r * v + w as usize] += 1.0 / b as f64;
        }
    }
    Ok(out)
}

/// Mean over rows of `logit[answer] − logit[wrong]`.
pub fn logit_diff_mean(logits: &HostTensor, pairs: &[(u32, u32)]) -> LossGrad {
    let (b, v) = (logits.shape[0], logits.shape[1]);
    let mut out = LossGrad::zeros(b * v);
    for (r, &(a, w)) in pairs.iter().enumerate() {
        let row = logits.row(r);
        out.loss += (row[a as usize] as f64 - row[w as usize] as f64) / b as f64;
        out.dlogits[r * v + a as usize] += 1.0 / b as f64;
        out.dlogits[r * v + w as usize] -= 1.0 / b as f64;
    }
    out
}

/// Mean over rows of `log softmax(row)[answer]`; `∂/∂logits = (onehot − softmax) / rows`.
pub fn log_prob_mean(logits: &HostTensor, answers: &[u32]) -> LossGrad {
    let (b, v) = (logits.shape[0], logits.shape[1]);
    let mut out = LossGrad::zeros(b * v);
    for (r, &a) in answers.iter().enumerate() {
        let lq = log_softmax(logits.row(r));
        out.loss += lq[a as usize] / b as f64;
        for (j, (d, l)) in out.dlogits[r * v..(r + 1) * v].iter_mut().zip(&lq).enumerate() {
            *d = ((j == a as usize) as u8 as f64 - l.exp()) / b as f64;
        }
    }
    out
}

/// `Σ_j s_j·softmax(row)_j` for signed weights on some ids, and its gradient
/// `∂/∂logit_i = p_i·(s_i − Σ_j s_j p_j)`.
fn signed_prob(row: &[f32], signs: &[(u32, f64)]) -> (f64, Vec<f64>) {
    let lp = log_softmax(row);
    let p: Vec<f64> = lp.iter().map(|v| v.exp()).collect();
    let s: f64 = signs.iter().map(|&(i, w)| w * p[i as usize]).sum();
    let mut g: Vec<f64> = p.iter().map(|&pi| -pi * s).collect();
    for &(i, w) in signs {
        g[i as usize] += p[i as usize] * w;
    }
    (s, g)
}

/// One example's task metric and its gradient with respect to the logits it reads: `first` (the
/// prompt's last position) and, for years written one digit per token, `cond` (the position after
/// the year's first digit). Logit difference, log P(answer), or P(year > YY) − P(year < YY).
pub fn example_metric(task: &crate::tasks::Task, e: &crate::tasks::Example, first: &[f32], cond: Option<&[f32]>)
    -> Result<(f64, Vec<f64>, Option<Vec<f64>>)> {
    use crate::tasks::{MetricKind, Target, YearTokens};
    let v = first.len();
    match (&e.target, task.metric, &task.years) {
        (Target::Token { answer, wrong: Some(w) }, MetricKind::LogitDiff, _) => {
            let mut g = vec![0.0; v];
            g[*answer as usize] += 1.0;
            g[*w as usize] -= 1.0;
            Ok((first[*answer as usize] as f64 - first[*w as usize] as f64, g, None))
        }
        (Target::Token { answer, .. }, MetricKind::LogProb, _) => {
            let lg = log_prob_mean(&HostTensor::new(vec![1, v], first.to_vec()), &[*answer]);
            Ok((lg.loss, lg.dlogits, None))
        }
        (Target::Year { yy }, MetricKind::ProbDiff, Some(YearTokens::TwoDigit(ids))) => {
            let signs: Vec<(u32, f64)> =
                ids.iter().enumerate().filter(|(n, _)| *n != *yy as usize).map(|(n, &id)| (id, if n > *yy as usize { 1.0 } else { -1.0 })).collect();
            let (m, g) = signed_prob(first, &signs);
            Ok((m, g, None))
        }
        (Target::Year { yy }, MetricKind::ProbDiff, Some(YearTokens::Digits(d))) => {
            let cond = cond.ok_or_else(|| Error::Input("a year written digit by digit needs the second digit's logits".into()))?;
            let (y1, y2) = ((*yy / 10) as usize, (*yy % 10) as usize);
            let sign = |y: usize| -> Vec<(u32, f64)> {
                d.iter().enumerate().filter(|(n, _)| *n != y).map(|(n, &id)| (id, if n > y { 1.0 } else { -1.0 })).collect()
            };
            let (s1, mut g1) = signed_prob(first, &sign(y1));
            let (s2, g2) = signed_prob(cond, &sign(y2));
            let lp = log_softmax(first);
            let py1 = lp[d[y1] as usize].exp();
            // M = S1 + p1(y1)·S2.
            for (i, g) in g1.iter_mut().enumerate() {
                let delta = (i == d[y1] as usize) as u8 as f64;
                *g += s2 * py1 * (delta - lp[i].exp());
            }
            let g2: Vec<f64> = g2.iter().map(|g| py1 * g).collect();
            Ok((s1 + py1 * s2, g1, Some(g2)))
        }
        _ => Err(Error::Input(format!("{}: example {:?} does not fit the task's metric {}", task.name, e.source, task.metric.key()))),
    }
}
