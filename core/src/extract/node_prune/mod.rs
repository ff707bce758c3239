//! **node-prune**: multi-granular node masks learned in one optimisation run (Haider et al.,
//! "Multi-Granular Node Pruning for Circuit Discovery").
//!
//! A hard-concrete gate (β = 2/3, l = −0.1, r = 1.1) sits on every component of each granularity
//! asked for: attention blocks, MLP blocks, heads, MLP neurons. The forward takes the sampled gate
//! values as masks, nested as the blocks contain their parts (a head's mask acts on its z, its
//! block's on the block output), so a component's effective mask is its gate times its block's.
//! Each step, on a minibatch of discovery prompts:
//!
//! loss = (1 − λs)·(KL(P_full ‖ P_masked) + relu(margin − logit_diff)) + λs·Σ_k λ_k·E[L0_k]/N_k
//!
//! at each prompt's last position (the margin term only where the task has a wrong answer), with
//! E[L0_k] the expected number of open gates of granularity k, N_k their count and λ_k its weight. AdamW on log α
//! only (weights frozen), linear warm-up then cosine decay. At the end a gate is kept when its
//! deterministic value exceeds 0.5, and the circuit is those hard 0/1 masks.
//!
//! Deterministic for a seed: the minibatches and the gate noise come from one saved SplitMix64, and
//! the state (log α, AdamW moments, step, random state, the loss curve) resumes a stopped run to
//! the same circuit.

mod gates;
mod state;

pub use gates::{Costs, Granularity, Kind, Layout};
pub use state::{NodePruneState, StepRecord};

use serde::{Deserialize, Serialize};

use super::state::fingerprint;
use super::{check_corrupted, AblationKind, Flow};
use crate::backend::Backend;
use crate::circuit::{Ablation, Component, Masks, ModelShape};
use crate::metrics::last_logits;
use crate::metrics::loss::kl_mean;
use crate::model::ablation::{mean_values, resampled_values, DeviceAblation};
use crate::model::{Batch, Model};
use crate::optim::{adamw, hard_concrete as hc, AdamW};
use crate::{Error, HostTensor, Result};

/// What decides the circuit; a resumed run must give the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodePruneOptions {
    pub granularity: Granularity,
    /// λs in [0, 1): the weight of the sparsity term against the faithfulness terms.
    pub sparsity_weight: f64,
    pub steps: u64,
    /// AdamW's peak learning rate on log α.
    pub lr: f64,
    /// Warm-up steps (linear, then cosine decay to 0 at `steps`).
    pub warmup: u64,
    /// Discovery prompts per step.
    pub batch: usize,
    pub seed: u64,
    /// `zero`, `mean` (the circuit then folds into a standalone model) or `resample` (each prompt's
    /// removed components take their values from its own corrupted prompt, run afresh every step).
    pub ablation: AblationKind,
    /// Logit-difference margin of the hinge term (logits); 0 turns the term off.
    pub margin: f64,
    /// P(gate fully open) at the start, for every gate.
    pub init_open: f64,
    /// Target mode: the fraction of the attention and MLP parameters to remove. A Lagrangian
    /// λ1(ŝ − t) + λ2(ŝ − t)² on the expected sparsity ŝ, λ1 and λ2 raised by gradient ascent, t
    /// ramped linearly from 0 to the target over the first 70% of the steps.
    #[serde(default)]
    pub target_sparsity: Option<f64>,
    /// Target mode: the peak learning rate of the ascent on λ1 and λ2 (None: `lr`), on the same
    /// schedule. Adam moves λ by about this much a step, so it sets how fast the push towards the
    /// target can grow against the faithfulness terms.
    #[serde(default)]
    pub lambda_lr: Option<f64>,
    /// λ_k: each granularity's weight in the sparsity term (attn, mlps, heads, neurons).
    #[serde(default = "unit_weights")]
    pub granularity_weights: [f64; 4],
}

fn unit_weights() -> [f64; 4] {
    [1.0; 4]
}

impl NodePruneOptions {
    /// The defaults, target mode: remove 80% of the attention and MLP parameters, every
    /// granularity, 600 steps of batch 32, lr 0.5 (λ too) with 10% warm-up, hinge margin 1, gates
    /// open with probability 0.5 at the start, mean ablation: the settings that cut SmolLM2-135M's
    /// IOI model by 76% within half a point of its accuracy (the README's results). The
    /// sparsity-weight form alone barely moves the gates on that model.
    pub fn defaults() -> NodePruneOptions {
        NodePruneOptions {
            sparsity_weight: 0.0,
            lr: 0.5,
            init_open: 0.5,
            target_sparsity: Some(0.8),
            steps: 600,
            warmup: 60,
            ..Self::weighted()
        }
    }

    /// The sparsity-weight form without a target: λs 0.5, lr 0.1, gates open with probability
    /// 0.95 at the start; the rest as `defaults`.
    pub fn weighted() -> NodePruneOptions {
        NodePruneOptions {
            granularity: Granularity::ALL,
            sparsity_weight: 0.5,
            steps: 300,
            lr: 0.1,
            warmup: 30,
            batch: 32,
            seed: 0,
            ablation: AblationKind::Mean,
            margin: 1.0,
            init_open: 0.95,
            target_sparsity: None,
            lambda_lr: None,
            granularity_weights: unit_weights(),
        }
    }

    /// Every value checked, each with a message that names it.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(m));
        let g = &self.granularity;
        if !(g.attn || g.mlps || g.heads || g.neurons) {
            return bad("node-prune needs at least one granularity (attn, mlps, heads, neurons)".into());
        }
        if !(self.sparsity_weight.is_finite() && (0.0..1.0).contains(&self.sparsity_weight)) {
            return bad(format!("the sparsity weight λs must be in [0, 1), not {}", self.sparsity_weight));
        }
        if self.sparsity_weight == 0.0 && self.target_sparsity.is_none() {
            return bad("with no target sparsity and a sparsity weight of 0 nothing would remove a component: \
                        give a target sparsity or a sparsity weight above 0"
                .into());
        }
        if self.steps == 0 {
            return bad("node-prune needs at least 1 step".into());
        }
        if self.steps > 10_000_000 {
            return bad(format!("{} steps is more than node-prune runs (at most 10,000,000)", self.steps));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 100.0) {
            return bad(format!("the learning rate must be a finite number in (0, 100], not {}", self.lr));
        }
        if self.warmup > self.steps {
            return bad(format!("{} warm-up steps are more than the {} steps", self.warmup, self.steps));
        }
        if self.batch == 0 {
            return bad("the batch must hold at least 1 prompt".into());
        }
        if !(self.margin.is_finite() && self.margin >= 0.0) {
            return bad(format!("the margin must be a finite number ≥ 0, not {}", self.margin));
        }
        if !(self.init_open.is_finite() && self.init_open > 0.0 && self.init_open < 1.0) {
            return bad(format!("the starting open probability must be in (0, 1), not {}", self.init_open));
        }
        if let Some((k, w)) = Kind::ALL.iter().zip(self.granularity_weights).find(|(_, w)| !(w.is_finite() && *w >= 0.0)) {
            return bad(format!("the sparsity weight of {} must be a finite number ≥ 0, not {w}", k.name()));
        }
        if let Some(l) = self.lambda_lr {
            if !(l.is_finite() && l > 0.0 && l <= 10_000.0) {
                return bad(format!("the λ learning rate must be a finite number in (0, 10000], not {l}"));
            }
        }
        if let Some(t) = self.target_sparsity {
            if !(t.is_finite() && (0.0..1.0).contains(&t)) {
                return bad(format!("the target sparsity must be in [0, 1), not {t}"));
            }
        }
        if !matches!(self.ablation, AblationKind::Zero | AblationKind::Mean | AblationKind::Resample) {
            return bad(format!(
                "node-prune takes zero, mean or resample ablation, not {}: values per position do not fit prompts of other lengths",
                serde_json::to_value(self.ablation).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
            ));
        }
        Ok(())
    }
}

/// The prompts node-prune trains on, in token ids.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodePruneData {
    pub discovery: Vec<Vec<u32>>,
    /// (answer, wrong) per discovery prompt, where the task has a wrong answer (the margin term).
    pub pairs: Vec<Option<(u32, u32)>>,
    /// Means are measured on these (mean ablation).
    pub patching: Vec<Vec<u32>>,
    /// Each discovery prompt's corrupted prompt, of its length (resample ablation).
    pub corrupted: Vec<Vec<u32>>,
}

/// What a progress bar shows after each step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepInfo {
    pub record: StepRecord,
    pub total: u64,
}

/// Called after every step with the state that resumes the run from there.
pub trait TrainProgress {
    fn update(&mut self, info: &StepInfo, state: &NodePruneState) -> Flow;
}

impl TrainProgress for () {
    fn update(&mut self, _: &StepInfo, _: &NodePruneState) -> Flow {
        Flow::Continue
    }
}

impl<F: FnMut(&StepInfo, &NodePruneState) -> Flow> TrainProgress for F {
    fn update(&mut self, info: &StepInfo, state: &NodePruneState) -> Flow {
        self(info, state)
    }
}

/// The outcome of a call to [`node_prune`]: finished, or stopped by the progress hook.
pub struct NodePruneRun {
    pub state: NodePruneState,
    pub finished: bool,
    pub kept: Vec<Component>,
    pub removed: Vec<Component>,
    /// The circuit's hard masks (0/1), as the circuit file rebuilds them.
    pub masks: Masks,
    /// None for resample ablation (values per prompt, measured afresh for each batch).
    pub ablation: Option<Ablation>,
    /// Mean KL(P_full ‖ P_circuit) over all discovery prompts with the hard masks (finished runs).
    pub discovery_kl: f64,
}

/// Trains the gates on `model` (see the module doc). `resume` continues a stopped run: it must come
/// from the same model shape, options and prompts (checked by a fingerprint).
pub async fn node_prune<B: Backend>(model: &Model<B>, be: &B, data: &NodePruneData, opts: &NodePruneOptions,
    resume: Option<NodePruneState>, progress: &mut dyn TrainProgress) -> Result<NodePruneRun> {
    opts.check()?;
    if data.discovery.is_empty() {
        return Err(Error::Input("node-prune needs discovery prompts: the discovery split is empty".into()));
    }
    if data.pairs.len() != data.discovery.len() {
        return Err(Error::Input(format!("{} answer pairs for {} discovery prompts", data.pairs.len(), data.discovery.len())));
    }
    let shape = ModelShape::of(&model.weights.layers, |t| be.shape(t)[0]);
    let layout = Layout::new(&shape, opts.granularity);
    if layout.is_empty() {
        return Err(Error::Input("the model has no components of the granularities asked for".into()));
    }
    // Checked up front: a run that trains for an hour must not fail at its first prompt.
    Batch::new(&data.discovery, &model.config)?;
    let ablation = match opts.ablation {
        AblationKind::Zero => Some(Ablation::Zero),
        AblationKind::Resample => {
            check_corrupted(&data.discovery, &data.corrupted)?;
            None
        }
        _ => {
            if data.patching.is_empty() {
                return Err(Error::Input("mean ablation needs patching prompts: the patching split is empty".into()));
            }
            let patching = Batch::new(&data.patching, &model.config)?;
            Some(Ablation::Given(mean_values(model, be, &patching, false).await?))
        }
    };
    let dev = match &ablation {
        Some(Ablation::Given(v)) => Some(DeviceAblation::upload(be, v)?),
        _ => None,
    };
    let values = Values { fixed: dev.as_ref(), resample: (ablation.is_none()).then(|| layout.masks(&vec![0.0; layout.len()])) };
    let mut parts: Vec<&[u32]> = data.discovery.iter().map(|p| &p[..]).collect();
    parts.push(&[]);
    if opts.ablation == AblationKind::Mean {
        parts.extend(data.patching.iter().map(|p| &p[..]));
    }
    if opts.ablation == AblationKind::Resample {
        parts.push(&[]);
        parts.extend(data.corrupted.iter().map(|p| &p[..]));
    }
    let extra = serde_json::to_string(&(opts, &model.config, &data.pairs)).expect("serializable");
    let fp = fingerprint(&parts, &extra);
    let mut st = match resume {
        Some(s) => {
            s.check_matches(&shape, opts, &fp, layout.len())?;
            s
        }
        None => NodePruneState::new(shape.clone(), opts.clone(), fp, vec![hc::log_alpha_open_with(opts.init_open); layout.len()]),
    };

    let full = last_logits(model, be, &data.discovery, None, None, opts.batch).await?;
    let full_dev = be.upload(&full)?;
    let counts: Vec<f64> = layout.ranges.iter().map(|r| r.len() as f64).collect();
    let costs = costs(model, be);
    let optim = AdamW::default();
    while st.step < opts.steps {
        let record = train_step(model, be, data, opts, &layout, &counts, &costs, &full_dev, &values, &mut st, &optim).await?;
        let info = StepInfo { record, total: opts.steps };
        if progress.update(&info, &st) == Flow::Stop && st.step < opts.steps {
            let (kept, removed, masks) = layout.circuit(&st.hard_masks(&layout), opts.ablation == AblationKind::Mean);
            return Ok(NodePruneRun { state: st, finished: false, kept, removed, masks, ablation, discovery_kl: f64::NAN });
        }
    }
    let (kept, removed, masks) = layout.circuit(&st.hard_masks(&layout), opts.ablation == AblationKind::Mean);
    let circuit = match &values.resample {
        None => last_logits(model, be, &data.discovery, Some(&masks), dev.as_ref(), opts.batch).await?,
        Some(_) => {
            let mut rows = Vec::with_capacity(full.data.len());
            for (chunk, corrupted) in data.discovery.chunks(opts.batch).zip(data.corrupted.chunks(opts.batch)) {
                let resampled = resampled_values(model, be, corrupted, &masks)?;
                rows.extend(last_logits(model, be, chunk, Some(&masks), Some(&resampled), chunk.len()).await?.data);
            }
            HostTensor::new(full.shape.clone(), rows)
        }
    };
    let discovery_kl = kl_mean(&full, &circuit)?.loss;
    Ok(NodePruneRun { state: st, finished: true, kept, removed, masks, ablation, discovery_kl })
}

/// Where removed components take their values from: fixed values (mean; None: zero), or with
/// `resample` each prompt's corrupted run at the sites these all-gates-shut masks ablate.
struct Values<'a, B: Backend> {
    fixed: Option<&'a DeviceAblation<B>>,
    resample: Option<Masks>,
}

/// One step: a minibatch, fresh gate noise, forward, loss, backward, AdamW. The state advances
/// only when the loss and every gradient are finite; otherwise the step is named in the error and
/// the state stays as the last good step left it.
#[allow(clippy::too_many_arguments)]
async fn train_step<B: Backend>(model: &Model<B>, be: &B, data: &NodePruneData, opts: &NodePruneOptions, layout: &Layout,
    counts: &[f64], costs: &Costs, full: &B::Tensor, values: &Values<'_, B>, st: &mut NodePruneState,
    optim: &AdamW) -> Result<StepRecord> {
    let mut rng = st.rng;
    let n = data.discovery.len();
    let idx = rng.choose(n, opts.batch);
    let prompts: Vec<Vec<u32>> = idx.iter().map(|&i| data.discovery[i].clone()).collect();
    let batch = Batch::new(&prompts, &model.config)?;
    let u: Vec<f64> = (0..layout.len()).map(|_| rng.open01()).collect();
    let z: Vec<f64> = st.log_alpha.iter().zip(&u).map(|(&a, &u)| hc::sample(a, u)).collect();
    let masks = layout.masks(&z);
    let resampled = match &values.resample {
        Some(gated) => {
            let corrupted: Vec<Vec<u32>> = idx.iter().map(|&i| data.corrupted[i].clone()).collect();
            Some(resampled_values(model, be, &corrupted, gated)?)
        }
        None => None,
    };
    let tape = model.forward_tape(be, &batch, &masks, resampled.as_ref().or(values.fixed))?;
    // The loss and its logit gradient on the device: the step's one read brings back the loss
    // terms with the mask gradients.
    let rows: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    let full_rows = be.gather_rows(full, &rows)?;
    let pairs: Vec<Option<(u32, u32)>> =
        idx.iter().map(|&i| if opts.margin > 0.0 { data.pairs[i] } else { None }).collect();
    let w = 1.0 - opts.sparsity_weight;
    let (dlogits, terms) = be.kl_hinge(&tape.logits, &full_rows, &pairs, opts.margin as f32, w as f32)?;
    let (g, read) = model.backward_on_device(be, &batch, tape, &dlogits, &[&terms]).await?;
    let terms = &read[0];
    let mean_of = |col: usize| (0..idx.len()).map(|r| terms.data[4 * r + col] as f64).sum::<f64>() / idx.len() as f64;
    let (kl, margin) = (mean_of(0), mean_of(1));
    let task_loss = w * (kl + margin);
    let gz = layout.gate_grads(&g);
    let mut grads = Vec::with_capacity(layout.len());
    let mut l0 = 0.0;
    for (i, (&a, &u)) in st.log_alpha.iter().zip(&u).enumerate() {
        let k = Kind::ALL.iter().position(|&k| k == layout.kind_of(i)).expect("kind");
        let ws = opts.sparsity_weight * opts.granularity_weights[k] / counts[k];
        l0 += ws * hc::expected_l0(a);
        grads.push(gz[i] * hc::sample_grad(a, u) + ws * hc::expected_l0_grad(a));
    }
    let step = st.step;
    // Expected sparsity, and the Lagrangian that holds it at the target.
    let p: Vec<f64> = st.log_alpha.iter().map(|&a| hc::expected_l0(a)).collect();
    let dp: Vec<f64> = st.log_alpha.iter().map(|&a| hc::expected_l0_grad(a)).collect();
    let (sparsity, ds) = layout.expected_sparsity(&p, &dp, costs);
    let mut lagrangian = 0.0;
    let mut lambda_grads = [0.0; 2];
    let target = opts.target_sparsity.map(|t| t * ((step + 1) as f64 / (0.7 * opts.steps as f64).max(1.0)).min(1.0));
    if let Some(t) = target {
        let (l1, l2) = (st.lambda[0], st.lambda[1]);
        let d = sparsity - t;
        lagrangian = l1 * d + l2 * d * d;
        for (g, &dsi) in grads.iter_mut().zip(&ds) {
            *g += (l1 + 2.0 * l2 * d) * dsi;
        }
        // Ascent on λ: AdamW descends, so it takes the negated gradient.
        lambda_grads = [-d, -d * d];
    }
    let loss = task_loss + l0 + lagrangian;
    if !loss.is_finite() || grads.iter().any(|g| !g.is_finite()) {
        return Err(Error::NonFinite(format!(
            "node-prune step {}: the loss is {loss} (KL {}); training stopped, the last good state (step {step}) is kept",
            step + 1,
            kl
        )));
    }
    let lr = adamw::warmup_cosine(opts.lr, step, opts.warmup, opts.steps);
    optim.step(&mut st.log_alpha, &grads, &mut st.moments, lr);
    if target.is_some() {
        let lr_lambda = adamw::warmup_cosine(opts.lambda_lr.unwrap_or(opts.lr), step, opts.warmup, opts.steps);
        optim.step(&mut st.lambda, &lambda_grads, &mut st.lambda_moments, lr_lambda);
    }
    st.rng = rng;
    st.step += 1;
    let record = StepRecord {
        step: st.step,
        loss,
        kl,
        margin,
        lr,
        kept: st.kept_fractions(layout),
        sparsity,
        target,
    };
    st.history.push(record.clone());
    Ok(record)
}

/// Parameters per head and per neuron in each layer: its share of the layer's attention (Q, K, V,
/// O and their biases) or MLP weights.
fn costs<B: Backend>(model: &Model<B>, be: &B) -> Costs {
    let n = |t: &B::Tensor| be.shape(t).iter().product::<usize>() as f64;
    let o = |t: &Option<B::Tensor>| t.as_ref().map_or(0.0, n);
    let (mut head, mut neuron, mut total) = (Vec::new(), Vec::new(), 0.0);
    for l in &model.weights.layers {
        let attn = n(&l.wq) + n(&l.wk) + n(&l.wv) + n(&l.wo) + o(&l.bq) + o(&l.bk) + o(&l.bv);
        let d_ff = be.shape(&l.w_up)[0];
        let mlp = n(&l.w_up) + n(&l.w_down) + o(&l.w_gate) + o(&l.b_up);
        head.push(if l.n_heads > 0 { attn / l.n_heads as f64 } else { 0.0 });
        neuron.push(if d_ff > 0 { mlp / d_ff as f64 } else { 0.0 });
        total += attn + mlp;
    }
    Costs { head, neuron, total: total.max(1.0) }
}
