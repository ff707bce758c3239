//! `carve bench train --method edge-prune`: one edge-prune step measured part by part on a batch of
//! discovery prompts, gates at fractional values and mean values on every writer (so every mix
//! runs): the plain forward, the edge forward that keeps its outbox (every writer's output kept
//! apart), and the edge backward to every gate; and the outbox's size.

use crate::backend_pick::Job;
use crate::cmd::tasks::Prepared;
use crate::measure::{forward_flops, median};
use anyhow::{Context, Result};
use crate::cmd::bench_train::Mode;
use carve_core::backend::Backend;
use carve_core::extract::edge_prune::writer_means;
use carve_core::metrics::loss::kl_mean;
use carve_core::optim::hard_concrete;
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

/// Hard-concrete samples at `log_alpha` for every edge (fixed noise), as a training step draws them.
pub fn sampled_gates(n: usize, log_alpha: f64) -> Vec<f32> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            hard_concrete::sample_f32(log_alpha, u)
        })
        .collect()
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
        let fractional = fractional_gates(lay.n_edges());
        let sampled = sampled_gates(lay.n_edges(), 3.0);
        let rss_before = crate::cmd::bench_train::peak_rss_mib();
        // On a device queue, the sampled step again with a submit every OVERLAP_DISPATCHES and with
        // packing the other way, in turn.
        let modes = Mode::all(be);
        let mut runs = vec![(&fractional, modes[0])];
        runs.extend(modes.iter().map(|&m| (&sampled, m)));
        let (mut plain, mut fwd, mut bwd) = (Vec::new(), vec![Vec::new(); runs.len()], vec![Vec::new(); runs.len()]);
        let rows = batch.last_rows();
        let mut created = (None, None);
        for i in 0..=self.iters {
            if i == 1 {
                created = crate::cmd::bench_train::created(be);
            }
            let t = Instant::now();
            let out = model.forward(be, &batch, &ForwardArgs { logits: LogitsAt::Last, ..ForwardArgs::default() })?;
            let full = pollster::block_on(be.read(out.logits.as_ref().context("no logits")?))?;
            let t_plain = t.elapsed().as_secs_f64();
            if i > 0 {
                plain.push(t_plain);
            }
            for (k, &(gates, mode)) in runs.iter().enumerate() {
                mode.set(be);
                let t = Instant::now();
                let tape = model.edge_forward(be, &ew, &batch, gates, Some(&values), &rows, false)?;
                let logits = pollster::block_on(be.read(&tape.logits))?;
                let t_fwd = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let lg = kl_mean(&full, &logits)?;
                let dl = be.upload(&lg.dlogits_tensor(&logits.shape))?;
                pollster::block_on(model.edge_backward(be, &ew, &batch, tape, true, &dl, &[]))?;
                if i > 0 {
                    fwd[k].push(t_fwd);
                    bwd[k].push(t.elapsed().as_secs_f64());
                }
            }
        }
        modes[0].set(be);
        let p = median(plain);
        let (fwd, bwd): (Vec<f64>, Vec<f64>) = (fwd.into_iter().map(median).collect(), bwd.into_iter().map(median).collect());
        let (f, fs, b, bs) = (fwd[0], fwd[1], bwd[0], bwd[1]);
        let ff = forward_flops(&m.config, &m.weights, &batch, true);
        // The writers' outputs hold the real rows only where the backend packs rows.
        let out_rows = if be.packs_rows() { batch.lens.iter().sum() } else { batch.rows() };
        let outbox = (lay.writers.len() * out_rows * m.config.d_model * 4) as f64 / (1u64 << 20) as f64;
        let frac = sampled.iter().filter(|&&z| z > 0.0 && z < 1.0).count() as f64 / sampled.len() as f64;
        println!("backend: {}", be.describe());
        println!(
            "edges: {} ({} writers, {} readers); batch: {} prompts padded to {} tokens; mean values; {} timed steps after 1 warm-up (medians)",
            lay.n_edges(),
            lay.writers.len(),
            lay.readers.len(),
            batch.size(),
            batch.seq,
            self.iters
        );
        println!("{}", crate::cmd::bench_train::padding_note(&batch, be.packs_rows()));
        println!(
            "gates: fractional on every edge (every product runs), and sampled as at a run's start (log α 3: {:.0}% strictly between 0 and 1, the only ones whose gradient a step needs)",
            100.0 * frac
        );
        println!("\n| part | ms | × plain forward |\n|---|---:|---:|");
        for (name, t) in [
            ("plain forward", p),
            ("edge forward (outbox kept), gates fractional", f),
            ("edge backward to the gates, gates fractional", b),
            ("training step, gates fractional", f + b),
            ("edge forward (outbox kept), gates sampled", fs),
            ("edge backward to the gates, gates sampled", bs),
            ("training step, gates sampled", fs + bs),
        ] {
            println!("| {name} | {:.1} | {:.2} |", t * 1e3, t / p);
        }
        // The sampled runs, one per mode.
        let (sf, sb) = (&fwd[1..], &bwd[1..]);
        Mode::print_comparisons(&modes, &[
            ("edge forward, gates sampled", sf.to_vec()),
            ("edge backward, gates sampled", sb.to_vec()),
            ("training step, gates sampled", sf.iter().zip(sb).map(|(f, b)| f + b).collect()),
        ]);
        println!("\nplain forward: {:.2} GFLOP ({:.1} GFLOP/s)", ff / 1e9, ff / p / 1e9);
        println!("outbox: {outbox:.0} MiB (every writer's output, {} × {} rows × {} f32)", lay.writers.len(), out_rows, m.config.d_model);
        if let (Some(a), Some(z)) = (rss_before, crate::cmd::bench_train::peak_rss_mib()) {
            println!("peak resident memory: {z:.0} MiB ({:+.0} MiB during the steps; the model's weights are loaded before)", z - a);
        }
        crate::cmd::bench_train::print_created(be, created, self.iters);
        Ok(())
    }
}
