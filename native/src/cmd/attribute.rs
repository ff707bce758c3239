//! `carve attribute`: attribution patching on a task's discovery split. Every component's linear
//! estimate of its ablation effect on the task metric from one forward and one backward, ranked,
//! with the true effect of ablating each of the top k alone beside it.

use crate::backend_pick::{dispatch, BackendChoice, Job};
use crate::circuit_eval::Values;
use crate::cmd::extract::AblationArg;
use crate::cmd::tasks::{tokenizer, Prepared, TaskArgs};
use crate::source;
use anyhow::{bail, Context, Result};
use carve_core::backend::Backend;
use carve_core::extract::attribute::{attribute, AttributeResult};
use carve_core::extract::node_prune::Granularity;
use carve_core::extract::AblationKind;
use carve_core::model::load::LoadedModel;

#[derive(clap::Args)]
pub struct Args {
    /// A model directory, a GGUF file, or a hub name.
    #[arg(long)]
    model: String,
    /// ioi, acronyms, greater-than, or a JSONL file.
    #[arg(long)]
    task: Option<String>,
    /// Examples in all, split in the proportions of --patching/--discovery/--test.
    #[arg(long)]
    n: Option<usize>,
    #[command(flatten)]
    task_args: TaskArgs,
    /// Components to attribute, comma-separated: attn, mlps, heads, neurons.
    #[arg(long, default_value = "heads,mlps")]
    granularity: String,
    /// How many of the highest-ranked components to also ablate one at a time (a forward each).
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Ablation values: the mean over the patching split, or zero.
    #[arg(long, value_enum, default_value = "mean")]
    ablation: AblationArg,
    /// Prompts per forward.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
}

pub fn run(a: Args) -> Result<()> {
    let g = Granularity::parse(&a.granularity).context("--granularity")?;
    let kind = a.ablation.kind();
    if !matches!(kind, AblationKind::Zero | AblationKind::Mean) {
        bail!("attribute takes --ablation mean or zero");
    }
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    a.task_args.check(a.task.as_deref(), a.n)?;
    let m = source::load(&a.model)?;
    let tok = tokenizer(&m)?;
    let prep = a.task_args.prepare(a.task.as_deref(), a.n, tok, m.config.n_ctx)?;
    let r = dispatch(a.backend, Run { a: &a, m: &m, prep: &prep, g, kind })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("{} on {} discovery prompts: {:.4} on the full model", r.metric, r.n, r.full);
    println!("estimate: the linear prediction of the change in the mean {} when the component alone is ablated", r.metric);
    println!("\n| rank | component | estimate | actual |\n|---:|---|---:|---:|");
    let shown = r.items.len().min(a.top.max(30));
    for (i, it) in r.items.iter().take(shown).enumerate() {
        let actual = it.actual.map_or("".to_string(), |v| format!("{v:+.4}"));
        println!("| {} | {} | {:+.4} | {actual} |", i + 1, it.component, it.estimate);
    }
    if r.items.len() > shown {
        println!("… {} more (--json lists them all)", r.items.len() - shown);
    }
    let pairs: Vec<(f64, f64)> = r.items.iter().filter_map(|x| x.actual.map(|y| (x.estimate, y))).collect();
    if pairs.len() >= 3 {
        println!("\nestimate vs actual over the top {}: Pearson r = {:.3}", pairs.len(), pearson(&pairs));
    }
    Ok(())
}

fn pearson(p: &[(f64, f64)]) -> f64 {
    let n = p.len() as f64;
    let (mx, my) = (p.iter().map(|x| x.0).sum::<f64>() / n, p.iter().map(|x| x.1).sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for &(x, y) in p {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    sxy / (sxx * syy).sqrt()
}

struct Run<'a> {
    a: &'a Args,
    m: &'a LoadedModel,
    prep: &'a Prepared,
    g: Granularity,
    kind: AblationKind,
}

impl Job for Run<'_> {
    type Out = AttributeResult;
    fn run<B: Backend>(self, be: &B) -> Result<AttributeResult> {
        let model = self.m.upload(be)?;
        let values = Values::measure(self.kind, &model, be, &self.prep.splits.patching)?;
        let dev = match &values {
            Values::Mean(d) => Some(d),
            _ => None,
        };
        let r = pollster::block_on(attribute(
            &model,
            be,
            &self.prep.task,
            &self.prep.splits.discovery,
            dev,
            self.g,
            self.a.top,
            self.a.batch,
        ))?;
        Ok(r)
    }
}
