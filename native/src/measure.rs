//! What benchmarks and reports measure the same way: a forward's FLOPs, and its latency as the
//! median of synchronised runs after warm-up.

use anyhow::{Context, Result};
use carve_core::backend::Backend;
use carve_core::model::{Batch, ForwardArgs, LogitsAt, Model, ModelConfig, ModelWeights};
use carve_core::HostTensor;
use std::time::Instant;

/// Multiply-adds ×2 of the matmuls and attention of one forward (per layer, from the weights, so a
/// pruned model counts what it has), over the batch's real tokens: padding is not work the forward
/// needs (the CPU skips it in the matmuls; see `Backend::packs_rows`).
pub fn forward_flops(c: &ModelConfig, w: &ModelWeights<HostTensor>, b: &Batch, last_only: bool) -> f64 {
    let rows = b.lens.iter().sum::<usize>() as f64;
    let mut f = 0.0;
    for l in &w.layers {
        let mats = [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_up, &l.w_down].iter().map(|t| t.len()).sum::<usize>()
            + l.w_gate.as_ref().map_or(0, |t| t.len());
        f += 2.0 * rows * mats as f64;
        f += 4.0 * l.n_heads as f64 * c.head_dim as f64 * causal_pairs(b);
    }
    let head_rows = if last_only { b.size() as f64 } else { rows };
    f + 2.0 * head_rows * (c.vocab * c.d_model) as f64
}

/// (query, key) pairs of causal attention over the batch's prompts: t(t+1)/2 for a prompt of t tokens.
pub fn causal_pairs(b: &Batch) -> f64 {
    b.lens.iter().map(|&t| (t * (t + 1) / 2) as f64).sum()
}

/// FLOPs a standalone edge model adds to `forward_flops`: each reader's input mixed from the
/// writers of its kept edges, 2 per kept edge per row and width (0 for other models).
pub fn edge_mixing_flops(m: &carve_core::model::load::LoadedModel, b: &Batch) -> f64 {
    let kept = |e: &carve_core::prune::EdgeModelWeights| e.gates.iter().filter(|&&g| g != 0.0).count() as f64;
    m.edges.as_ref().map_or(0.0, |e| 2.0 * kept(e) * b.rows() as f64 * m.config.d_model as f64)
}

/// Seconds of one forward with logits at `at`, read back to the host (so the device has finished).
pub fn time_forward<B: Backend>(model: &Model<B>, be: &B, batch: &Batch, at: LogitsAt) -> Result<f64> {
    let t = Instant::now();
    let out = model.forward(be, batch, &ForwardArgs { logits: at, ..ForwardArgs::default() })?;
    let logits = out.logits.as_ref().context("the forward returned no logits")?;
    pollster::block_on(be.read(logits))?;
    Ok(t.elapsed().as_secs_f64())
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Median latencies (seconds) of several models on one batch, last-position logits: `warmup` runs
/// each first, then `runs` rounds that time every model once, in turn, so that drifting machine
/// load falls on all of them alike.
pub fn latencies<B: Backend>(models: &[&Model<B>], be: &B, prompts: &[Vec<u32>], warmup: usize, runs: usize) -> Result<Vec<f64>> {
    let batches = models.iter().map(|m| Batch::new(prompts, &m.config)).collect::<carve_core::Result<Vec<_>>>()?;
    for (m, b) in models.iter().zip(&batches) {
        for _ in 0..warmup {
            time_forward(m, be, b, LogitsAt::Last)?;
        }
    }
    let mut times = vec![Vec::with_capacity(runs); models.len()];
    for _ in 0..runs {
        for (i, (m, b)) in models.iter().zip(&batches).enumerate() {
            times[i].push(time_forward(m, be, b, LogitsAt::Last)?);
        }
    }
    Ok(times.into_iter().map(median).collect())
}
