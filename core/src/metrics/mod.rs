//! Metrics at a prompt's last position: KL divergence, accuracy, logit difference, probability
//! difference and the answer's probability, computed from logits in f64 with the max subtracted
//! (numerically stable for any logit scale). [`evaluate`] runs a task's examples through a model,
//! optionally through a circuit too (masks and ablation values), and averages them.

mod eval;
pub mod loss;

pub use eval::{evaluate, last_logits, Circuit, CircuitAblation, EdgeGates, EvalOptions, Report};

use crate::tasks::{Example, MetricKind, Target, Task, YearTokens};
use crate::{Error, Result};

/// `log Σ exp(x)`, max subtracted, in f64.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let m = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    if !m.is_finite() {
        return m;
    }
    m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
}

/// Row-wise log-softmax in f64.
pub fn log_softmax(row: &[f32]) -> Vec<f64> {
    let lse = log_sum_exp(row);
    row.iter().map(|&x| x as f64 - lse).collect()
}

/// KL(P ‖ Q) = Σ p·(log p − log q) for P = softmax(p_logits), Q = softmax(q_logits), in nats.
/// Terms where p underflows to 0 contribute 0; rounding below 0 is clamped to 0. A NaN or
/// +∞ logit gives NaN (never a clamped 0, which would pass for a perfect match).
pub fn kl_div(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    KlFrom::new(p_logits).to(q_logits)
}

/// P = softmax(p_logits) held in f64 for many KL(P ‖ Q) against the same P (ablate measures every
/// candidate against the full model's logits): each Q then costs one `exp` per entry, its
/// log-sum-exp, where [`kl_div`] alone takes three. `KlFrom::new(p).to(q)` is `kl_div(p, q)` to
/// the bit: the same terms, summed in the same order.
pub struct KlFrom {
    /// log p, entry by entry.
    log_p: Vec<f64>,
    /// p = exp(log p).
    p: Vec<f64>,
    /// False when a logit of P is NaN or +∞: every KL from it is NaN.
    valid: bool,
}

impl KlFrom {
    pub fn new(p_logits: &[f32]) -> Self {
        let lp = log_sum_exp(p_logits);
        let valid = lp.is_finite() && !p_logits.iter().any(|x| x.is_nan());
        let log_p: Vec<f64> = p_logits.iter().map(|&a| a as f64 - lp).collect();
        let p = log_p.iter().map(|l| l.exp()).collect();
        KlFrom { log_p, p, valid }
    }

    /// KL(P ‖ Q) in nats, as [`kl_div`] defines it.
    pub fn to(&self, q_logits: &[f32]) -> f64 {
        assert_eq!(self.p.len(), q_logits.len(), "kl_div: rows of different lengths");
        let lq = log_sum_exp(q_logits);
        if !(self.valid && lq.is_finite()) || q_logits.iter().any(|x| x.is_nan()) {
            return f64::NAN;
        }
        let mut kl = 0.0;
        for ((&log_p, &p), &b) in self.log_p.iter().zip(&self.p).zip(q_logits) {
            if p > 0.0 {
                kl += p * (log_p - (b as f64 - lq));
            }
        }
        kl.max(0.0)
    }
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// softmax(row)[id].
pub fn prob(row: &[f32], id: u32) -> f64 {
    (row[id as usize] as f64 - log_sum_exp(row)).exp()
}

/// logit(a) − logit(b).
pub fn logit_diff(row: &[f32], a: u32, b: u32) -> f64 {
    row[a as usize] as f64 - row[b as usize] as f64
}

/// (P(year > yy), P(year < yy)) when one token holds the two digits: `ids[n]` is "00".."99".
pub fn year_probs_two_digit(row: &[f32], ids: &[u32], yy: u8) -> (f64, f64) {
    let p = softmax_at(row, ids);
    let y = yy as usize;
    (p[y + 1..].iter().sum(), p[..y].iter().sum())
}

/// (P(year > yy), P(year < yy)) when the two digits are two next-token steps, exactly:
/// P(>yy) = Σ_{d1>y1} P(d1) + P(y1)·Σ_{d2>y2} P(d2 | y1), and P(<yy) alike. `first` is the
/// prompt's last-position logits, `cond` those after the prompt followed by the digit y1;
/// `digits[d]` is the token "d".
pub fn year_probs_digits(first: &[f32], cond: &[f32], digits: &[u32], yy: u8) -> (f64, f64) {
    let (y1, y2) = ((yy / 10) as usize, (yy % 10) as usize);
    let p1 = softmax_at(first, digits);
    let p2 = softmax_at(cond, digits);
    let gt = p1[y1 + 1..].iter().sum::<f64>() + p1[y1] * p2[y2 + 1..].iter().sum::<f64>();
    let lt = p1[..y1].iter().sum::<f64>() + p1[y1] * p2[..y2].iter().sum::<f64>();
    (gt, lt)
}

/// softmax(row) at the given ids.
fn softmax_at(row: &[f32], ids: &[u32]) -> Vec<f64> {
    let lse = log_sum_exp(row);
    ids.iter().map(|&i| (row[i as usize] as f64 - lse).exp()).collect()
}

/// One example's numbers.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ExampleScore {
    /// The model's greedy answer is right (IOI, acronyms, files: the argmax over the whole
    /// vocabulary is the answer; greater-than: the greedily predicted year is above YY).
    pub correct: bool,
    /// The task's metric (logit difference, probability difference or log P(answer)).
    pub metric: f64,
    /// P(answer); greater-than: P(year > YY).
    pub answer_prob: f64,
    /// The greedy prediction: the argmax token, then for two-step years the second digit's argmax
    /// when the first was YY's first digit.
    pub predicted: Vec<u32>,
}

/// Means over examples.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Scores {
    pub accuracy: f64,
    pub metric: f64,
    pub answer_prob: f64,
}

impl Scores {
    pub fn mean(scores: &[ExampleScore]) -> Scores {
        let n = scores.len().max(1) as f64;
        Scores {
            accuracy: scores.iter().filter(|s| s.correct).count() as f64 / n,
            metric: scores.iter().map(|s| s.metric).sum::<f64>() / n,
            answer_prob: scores.iter().map(|s| s.answer_prob).sum::<f64>() / n,
        }
    }
}

/// Scores one example of `task` from the logits at its prompt's last position (`first`) and, for
/// years written one digit per token, at the position after the prompt and YY's first digit (`cond`).
pub fn score(task: &Task, e: &Example, first: &[f32], cond: Option<&[f32]>) -> Result<ExampleScore> {
    let v = first.len();
    let ids: Vec<u32> = match (&e.target, &task.years) {
        (Target::Token { answer, wrong }, _) => [Some(*answer), *wrong].into_iter().flatten().collect(),
        (Target::Year { .. }, Some(YearTokens::TwoDigit(ids) | YearTokens::Digits(ids))) => ids.clone(),
        (Target::Year { .. }, None) => vec![],
    };
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= v) {
        return Err(Error::Input(format!("{}: example {:?} names token {bad}, outside logits of {v}", task.name, e.source)));
    }
    let table_ok = match &task.years {
        Some(YearTokens::TwoDigit(ids)) => ids.len() == 100,
        Some(YearTokens::Digits(ids)) => ids.len() == 10,
        None => true,
    };
    if matches!(e.target, Target::Year { yy } if yy > 99) || !table_ok {
        return Err(Error::Input(format!("{}: example {:?}: years are two digits, with 100 two-digit or 10 digit tokens", task.name, e.source)));
    }
    if cond.is_some_and(|c| c.len() != v) {
        return Err(Error::Input("the two steps' logits have different lengths".into()));
    }
    let top = argmax(first) as u32;
    match (&e.target, task.metric) {
        (Target::Token { answer, wrong }, kind) => {
            let answer_prob = prob(first, *answer);
            let metric = match (kind, wrong) {
                (MetricKind::LogitDiff, Some(w)) => logit_diff(first, *answer, *w),
                (MetricKind::LogProb, _) => first[*answer as usize] as f64 - log_sum_exp(first),
                _ => return Err(mismatch(task, e)),
            };
            Ok(ExampleScore { correct: top == *answer, metric, answer_prob, predicted: vec![top] })
        }
        (Target::Year { yy }, MetricKind::ProbDiff) => match &task.years {
            Some(YearTokens::TwoDigit(ids)) => {
                let (gt, lt) = year_probs_two_digit(first, ids, *yy);
                let correct = ids.iter().position(|&t| t == top).is_some_and(|n| n > *yy as usize);
                Ok(ExampleScore { correct, metric: gt - lt, answer_prob: gt, predicted: vec![top] })
            }
            Some(YearTokens::Digits(ids)) => {
                let cond = cond.ok_or_else(|| Error::Input("a two-step year needs the logits after its first digit".into()))?;
                let (gt, lt) = year_probs_digits(first, cond, ids, *yy);
                let (y1, y2) = ((*yy / 10) as usize, (*yy % 10) as usize);
                let mut predicted = vec![top];
                let correct = match ids.iter().position(|&t| t == top) {
                    Some(d1) if d1 > y1 => true,
                    Some(d1) if d1 == y1 => {
                        let top2 = argmax(cond) as u32;
                        predicted.push(top2);
                        ids.iter().position(|&t| t == top2).is_some_and(|d2| d2 > y2)
                    }
                    _ => false,
                };
                Ok(ExampleScore { correct, metric: gt - lt, answer_prob: gt, predicted })
            }
            None => Err(mismatch(task, e)),
        },
        _ => Err(mismatch(task, e)),
    }
}

fn mismatch(task: &Task, e: &Example) -> Error {
    Error::Input(format!("{}: example {:?} does not fit the task's metric {}", task.name, e.source, task.metric.key()))
}
