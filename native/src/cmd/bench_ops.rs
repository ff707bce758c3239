//! `carve bench ops`: where the time of a forward and of a training step goes, op by op. On the CPU
//! backend every op is timed as it runs (`timed.rs`); on a GPU every kernel is timed on the device
//! with timestamp queries (`WgpuOptions::profile`). Sections: the plain forward (last-position
//! logits), then the chosen method's step as `bench train` runs it: its forward with the tape, and
//! its backward. Each table gives the ops by time, with calls and share, medians over `--iters`
//! steps after one warm-up.

use super::bench::TrainMethod;
use super::bench_train::fractional_masks;
use super::bench_train_edges::{fractional_gates, mean_values};
use crate::cmd::tasks::Prepared;
use crate::timed::Timed;
use anyhow::{Context, Result};
use carve_core::backend::cpu::CpuBackend;
use carve_core::backend::wgpu::WgpuBackend;
use carve_core::backend::Backend;
use carve_core::metrics::loss::kl_mean;
use carve_core::model::edges::EdgeWeights;
use carve_core::model::load::LoadedModel;
use carve_core::model::{Batch, ForwardArgs, LogitsAt};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

type Section = BTreeMap<String, (u64, Duration)>;

/// A backend that says where its time went since the last ask.
pub trait OpClock: Backend {
    /// Each op's calls and time since the last call.
    fn take_times(&self) -> Result<Section>;
    /// How the times are measured, for the header.
    fn how(&self) -> &'static str;
}

impl OpClock for Timed<CpuBackend> {
    fn take_times(&self) -> Result<Section> {
        Ok(self.take().into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
    fn how(&self) -> &'static str {
        "wall time of each op as it runs"
    }
}

impl OpClock for WgpuBackend {
    fn take_times(&self) -> Result<Section> {
        Ok(self.take_kernel_times()?.into_iter().map(|(k, t)| (k, (t.calls, t.time))).collect())
    }
    fn how(&self) -> &'static str {
        "device time of each kernel from timestamp queries, one compute pass per kernel; the ops' names are the kernels'"
    }
}

pub fn run<B: OpClock>(be: &B, m: &LoadedModel, prep: &Prepared, batch: usize, iters: usize, method: TrainMethod) -> Result<()> {
    let model = m.upload(be)?;
    let prompts: Vec<Vec<u32>> = prep.splits.discovery.iter().take(batch).map(|e| e.prompt.clone()).collect();
    anyhow::ensure!(!prompts.is_empty(), "the discovery split is empty");
    let b = Batch::new(&prompts, &m.config)?;
    let names = ["plain forward", "method forward (tape kept)", "method backward"];
    let edges = match method {
        TrainMethod::EdgePrune => {
            let ew = EdgeWeights::new(be, &model, &m.weights)?;
            let patching: Vec<Vec<u32>> = prep.splits.patching.iter().take(batch).map(|e| e.prompt.clone()).collect();
            anyhow::ensure!(!patching.is_empty(), "the patching split is empty (mean values are measured on it)");
            let values = mean_values(&model, be, &ew, &patching)?;
            let gates = fractional_gates(ew.layout.n_edges());
            Some((ew, values, gates))
        }
        TrainMethod::NodePrune => None,
    };
    let masks = fractional_masks(m);
    be.take_times()?;
    // Each section's ops, and its wall time up to the read that ends it.
    let mut runs: Vec<[(Section, f64); 3]> = Vec::new();
    for _ in 0..=iters {
        let t = Instant::now();
        let out = model.forward(be, &b, &ForwardArgs { logits: LogitsAt::Last, ..ForwardArgs::default() })?;
        let full = pollster::block_on(be.read(out.logits.as_ref().context("no logits")?))?;
        let plain = (be.take_times()?, t.elapsed().as_secs_f64());
        let t = Instant::now();
        let (fwd, bwd) = match &edges {
            Some((ew, values, gates)) => {
                let tape = model.edge_forward(be, ew, &b, gates, Some(values), &b.last_rows(), false)?;
                let logits = pollster::block_on(be.read(&tape.logits))?;
                let fwd = (be.take_times()?, t.elapsed().as_secs_f64());
                let t = Instant::now();
                let dl = be.upload(&kl_mean(&full, &logits)?.dlogits_tensor(&logits.shape))?;
                pollster::block_on(model.edge_backward(be, ew, &b, tape, true, &dl, &[]))?;
                (fwd, (be.take_times()?, t.elapsed().as_secs_f64()))
            }
            None => {
                let tape = model.forward_tape(be, &b, &masks, None)?;
                let logits = pollster::block_on(be.read(&tape.logits))?;
                let fwd = (be.take_times()?, t.elapsed().as_secs_f64());
                let t = Instant::now();
                pollster::block_on(model.backward(be, &b, tape, &kl_mean(&full, &logits)?.dlogits_tensor(&logits.shape)))?;
                (fwd, (be.take_times()?, t.elapsed().as_secs_f64()))
            }
        };
        runs.push([plain, fwd, bwd]);
    }
    println!("backend: {} ({})", be.describe(), be.how());
    println!(
        "batch: {} prompts padded to {} tokens; method: {}; {} timed steps after 1 warm-up (medians)",
        b.size(),
        b.seq,
        match method {
            TrainMethod::NodePrune => "node-prune (masks fractional on every head and neuron)",
            TrainMethod::EdgePrune => "edge-prune (gates fractional on every edge, mean values)",
        },
        iters
    );
    for (k, name) in names.iter().enumerate() {
        let sections: Vec<&Section> = runs[1..].iter().map(|r| &r[k].0).collect();
        let wall = crate::measure::median(runs[1..].iter().map(|r| r[k].1).collect());
        print!("{}", table(name, &sections, wall));
    }
    Ok(())
}

/// One section's ops by median time: calls per step, ms, share of the section; its wall time
/// beside the ops' sum (the rest is host work between ops, or waiting).
fn table(name: &str, sections: &[&Section], wall: f64) -> String {
    let mut ops: Vec<(&str, u64, f64)> = Vec::new();
    for op in sections.iter().flat_map(|s| s.keys()).collect::<std::collections::BTreeSet<_>>() {
        let times: Vec<f64> = sections.iter().map(|s| s.get(op).map_or(0.0, |t| t.1.as_secs_f64())).collect();
        let calls = sections[0].get(op).map_or(0, |t| t.0);
        ops.push((op, calls, crate::measure::median(times)));
    }
    ops.sort_by(|a, b| b.2.total_cmp(&a.2));
    let total: f64 = ops.iter().map(|o| o.2).sum();
    let mut s = format!(
        "\n{name}: {:.1} ms in ops, {:.1} ms wall\n\n| op | calls | ms | share |\n|---|---:|---:|---:|\n",
        total * 1e3,
        wall * 1e3
    );
    for (op, calls, t) in ops {
        s += &format!("| {op} | {calls} | {:.1} | {:.1}% |\n", t * 1e3, 100.0 * t / total.max(1e-12));
    }
    s
}
