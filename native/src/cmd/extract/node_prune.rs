//! `carve extract --method node-prune`: the settings, the training run with its progress and
//! saved state, and what it found in the form the run's files take.

use super::progress::{Hook, TrainHook};
use super::ExtractJob;
use anyhow::{Context, Result};
use carve_core::backend::Backend;
use carve_core::extract::node_prune::{node_prune, Granularity, NodePruneData, NodePruneOptions};
use carve_core::extract::{AblationKind, MethodResult};
use carve_core::model::Model;
use carve_core::tasks::Target;

/// node-prune's settings.
#[derive(clap::Args)]
pub struct NodePruneArgs {
    /// node-prune: which components carry a learned gate, comma-separated: attn, mlps, heads, neurons.
    #[arg(long, default_value = "attn,mlps,heads,neurons")]
    pub granularity: String,
    /// node-prune: λs in [0, 1), the weight of an L0 sparsity term against faithfulness (higher
    /// keeps less); with --target-sparsity off it alone sets how much goes.
    #[arg(long, default_value_t = 0.0)]
    pub sparsity_weight: f64,
    /// node-prune and edge-prune: training steps [default: 600 for node-prune, 300 for edge-prune].
    #[arg(long)]
    pub steps: Option<u64>,
    /// node-prune and edge-prune: AdamW's peak learning rate on the gates' log α [default: 0.5
    /// for node-prune, 0.3 for edge-prune].
    #[arg(long)]
    pub lr: Option<f64>,
    /// node-prune and edge-prune: warm-up steps before the cosine decay (default: a tenth of --steps).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// node-prune: margin of the logit-difference hinge term (0 turns it off).
    #[arg(long, default_value_t = 1.0)]
    pub margin: f64,
    /// node-prune: remove this fraction of the attention and MLP parameters (a Lagrangian holds the
    /// expected sparsity at a target ramped up from 0), on top of the sparsity weight; `off` leaves
    /// it to --sparsity-weight.
    #[arg(long, default_value = "0.8", value_parser = parse_target)]
    pub target_sparsity: TargetArg,
    /// node-prune (target mode) and edge-prune: the peak learning rate of the ascent on the
    /// Lagrange multipliers (default: --lr; for edge-prune past 7,000 edges, --lr × edges / 7,000).
    /// Higher reaches the target sooner.
    #[arg(long)]
    pub lambda_lr: Option<f64>,
    /// node-prune: λ_k, each granularity's weight in the sparsity term, e.g. `neurons=2,heads=0.5`
    /// (the others 1).
    #[arg(long, default_value = "", value_parser = parse_weights)]
    pub granularity_weights: Weights,
    /// node-prune: each gate's probability of sampling fully open at the start, in (0, 1). Lower
    /// lets the faithfulness gradient reach more gates from the first step (a gate sampled at 1
    /// gets none); every gate starts kept (its deterministic value above 0.5) down to about 0.17.
    #[arg(long, default_value_t = 0.5)]
    pub init_open: f64,
}

/// `--granularity-weights`: λ_k for attn, mlps, heads, neurons.
#[derive(Clone, Copy, Debug)]
pub struct Weights(pub [f64; 4]);

fn parse_weights(s: &str) -> std::result::Result<Weights, String> {
    let mut w = [1.0; 4];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, v) = part.split_once('=').ok_or_else(|| format!("`{part}` is not `granularity=weight`"))?;
        let i = Granularity::NAMES
            .iter()
            .position(|n| *n == name.trim())
            .ok_or_else(|| format!("`{name}` is not a granularity: {}", Granularity::NAMES.join(", ")))?;
        w[i] = v.trim().parse().map_err(|_| format!("`{v}` is not a number"))?;
    }
    Ok(Weights(w))
}

/// `--target-sparsity`: a fraction, or `off`.
#[derive(Clone, Copy, Debug)]
pub struct TargetArg(pub Option<f64>);

fn parse_target(s: &str) -> std::result::Result<TargetArg, String> {
    match s {
        "off" | "none" => Ok(TargetArg(None)),
        _ => s.parse::<f64>().map(|t| TargetArg(Some(t))).map_err(|_| format!("`{s}` is not a fraction in [0, 1) or `off`")),
    }
}

impl NodePruneArgs {
    fn steps(&self) -> u64 {
        self.steps.unwrap_or(NodePruneOptions::defaults().steps)
    }

    /// The options; a granularity that does not parse leaves none, which `check` names.
    pub fn options(&self, batch: usize, seed: u64, ablation: AblationKind) -> NodePruneOptions {
        NodePruneOptions {
            granularity: Granularity::parse(&self.granularity)
                .unwrap_or(Granularity { attn: false, mlps: false, heads: false, neurons: false }),
            sparsity_weight: self.sparsity_weight,
            steps: self.steps(),
            lr: self.lr.unwrap_or(NodePruneOptions::defaults().lr),
            warmup: self.warmup.unwrap_or(self.steps() / 10),
            batch,
            seed,
            ablation,
            margin: self.margin,
            target_sparsity: self.target_sparsity.0,
            init_open: self.init_open,
            lambda_lr: self.lambda_lr,
            granularity_weights: self.granularity_weights.0,
            ..NodePruneOptions::defaults()
        }
    }

    pub fn check(&self, batch: usize, seed: u64, ablation: AblationKind) -> Result<()> {
        Granularity::parse(&self.granularity).context("--granularity")?;
        self.options(batch, seed, ablation).check()?;
        Ok(())
    }
}

/// Trains the gates; None when stopped (the state is saved).
pub(super) fn run<B: Backend>(job: &mut ExtractJob<'_>, be: &B, model: &Model<B>) -> Result<Option<MethodResult>> {
    let (a, splits) = (job.a, &job.prep.splits);
    let opts = a.node_prune.options(a.batch, a.task_args.seed, a.ablate.ablation.kind());
    let pairs = splits
        .discovery
        .iter()
        .map(|e| match e.target {
            Target::Token { answer, wrong: Some(w) } => Some((answer, w)),
            _ => None,
        })
        .collect();
    let data = NodePruneData {
        discovery: super::prompts(&splits.discovery),
        pairs,
        patching: super::prompts(&splits.patching),
        corrupted: super::corrupted_prompts(opts.ablation, &splits.discovery),
    };
    let (before, resume) = match job.resume.take() {
        Some(s) => (
            s.extract_seconds,
            Some(s.node_prune.context("the saved run is not a node-prune run: resume it with its own --method")?),
        ),
        None => (0.0, None),
    };
    let n_gates = resume.as_ref().map(|s| s.log_alpha.len());
    let mut hook = TrainHook::new(Hook::new(job.rd, job.sha.clone(), before, a.stop_after));
    if let Some(n) = n_gates {
        eprintln!("resuming node-prune: {n} gates");
    }
    let run = pollster::block_on(node_prune(model, be, &data, &opts, resume, &mut hook));
    hook.inner.bar.finish_and_clear();
    if let Some(e) = hook.inner.error.take() {
        return Err(e.context("saving the training state"));
    }
    let run = run?;
    if !run.finished {
        return Ok(None);
    }
    job.seconds = hook.inner.seconds();
    Ok(Some(run.into_result(&opts, job.seconds)))
}
