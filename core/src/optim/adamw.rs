//! AdamW (Loshchilov & Hutter 2019) in PyTorch's form, and the warm-up-then-cosine learning-rate
//! schedule. The moments and step count are plain data, saved with a run's state for `--resume`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// First and second moments per parameter, and the steps taken.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub m: Vec<f64>,
    pub v: Vec<f64>,
    pub t: u64,
}

impl Moments {
    pub fn new(n: usize) -> Self {
        Moments { m: vec![0.0; n], v: vec![0.0; n], t: 0 }
    }
}

impl AdamW {
    /// One step at learning rate `lr`: t ← t + 1, m ← β1·m + (1 − β1)·g, v ← β2·v + (1 − β2)·g²,
    /// p ← p·(1 − lr·λ) − lr·m̂/(√v̂ + ε) with m̂ = m/(1 − β1ᵗ), v̂ = v/(1 − β2ᵗ).
    pub fn step(&self, params: &mut [f64], grads: &[f64], mom: &mut Moments, lr: f64) {
        assert!(params.len() == grads.len() && mom.m.len() == params.len() && mom.v.len() == params.len(), "AdamW: lengths differ");
        mom.t += 1;
        let c1 = 1.0 - self.beta1.powi(mom.t.min(i32::MAX as u64) as i32);
        let c2 = 1.0 - self.beta2.powi(mom.t.min(i32::MAX as u64) as i32);
        for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(&mut mom.m).zip(&mut mom.v) {
            *m = self.beta1 * *m + (1.0 - self.beta1) * g;
            *v = self.beta2 * *v + (1.0 - self.beta2) * g * g;
            *p = *p * (1.0 - lr * self.weight_decay) - lr * (*m / c1) / ((*v / c2).sqrt() + self.eps);
        }
    }
}

/// The learning rate at `step` (0-based) of `total`: linear warm-up over `warmup` steps to `base`,
/// then cosine decay to 0 at `total`: base·½(1 + cos(π·(step − warmup)/(total − warmup))).
pub fn warmup_cosine(base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    warmup_flat_cosine(base, step, warmup, warmup, total)
}

/// The learning rate at `step` (0-based) of `total`: linear warm-up over `warmup` steps to `base`,
/// `base` until step `decay`, then cosine decay to 0 at `total`:
/// base·½(1 + cos(π·(step − d)/(total − d))) with d = max(decay, warmup).
pub fn warmup_flat_cosine(base: f64, step: u64, warmup: u64, decay: u64, total: u64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let from = decay.max(warmup);
    if step < from {
        return base;
    }
    let span = total.saturating_sub(from).max(1) as f64;
    let done = ((step - from) as f64 / span).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * done).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adam's first step moves each parameter by lr·g/(|g| + ε): lr·sign(g) for |g| ≫ ε.
    #[test]
    fn the_first_step_is_lr_times_the_sign() {
        let opt = AdamW::default();
        let mut p = vec![1.0, -2.0, 0.5, 3.0];
        let g = [0.3, -7.0, 1e-3, 0.0];
        let mut mom = Moments::new(4);
        opt.step(&mut p, &g, &mut mom, 0.1);
        let want = [0.9, -1.9, 0.4, 3.0];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{p:?} vs {want:?}");
        }
    }

    /// Decoupled weight decay shrinks a parameter whose gradient is zero by lr·λ per step.
    #[test]
    fn weight_decay_is_decoupled() {
        let opt = AdamW { weight_decay: 0.5, ..AdamW::default() };
        let mut p = vec![2.0];
        let mut mom = Moments::new(1);
        for _ in 0..3 {
            opt.step(&mut p, &[0.0], &mut mom, 0.1);
        }
        assert!((p[0] - 2.0 * 0.95f64.powi(3)).abs() < 1e-12, "{}", p[0]);
    }

    /// It minimises a badly scaled quadratic Σ aᵢ(pᵢ − cᵢ)²; stopping and resuming from saved
    /// moments gives the same parameters bit for bit.
    #[test]
    fn it_minimises_and_resumes_exactly() {
        let (a, c) = ([1.0, 100.0, 0.01], [3.0, -1.0, 0.5]);
        let grad = |p: &[f64]| -> Vec<f64> { (0..3).map(|i| 2.0 * a[i] * (p[i] - c[i])).collect() };
        let opt = AdamW::default();
        let run = |steps: u64, p: &mut Vec<f64>, mom: &mut Moments, from: u64| {
            for s in from..from + steps {
                let g = grad(p);
                opt.step(p, &g, mom, warmup_cosine(0.05, s, 50, 4000));
            }
        };
        let (mut p, mut mom) = (vec![0.0; 3], Moments::new(3));
        run(4000, &mut p, &mut mom, 0);
        for i in 0..3 {
            assert!((p[i] - c[i]).abs() < 1e-3, "p{i} = {} (want {})", p[i], c[i]);
        }
        let (mut q, mut mq) = (vec![0.0; 3], Moments::new(3));
        run(1234, &mut q, &mut mq, 0);
        let saved: Moments = serde_json::from_str(&serde_json::to_string(&mq).unwrap()).unwrap();
        let mut mq = saved;
        run(4000 - 1234, &mut q, &mut mq, 1234);
        assert_eq!(p, q);
    }

    #[test]
    fn the_schedule_warms_up_then_decays_to_zero() {
        assert!((warmup_cosine(1.0, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((warmup_cosine(1.0, 9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(1.0, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(1.0, 55, 10, 100) - 0.5).abs() < 1e-12);
        assert!(warmup_cosine(1.0, 100, 10, 100).abs() < 1e-12);
        assert_eq!(warmup_cosine(0.3, 5, 0, 0), 0.0, "no warm-up and no span: the rate is spent");
    }

    #[test]
    fn the_flat_schedule_holds_the_peak_until_its_decay() {
        assert!((warmup_flat_cosine(1.0, 0, 10, 90, 100) - 0.1).abs() < 1e-12);
        assert_eq!(warmup_flat_cosine(1.0, 10, 10, 90, 100), 1.0);
        assert_eq!(warmup_flat_cosine(1.0, 89, 10, 90, 100), 1.0);
        assert!((warmup_flat_cosine(1.0, 95, 10, 90, 100) - 0.5).abs() < 1e-12);
        assert!(warmup_flat_cosine(1.0, 100, 10, 90, 100).abs() < 1e-12);
        assert!((warmup_flat_cosine(1.0, 7, 5, 2, 15) - warmup_cosine(1.0, 7, 5, 15)).abs() < 1e-12, "a decay inside the warm-up starts after it");
    }
}
