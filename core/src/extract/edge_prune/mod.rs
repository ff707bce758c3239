//! **edge-prune** (Bhaskar et al., "Finding Transformer Circuits with Edge Pruning", NeurIPS 2024):
//! a hard-concrete gate on every edge between a writer and a later reader (`mask::edges`), learned
//! on the edge forward (`model::edges`). Each step, on a minibatch of discovery prompts:
//!
//! loss = KL(P_full ‖ P_circuit) + λ1(ŝ − t) + λ2(ŝ − t)²
//!
//! at each prompt's last position, with ŝ the expected fraction of edges removed (1 − the mean of
//! P(z ≠ 0)), λ1 and λ2 raised by gradient ascent and the target t ramped linearly from 0 over the
//! first 70% of the steps. Once the ramp is over, the multipliers are raised by the fraction of
//! gates actually closed (test-time gate at most ½) against t instead of ŝ (`Hold::Open`): a closed
//! gate still samples nonzero now and then, so holding ŝ at t leaves fewer gates open than t keeps.
//! `Hold::Exact` holds the count itself instead: once the open gates are down to the target's
//! count, after each step log α is shifted so exactly the target's gates are open (`hold_count`),
//! and the multipliers rest.
//! log α starts at N(`init_log_alpha`, 0.01) (every edge on: 3 by default, where a gate samples 1
//! with probability 0.8; the paper's 10 starves the gates of gradient over a short run); AdamW
//! (weight decay 0.01, as the reference implementation's optimizer applies) on log α, warm-up then
//! cosine decay (`Schedule::Cosine`), or the peak rate until the last 10% of the steps and cosine
//! decay over them (`Schedule::Flat`), so that the gates still move while the target is held.
//! λ2 may move faster than λ1 (`lambda2_scale`): its push is proportional to the gap, and damps the
//! gates' swing past the target that λ1, the gap summed, drives.
//!
//! At the end the gates are ranked by log α and the top (1 − t)·edges are kept, so the kept edges
//! hit the target exactly, except those the training closed (test-time gate at most ½): when the
//! gates end sparser than the target, the target's count would reopen edges the circuit was trained
//! without, and each reopened edge adds its full output where training saw little or none of it
//! (`cut`). Then edges whose writer no longer reaches the logits, or whose reader no longer feeds
//! anything, are dropped (`effective`). Deterministic for a seed.

mod options;
mod state;

pub use options::{Cut, EdgePruneOptions, Hold, Schedule, FLAT_DECAY, HOLD_BY, LAMBDA_LR_EDGES};
pub use state::{EdgePruneState, EdgeStepRecord};

use super::state::fingerprint;
use super::{check_corrupted, AblationKind, Flow};
use crate::backend::Backend;
use crate::mask::{Edge, EdgeLayout, Reader, Writer};
use crate::metrics::last_logits;
use crate::metrics::loss::kl_mean;
use crate::model::ablation::mean_rows;
use crate::model::edges::EdgeWeights;
use crate::model::{Batch, Model};
use crate::optim::{hard_concrete as hc, AdamW};
use crate::{Error, HostTensor, Result};

/// The prompts edge-prune trains on, in token ids.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EdgePruneData {
    pub discovery: Vec<Vec<u32>>,
    /// Means are measured on these (mean ablation).
    pub patching: Vec<Vec<u32>>,
    /// Each discovery prompt's corrupted prompt, of its length (resample ablation).
    pub corrupted: Vec<Vec<u32>>,
}

/// Called after every step with the state that resumes the run from there.
pub trait EdgeProgress {
    fn update(&mut self, record: &EdgeStepRecord, state: &EdgePruneState) -> Flow;
}

impl EdgeProgress for () {
    fn update(&mut self, _: &EdgeStepRecord, _: &EdgePruneState) -> Flow {
        Flow::Continue
    }
}

impl<F: FnMut(&EdgeStepRecord, &EdgePruneState) -> Flow> EdgeProgress for F {
    fn update(&mut self, r: &EdgeStepRecord, s: &EdgePruneState) -> Flow {
        self(r, s)
    }
}

/// The outcome: finished (with the circuit) or stopped by the progress hook.
pub struct EdgePruneRun {
    pub state: EdgePruneState,
    pub finished: bool,
    /// Gates 0/1 per edge: the top (1 − t)·edges by log α that the training left open (`cut`).
    pub kept: Vec<bool>,
    /// The target's top edges left out as closed.
    pub closed: usize,
    /// `kept` without the edges that reach nothing (see `effective`).
    pub effective: Vec<bool>,
    /// Mean KL(P_full ‖ P_circuit) over the discovery prompts with the effective edges (finished runs).
    pub discovery_kl: f64,
    /// Ablation values per writer (`[1, d]`, mean ablation).
    pub values: Option<Vec<HostTensor>>,
}

/// Ablation values per writer: the mean of its output over the patching prompts' real positions.
pub async fn writer_means<B: Backend>(model: &Model<B>, be: &B, ew: &EdgeWeights<B::Tensor>, prompts: &[Vec<u32>]) -> Result<Vec<HostTensor>> {
    let batch = Batch::new(prompts, &model.config)?;
    let ones = vec![1.0; ew.layout.n_edges()];
    let out = model.edge_forward(be, ew, &batch, &ones, None, &[0], true)?;
    let refs: Vec<&B::Tensor> = out.writers.iter().collect();
    Ok(be.read_many(&refs).await?.iter().map(|h| mean_rows(h, &batch, false)).collect())
}

/// Trains the gates (see the module doc). `resume` continues a stopped run of the same model,
/// options and prompts (checked by a fingerprint).
pub async fn edge_prune<B: Backend>(model: &Model<B>, be: &B, ew: &EdgeWeights<B::Tensor>, data: &EdgePruneData,
    opts: &EdgePruneOptions, resume: Option<EdgePruneState>, progress: &mut dyn EdgeProgress) -> Result<EdgePruneRun> {
    opts.check()?;
    let lay = &ew.layout;
    if data.discovery.is_empty() {
        return Err(Error::Input("edge-prune needs discovery prompts: the discovery split is empty".into()));
    }
    Batch::new(&data.discovery, &model.config)?;
    if opts.ablation == AblationKind::Resample {
        check_corrupted(&data.discovery, &data.corrupted)?;
    }
    let values = match opts.ablation {
        AblationKind::Mean => {
            if data.patching.is_empty() {
                return Err(Error::Input("mean ablation needs patching prompts: the patching split is empty".into()));
            }
            Some(writer_means(model, be, ew, &data.patching).await?)
        }
        _ => None,
    };
    let select = match &opts.answer_vocab {
        Some(v) => Some(be.upload(&answer_select(v, model.config.vocab)?)?),
        None => None,
    };
    let dev: Option<Vec<B::Tensor>> = values.as_ref().map(|v| v.iter().map(|t| be.upload(t)).collect::<Result<_>>()).transpose()?;
    let mut parts: Vec<&[u32]> = data.discovery.iter().map(|p| &p[..]).collect();
    for extra in [&data.patching, &data.corrupted] {
        parts.push(&[]);
        parts.extend(extra.iter().map(|p| &p[..]));
    }
    let tag = serde_json::to_string(&(opts, &model.config, lay.n_edges())).expect("serializable");
    let fp = fingerprint(&parts, &tag);
    let n = lay.n_edges();
    let mut st = match resume {
        Some(s) => {
            s.check_matches(opts, &fp, n)?;
            s
        }
        None => EdgePruneState::new(opts.clone(), fp, n),
    };

    let full = last_logits(model, be, &data.discovery, None, None, opts.batch).await?;
    let full_dev = be.upload(&full)?;
    while st.step < opts.steps {
        let record = step(model, be, ew, data, opts, &full_dev, dev.as_deref(), select.as_ref(), &mut st).await?;
        if progress.update(&record, &st) == Flow::Stop && st.step < opts.steps {
            let (kept, closed) = opts.cut_gates(&st.log_alpha);
            let effective = effective(lay, &kept);
            return Ok(EdgePruneRun { state: st, finished: false, kept, closed, effective, discovery_kl: f64::NAN, values });
        }
    }
    let (kept, closed) = opts.cut_gates(&st.log_alpha);
    let effective = effective(lay, &kept);
    let gates: Vec<f32> = effective.iter().map(|&k| k as u8 as f32).collect();
    let mut rows = Vec::with_capacity(full.data.len());
    for (i, chunk) in data.discovery.chunks(opts.batch).enumerate() {
        let batch = Batch::new(chunk, &model.config)?;
        let v = match &dev {
            Some(v) => Some(v.clone()),
            None if opts.ablation == AblationKind::Resample => {
                Some(corrupted_values(model, be, ew, &data.corrupted[i * opts.batch..i * opts.batch + chunk.len()])?)
            }
            None => None,
        };
        let out = model.edge_forward(be, ew, &batch, &gates, v.as_deref(), &batch.last_rows(), false)?;
        rows.extend(be.read(&out.logits).await?.data);
    }
    let discovery_kl = kl_mean(&full, &HostTensor::new(full.shape.clone(), rows))?.loss;
    Ok(EdgePruneRun { state: st, finished: true, kept, closed, effective, discovery_kl, values })
}

/// The one-hot rows `[answers, vocab]` that pick the answer tokens' logits (`logits · selectᵀ`);
/// the same matrix takes their gradient back to the whole vocabulary.
fn answer_select(answers: &[u32], vocab: usize) -> Result<HostTensor> {
    let mut m = vec![0.0f32; answers.len() * vocab];
    for (i, &t) in answers.iter().enumerate() {
        if t as usize >= vocab {
            return Err(Error::Input(format!("answer token {t} of the KL is past this model's vocabulary of {vocab}")));
        }
        m[i * vocab + t as usize] = 1.0;
    }
    Ok(HostTensor::new(vec![answers.len(), vocab], m))
}

/// Each writer's output on the corrupted prompts (resample ablation's values, `[rows, d]`).
fn corrupted_values<B: Backend>(model: &Model<B>, be: &B, ew: &EdgeWeights<B::Tensor>, corrupted: &[Vec<u32>]) -> Result<Vec<B::Tensor>> {
    let batch = Batch::new(corrupted, &model.config)?;
    let ones = vec![1.0; ew.layout.n_edges()];
    Ok(model.edge_forward(be, ew, &batch, &ones, None, &[0], true)?.writers)
}

/// One step: a minibatch, fresh gate noise, the edge forward, the loss on the device, the edge
/// backward, AdamW on log α and ascent on λ. The state advances only when everything is finite.
#[allow(clippy::too_many_arguments)]
async fn step<B: Backend>(model: &Model<B>, be: &B, ew: &EdgeWeights<B::Tensor>, data: &EdgePruneData, opts: &EdgePruneOptions,
    full: &B::Tensor, values: Option<&[B::Tensor]>, select: Option<&B::Tensor>, st: &mut EdgePruneState) -> Result<EdgeStepRecord> {
    let n = st.log_alpha.len();
    let mut rng = st.rng;
    let idx = rng.choose(data.discovery.len(), opts.batch);
    let prompts: Vec<Vec<u32>> = idx.iter().map(|&i| data.discovery[i].clone()).collect();
    let batch = Batch::new(&prompts, &model.config)?;
    let u: Vec<f64> = (0..n).map(|_| rng.open01()).collect();
    // Exactly 0 or 1 only where clamped, as the sampled backward assumes.
    let z: Vec<f32> = st.log_alpha.iter().zip(&u).map(|(&a, &u)| hc::sample_f32(a, u)).collect();
    let resampled = match (values, opts.ablation) {
        (None, AblationKind::Resample) => {
            let c: Vec<Vec<u32>> = idx.iter().map(|&i| data.corrupted[i].clone()).collect();
            Some(corrupted_values(model, be, ew, &c)?)
        }
        _ => None,
    };
    let tape = model.edge_forward(be, ew, &batch, &z, resampled.as_deref().or(values), &batch.last_rows(), false)?;
    let rows: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    let full_rows = be.gather_rows(full, &rows)?;
    let pairs = vec![None; idx.len()];
    let (dlogits, terms) = match select {
        // The answers' logits, their KL, and its gradient back on the whole vocabulary.
        Some(s) => {
            let (d, terms) = be.kl_hinge(&be.matmul(&tape.logits, s, None)?, &be.matmul(&full_rows, s, None)?, &pairs, 0.0, 1.0)?;
            (be.matmul_backward(&d, s)?, terms)
        }
        None => be.kl_hinge(&tape.logits, &full_rows, &pairs, 0.0, 1.0)?,
    };
    let (gz, read) = model.edge_backward(be, ew, &batch, tape, true, &dlogits, &[&terms]).await?;
    let kl = (0..idx.len()).map(|r| read[0].data[4 * r] as f64).sum::<f64>() / idx.len() as f64;

    let step = st.step;
    let ramp = (0.7 * opts.steps as f64).max(1.0);
    let target = opts.target_sparsity * ((step + 1) as f64 / ramp).min(1.0);
    let sparsity = 1.0 - st.log_alpha.iter().map(|&a| hc::expected_l0(a)).sum::<f64>() / n as f64;
    let (l1, l2) = (st.lambda[0], st.lambda[1]);
    let past_ramp = (step + 1) as f64 >= ramp;
    let open = st.log_alpha.iter().filter(|&&a| a > 0.0).count();
    // The count is held from the first step past the ramp with the open gates down to the
    // target's count, and at the latest from `HOLD_BY` of the run; until then the open hold.
    let exact = opts.hold == Hold::Exact
        && past_ramp
        && (st.held_from.is_some() || open <= target_count(n, opts.target_sparsity) || (step + 1) as f64 >= HOLD_BY * opts.steps as f64);
    let held = match opts.hold {
        Hold::Open | Hold::Exact if past_ramp => (n - open) as f64 / n as f64,
        _ => sparsity,
    };
    // Holding the count exactly, the multipliers rest and push nothing.
    let gap = if exact { 0.0 } else { held - target };
    let lagrangian = l1 * gap + l2 * gap * gap;
    let push = if exact { 0.0 } else { (l1 + 2.0 * l2 * gap) / n as f64 };
    let grads: Vec<f64> = (0..n)
        .map(|i| gz[i] as f64 * hc::sample_grad(st.log_alpha[i], u[i]) - push * hc::expected_l0_grad(st.log_alpha[i]))
        .collect();
    let loss = kl + lagrangian;
    if !loss.is_finite() || grads.iter().any(|g| !g.is_finite()) {
        return Err(Error::NonFinite(format!(
            "edge-prune step {}: the loss is {loss} (KL {kl}); training stopped, the last good state (step {step}) is kept",
            step + 1
        )));
    }
    let lr = opts.schedule.rate(opts.lr, step, opts.warmup, opts.steps);
    AdamW { weight_decay: 0.01, ..AdamW::default() }.step(&mut st.log_alpha, &grads, &mut st.moments, lr);
    if exact {
        hold_count(&mut st.log_alpha, opts.target_sparsity);
    } else {
        let lr_lambda = opts.schedule.rate(opts.lambda_lr.unwrap_or(opts.lr), step, opts.warmup, opts.steps);
        AdamW::default().step(&mut st.lambda, &[-gap, -gap * gap], &mut st.lambda_moments, lr_lambda);
        if opts.lambda2_scale != 1.0 {
            // λ2 moves `lambda2_scale` times as far as Adam's step at λ1's rate (no weight decay).
            st.lambda[1] = l2 + opts.lambda2_scale * (st.lambda[1] - l2);
        }
    }
    st.rng = rng;
    st.step += 1;
    if exact && st.held_from.is_none() {
        st.held_from = Some(st.step);
    }
    let kept = st.log_alpha.iter().filter(|&&a| hc::deterministic(a) > 0.5).count() as f64 / n as f64;
    let record = EdgeStepRecord { step: st.step, loss, kl, lr, sparsity, target, kept };
    st.history.push(record.clone());
    Ok(record)
}

/// The edges target sparsity `t` keeps of `n`: round((1 − t)·n).
fn target_count(n: usize, target: f64) -> usize {
    ((1.0 - target) * n as f64).round() as usize
}

/// Shifts every log α by the one amount that leaves exactly the top `k = round((1 − t)·n)` gates
/// open (log α > 0): the midpoint between the k-th and (k+1)-th largest goes to 0 (k = 0: the
/// largest to −½; k = n: the smallest to +½). The ranking, and so `top_edges`, is unchanged. Gates
/// tied across the k-th place stay tied, on the same side.
pub fn hold_count(log_alpha: &mut [f64], target: f64) {
    let n = log_alpha.len();
    if n == 0 {
        return;
    }
    let k = target_count(n, target);
    let mut sorted = log_alpha.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let boundary = match k {
        0 => sorted[0] + 0.5,
        k if k >= n => sorted[n - 1] - 0.5,
        k => 0.5 * (sorted[k - 1] + sorted[k]),
    };
    for a in log_alpha.iter_mut() {
        *a -= boundary;
    }
}

/// The top `round((1 − t)·n)` edges by log α (ties: the lower number first): exactly the target.
pub fn top_edges(log_alpha: &[f64], target: f64) -> Vec<bool> {
    let n = log_alpha.len();
    let k = target_count(n, target);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| log_alpha[b].total_cmp(&log_alpha[a]).then(a.cmp(&b)));
    let mut kept = vec![false; n];
    for &i in order.iter().take(k) {
        kept[i] = true;
    }
    kept
}

/// The circuit of the finished gates for target `t`: the target's edges (`top_edges`) without
/// those the training closed, whose test-time gate is at most ½ (log α ≤ 0); and how many of the
/// target's were left out that way. When the gates end at or below the target's sparsity this is
/// exactly the target. (On SmolLM2's greater-than, 3,000 steps at target 0.95, the gates ended with
/// 1,554 open: the target's 3,533 gave a test KL of 1.27, the open 1,554 of 0.14.) A target that
/// keeps every edge keeps every edge: that circuit is the full model.
pub fn cut(log_alpha: &[f64], target: f64) -> (Vec<bool>, usize) {
    let mut kept = top_edges(log_alpha, target);
    if kept.iter().all(|&k| k) {
        return (kept, 0);
    }
    let mut closed = 0;
    for (k, &a) in kept.iter_mut().zip(log_alpha) {
        if *k && a <= 0.0 {
            *k = false;
            closed += 1;
        }
    }
    (kept, closed)
}

/// The gates the training left open: test-time gate above ½ (log α > 0).
pub fn open_gates(log_alpha: &[f64]) -> Vec<bool> {
    log_alpha.iter().map(|&a| a > 0.0).collect()
}

/// The node a reader belongs to, as the writer it feeds: a query head's, or for a KV head's
/// key and value every query head of its group (None: the logits).
fn fed_writers(lay: &EdgeLayout, r: Reader) -> Vec<usize> {
    let pos = |w: Writer| lay.writers.iter().position(|&x| x == w);
    match r {
        Reader::Logits => vec![],
        Reader::Mlp { layer } => pos(Writer::Mlp { layer }).into_iter().collect(),
        Reader::Q { layer, head } => pos(Writer::Head { layer, head }).into_iter().collect(),
        Reader::K { layer, kv } | Reader::V { layer, kv } => {
            let nq = lay.readers.iter().filter(|x| matches!(x, Reader::Q { layer: l, .. } if *l == layer)).count();
            let nkv = lay.readers.iter().filter(|x| matches!(x, Reader::K { layer: l, .. } if *l == layer)).count();
            let g = (nq / nkv.max(1)).max(1);
            (kv * g..(kv + 1) * g).filter_map(|h| pos(Writer::Head { layer, head: h })).collect()
        }
    }
}

/// `kept` without the edges that reach nothing: a writer is live when one of its kept edges goes
/// to the logits or to a reader of a live writer; an edge stays when its writer is live and its
/// reader is the logits or feeds a live writer.
pub fn effective(lay: &EdgeLayout, kept: &[bool]) -> Vec<bool> {
    let feeds: Vec<Vec<usize>> = lay.readers.iter().map(|&r| fed_writers(lay, r)).collect();
    let mut live = vec![false; lay.writers.len()];
    // Readers come after the writers they read: one pass from the last reader down settles it.
    for r in (0..lay.readers.len()).rev() {
        let useful = lay.readers[r] == Reader::Logits || feeds[r].iter().any(|&w| live[w]);
        if !useful {
            continue;
        }
        for w in 0..lay.reads[r] {
            if kept[lay.first[r] + w] {
                live[w] = true;
            }
        }
    }
    (0..lay.n_edges())
        .map(|i| {
            let e = lay.edge(i).expect("edge index");
            let r = lay.readers.iter().position(|&x| x == e.reader).expect("reader");
            let w = lay.writers.iter().position(|&x| x == e.writer).expect("writer");
            kept[i] && live[w] && (e.reader == Reader::Logits || feeds[r].iter().any(|&f| live[f]))
        })
        .collect()
}

/// The kept edges by name.
pub fn edge_list(lay: &EdgeLayout, kept: &[bool]) -> Vec<Edge> {
    kept.iter().enumerate().filter(|(_, &k)| k).filter_map(|(i, _)| lay.edge(i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lambda_learning_rate_grows_with_the_edge_count_past_7000() {
        assert_eq!(EdgePruneOptions::default_lambda_lr(0.3, 82), None);
        assert_eq!(EdgePruneOptions::default_lambda_lr(0.3, 7000), None);
        let smol = EdgePruneOptions::default_lambda_lr(0.3, 70_651).unwrap();
        assert!((smol - 0.3 * 70_651.0 / 7000.0).abs() < 1e-12, "{smol}");
        let gpt2 = EdgePruneOptions::default_lambda_lr(0.8, 32_936).unwrap();
        assert!((gpt2 - 0.8 * 32_936.0 / 7000.0).abs() < 1e-12, "{gpt2}");
    }
}
