//! `carve eval`: a task's held-out test split through the model: accuracy, the task's metric and the
//! answer's probability, as a table or one JSON object.

use crate::backend_pick::{dispatch_at, BackendChoice, Job, PrecisionChoice};
use crate::cmd::tasks::{tokenizer, TaskArgs};
use crate::source;
use crate::circuit_eval::Values;
use anyhow::{Context, Result};
use carve_core::circuit::{CircuitFile, ModelShape};
use carve_core::extract::AblationKind;
use carve_core::extract::edge_prune::writer_means;
use carve_core::metrics::{Circuit, CircuitAblation, EdgeGates};
use carve_core::model::edges::EdgeWeights;
use carve_core::model::load::weights_sha256;
use std::path::{Path, PathBuf};
use carve_core::backend::Backend;
use carve_core::metrics::{evaluate, EvalOptions, Report, Scores};
use carve_core::model::load::LoadedModel;
use carve_core::model::Model;
use carve_core::tasks::{Example, Task};
use serde_json::json;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// A model directory, a GGUF file, or a hub name.
    #[arg(long)]
    model: String,
    /// ioi, acronyms, greater-than, or a JSONL file ({"prompt": …, "answer": …} per line).
    #[arg(long)]
    task: Option<String>,
    /// Examples in all (generated, or taken from the file), split in the proportions of
    /// --patching/--discovery/--test [default: their total, 400].
    #[arg(long)]
    n: Option<usize>,
    #[command(flatten)]
    task_args: TaskArgs,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Also score this circuit (a `circuit.json` of this model): masked, with its ablation values
    /// measured on the patching split. Without --task, the circuit's own task, seed and splits.
    #[arg(long)]
    circuit: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// What every matrix product rounds its inputs to: f32, or mixed precision (f16 or bf16
    /// inputs, f32 sums).
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionChoice,
}

pub fn run(mut a: Args) -> Result<()> {
    let circuit = match &a.circuit {
        Some(p) => Some(read_circuit(p)?),
        None => None,
    };
    if let Some(c) = &circuit {
        if a.task.is_none() && a.task_args.patching_file.is_none() {
            // The circuit's own task and splits, so its test split is the one it was scored on.
            a.task = Some(c.task.name.clone());
            a.task_args.seed = c.task.seed;
            a.task_args.bos = c.task.bos;
            a.task_args.patching = Some(c.task.n_patching);
            a.task_args.discovery = Some(c.task.n_discovery);
            a.task_args.test = Some(c.task.n_test);
        }
    }
    a.task_args.check(a.task.as_deref(), a.n)?;
    let path = source::resolve(&a.model)?;
    if let Some(c) = &circuit {
        c.check_model(&weights_sha256(&path)?).with_context(|| format!("{} does not fit {}", a.circuit.as_ref().unwrap().display(), a.model))?;
    }
    let m = source::load(&a.model)?;
    if let (Some(c), Some(p)) = (&circuit, &a.circuit) {
        let shape = ModelShape::of(&m.weights.layers, |t| t.shape[0]);
        c.check_shape(&shape).with_context(|| format!("{} does not fit {}", p.display(), a.model))?;
    }
    let tok = tokenizer(&m)?;
    let prep = a.task_args.prepare(a.task.as_deref(), a.n, tok, m.config.n_ctx)?;
    let (task, splits) = (&prep.task, &prep.splits);
    if !a.json {
        for f in &task.filters {
            eprintln!("filter  {f}");
        }
    }
    for n in &prep.notes {
        eprintln!("note    {n}");
    }
    let t = Instant::now();
    let job = EvalJob { m: &m, task, examples: &splits.test, patching: &splits.patching, batch: a.batch, circuit: circuit.as_ref() };
    let (report, backend) = dispatch_at(a.backend, a.precision.into(), job)?;
    let secs = t.elapsed().as_secs_f64();
    let sizes = splits.sizes();
    if a.json {
        let scores = |s: &Scores| json!({ "accuracy": s.accuracy, "metric": s.metric, "answer_prob": s.answer_prob });
        let mut out = json!({
            "task": task.name,
            "model": m.source,
            "backend": backend,
            "seed": a.task_args.seed,
            "bos": a.task_args.bos,
            "metric": task.metric.key(),
            "n_patching": sizes.patching,
            "n_discovery": sizes.discovery,
            "n_test": sizes.test,
            "full": scores(&report.full),
            "filters": task.filters,
            "notes": prep.notes,
            "seconds": secs,
        });
        if let (Some(c), Some(kl)) = (&report.circuit, report.kl) {
            out["circuit"] = scores(c);
            out["circuit"]["kl"] = json!(kl);
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let metric = task.metric.title();
    let answer = if task.years.is_some() { "P(year > YY)" } else { "P(answer)" };
    let name_w = task.name.len().max(4);
    println!(
        "{:<name_w$}  {:>8}  {:>9}  {:>5}  {:>8}  {:>13}  {:>12}",
        "task", "patching", "discovery", "test", "accuracy", metric, answer
    );
    println!(
        "{:<name_w$}  {:>8}  {:>9}  {:>5}  {:>8.3}  {:>13.3}  {:>12.3}",
        task.name, sizes.patching, sizes.discovery, sizes.test, report.full.accuracy, report.full.metric, report.full.answer_prob
    );
    if let (Some(c), Some(kl)) = (&report.circuit, report.kl) {
        println!(
            "{:<name_w$}  {:>8}  {:>9}  {:>5}  {:>8.3}  {:>13.3}  {:>12.3}   KL(full ‖ circuit) {kl:.4}",
            "circuit", "", "", "", c.accuracy, c.metric, c.answer_prob
        );
    }
    eprintln!("{} test prompts on {backend} in {secs:.1} s (seed {})", report.n, a.task_args.seed);
    Ok(())
}

struct EvalJob<'a> {
    m: &'a LoadedModel,
    task: &'a Task,
    examples: &'a [Example],
    patching: &'a [Example],
    batch: usize,
    circuit: Option<&'a CircuitFile>,
}

fn read_circuit(p: &Path) -> Result<CircuitFile> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    CircuitFile::from_json(&text).with_context(|| format!("{}", p.display()))
}

impl Job for EvalJob<'_> {
    type Out = (Report, String);
    fn run<B: Backend>(self, be: &B) -> Result<(Report, String)> {
        let model = self.m.upload(be)?;
        let opts = EvalOptions { batch_size: self.batch };
        let Some(cf) = self.circuit else {
            return Ok((pollster::block_on(evaluate(&model, be, self.task, self.examples, None, &opts))?, be.describe()));
        };
        let shape = ModelShape::of(&self.m.weights.layers, |t| t.shape[0]);
        let masks = cf.masks(&shape)?;
        let kind: AblationKind = serde_json::from_value(json!(cf.ablation.kind)).context("the circuit's ablation kind")?;
        if let Some(e) = &cf.edges {
            return Ok((self.edge_circuit(be, &model, &shape, &masks, e, kind)?, be.describe()));
        }
        let values = Values::measure(kind, &model, be, self.patching)?;
        let circuit = Circuit { masks: &masks, ablation: values.circuit_ablation(), edges: None };
        let report = pollster::block_on(evaluate(&model, be, self.task, self.examples, Some(&circuit), &opts))?;
        Ok((report, be.describe()))
    }
}

impl EvalJob<'_> {
    /// An edge circuit through the edge forward, its removed edges taking their writers' means over
    /// the patching split (measured as edge-prune measured them), zero, or each prompt's corrupted run.
    fn edge_circuit<B: Backend>(&self, be: &B, model: &Model<B>, shape: &ModelShape, masks: &carve_core::circuit::Masks,
        e: &carve_core::circuit::EdgeCircuit, kind: AblationKind) -> Result<Report> {
        let ew = EdgeWeights::new(be, model, &self.m.weights)?;
        let layout = e.layout(shape)?;
        if layout != ew.layout {
            anyhow::bail!("the circuit's edge layout (KV heads {:?}) is not this model's", e.n_kv_heads);
        }
        let gates = e.gates(&ew.layout)?;
        let values = match kind {
            AblationKind::Mean => {
                anyhow::ensure!(!self.patching.is_empty(), "mean ablation needs patching prompts: the patching split is empty");
                let prompts: Vec<Vec<u32>> = self.patching.iter().map(|x| x.prompt.clone()).collect();
                let host = pollster::block_on(writer_means(model, be, &ew, &prompts))?;
                Some(host.iter().map(|t| be.upload(t)).collect::<carve_core::Result<Vec<_>>>()?)
            }
            AblationKind::Zero | AblationKind::Resample => None,
            AblationKind::MeanPerPosition => anyhow::bail!("an edge circuit takes zero, mean or resample ablation, not per-position means"),
        };
        let ablation = if kind == AblationKind::Resample { CircuitAblation::Resample } else { CircuitAblation::Zero };
        let edges = Some(EdgeGates { weights: &ew, gates: &gates, values: values.as_deref() });
        let circuit = Circuit { masks, ablation, edges };
        let opts = EvalOptions { batch_size: self.batch };
        Ok(pollster::block_on(evaluate(model, be, self.task, self.examples, Some(&circuit), &opts))?)
    }
}
