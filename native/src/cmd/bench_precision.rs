//! `carve bench precision`: what mixed precision changes on a task, measured side by side in one
//! run: the model at f32, mixed (f16 matmul inputs) and mixed-bf16 on the same backend and the
//! task's test prompts; per precision its last-position logits' largest error against f32
//! (relative to the largest logit), KL(P_f32 ‖ P_mixed) mean and max, how often the top token is
//! the same, the task's accuracy and metric, and the time.

use crate::backend_pick::{dispatch_at, BackendChoice, Job};
use crate::cmd::tasks::{tokenizer, TaskArgs};
use crate::source;
use anyhow::Result;
use carve_core::backend::{Backend, Precision};
use carve_core::metrics::{argmax, evaluate, kl_div, last_logits, EvalOptions, Scores};
use carve_core::model::load::LoadedModel;
use carve_core::tasks::{Example, Task};
use carve_core::HostTensor;
use std::time::Instant;

#[derive(clap::Args)]
pub struct PrecisionArgs {
    #[arg(long)]
    model: String,
    /// ioi, acronyms, greater-than, or a JSONL file: its test prompts are scored.
    #[arg(long, default_value = "ioi")]
    task: String,
    #[command(flatten)]
    task_args: TaskArgs,
    /// Prompts per forward.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
}

/// One precision's results.
struct Measured {
    logits: HostTensor,
    scores: Scores,
    backend: String,
    seconds: f64,
}

struct Score<'a> {
    m: &'a LoadedModel,
    task: &'a Task,
    examples: &'a [Example],
    batch: usize,
}

impl Job for Score<'_> {
    type Out = Measured;
    fn run<B: Backend>(self, be: &B) -> Result<Measured> {
        let model = self.m.upload(be)?;
        let t = Instant::now();
        let prompts: Vec<Vec<u32>> = self.examples.iter().map(|e| e.prompt.clone()).collect();
        let logits = pollster::block_on(last_logits(&model, be, &prompts, None, None, self.batch))?;
        let opts = EvalOptions { batch_size: self.batch };
        let report = pollster::block_on(evaluate(&model, be, self.task, self.examples, None, &opts))?;
        Ok(Measured { logits, scores: report.full, backend: be.describe(), seconds: t.elapsed().as_secs_f64() })
    }
}

/// max |a − b| over max |b|, mean and max KL(b ‖ a) per row, and the share of rows whose top
/// tokens agree.
pub fn compare(a: &HostTensor, b: &HostTensor) -> (f64, f64, f64, f64) {
    let v = *b.shape.last().unwrap_or(&1);
    let scale = b.data.iter().fold(0f64, |m, x| m.max(x.abs() as f64)).max(f64::MIN_POSITIVE);
    let err = a.data.iter().zip(&b.data).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max) / scale;
    let rows: Vec<(f64, bool)> =
        a.data.chunks(v).zip(b.data.chunks(v)).map(|(ra, rb)| (kl_div(rb, ra), argmax(ra) == argmax(rb))).collect();
    let n = rows.len().max(1) as f64;
    let kl_mean = rows.iter().map(|r| r.0).sum::<f64>() / n;
    let kl_max = rows.iter().map(|r| r.0).fold(0.0, f64::max);
    let top = rows.iter().filter(|r| r.1).count() as f64 / n;
    (err, kl_mean, kl_max, top)
}

pub fn run(a: PrecisionArgs) -> Result<()> {
    a.task_args.check(Some(&a.task), None)?;
    if a.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    let m = source::load(&a.model)?;
    let prep = a.task_args.prepare(Some(&a.task), None, tokenizer(&m)?, m.config.n_ctx)?;
    let examples = &prep.splits.test;
    let mut rows = Vec::new();
    for p in [Precision::F32, Precision::Mixed, Precision::MixedBf16] {
        let job = Score { m: &m, task: &prep.task, examples, batch: a.batch };
        rows.push((p, dispatch_at(a.backend, p, job)?));
    }
    let base = &rows[0].1;
    println!("backend: {}   task {} · {} test prompts · last-position logits", base.backend, prep.task.name, examples.len());
    println!(
        "{:<11} {:>13} {:>11} {:>10} {:>8} {:>9} {:>9} {:>8}",
        "precision", "logits error", "KL mean", "KL max", "same top", "accuracy", "metric", "time"
    );
    for (p, r) in &rows {
        let (err, kl_mean, kl_max, top) = compare(&r.logits, &base.logits);
        println!(
            "{:<11} {:>13.2e} {:>11.2e} {:>10.2e} {:>8.3} {:>9.3} {:>9.3} {:>7.1}s",
            p.name(),
            err,
            kl_mean,
            kl_max,
            top,
            r.scores.accuracy,
            r.scores.metric,
            r.seconds
        );
    }
    println!("logits error: max |Δlogit| / max |logit| against f32; KL(P_f32 ‖ P) in nats at the last position.");
    Ok(())
}
