//! `carve extract`: find a task's circuit, prune the model down to it, and report on the test split.
//!
//! The run directory gets `circuit.json`, `model/` (the standalone pruned model), `report.md`,
//! `report.json`, `circuit.svg`, and `state.json`, saved after every decision batch, from which
//! `--resume` continues an interrupted run with the same result.

mod edge_prune;
mod node_prune;
mod progress;
mod report;
mod rundir;
mod training_svg;

use crate::backend_pick::{dispatch_at, BackendChoice, Job, PrecisionChoice};
use crate::circuit_eval::Values;
use crate::cmd::tasks::{tokenizer, Prepared, TaskArgs};
use crate::measure::{edge_mixing_flops, forward_flops, latencies};
use crate::source;
use anyhow::{bail, Context, Result};
use carve_core::backend::Backend;
use carve_core::circuit::file::{CircuitFile, CircuitMetrics, ModelIdentity, TaskInfo};
use carve_core::circuit::{means, svg, ModelShape};
use carve_core::extract::{ablate, AblateData, AblateOptions, AblationKind, Implementation, MethodResult, RunOptions};
use carve_core::metrics::{evaluate, Circuit, CircuitAblation, EdgeGates, EvalOptions, Scores};
use carve_core::model::edges::EdgeWeights;
use carve_core::model::load::{load_path, weights_sha256, LoadedModel};
use carve_core::model::{Batch, Model};
use carve_core::prune::{prune, prune_edges, write_dir, DirExtras, PrunedModel};
use progress::Hook;
use rundir::{RunDir, SavedState};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Greedy node ablation with a KL threshold (García-Carrasco et al. 2025).
    Ablate,
    /// Learned hard-concrete masks on attention blocks, MLP blocks, heads and neurons (Haider et al. 2025).
    NodePrune,
    /// Learned hard-concrete masks on the edges between components (Bhaskar et al. 2024).
    EdgePrune,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AblationArg {
    Zero,
    Mean,
    MeanPerPosition,
    Resample,
}

/// ablate's settings, shared with `bench extract`.
#[derive(clap::Args)]
pub struct AblateArgs {
    /// ablate's acceptance threshold: a component goes when ablating it raises the mean KL by less (nats).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Where removed components' values come from: zero, the mean over the patching split, or
    /// the output on each prompt's corrupted version.
    #[arg(long, value_enum, default_value = "mean")]
    pub ablation: AblationArg,
    /// Also decide on each layer's MLP block.
    #[arg(long)]
    pub mlps: bool,
}

impl AblateArgs {
    pub fn options(&self, neurons: bool) -> Result<AblateOptions> {
        let alpha = self.alpha.context("give --alpha: the KL threshold below which a component goes (nats)")?;
        Ok(AblateOptions { alpha, ablation: self.ablation.kind(), mlps: self.mlps, neurons })
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// A model directory, a GGUF file, or a hub name.
    #[arg(long)]
    model: String,
    /// ioi, acronyms, greater-than, or a JSONL file ({"prompt": …, "answer": …} per line).
    #[arg(long)]
    task: Option<String>,
    /// Examples in all, split in the proportions of --patching/--discovery/--test.
    #[arg(long)]
    n: Option<usize>,
    #[command(flatten)]
    task_args: TaskArgs,
    #[arg(long, value_enum, default_value = "ablate")]
    method: Method,
    #[command(flatten)]
    ablate: AblateArgs,
    #[command(flatten)]
    node_prune: node_prune::NodePruneArgs,
    #[command(flatten)]
    edge_prune: edge_prune::EdgePruneArgs,
    /// ablate: also decide on single MLP neurons of the MLPs that stay.
    #[arg(long)]
    neurons: bool,
    /// The run directory.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue the interrupted run in DIR (give the same options).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Replace the run that --out already holds.
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// Prompts per forward: node-prune's and edge-prune's prompts per training step, and when
    /// scoring the test split.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Test prompts in the batch that latency is measured on.
    #[arg(long, default_value_t = 32)]
    latency_batch: usize,
    /// Timed runs per model for latency (after 2 warm-up runs); the median is reported.
    #[arg(long, default_value_t = 10)]
    latency_runs: usize,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// What every matrix product rounds its inputs to: f32, or mixed precision (f16 or bf16
    /// inputs, f32 sums: a GPU's tensor-core numerics). A run resumes at the precision it started.
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionChoice,
    /// Use the straightforward implementation (a full forward per candidate): same decisions, slower.
    #[arg(long, hide = true)]
    reference: bool,
    /// Stop after N decision batches (node-prune: steps), as Ctrl-C would (for tests).
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
}

pub fn run(a: Args) -> Result<()> {
    let dir = match (&a.out, &a.resume) {
        (Some(o), Some(r)) if o != r => bail!("--out {} and --resume {} name different directories", o.display(), r.display()),
        (_, Some(d)) | (Some(d), None) => d.clone(),
        (None, None) => bail!("give the run directory: --out DIR (or --resume DIR to continue one)"),
    };
    if a.method != Method::EdgePrune && a.edge_prune.sparsity.is_some() {
        bail!("--sparsity is edge-prune's (the fraction of edges removed); node-prune takes --target-sparsity");
    }
    if a.method != Method::EdgePrune && a.edge_prune.cut != edge_prune::CutArg::Target {
        bail!("--cut is edge-prune's (which of the finished gates' edges to keep)");
    }
    if a.method != Method::EdgePrune && a.edge_prune.hold.is_some() {
        bail!("--hold is edge-prune's (what its multipliers hold at the target)");
    }
    if a.method != Method::EdgePrune && a.edge_prune.lambda2_scale.is_some() {
        bail!("--lambda2-scale is edge-prune's (how fast its quadratic multiplier moves)");
    }
    if a.method != Method::EdgePrune && a.edge_prune.schedule.is_some() {
        bail!("--schedule is edge-prune's (how its learning rates fall after the warm-up)");
    }
    match a.method {
        Method::Ablate => {
            let alpha = a.ablate.alpha.context("ablate needs --alpha: the KL threshold below which a component goes (nats)")?;
            if !(alpha.is_finite() && alpha > 0.0) {
                bail!("--alpha must be a finite number above 0, not {alpha}");
            }
        }
        Method::NodePrune => {
            if a.ablate.alpha.is_some() || a.ablate.mlps || a.neurons {
                bail!("--alpha, --mlps and --neurons are ablate's settings; node-prune takes --granularity, --sparsity-weight, --steps, --lr");
            }
            a.node_prune.check(a.batch, a.task_args.seed, a.ablate.ablation.kind())?;
        }
        Method::EdgePrune => {
            if a.ablate.alpha.is_some() || a.ablate.mlps || a.neurons {
                bail!("--alpha, --mlps and --neurons are ablate's settings; edge-prune takes --sparsity, --steps, --lr");
            }
            // The task's answer tokens are known once it is prepared: two stand-ins let the other
            // settings be checked now.
            a.edge_prune.options(&a, 0, None, Some(vec![0, 1]))?;
        }
    }
    if a.latency_runs < 10 {
        bail!("--latency-runs must be at least 10 (a median of fewer runs says little)");
    }
    a.task_args.check(a.task.as_deref(), a.n)?;
    let path = source::resolve(&a.model)?;
    let rd = RunDir::open(&dir, a.resume.is_some(), a.force, &path, a.precision.into())?;

    let m = source::load(&a.model)?;
    let t = std::time::Instant::now();
    let sha = weights_sha256(&path)?;
    eprintln!("weights sha256 {}… ({:.1} s)", &sha[..16], t.elapsed().as_secs_f64());
    let resume = if a.resume.is_some() { Some(rd.load_state(&sha)?) } else { None };
    let tok = tokenizer(&m)?;
    let prep = a.task_args.prepare(a.task.as_deref(), a.n, tok, m.config.n_ctx)?;
    for n in &prep.notes {
        eprintln!("note    {n}");
    }
    let base_config = read_base_config(&path)?;
    let job = ExtractJob { a: &a, m: &m, sha, prep: &prep, rd: &rd, resume, base_config, seconds: 0.0 };
    match dispatch_at(a.backend, a.precision.into(), job)? {
        Outcome::Stopped => {
            eprintln!("stopped: the state is saved in {}", rd.path(rundir::STATE).display());
            eprintln!("continue with the same command and --resume {}", dir.display());
            std::process::exit(130);
        }
        Outcome::Done(md) => {
            println!("{md}");
            println!("circuit:      {}", rd.path(rundir::CIRCUIT).display());
            if rd.path(rundir::MODEL).is_dir() {
                println!("pruned model: {}", rd.path(rundir::MODEL).display());
            }
            println!("report:       {} (and report.json, circuit.svg)", rd.path(rundir::REPORT_MD).display());
            if let Ok(Some(link)) = crate::cmd::serve::run_link(&dir, "http://127.0.0.1:8080/") {
                println!("in the browser: carve serve {}   then open {link}", dir.display());
            }
            Ok(())
        }
    }
}

/// The source's config.json, whose other keys the pruned model keeps (GGUF: none).
fn read_base_config(path: &Path) -> Result<Option<serde_json::Value>> {
    let p = path.join("config.json");
    if !path.is_dir() || !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", p.display()))?))
}

enum Outcome {
    Stopped,
    Done(String),
}

struct ExtractJob<'a> {
    a: &'a Args,
    m: &'a LoadedModel,
    sha: String,
    prep: &'a Prepared,
    rd: &'a RunDir,
    resume: Option<SavedState>,
    base_config: Option<serde_json::Value>,
    /// Extraction time, interrupted runs included (set by the method).
    seconds: f64,
}

impl AblationArg {
    pub fn kind(self) -> AblationKind {
        match self {
            AblationArg::Zero => AblationKind::Zero,
            AblationArg::Mean => AblationKind::Mean,
            AblationArg::MeanPerPosition => AblationKind::MeanPerPosition,
            AblationArg::Resample => AblationKind::Resample,
        }
    }
}

impl Job for ExtractJob<'_> {
    type Out = Outcome;
    fn run<B: Backend>(mut self, be: &B) -> Result<Outcome> {
        let (a, m, splits, task) = (self.a, self.m, &self.prep.splits, &self.prep.task);
        let model = m.upload(be)?;
        let kind = a.ablate.ablation.kind();
        // Checked before the method runs: a circuit that can't be scored would waste it. (An edge
        // circuit's values are its writers' means, which edge-prune measures.)
        let values = match a.method {
            Method::EdgePrune => None,
            _ => Some(Values::measure(kind, &model, be, &splits.patching)?),
        };
        let ew = match a.method {
            Method::EdgePrune => Some(EdgeWeights::new(be, &model, &m.weights)?),
            _ => None,
        };
        let found = match (a.method, &ew) {
            (Method::EdgePrune, Some(ew)) => edge_prune::run(&mut self, be, &model, ew)?,
            (Method::NodePrune, _) => node_prune::run(&mut self, be, &model)?,
            _ => self.run_ablate(be, &model)?,
        };
        let Some(found) = found else { return Ok(Outcome::Stopped) };
        let extract_seconds = self.seconds;
        eprintln!("{}", found.summary);

        let eval_opts = EvalOptions { batch_size: a.batch };
        let edge_values: Option<Vec<B::Tensor>> =
            found.edge_values.as_ref().map(|v| v.iter().map(|t| be.upload(t)).collect::<carve_core::Result<_>>()).transpose()?;
        let gates = match (&found.edges, &ew) {
            (Some(e), Some(ew)) => Some(e.gates(&ew.layout)?),
            _ => None,
        };
        let ablation = match (&values, kind) {
            (Some(v), _) => v.circuit_ablation(),
            (None, AblationKind::Resample) => CircuitAblation::Resample,
            (None, _) => CircuitAblation::Zero,
        };
        let edges = match (&gates, &ew) {
            (Some(g), Some(ew)) => Some(EdgeGates { weights: ew, gates: g, values: edge_values.as_deref() }),
            _ => None,
        };
        let circuit = Circuit { masks: &found.masks, ablation, edges };
        let test = pollster::block_on(evaluate(&model, be, task, &splits.test, Some(&circuit), &eval_opts))?;
        let test_circuit = test.circuit.context("evaluate returned no circuit scores")?;
        let test_kl = test.kl.context("evaluate returned no KL")?;

        let shape = ModelShape::of(&m.weights.layers, |t| t.shape[0]);
        let sizes = splits.sizes();
        let identity = ModelIdentity { name: m.source.clone(), arch: m.config.arch.name().into(), sha256: self.sha.clone() };
        let task_info = TaskInfo {
            name: a.task.clone().unwrap_or_else(|| task.name.clone()),
            seed: a.task_args.seed,
            bos: a.task_args.bos,
            metric: task.metric.key().into(),
            n_patching: sizes.patching,
            n_discovery: sizes.discovery,
            n_test: sizes.test,
        };
        let metrics = CircuitMetrics { split: "test".into(), n: test.n, full: file_scores(&test.full), circuit: file_scores(&test_circuit), kl: test_kl };
        let values_file = found.ablation.as_ref().and_then(shipped_means).map(|_| rundir::MEANS);
        let cf = CircuitFile::from_result(identity, task_info, kind, shape.clone(), &found, Some(metrics), values_file);
        let cf_value = serde_json::to_value(&cf)?;

        let pruned = match (kind, &found.edges) {
            (AblationKind::Zero | AblationKind::Mean, Some(e)) => {
                let pm = prune_edges(&m.config, &m.weights, &shape, e, found.edge_values.as_deref())?;
                Some(self.write_and_measure(be, &model, pm, None, &cf_value, &splits.test, &eval_opts)?)
            }
            (AblationKind::Zero | AblationKind::Mean, None) => {
                let ablation = found.ablation.as_ref().context("the method returned no ablation values to fold into the model")?;
                let pm = prune(&m.config, &m.weights, &found.masks, ablation)?;
                // The pruned model's own means (its layers, kept heads and neurons), for toggling what is left.
                let pruned_means = shipped_means(ablation).map(|v| means::for_pruned(v, &pm.layers, m.config.head_dim));
                Some(self.write_and_measure(be, &model, pm, pruned_means.as_ref(), &cf_value, &splits.test, &eval_opts)?)
            }
            _ => None,
        };
        let inputs = report::Inputs {
            circuit: &cf,
            full_params: m.weights.param_counts(),
            test_full: &test.full,
            test_circuit: &test_circuit,
            test_kl,
            pruned: pruned.as_ref(),
            extract_seconds,
            backend: be.describe(),
            metric_title: task.metric.title(),
            training: training_summary(&found),
        };
        let md = report::markdown(&inputs);
        let rd = self.rd;
        rd.write(rundir::CIRCUIT, cf.to_json().as_bytes())?;
        if let Some(v) = found.ablation.as_ref().and_then(shipped_means) {
            rd.write(rundir::MEANS, &means::to_bytes(v)?)?;
        }
        // The test split, for the web app's "evaluate" (scored with the same code as here); also in
        // model/, so that a page given only the model's URL finds it.
        let test_task = carve_core::tasks::Task { examples: splits.test.clone(), ..task.clone() };
        let task_json = serde_json::to_string(&test_task)?;
        rd.write(rundir::TASK, task_json.as_bytes())?;
        if rd.path(rundir::MODEL).is_dir() {
            std::fs::write(rd.path(rundir::MODEL).join("task.json"), &task_json).context("writing model/task.json")?;
        }
        rd.write(rundir::REPORT_JSON, serde_json::to_string_pretty(&report::json(&inputs))?.as_bytes())?;
        rd.write(rundir::REPORT_MD, md.as_bytes())?;
        let (kh, km) = cf.kept_counts();
        let title = format!("{} · {} · {kh} heads, {km} MLPs kept", cf.task.name, cf.model.name);
        let picture = match &cf.edges {
            Some(e) => svg::render_edges(&shape, &cf.kept, e, &format!("{title}, {} edges", e.kept.len())),
            None => svg::render(&shape, &cf.kept, &title),
        };
        rd.write(rundir::SVG, picture.as_bytes())?;
        if let Some(h) = &found.training {
            rd.write(rundir::TRAINING_SVG, training_svg::node(h, &format!("node-prune · {} · {}", cf.task.name, cf.model.name)).as_bytes())?;
        }
        if let Some(h) = &found.edge_training {
            rd.write(rundir::TRAINING_SVG, training_svg::edges(h, &format!("edge-prune · {} · {}", cf.task.name, cf.model.name)).as_bytes())?;
        }
        Ok(Outcome::Done(md))
    }
}

impl ExtractJob<'_> {
    /// Greedy node ablation; None when it was stopped (the state is saved).
    fn run_ablate<B: Backend>(&mut self, be: &B, model: &Model<B>) -> Result<Option<MethodResult>> {
        let (a, splits) = (self.a, &self.prep.splits);
        let alpha = a.ablate.alpha.context("ablate needs --alpha: the KL threshold below which a component goes (nats)")?;
        let opts = AblateOptions { alpha, ablation: a.ablate.ablation.kind(), mlps: a.ablate.mlps, neurons: a.neurons };
        let data = AblateData::from_examples(&splits.discovery, &splits.patching);
        let implementation = if a.reference { Implementation::Reference } else { Implementation::Fast };
        let run_opts = RunOptions { implementation, ..RunOptions::for_backend(be) };
        let (before, resume) = match self.resume.take() {
            Some(s) => (s.extract_seconds, Some(s.ablate.context("the saved run is not an ablate run: resume it with its own --method")?)),
            None => (0.0, None),
        };
        let mut hook = Hook::new(self.rd, self.sha.clone(), before, a.stop_after);
        let run = pollster::block_on(ablate(model, be, &data, &opts, &run_opts, resume, &mut hook));
        hook.bar.finish_and_clear();
        if let Some(e) = hook.error.take() {
            return Err(e.context("saving the sweep's state"));
        }
        let run = run?;
        if !run.finished {
            return Ok(None);
        }
        self.seconds = hook.seconds();
        Ok(Some(run.into_result(&opts, self.seconds)))
    }
}

/// The values a run ships beside circuit.json: position-independent means (zero needs none;
/// per-position and resampled values depend on the prompt).
fn shipped_means(a: &carve_core::circuit::Ablation) -> Option<&carve_core::circuit::AblationValues> {
    match a {
        carve_core::circuit::Ablation::Given(v) if v.position_independent() => Some(v),
        _ => None,
    }
}

/// The examples' prompts.
fn prompts(examples: &[carve_core::tasks::Example]) -> Vec<Vec<u32>> {
    examples.iter().map(|e| e.prompt.clone()).collect()
}

/// Each discovery prompt's corrupted prompt under resample ablation (empty otherwise; a missing one
/// is left empty for the method's own check to name).
fn corrupted_prompts(kind: AblationKind, discovery: &[carve_core::tasks::Example]) -> Vec<Vec<u32>> {
    match kind {
        AblationKind::Resample => discovery.iter().map(|e| e.corrupted.clone().unwrap_or_default()).collect(),
        _ => Vec::new(),
    }
}

/// A learned method's steps, final loss and final held sparsity against its target, for the report:
/// the expected sparsity, or for edge-prune holding its open gates (or their exact count), the fraction closed after the
/// last step.
fn training_summary(r: &MethodResult) -> Option<report::Training> {
    let hp = |k: &str| r.method.hyperparameters.get(k).and_then(|v| v.as_str());
    let closed_gates = r.edge_training.is_some() && matches!(hp("hold"), Some("open" | "exact"));
    let node = r.training.as_ref().and_then(|h| h.last().map(|l| (h.len(), l.loss, l.kl, l.target.map(|t| (l.sparsity, t)))));
    let edge = r.edge_training.as_ref().and_then(|h| {
        h.last().map(|l| (h.len(), l.loss, l.kl, Some((if closed_gates { 1.0 - l.kept } else { l.sparsity }, l.target))))
    });
    let (kl_over_answers, cut_open) = (hp("kl_over") == Some("answers"), hp("cut") == Some("open"));
    node.or(edge).map(|(steps, final_loss, final_kl, reached)| report::Training {
        steps,
        final_loss,
        final_kl,
        reached,
        closed_gates,
        kl_over_answers,
        cut_open,
        edges: r.edge_training.is_some(),
        count_held_from: r.method.hyperparameters.get("count_held_from").and_then(|v| v.as_u64()),
    })
}

fn file_scores(s: &Scores) -> carve_core::circuit::file::Scores {
    carve_core::circuit::file::Scores { accuracy: s.accuracy, metric: s.metric, answer_prob: s.answer_prob }
}

impl ExtractJob<'_> {
    /// Writes the pruned model, loads it back as any model is loaded, scores it on the test split
    /// and times it beside the full model.
    #[allow(clippy::too_many_arguments)]
    fn write_and_measure<B: Backend>(
        &self,
        be: &B,
        full: &Model<B>,
        pruned: PrunedModel,
        pruned_means: Option<&carve_core::circuit::AblationValues>,
        circuit: &serde_json::Value,
        test: &[carve_core::tasks::Example],
        eval_opts: &EvalOptions,
    ) -> Result<report::Pruned> {
        let m = self.m;
        let dir = self.rd.path(rundir::MODEL);
        let extras = DirExtras {
            base_config: self.base_config.as_ref(),
            tokenizer: m.tokenizer.as_ref(),
            circuit: Some(circuit),
            means: pruned_means,
        };
        self.rd.clear_replaced()?;
        write_dir(&dir, &pruned, &extras)?;
        let back = load_path(&dir).with_context(|| format!("loading the pruned model back from {}", dir.display()))?;
        let pm = back.upload(be)?;
        let scored = pollster::block_on(evaluate(&pm, be, &self.prep.task, test, None, eval_opts))?;

        let prompts: Vec<Vec<u32>> = test.iter().take(self.a.latency_batch.max(1)).map(|e| e.prompt.clone()).collect();
        let (warmup, runs) = (2, self.a.latency_runs);
        eprintln!("timing full and pruned model: {} prompts, {warmup} warm-up + {runs} runs each…", prompts.len());
        let lat = latencies(&[full, &pm], be, &prompts, warmup, runs)?;
        let batch = Batch::new(&prompts, &m.config)?;
        let flops = (forward_flops(&m.config, &m.weights, &batch, true), forward_flops(&back.config, &back.weights, &batch, true) + edge_mixing_flops(&back, &batch));
        Ok(report::Pruned {
            params: back.weights.param_counts(),
            test: scored.full,
            latency: (lat[0], lat[1]),
            flops,
            latency_batch: (batch.size(), batch.seq),
            runs,
            warmup,
            layers: pruned.layers.iter().map(|l| l.source_layer).collect(),
        })
    }
}
