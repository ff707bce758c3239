//! `carve extract --method edge-prune`: the settings, the training run with its progress and saved
//! state, and what it found in the form the run's files take.

use super::progress::{Hook, TrainHook};
use super::ExtractJob;
use anyhow::{bail, Context, Result};
use carve_core::backend::Backend;
use carve_core::circuit::ModelShape;
use carve_core::extract::edge_prune::{edge_prune, Cut, EdgePruneData, EdgePruneOptions, Hold, Schedule};
use carve_core::extract::{AblationKind, MethodResult};
use carve_core::model::edges::EdgeWeights;
use carve_core::model::Model;

/// edge-prune's own settings (--steps, --lr, --warmup and --lambda-lr are shared with node-prune).
#[derive(clap::Args)]
pub struct EdgePruneArgs {
    /// edge-prune: the fraction of edges to remove, in [0, 1]: the kept edges hit it exactly
    /// (before the edges that reach nothing are dropped), unless the training closed some of the
    /// target's edges, which are left out (see --cut).
    #[arg(long, allow_negative_numbers = true)]
    pub sparsity: Option<f64>,
    /// edge-prune: the mean of the gates' log α at the start (spread 0.01); at 3 a gate samples
    /// fully open with probability 0.8.
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    pub init_log_alpha: f64,
    /// edge-prune: what the training KL compares: `vocab`, the whole next-token distribution, or
    /// `answers`, the distribution over the task's answer tokens only, renormalised over them
    /// (greater-than's year tokens, as the paper trains greater-than; it does not hold the answers'
    /// total probability). The report's KL is over the whole vocabulary either way.
    #[arg(long, value_enum, default_value = "vocab")]
    pub kl_over: KlOver,
    /// edge-prune: the circuit the finished gates give: `target`, the top edges by gate to the
    /// target, less any the training closed; or `open`, exactly the edges the training left open
    /// (gate above ½), however many (when the gates end short of the target, the circuit they were
    /// trained into); or `exact`, the top edges by gate to exactly the target, reopening any the
    /// training closed (the paper's cut; reopened edges make the circuit less faithful, and the
    /// report counts them). Resuming a finished run with another --cut cuts it again without
    /// training.
    #[arg(long, value_enum, default_value = "target")]
    pub cut: CutArg,
    /// edge-prune: what the multipliers hold at the target once its ramp is over: `open`, the
    /// fraction of gates the training closed, the circuit's own sparsity (the default); or
    /// `expected`, the expected fraction of edges removed, all along (the paper's: a closed gate
    /// still counts towards it, so fewer gates end open than the target keeps); or `exact`, once
    /// the open gates are down to the target's count (the open hold until then, at the latest from
    /// 90% of the steps), exactly that count after each step (log α shifted, the multipliers at
    /// rest), so the gates train on the KL alone at the circuit's final size and the cut reopens
    /// nothing.
    /// A resumed run keeps its own unless one is given.
    #[arg(long, value_enum)]
    pub hold: Option<HoldArg>,
    /// edge-prune: how the learning rates of the gates and of the multipliers fall after the
    /// warm-up: `cosine`, cosine decay from the warm-up on (below a fifth of the peak once the
    /// target's ramp is over; the default); or `flat`, the peak until the last 10% of the steps,
    /// then cosine decay, so the gates still move while the target is held (and can swing past it).
    /// A resumed run keeps its own unless one is given.
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// edge-prune: how many times as far the quadratic multiplier λ2 moves each step as λ1 (1, the
    /// paper's, by default). Its push on the gates is proportional to their distance from the
    /// target, so a larger one damps their swing past it (10 with --schedule flat on SmolLM2's
    /// greater-than: the swing went from 9.9 to 3.3 points of the edges); on a model of few edges
    /// with a fast λ (--lambda-lr) it overdoes it and the gates swing wider. A resumed run keeps
    /// its own unless one is given.
    #[arg(long, allow_negative_numbers = true)]
    pub lambda2_scale: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleArg {
    Cosine,
    Flat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HoldArg {
    Open,
    Expected,
    Exact,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CutArg {
    Target,
    Open,
    Exact,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KlOver {
    Vocab,
    Answers,
}

impl EdgePruneArgs {
    /// The run's options for a model of `n_edges` edges (0 when not yet known); a resumed run
    /// keeps its saved λ learning rate unless one is given.
    /// `answers`: the task's answer tokens, when it has a closed set of them.
    pub fn options(&self, a: &super::Args, n_edges: usize, saved: Option<&EdgePruneOptions>, answers: Option<Vec<u32>>)
        -> Result<EdgePruneOptions> {
        let target = self.sparsity.context("edge-prune needs --sparsity: the fraction of edges to remove, e.g. 0.98")?;
        let d = EdgePruneOptions::defaults();
        let np = &a.node_prune;
        let steps = np.steps.unwrap_or(d.steps);
        let o = EdgePruneOptions {
            target_sparsity: target,
            steps,
            lr: np.lr.unwrap_or(d.lr),
            lambda_lr: np.lambda_lr.or_else(|| match saved {
                Some(s) => s.lambda_lr,
                None => EdgePruneOptions::default_lambda_lr(np.lr.unwrap_or(d.lr), n_edges),
            }),
            warmup: np.warmup.unwrap_or(steps / 10),
            batch: a.batch,
            seed: a.task_args.seed,
            ablation: a.ablate.ablation.kind(),
            init_log_alpha: self.init_log_alpha,
            answer_vocab: match self.kl_over {
                KlOver::Vocab => None,
                KlOver::Answers => Some(answers.context(
                    "--kl-over answers needs a task whose answers come from a closed set of tokens (greater-than); this one's do not",
                )?),
            },
            hold: match (self.hold, saved) {
                (Some(HoldArg::Open), _) => Hold::Open,
                (Some(HoldArg::Expected), _) => Hold::Expected,
                (Some(HoldArg::Exact), _) => Hold::Exact,
                (None, Some(s)) => s.hold,
                (None, None) => d.hold,
            },
            schedule: match (self.schedule, saved) {
                (Some(ScheduleArg::Flat), _) => Schedule::Flat,
                (Some(ScheduleArg::Cosine), _) => Schedule::Cosine,
                (None, Some(s)) => s.schedule,
                (None, None) => d.schedule,
            },
            lambda2_scale: self.lambda2_scale.or(saved.map(|s| s.lambda2_scale)).unwrap_or(d.lambda2_scale),
            cut: match self.cut {
                CutArg::Target => Cut::Target,
                CutArg::Open => Cut::Open,
                CutArg::Exact => Cut::Exact,
            },
        };
        if o.ablation == AblationKind::MeanPerPosition {
            bail!("edge-prune takes --ablation zero, mean or resample (per-position means depend on the prompt's length)");
        }
        o.check()?;
        Ok(o)
    }
}

/// Trains the edge gates; None when stopped (the state is saved).
pub(super) fn run<B: Backend>(job: &mut ExtractJob<'_>, be: &B, model: &Model<B>, ew: &EdgeWeights<B::Tensor>)
    -> Result<Option<MethodResult>> {
    let (a, splits) = (job.a, &job.prep.splits);
    let (before, resume) = match job.resume.take() {
        Some(s) => (
            s.extract_seconds,
            Some(s.edge_prune.context("the saved run is not an edge-prune run: resume it with its own --method")?),
        ),
        None => (0.0, None),
    };
    let lay = &ew.layout;
    let opts = a.edge_prune.options(a, lay.n_edges(), resume.as_ref().map(|s| &s.options), job.prep.task.answer_vocab())?;
    let data = EdgePruneData {
        discovery: super::prompts(&splits.discovery),
        patching: super::prompts(&splits.patching),
        corrupted: super::corrupted_prompts(opts.ablation, &splits.discovery),
    };
    eprintln!(
        "edge-prune: {} edges ({} writers, {} readers); keeping {} ({}% removed); {} steps, lr {}, λ learning rate {}{}, {} schedule, holding {}; KL over {}",
        lay.n_edges(),
        lay.writers.len(),
        lay.readers.len(),
        ((1.0 - opts.target_sparsity) * lay.n_edges() as f64).round(),
        100.0 * opts.target_sparsity,
        opts.steps,
        opts.lr,
        opts.lambda_lr.unwrap_or(opts.lr),
        if opts.lambda2_scale == 1.0 { String::new() } else { format!(" (λ2 ×{})", opts.lambda2_scale) },
        match opts.schedule {
            Schedule::Flat => "flat",
            Schedule::Cosine => "cosine",
        },
        match opts.hold {
            Hold::Open => "the open gates",
            Hold::Expected => "the expected sparsity",
            Hold::Exact => "exactly the target's count",
        },
        opts.answer_vocab.as_ref().map_or("the whole vocabulary".to_string(), |v| format!("the task's {} answer tokens", v.len()))
    );
    if let Some(s) = &resume {
        eprintln!("resuming edge-prune at step {} of {}", s.step, opts.steps);
    }
    let mut hook = TrainHook::new(Hook::new(job.rd, job.sha.clone(), before, a.stop_after));
    let run = pollster::block_on(edge_prune(model, be, ew, &data, &opts, resume, &mut hook));
    hook.inner.bar.finish_and_clear();
    if let Some(e) = hook.inner.error.take() {
        return Err(e.context("saving the training state"));
    }
    let run = run?;
    if !run.finished {
        return Ok(None);
    }
    job.seconds = hook.inner.seconds();
    let m = job.m;
    let shape = ModelShape::of(&m.weights.layers, |t| t.shape[0]);
    let n_kv = m.weights.layers.iter().map(|l| l.n_kv_heads).collect();
    Ok(Some(run.into_result(&opts, lay, &shape, n_kv, job.seconds)?))
}
