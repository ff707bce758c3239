//! `carve bench train --method edge-prune`: one edge-prune step measured part by part on a batch of
//! discovery prompts, gates at fractional values and mean values on every writer (so every mix
//! runs): the plain forward, the edge forward that keeps its outbox (every writer's output kept
//! apart), and the edge backward to every gate; and the outbox's size.

use crate::backend_pick::Job;
use crate::cmd::tasks::Prepared;
use crate::measure::{forward_flops, median};
use anyhow::{Context, Result};
use carve_core::backend::Backend;
use carve_core::extract::edge_prune::writer_means;
use carve_core::metrics::loss::kl_mean;
use carve_core::model::edges::EdgeWeights;
use carve_core::model::load::LoadedModel;
use carve_core::model::{Batch, ForwardArgs, LogitsAt, Model};
use std::time::Instant;

pub struct EdgeTrainBench<'a> {
    pub m: &'a LoadedModel,
    pub batch: usize,
    pub iters: usize,
    pub prep: &'a Prepared,
}

/// Gates at fractional values, as sampled gates are: every mix runs.
pub fn fractional_gates(n: usize) -> Vec<f32> {
    (0..n).map(|i| 0.5 + 0.4 * ((i % 7) as f32 / 7.0)).collect()
}

/// Every writer's mean over `patching`, on the backend.
pub fn mean_values<B: Backend>(model: &Model<B>, be: &B, ew: &EdgeWeights<B::Tensor>, patching: &[Vec<u32>]) -> Result<Vec<B::Tensor>> {
    let means = pollster::block_on(writer_means(model, be, ew, patching))?;
    Ok(means.iter().map(|t| be.upload(t)).collect::<carve_core::Result<_>>()?)
}

impl Job for EdgeTrainBench<'_> {
    type Out = ();
    fn run<B: Backend>(self, be: &B) -> Result<()> {
        let m = self.m;
        let model = m.upload(be)?;
        let ew = EdgeWeights::new(be, &model, &m.weights)?;
        let lay = &ew.layout;
        let take = |xs: &[carve_core::tasks::Example]| -> Vec<Vec<u32>> { xs.iter().take(self.batch).map(|e| e.prompt.clone()).collect() };
        let prompts = take(&self.prep.splits.discovery);
        anyhow::ensure!(!prompts.is_empty(), "the discovery split is empty");
        let patching = take(&self.prep.splits.patching);
        anyhow::ensure!(!patching.is_empty(), "the patching split is empty (mean values are measured on it)");
        let batch = Batch::new(&prompts, &m.config)?;
        let values = mean_values(&model, be, &ew, &patching)?;
        let gates = fractional_gates(lay.n_edges());
        let rss_before = crate::cmd::bench_train::peak_rss_mib();
        let (mut plain, mut fwd, mut bwd) = (Vec::new(), Vec::new(), Vec::new());
        let rows = batch.last_rows();
        for i in 0..=self.iters {
            let t = Instant::now();
            let out = model.forward(be, &batch, &ForwardArgs { logits: LogitsAt::Last, ..ForwardArgs::default() })?;
            let full = pollster::block_on(be.read(out.logits.as_ref().context("no logits")?))?;
            let t_plain = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let tape = model.edge_forward(be, &ew, &batch, &gates, Some(&values), &rows, false)?;
            let logits = pollster::block_on(be.read(&tape.logits))?;
            let t_fwd = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let lg = kl_mean(&full, &logits)?;
            let dl = be.upload(&lg.dlogits_tensor(&logits.shape))?;
            pollster::block_on(model.edge_backward(be, &ew, &batch, tape, &gates, &dl, &[]))?;
            let t_bwd = t.elapsed().as_secs_f64();
            if i > 0 {
                plain.push(t_plain);
                fwd.push(t_fwd);
                bwd.push(t_bwd);
            }
        }
        let (p, f, b) = (median(plain), median(fwd), median(bwd));
        let ff = forward_flops(&m.config, &m.weights, &batch, true);
        let outbox = (lay.writers.len() * batch.rows() * m.config.d_model * 4) as f64 / (1u64 << 20) as f64;
        println!("backend: {}", be.describe());
        println!(
            "edges: {} ({} writers, {} readers); batch: {} prompts padded to {} tokens; gates fractional, mean values; {} timed steps after 1 warm-up (medians)",
            lay.n_edges(),
            lay.writers.len(),
            lay.readers.len(),
            batch.size(),
            batch.seq,
            self.iters
        );
        println!("\n| part | ms | × plain forward |\n|---|---:|---:|");
        for (name, t) in [("plain forward", p), ("edge forward (outbox kept)", f), ("edge backward to the gates", b), ("training step", f + b)] {
            println!("| {name} | {:.1} | {:.2} |", t * 1e3, t / p);
        }
        println!("\nplain forward: {:.2} GFLOP ({:.1} GFLOP/s)", ff / 1e9, ff / p / 1e9);
        println!("outbox: {outbox:.0} MiB (every writer's output, {} × {} rows × {} f32)", lay.writers.len(), batch.rows(), m.config.d_model);
        if let (Some(a), Some(z)) = (rss_before, crate::cmd::bench_train::peak_rss_mib()) {
            println!("peak resident memory: {z:.0} MiB ({:+.0} MiB during the steps; the model's weights are loaded before)", z - a);
        }
        Ok(())
    }
}
