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
        for j in 0..v {
            out.dlogits[r * v + j] = ((j == a as usize) as u8 as f64 - lq[j].exp()) / b as f64;
        }
    }
    out
}
