//! `carve bench`: speed measured side by side in one run, printed as a table.

use crate::backend_pick::{dispatch, BackendChoice, Job};
use crate::source;
use anyhow::Result;
use carve_core::backend::Backend;
use carve_core::model::load::LoadedModel;
use carve_core::model::{Batch, ForwardArgs, LogitsAt, Model};
use carve_core::HostTensor;
use std::time::Instant;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// Forward passes over a batch of random prompts: all-position and last-position logits.
    Forward(ForwardArgsCli),
    /// One matmul `x[M, K] · w[N, K]ᵀ`, the op that dominates every forward.
    Matmul(MatmulArgs),
}

#[derive(clap::Args)]
pub struct MatmulArgs {
    #[arg(long, default_value_t = 2000)]
    m: usize,
    #[arg(long, default_value_t = 576)]
    k: usize,
    #[arg(long, default_value_t = 1536)]
    n: usize,
    #[arg(long, default_value_t = 10)]
    iters: usize,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
}

#[derive(clap::Args)]
pub struct ForwardArgsCli {
    #[arg(long)]
    model: String,
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[arg(long, default_value_t = 20)]
    seq: usize,
    /// Timed runs per variant (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
}

pub fn run(b: Bench) -> Result<()> {
    match b {
        Bench::Forward(a) => {
            let m = source::load(&a.model)?;
            dispatch(a.backend, ForwardBench { m: &m, a: &a })
        }
        Bench::Matmul(a) => dispatch(a.backend, MatmulBench(&a)),
    }
}

struct MatmulBench<'a>(&'a MatmulArgs);

impl Job for MatmulBench<'_> {
    type Out = ();
    fn run<B: Backend>(self, be: &B) -> Result<()> {
        let a = self.0;
        let fill = |r: usize, c: usize| HostTensor::new(vec![r, c], (0..r * c).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect());
        let x = be.upload(&fill(a.m, a.k))?;
        let w = be.upload(&fill(a.n, a.k))?;
        let once = || -> Result<f64> {
            let t = Instant::now();
            pollster::block_on(be.read(&be.matmul(&x, &w, None)?))?;
            Ok(t.elapsed().as_secs_f64())
        };
        once()?;
        let mut times = (0..a.iters.max(1)).map(|_| once()).collect::<Result<Vec<_>>>()?;
        times.sort_by(f64::total_cmp);
        let t = times[times.len() / 2];
        println!("{}: {}×{}×{} median {:.2} ms, {:.1} GFLOP/s (read-back included)", be.describe(), a.m, a.k, a.n, t * 1e3, 2.0 * (a.m * a.k * a.n) as f64 / t / 1e9);
        Ok(())
    }
}

struct ForwardBench<'a> {
    m: &'a LoadedModel,
    a: &'a ForwardArgsCli,
}

impl Job for ForwardBench<'_> {
    type Out = ();
    fn run<B: Backend>(self, be: &B) -> Result<()> {
        let (c, a) = (&self.m.config, self.a);
        let model = Model::upload(be, c.clone(), &self.m.weights)?;
        // Fixed pseudo-random ids (an LCG): the same prompts every run.
        let mut s = 12345u64;
        let prompts: Vec<Vec<u32>> = (0..a.batch)
            .map(|_| (0..a.seq).map(|_| { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 33) % c.vocab as u64) as u32 }).collect())
            .collect();
        let batch = Batch::new(&prompts, c)?;
        println!("backend: {}   batch {} × seq {} = {} tokens, median of {} runs", be.describe(), a.batch, a.seq, batch.rows(), a.iters);
        println!("{:<16} {:>10} {:>12} {:>10}", "logits", "time (s)", "tokens/s", "GFLOP/s");
        for (name, at) in [("all positions", LogitsAt::All), ("last position", LogitsAt::Last)] {
            let out_bytes = if at == LogitsAt::All { batch.rows() } else { batch.size() } * c.vocab * 4;
            if out_bytes > be.max_tensor_bytes() {
                println!("{name:<16} skipped: {} MiB of logits exceed the backend's binding limit", out_bytes >> 20);
                continue;
            }
            let time_one = || -> Result<f64> {
                let t = Instant::now();
                let out = model.forward(be, &batch, &ForwardArgs { logits: at, ..ForwardArgs::default() })?;
                pollster::block_on(be.read(out.logits.as_ref().expect("logits were asked for")))?;
                Ok(t.elapsed().as_secs_f64())
            };
            time_one()?; // warm-up: pipelines, buffer pools, page faults
            let mut times = (0..a.iters.max(1)).map(|_| time_one()).collect::<Result<Vec<_>>>()?;
            times.sort_by(f64::total_cmp);
            let t = times[times.len() / 2];
            let flops = forward_flops(self.m, &batch, at == LogitsAt::Last);
            println!("{:<16} {:>10.3} {:>12.0} {:>10.1}", name, t, batch.rows() as f64 / t, flops / t / 1e9);
        }
        Ok(())
    }
}

/// Multiply-adds ×2 of the matmuls and attention of one forward.
fn forward_flops(m: &LoadedModel, b: &Batch, last_only: bool) -> f64 {
    let c = &m.config;
    let rows = b.rows() as f64;
    let mut f = 0.0;
    for l in &m.weights.layers {
        let mats = [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_up, &l.w_down].iter().map(|t| t.len()).sum::<usize>()
            + l.w_gate.as_ref().map_or(0, |t| t.len());
        f += 2.0 * rows * mats as f64;
        let t = b.seq as f64;
        f += 4.0 * b.size() as f64 * l.n_heads as f64 * c.head_dim as f64 * t * (t + 1.0) / 2.0;
    }
    let head_rows = if last_only { b.size() as f64 } else { rows };
    f + 2.0 * head_rows * (c.vocab * c.d_model) as f64
}
