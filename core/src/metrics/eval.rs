//! `evaluate`: a task's examples through the full model and, optionally, through a circuit.
//!
//! Prompts go through in chunks of `EvalOptions::batch_size` (right-padded; logits only at each
//! prompt's last real position), so memory stays bounded whatever the number of examples. With a
//! circuit, each chunk also runs with its masks and ablation values, and KL(P_full ‖ P_circuit) is
//! taken at the last position. Greater-than on a tokenizer that writes one token per digit runs
//! each prompt followed by YY's first digit and reads the logits at its last two positions: the
//! prompt's own last position (causal attention never looks ahead) and P(d2 | y1).

use crate::backend::Backend;
use crate::mask::Masks;
use crate::model::ablation::{resampled_values, DeviceAblation};
use crate::model::edges::EdgeWeights;
use crate::model::{check_logits, Batch, Capture, ForwardArgs, LogitsAt, Model};
use crate::tasks::{Example, MetricKind, Target, Task, YearTokens};
use crate::{Error, HostTensor, Result};

use super::{kl_div, score, ExampleScore, Scores};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalOptions {
    /// Prompts per forward.
    pub batch_size: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions { batch_size: 32 }
    }
}

/// Where an ablated component's value comes from when a circuit is evaluated.
pub enum CircuitAblation<'a, B: Backend> {
    /// a = 0.
    Zero,
    /// Values uploaded once (e.g. means over the patching split). They are used for every chunk,
    /// so they must have one row (position-independent) or fit every chunk's shape.
    Values(&'a DeviceAblation<B>),
    /// Each example's own corrupted prompt (resample ablation): the corrupted prompts of a chunk
    /// run first and their activations replace the ablated components'. Needs a corrupted prompt,
    /// of the prompt's length, on every example.
    Resample,
}

/// A circuit to evaluate: masks (1 keeps, 0 ablates) and where ablated values come from; or, with
/// `edges`, an edge circuit run through the edge forward (the masks then go unused).
pub struct Circuit<'a, B: Backend> {
    pub masks: &'a Masks,
    pub ablation: CircuitAblation<'a, B>,
    pub edges: Option<EdgeGates<'a, B>>,
}

/// An edge circuit: a gate per edge of `weights.layout` (1 keeps, 0 ablates), and with
/// `CircuitAblation::Values` a value `[1, d]` per writer (`CircuitAblation::Resample`: each
/// writer's output on the example's corrupted prompt).
pub struct EdgeGates<'a, B: Backend> {
    pub weights: &'a EdgeWeights<B::Tensor>,
    pub gates: &'a [f32],
    pub values: Option<&'a [B::Tensor]>,
}

/// What `evaluate` measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub metric: MetricKind,
    pub n: usize,
    pub full: Scores,
    pub circuit: Option<Scores>,
    /// Mean over examples of KL(P_full ‖ P_circuit) at the last position (nats).
    pub kl: Option<f64>,
    /// Per example, in the order given.
    pub full_examples: Vec<ExampleScore>,
    /// Per example; empty without a circuit.
    pub circuit_examples: Vec<ExampleScore>,
    /// Per example; empty without a circuit.
    pub kl_examples: Vec<f64>,
}

/// Scores `examples` (of `task`) on the full model and, when given, on `circuit`.
pub async fn evaluate<B: Backend>(
    model: &Model<B>,
    be: &B,
    task: &Task,
    examples: &[Example],
    circuit: Option<&Circuit<'_, B>>,
    opts: &EvalOptions,
) -> Result<Report> {
    if examples.is_empty() {
        return Err(Error::Input(format!("{}: no examples to evaluate", task.name)));
    }
    let bs = opts.batch_size.max(1);
    let cfg = &model.config;
    let digits = match &task.years {
        Some(YearTokens::Digits(d)) => Some(d.as_slice()),
        _ => None,
    };
    // Validate everything before the first forward.
    let all: Vec<Vec<u32>> = examples.iter().map(|e| e.prompt.clone()).collect();
    Batch::new(&all, cfg)?;
    for e in examples {
        if let Some(d) = digits {
            if e.prompt.len() + 1 > cfg.n_ctx {
                return Err(Error::Input(format!("{}: prompt {:?} leaves no room for the year's second digit", task.name, e.source)));
            }
            if let Some(bad) = d.iter().find(|&&t| t as usize >= cfg.vocab) {
                return Err(Error::Input(format!("{}: digit token {bad} is outside the model's vocabulary", task.name)));
            }
        }
        check_target(task, e, cfg.vocab)?;
    }
    if let Some(c) = circuit {
        if matches!(c.ablation, CircuitAblation::Resample) {
            for e in examples {
                match &e.corrupted {
                    Some(c) if c.len() == e.prompt.len() => {}
                    Some(c) => {
                        return Err(Error::Input(format!(
                            "{}: example {:?} has a corrupted prompt of {} tokens for a prompt of {}: resample ablation needs equal lengths",
                            task.name,
                            e.source,
                            c.len(),
                            e.prompt.len()
                        )))
                    }
                    None => {
                        return Err(Error::Input(format!(
                            "{}: resample ablation needs a corrupted prompt on every example; {:?} has none",
                            task.name, e.source
                        )))
                    }
                }
            }
            let corrupted: Vec<Vec<u32>> = examples.iter().filter_map(|e| e.corrupted.clone()).collect();
            Batch::new(&corrupted, cfg)?;
        }
    }

    let mut report = Report {
        metric: task.metric,
        n: examples.len(),
        full: Scores::mean(&[]),
        circuit: None,
        kl: None,
        full_examples: Vec::with_capacity(examples.len()),
        circuit_examples: Vec::new(),
        kl_examples: Vec::new(),
    };
    for chunk in examples.chunks(bs) {
        // With one token per digit the prompt runs followed by YY's first digit: its last two
        // positions give the first digit's distribution and the second's given the first.
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|e| sequence(&e.prompt, e, digits)).collect();
        let full = readout(model, be, &seqs, None, None, digits.is_some()).await?;
        for (i, e) in chunk.iter().enumerate() {
            report.full_examples.push(score(task, e, full.first(i), full.cond(i))?);
        }
        let Some(c) = circuit else { continue };
        let circ = match &c.edges {
            Some(eg) => {
                let corrupted: Option<Vec<Vec<u32>>> = matches!(c.ablation, CircuitAblation::Resample)
                    .then(|| chunk.iter().map(|e| sequence(e.corrupted.as_ref().expect("checked above"), e, digits)).collect());
                edge_readout(model, be, eg, &seqs, corrupted.as_deref(), digits.is_some()).await?
            }
            None => node_readout(model, be, c, chunk, &seqs, digits).await?,
        };
        for (i, e) in chunk.iter().enumerate() {
            report.circuit_examples.push(score(task, e, circ.first(i), circ.cond(i))?);
            let kl = kl_div(full.first(i), circ.first(i));
            if kl.is_nan() {
                return Err(Error::Backend(format!("{}: the logits are not finite (NaN or ±inf), so KL is undefined", e.source)));
            }
            report.kl_examples.push(kl);
        }
    }
    report.full = Scores::mean(&report.full_examples);
    if circuit.is_some() {
        report.circuit = Some(Scores::mean(&report.circuit_examples));
        report.kl = Some(report.kl_examples.iter().sum::<f64>() / report.n as f64);
    }
    Ok(report)
}

/// A chunk's readout through a node circuit's masks.
async fn node_readout<B: Backend>(model: &Model<B>, be: &B, c: &Circuit<'_, B>, chunk: &[Example], seqs: &[Vec<u32>],
    digits: Option<&[u32]>) -> Result<Readout> {
    let resampled;
    let ablation = match c.ablation {
        CircuitAblation::Zero => None,
        CircuitAblation::Values(a) => Some(a),
        CircuitAblation::Resample => {
            let corrupted: Vec<Vec<u32>> =
                chunk.iter().map(|e| sequence(e.corrupted.as_ref().expect("checked above"), e, digits)).collect();
            resampled = resampled_values(model, be, &corrupted, c.masks)?;
            Some(&resampled)
        }
    };
    readout(model, be, seqs, Some(c.masks), ablation, digits.is_some()).await
}

/// A chunk's readout through an edge circuit: logits at each sequence's last position (with `two`,
/// its last two), the removed edges taking their writers' values.
async fn edge_readout<B: Backend>(model: &Model<B>, be: &B, eg: &EdgeGates<'_, B>, seqs: &[Vec<u32>],
    corrupted: Option<&[Vec<u32>]>, two: bool) -> Result<Readout> {
    let batch = Batch::new(seqs, &model.config)?;
    let rows: Vec<u32> = batch
        .lens
        .iter()
        .enumerate()
        .flat_map(|(b, &len)| {
            let last = (b * batch.seq + len - 1) as u32;
            if two { vec![last - 1, last] } else { vec![last] }
        })
        .collect();
    let resampled = match corrupted {
        Some(c) => {
            let cb = Batch::new(c, &model.config)?;
            let ones = vec![1.0; eg.weights.layout.n_edges()];
            Some(model.edge_forward(be, eg.weights, &cb, &ones, None, &[0], true)?.writers)
        }
        None => None,
    };
    let out = model.edge_forward(be, eg.weights, &batch, eg.gates, resampled.as_deref().or(eg.values), &rows, false)?;
    Ok(Readout { logits: be.read(&out.logits).await?, two })
}

/// Logits at each prompt's last position, `[prompts, vocab]`, in chunks of `batch_size`
/// prompts, optionally through masks and ablation values (None: the full model; zero ablation).
pub async fn last_logits<B: Backend>(
    model: &Model<B>,
    be: &B,
    prompts: &[Vec<u32>],
    masks: Option<&Masks>,
    ablation: Option<&DeviceAblation<B>>,
    batch_size: usize,
) -> Result<HostTensor> {
    Batch::new(prompts, &model.config)?;
    let v = model.config.vocab;
    let mut data = Vec::with_capacity(prompts.len() * v);
    for chunk in prompts.chunks(batch_size.max(1)) {
        data.extend_from_slice(&run(model, be, chunk, masks, ablation).await?.data);
    }
    Ok(HostTensor::new(vec![prompts.len(), v], data))
}

/// One forward of a chunk, logits at the last positions only.
async fn run<B: Backend>(
    model: &Model<B>,
    be: &B,
    prompts: &[Vec<u32>],
    masks: Option<&Masks>,
    ablation: Option<&DeviceAblation<B>>,
) -> Result<HostTensor> {
    let batch = Batch::new(prompts, &model.config)?;
    let args = ForwardArgs { masks, ablation, capture: Capture::default(), logits: LogitsAt::Last };
    let out = model.forward(be, &batch, &args)?;
    let logits = out.logits.as_ref().ok_or_else(|| Error::Backend("the forward returned no logits".into()))?;
    let logits = be.read(logits).await?;
    check_logits(model, be, &batch, &args, &logits).await?;
    Ok(logits)
}

/// Logits of a chunk's sequences: at the last position, or with `two` at the last two (rows 2i
/// and 2i+1 of the tensor).
struct Readout {
    logits: HostTensor,
    two: bool,
}

impl Readout {
    fn first(&self, i: usize) -> &[f32] {
        self.logits.row(if self.two { 2 * i } else { i })
    }
    fn cond(&self, i: usize) -> Option<&[f32]> {
        self.two.then(|| self.logits.row(2 * i + 1))
    }
}

async fn readout<B: Backend>(
    model: &Model<B>,
    be: &B,
    seqs: &[Vec<u32>],
    masks: Option<&Masks>,
    ablation: Option<&DeviceAblation<B>>,
    two: bool,
) -> Result<Readout> {
    if !two {
        return Ok(Readout { logits: run(model, be, seqs, masks, ablation).await?, two });
    }
    let batch = Batch::new(seqs, &model.config)?;
    // The last two positions of each sequence.
    let rows: Vec<u32> = batch
        .lens
        .iter()
        .enumerate()
        .flat_map(|(b, &len)| [(b * batch.seq + len - 2) as u32, (b * batch.seq + len - 1) as u32])
        .collect();
    if let Some(e) = &model.edges {
        // A standalone edge model runs whole: its edge forward gives the logits at exactly those rows.
        if masks.is_some() || ablation.is_some() {
            model.whole_only("masking components")?;
        }
        let logits = be.read(&model.standalone_edge_logits(be, e, &batch, &rows)?).await?;
        check_logits(model, be, &batch, &ForwardArgs::default(), &logits).await?;
        return Ok(Readout { logits, two });
    }
    // The final residual stream at those rows, then the final norm and the unembedding on them
    // alone (a forward from the last layer, one row a prompt).
    let args = ForwardArgs { masks, ablation, capture: Capture { resid: true, ..Capture::default() }, logits: LogitsAt::None };
    let n = model.weights.layers.len();
    let resid = model.forward(be, &batch, &args)?.captured.resid.swap_remove(n);
    let resid = resid.ok_or_else(|| Error::Backend("the forward kept no final residual stream".into()))?;
    let x = be.gather_rows(&resid, &rows)?;
    let one_each = Batch { ids: vec![0; rows.len()], lens: vec![1; rows.len()], seq: 1 };
    let out = model.forward_from(be, &one_each, n, x, &ForwardArgs { logits: LogitsAt::All, ..ForwardArgs::default() })?;
    let logits = out.logits.as_ref().ok_or_else(|| Error::Backend("the forward returned no logits".into()))?;
    let logits = be.read(logits).await?;
    check_logits(model, be, &batch, &ForwardArgs { masks, ablation, ..ForwardArgs::default() }, &logits).await?;
    Ok(Readout { logits, two })
}

/// The prompt, followed by YY's first digit when years are written a digit per token.
fn sequence(prompt: &[u32], e: &Example, digits: Option<&[u32]>) -> Vec<u32> {
    let mut p = prompt.to_vec();
    if let (Some(d), Target::Year { yy }) = (digits, &e.target) {
        p.push(d[(*yy / 10) as usize]);
    }
    p
}

/// The example fits the task's metric and its answer ids are inside the vocabulary.
fn check_target(task: &Task, e: &Example, vocab: usize) -> Result<()> {
    let bad_id = |id: u32| (id as usize >= vocab).then(|| Error::Input(format!("{}: example {:?} names token {id}, outside the model's vocabulary of {vocab}", task.name, e.source)));
    match (&e.target, task.metric) {
        (Target::Token { answer, wrong }, MetricKind::LogitDiff) => {
            let w = wrong.ok_or_else(|| Error::Input(format!("{}: example {:?} has no wrong answer for the logit difference", task.name, e.source)))?;
            bad_id(*answer).or(bad_id(w)).map_or(Ok(()), Err)
        }
        (Target::Token { answer, .. }, MetricKind::LogProb) => bad_id(*answer).map_or(Ok(()), Err),
        (Target::Year { yy }, MetricKind::ProbDiff) if *yy <= 99 => match &task.years {
            Some(YearTokens::TwoDigit(ids)) if ids.len() == 100 => ids.iter().find_map(|&t| bad_id(t)).map_or(Ok(()), Err),
            Some(YearTokens::Digits(ids)) if ids.len() == 10 => ids.iter().find_map(|&t| bad_id(t)).map_or(Ok(()), Err),
            _ => Err(Error::Input(format!("{}: a year target needs the task's year tokens (100 two-digit or 10 digit ids)", task.name))),
        },
        _ => Err(Error::Input(format!("{}: example {:?} does not fit the task's metric {}", task.name, e.source, task.metric.key()))),
    }
}
