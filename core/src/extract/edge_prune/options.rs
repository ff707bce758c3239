//! edge-prune's options: what decides a run's circuit (`EdgePruneOptions`), with what holds the
//! gates at the target (`Hold`), how the learning rates fall (`Schedule`) and which edges the
//! finished gates keep (`Cut`); their defaults and checks.

use serde::{Deserialize, Serialize};

use super::{cut, open_gates, top_edges};
use crate::extract::AblationKind;
use crate::optim::adamw;
use crate::{Error, Result};

/// Edges up to which the λ learning rate defaults to the gates' (`default_lambda_lr`).
pub const LAMBDA_LR_EDGES: f64 = 7000.0;

/// What decides the circuit; a resumed run must give the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgePruneOptions {
    /// The fraction of edges to remove, in [0, 1].
    pub target_sparsity: f64,
    pub steps: u64,
    /// AdamW's peak learning rate on log α.
    pub lr: f64,
    /// The peak learning rate of the ascent on λ1, λ2 (None: `lr`; the CLI's default is
    /// `default_lambda_lr`).
    pub lambda_lr: Option<f64>,
    pub warmup: u64,
    pub batch: usize,
    pub seed: u64,
    /// `zero`, `mean` (standalone models need it) or `resample` (each prompt's corrupted run).
    pub ablation: AblationKind,
    /// The mean of log α at the start (the spread is 0.01).
    pub init_log_alpha: f64,
    /// The training KL is taken over these tokens' distribution only, both sides renormalised over
    /// them (the task's answers: greater-than's year tokens, as the paper trains greater-than);
    /// None: over the whole vocabulary. The report's KL is always over the whole vocabulary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_vocab: Option<Vec<u32>>,
    /// What the multipliers hold at the target once the ramp has reached it (`Hold`). Runs saved
    /// before it existed held the expected sparsity, and resume so.
    #[serde(default = "Hold::saved_before", skip_serializing_if = "Hold::is_expected")]
    pub hold: Hold,
    /// How the learning rates of log α and of λ1, λ2 fall after the warm-up (`Schedule`). Runs
    /// saved before it existed decayed by cosine, the default, and resume so.
    #[serde(default, skip_serializing_if = "Schedule::is_cosine")]
    pub schedule: Schedule,
    /// How many times as far λ2 moves each step as λ1 (both under the λ learning rate): 1 is the
    /// paper's. λ2(ŝ − t)² pushes the gates in proportion to the gap, 2λ2(ŝ − t), where λ1 pushes
    /// by what the gap has summed to; a larger λ2 turns the push round as soon as the gates cross
    /// the target, before λ1 has unwound, and so damps their swing past it. Runs saved before it
    /// existed moved λ2 as λ1, and resume so.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub lambda2_scale: f64,
    /// Which edges the finished gates keep. Not part of the training: not saved with the state,
    /// and a finished run resumed with another cut is cut again without a step trained.
    #[serde(skip)]
    pub cut: Cut,
}

/// The circuit the finished gates give.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cut {
    /// The target's edges, without those the training closed (`cut`).
    #[default]
    Target,
    /// The edges the training left open, whatever their number (`open_gates`): when the gates end
    /// short of the target, the circuit they were trained into rather than a cut that removes
    /// edges they still use.
    Open,
    /// Exactly the target's edges (`top_edges`), reopening any the training closed: the paper's
    /// cut, at the count asked for whatever the gates did.
    Exact,
}

/// What λ1 and λ2 are raised by once the target's ramp is over (before it: the expected sparsity),
/// or what holds the gates at the target instead of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hold {
    /// The fraction of gates the training has closed (test-time gate at most ½): the circuit's
    /// own sparsity. The gates are still pushed through the expected L0 norm's gradient; only the
    /// multipliers read the count.
    #[default]
    Open,
    /// The expected fraction of edges removed, 1 − mean P(z ≠ 0), all along (the paper's). A closed
    /// gate still samples nonzero now and then and counts for it, so the open gates end sparser
    /// than the target.
    Expected,
    /// Exactly the target's count of open gates: once the ramp is over and the open gates are down
    /// to `round((1 − t)·edges)` (the open hold's push until then; at the latest from `HOLD_BY` of
    /// the steps), after each step log α is shifted by the one amount that leaves the top
    /// `round((1 − t)·edges)` gates open (`hold_count`), and the multipliers rest. The gates are
    /// then trained on the KL alone at the circuit's final size, and the cut keeps them all: the
    /// target, hit exactly, with no edge reopened that the training had closed. Waiting for the
    /// count spares the circuit a jump: shifted at the ramp's end, IOI's gates (3,516 open for
    /// 1,413) lost 60% of their edges in one step.
    Exact,
}

impl Hold {
    fn saved_before() -> Hold {
        Hold::Expected
    }

    fn is_expected(&self) -> bool {
        *self == Hold::Expected
    }
}

/// How the learning rates of the gates and of the multipliers fall after the warm-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Cosine decay to 0 from the end of the warm-up: by the end of the target's ramp (70% of the
    /// steps) the rate is below a fifth of its peak, so the gates move little while it is held.
    #[default]
    Cosine,
    /// The peak rate until the last `FLAT_DECAY` of the steps, then cosine decay to 0: the gates
    /// and λ still move at full speed while the target is held, and can swing past it.
    Flat,
}

fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

/// The fraction of the steps, at the end, over which `Schedule::Flat` decays.
pub const FLAT_DECAY: f64 = 0.1;

/// `Hold::Exact` holds the count from this fraction of the steps on if the open gates have not come
/// down to it before.
pub const HOLD_BY: f64 = 0.9;

impl Schedule {
    fn is_cosine(&self) -> bool {
        *self == Schedule::Cosine
    }

    /// The learning rate at `step` (0-based) of `steps` for peak `base` after `warmup` steps.
    pub fn rate(self, base: f64, step: u64, warmup: u64, steps: u64) -> f64 {
        match self {
            Schedule::Cosine => adamw::warmup_cosine(base, step, warmup, steps),
            Schedule::Flat => {
                let decay = steps.saturating_sub((FLAT_DECAY * steps as f64).ceil() as u64);
                adamw::warmup_flat_cosine(base, step, warmup, decay, steps)
            }
        }
    }
}

impl EdgePruneOptions {
    /// Target 0.95, 300 steps of batch 32, lr 0.3 with 10% warm-up, log α from N(3, 0.01), mean
    /// ablation. (The paper starts at N(10, 0.01) with lr 0.8 for 3000 steps; over a few hundred
    /// steps its gates fall in lockstep through the region where they get a gradient and close for
    /// good: on the planted copy model the path's edges were lost.)
    pub fn defaults() -> EdgePruneOptions {
        EdgePruneOptions {
            target_sparsity: 0.95,
            steps: 300,
            lr: 0.3,
            lambda_lr: None,
            warmup: 30,
            batch: 32,
            seed: 0,
            ablation: AblationKind::Mean,
            init_log_alpha: 3.0,
            answer_vocab: None,
            hold: Hold::Open,
            schedule: Schedule::Cosine,
            lambda2_scale: 1.0,
            cut: Cut::Target,
        }
    }

    /// The kept edges of finished gates under `cut`, and how many of the target's were left out
    /// as closed.
    pub fn cut_gates(&self, log_alpha: &[f64]) -> (Vec<bool>, usize) {
        match self.cut {
            Cut::Target => cut(log_alpha, self.target_sparsity),
            Cut::Open => (open_gates(log_alpha), 0),
            Cut::Exact => (top_edges(log_alpha, self.target_sparsity), 0),
        }
    }

    /// The λ learning rate when none is given, for a model of `n_edges` edges: `lr` up to 7,000
    /// edges (None), `lr · edges / 7,000` past them. The Lagrangian pushes each gate by λ / edges,
    /// so λ must grow in proportion to the edge count to push each gate as hard, and under Adam λ
    /// grows by about its learning rate a step. On SmolLM2 (70,651 edges, greater-than, 150 steps
    /// at lr 0.3) a λ learning rate of 3 took the expected sparsity to 0.71 where 0.3 reached 0.42.
    pub fn default_lambda_lr(lr: f64, n_edges: usize) -> Option<f64> {
        let scale = n_edges as f64 / LAMBDA_LR_EDGES;
        (scale > 1.0).then_some(lr * scale)
    }

    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(m));
        if !(self.target_sparsity.is_finite() && (0.0..=1.0).contains(&self.target_sparsity)) {
            return bad(format!("the target sparsity must be in [0, 1], not {}", self.target_sparsity));
        }
        if self.steps == 0 || self.steps > 10_000_000 {
            return bad(format!("edge-prune runs 1 to 10,000,000 steps, not {}", self.steps));
        }
        for (name, v) in [("learning rate", Some(self.lr)), ("λ learning rate", self.lambda_lr)] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0 && v <= 100.0) {
                    return bad(format!("the {name} must be a finite number in (0, 100], not {v}"));
                }
            }
        }
        if !(self.lambda2_scale.is_finite() && self.lambda2_scale > 0.0 && self.lambda2_scale <= 1000.0) {
            return bad(format!("the λ2 scale must be a finite number in (0, 1000], not {}", self.lambda2_scale));
        }
        if !(self.init_log_alpha.is_finite() && self.init_log_alpha.abs() <= 50.0) {
            return bad(format!("the starting log α must be a finite number in [−50, 50], not {}", self.init_log_alpha));
        }
        if self.warmup > self.steps {
            return bad(format!("{} warm-up steps are more than the {} steps", self.warmup, self.steps));
        }
        if self.batch == 0 {
            return bad("the batch must hold at least 1 prompt".into());
        }
        if !matches!(self.ablation, AblationKind::Zero | AblationKind::Mean | AblationKind::Resample) {
            return bad("edge-prune takes zero, mean or resample ablation".into());
        }
        if let Some(v) = &self.answer_vocab {
            if v.len() < 2 {
                return bad(format!("a KL over the answers needs at least 2 answer tokens, not {}", v.len()));
            }
            let mut sorted = v.clone();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                return bad("the answer tokens of the KL repeat a token".into());
            }
        }
        Ok(())
    }
}
