//! Extraction methods (DESIGN.md "Extraction methods"): **ablate**, greedy node ablation
//! (García-Carrasco et al. 2025, Algorithm 1), below, and **node-prune**, learned multi-granular
//! node masks ([`node_prune`]).
//!
//! P is the full model's next-token distribution at the last position of each discovery prompt.
//! S = ∅, KL_cur = 0. For layer l = L−1 down to 0, for each head, then (optionally) the MLP block,
//! then (optionally) each neuron of a kept MLP: KL_new = mean over prompts of KL(P ‖ P_{S∪{c}}); if
//! KL_new − KL_cur < α, S ← S ∪ {c} and KL_cur ← KL_new.
//!
//! Two implementations make the same decisions: [`Implementation::Reference`] runs a full forward
//! per candidate; [`Implementation::Fast`] (`ablate.rs`) starts each forward at the layer being
//! tested from the full model's residual stream (S only holds components at or above that layer,
//! so everything below is the full model's), computes logits at the last position only, and
//! evaluates a layer's remaining candidates in one batch, re-evaluating only after an acceptance.
//!
//! Progress goes to a [`Progress`] hook after every decision batch, with the [`AblateState`] that
//! resumes the sweep exactly where it stopped (serializable to JSON).

mod ablate;
pub mod attribute;
pub mod edge_prune;
pub mod node_prune;
mod prepare;
mod reference;
mod result;
mod state;

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::circuit::{Ablation, Component, Masks, ModelShape};
use crate::model::Model;
use crate::tasks::Example;
use crate::{Error, Result};

pub use result::MethodResult;
pub use state::{AblateState, Decision};

/// Where an ablated component's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AblationKind {
    /// a = 0.
    Zero,
    /// The mean over the patching prompts' real positions (one value at every position).
    Mean,
    /// The mean over the patching prompts per position (rows past the longest patching prompt
    /// are refused).
    MeanPerPosition,
    /// The component's output on each discovery prompt's corrupted version (same length).
    Resample,
}

/// What decides the circuit; a resumed run must give the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AblateOptions {
    /// Acceptance threshold on KL_new − KL_cur (nats); finite and > 0.
    pub alpha: f64,
    pub ablation: AblationKind,
    /// Also decide on each layer's MLP block, after its heads.
    pub mlps: bool,
    /// Also decide on each neuron of an MLP that was kept.
    pub neurons: bool,
}

/// How the sweep runs; none of this changes the decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    pub implementation: Implementation,
    /// Largest batch (prompts × positions, all candidates together) one forward of the fast
    /// implementation takes; bounds memory. At least one candidate is always evaluated.
    pub max_batch_rows: usize,
    pub batching: Batching,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { implementation: Implementation::Fast, max_batch_rows: 8192, batching: Batching::Adaptive }
    }
}

impl RunOptions {
    /// The defaults, with the batching that suits `be` (`Batching::for_backend`).
    pub fn for_backend<B: crate::backend::Backend>(be: &B) -> RunOptions {
        RunOptions { batching: Batching::for_backend(be), ..RunOptions::default() }
    }
}

/// How many of a layer's remaining candidates the fast sweep evaluates together. Every candidate
/// after the first verdict in a batch that differs from its prediction is wasted work (it was
/// evaluated with another S; it is evaluated again). Where a forward's cost grows with its rows
/// (the CPU backend), `Single` does the least work; where a forward costs about the same for many
/// more rows (a GPU, up to its saturation), `WholeLayer` needs the fewest forwards. Measured on
/// SmolLM2 (2-core CPU, IOI, 16 prompts, heads and MLPs, 181 of 300 removed), evaluations and
/// forwards: WholeLayer 645 and 88 (1,156 and 212 before verdicts were predicted), Adaptive 426
/// and 237 (387 and 262), Single 300 and 301; on a 2-core AVX-512 CPU they took 60.9, 44.0 and
/// 34.9 s (the reference 88.1 s), so the CPU sweeps one candidate at a time (`for_backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Batching {
    /// One candidate per forward: no waste, one forward per decision.
    Single,
    /// All of them (up to `max_batch_rows`): fewest forwards, most waste when most are accepted.
    WholeLayer,
    /// As many as were decided by the last batch: up to its first verdict that was not the
    /// predicted one, or twice its size when every prediction held. Little is wasted either way.
    #[default]
    Adaptive,
}

impl Batching {
    /// `Single` where a forward's cost grows with its rows (`Backend::cost_grows_with_rows`: the
    /// CPU), `Adaptive` elsewhere.
    pub fn for_backend<B: crate::backend::Backend>(be: &B) -> Batching {
        if be.cost_grows_with_rows() { Batching::Single } else { Batching::Adaptive }
    }

    /// Its name in `bench extract`'s table.
    pub fn name(self) -> &'static str {
        match self {
            Batching::Single => "single",
            Batching::WholeLayer => "whole layer",
            Batching::Adaptive => "adaptive",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Implementation {
    #[default]
    Fast,
    /// A full forward (all positions' logits) per candidate: the definition, for tests and benches.
    Reference,
}

/// The prompts ablate works on, in token ids.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AblateData {
    /// Decisions are taken on these.
    pub discovery: Vec<Vec<u32>>,
    /// Means are measured on these (mean ablation only).
    pub patching: Vec<Vec<u32>>,
    /// One per discovery prompt, same length (resample ablation only).
    pub corrupted: Option<Vec<Vec<u32>>>,
}

impl AblateData {
    /// From a task's splits; corrupted prompts are taken when every discovery example has one.
    pub fn from_examples(discovery: &[Example], patching: &[Example]) -> AblateData {
        let corrupted: Option<Vec<Vec<u32>>> = discovery.iter().map(|e| e.corrupted.clone()).collect();
        AblateData {
            discovery: discovery.iter().map(|e| e.prompt.clone()).collect(),
            patching: patching.iter().map(|e| e.prompt.clone()).collect(),
            corrupted,
        }
    }
}

/// What a progress bar shows, after each decision batch.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressInfo {
    /// Layer of the candidates just decided.
    pub layer: usize,
    /// Candidates of that layer still to decide.
    pub left_in_layer: usize,
    /// Candidates still to decide in the whole sweep (neurons of a removed MLP are skipped, so this
    /// may fall by more than one per decision).
    pub left: usize,
    /// Candidates in the whole sweep.
    pub total: usize,
    pub kl: f64,
    /// Components removed so far.
    pub removed: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop after this decision batch; the state passed along resumes the sweep.
    Stop,
}

/// Called after every decision batch with the state to save (e.g. as JSON, for `--resume`).
pub trait Progress {
    fn update(&mut self, info: &ProgressInfo, state: &AblateState) -> Flow;
}

impl Progress for () {
    fn update(&mut self, _: &ProgressInfo, _: &AblateState) -> Flow {
        Flow::Continue
    }
}

impl<F: FnMut(&ProgressInfo, &AblateState) -> Flow> Progress for F {
    fn update(&mut self, info: &ProgressInfo, state: &AblateState) -> Flow {
        self(info, state)
    }
}

/// Counts that `bench extract` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Candidate evaluations (KL_new computed), in this call.
    pub evaluations: usize,
    /// Forward passes, in this call (the full model's included).
    pub forwards: usize,
}

/// The outcome of a call to [`ablate`]: finished, or stopped by the progress hook.
pub struct AblateRun {
    pub state: AblateState,
    pub finished: bool,
    pub removed: Vec<Component>,
    /// Every component of the model (heads and MLP blocks; neurons with `neurons`) not removed.
    pub kept: Vec<Component>,
    /// Masks of the circuit: 0 on every removed component.
    pub masks: Masks,
    /// The ablation values the decisions were taken with (for evaluation and pruning).
    pub ablation: Ablation,
    pub stats: SweepStats,
}

/// Greedy node ablation on `model` (see the module doc). `resume` continues a stopped run: it must
/// come from the same model shape, options and prompts (checked by a fingerprint).
pub async fn ablate<B: Backend>(
    model: &Model<B>,
    be: &B,
    data: &AblateData,
    opts: &AblateOptions,
    run: &RunOptions,
    resume: Option<AblateState>,
    progress: &mut dyn Progress,
) -> Result<AblateRun> {
    let shape = ModelShape::of(&model.weights.layers, |t| be.shape(t)[0]);
    check_options(opts)?;
    let ctx = prepare::Context::new(model, be, data, opts).await?;
    let mut st = match resume {
        Some(s) => {
            s.check_matches(&shape, opts, &ctx.fingerprint)?;
            s
        }
        None => AblateState::new(shape.clone(), opts.clone(), ctx.fingerprint.clone()),
    };
    let mut stats = SweepStats::default();
    let finished = match run.implementation {
        Implementation::Fast => ablate::sweep(&ctx, &mut st, run, progress, &mut stats).await?,
        Implementation::Reference => reference::sweep(&ctx, &mut st, progress, &mut stats).await?,
    };
    let removed = st.removed();
    let masks = shape.masks_without(&removed)?;
    let kept = st.kept();
    Ok(AblateRun { state: st, finished, removed, kept, masks, ablation: ctx.host_ablation, stats })
}

fn check_options(opts: &AblateOptions) -> Result<()> {
    if !(opts.alpha.is_finite() && opts.alpha > 0.0) {
        return Err(Error::Input(format!("α must be a finite number above 0, not {}", opts.alpha)));
    }
    Ok(())
}

/// Resample ablation in the learned methods: a corrupted prompt of the same length for every
/// discovery prompt.
fn check_corrupted(discovery: &[Vec<u32>], corrupted: &[Vec<u32>]) -> Result<()> {
    if corrupted.len() != discovery.len() {
        return Err(Error::Input(format!(
            "resample ablation needs a corrupted prompt for every discovery prompt: {} for {}",
            corrupted.len(),
            discovery.len()
        )));
    }
    match discovery.iter().zip(corrupted).position(|(d, c)| d.len() != c.len()) {
        Some(i) => Err(Error::Input(format!(
            "resample ablation: corrupted prompt {i} has {} tokens, its discovery prompt {}",
            corrupted[i].len(),
            discovery[i].len()
        ))),
        None => Ok(()),
    }
}
