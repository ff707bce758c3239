//! `carve bench train`: one training step of node-prune (and edge-prune) measured part by part on
//! a batch of discovery prompts, masks at fractional values so that every mix runs: the plain
//! forward, the masked forward that keeps its tape, and the backward to every mask.

use crate::backend_pick::Job;
use crate::cmd::tasks::Prepared;
use crate::measure::{causal_pairs, forward_flops, median};
use anyhow::{Context, Result};
use carve_core::backend::wgpu::OVERLAP_DISPATCHES;
use carve_core::backend::Backend;
use carve_core::circuit::{Masks, ModelShape};
use carve_core::metrics::loss::kl_mean;
use carve_core::model::load::LoadedModel;
use carve_core::model::{Batch, ForwardArgs, LogitsAt, ModelConfig, ModelWeights};
use carve_core::HostTensor;
use std::time::Instant;

pub struct TrainBench<'a> {
    pub m: &'a LoadedModel,
    pub batch: usize,
    pub iters: usize,
    pub prep: &'a Prepared,
}

/// FLOPs of the backward to the activations: every matmul's input gradient (as many as the
/// forward's matmuls) and twice the forward's attention products (dq, dk, dprobs, dv).
fn backward_flops(c: &ModelConfig, w: &ModelWeights<HostTensor>, b: &Batch) -> f64 {
    let attn: f64 = w.layers.iter().map(|l| 4.0 * l.n_heads as f64 * c.head_dim as f64 * causal_pairs(b)).sum();
    forward_flops(c, w, b, true) + attn
}

/// Peak resident memory of this process so far (Linux), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Device buffers and bind groups created so far (wgpu; None on the CPU).
pub fn created<B: Backend>(be: &B) -> (Option<u64>, Option<u64>) {
    (be.buffers_created(), be.bind_groups_created())
}

/// Device buffers and bind groups created since `before` (a `created`).
pub fn created_since<B: Backend>(be: &B, before: (Option<u64>, Option<u64>)) -> (Option<u64>, Option<u64>) {
    let now = created(be);
    (before.0.zip(now.0).map(|(a, z)| z - a), before.1.zip(now.1).map(|(a, z)| z - a))
}

/// Device buffers and bind groups the timed rounds created since `before` (wgpu: a step should
/// take every buffer from the pool and every bind group from the cache once the warm-up round has
/// filled them); nothing on the CPU.
pub fn print_created<B: Backend>(be: &B, before: (Option<u64>, Option<u64>), rounds: usize) {
    let (buffers, bind_groups) = created_since(be, before);
    if let Some(n) = buffers {
        println!("device buffers created during the {rounds} timed rounds: {n} (the warm-up round filled the pool)");
    }
    if let Some(n) = bind_groups {
        println!("bind groups created during the {rounds} timed rounds: {n} (the warm-up round filled the cache)");
    }
}

/// A way of running a step that the training benches time beside the backend's own, in turn: a
/// submit every `every` dispatches (0: one per read), the matrix products on the real rows or not.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mode {
    pub every: usize,
    pub pack: bool,
}

impl Mode {
    /// The backend's own mode first, then where it can change them (wgpu), a submit every
    /// `OVERLAP_DISPATCHES` dispatches and packing the other way.
    pub fn all<B: Backend>(be: &B) -> Vec<Mode> {
        let pack = be.packs_rows();
        let mut modes = vec![Mode { every: 0, pack }];
        if be.set_submit_every(0) {
            modes.push(Mode { every: OVERLAP_DISPATCHES, pack });
        }
        if be.set_pack_rows(pack) {
            modes.push(Mode { every: 0, pack: !pack });
        }
        modes
    }

    pub fn set<B: Backend>(self, be: &B) {
        be.set_submit_every(self.every);
        be.set_pack_rows(self.pack);
    }

    /// Each mode's table against the backend's own, from `parts` (name, time per mode): with a
    /// submit per read (the default) against a submit every `OVERLAP_DISPATCHES` dispatches (the
    /// device starts while the host records), and on every row of the padded batch against its
    /// real rows only (`Backend::packs_rows`).
    pub fn print_comparisons(modes: &[Mode], parts: &[(&str, Vec<f64>)]) {
        let own = modes[0];
        for (k, m) in modes.iter().enumerate().skip(1) {
            let (cols, swap) = if m.every != own.every {
                (["a submit per read".to_string(), format!("a submit every {OVERLAP_DISPATCHES} dispatches")], false)
            } else {
                // Every row first, then the real rows only.
                (["every row".to_string(), "the real rows only".to_string()], own.pack)
            };
            println!("\n| part | ms, {} | ms, {} | speedup |\n|---|---:|---:|---:|", cols[0], cols[1]);
            for (name, t) in parts {
                let (a, b) = if swap { (t[k], t[0]) } else { (t[0], t[k]) };
                println!("| {name} | {:.1} | {:.1} | {:.2}× |", a * 1e3, b * 1e3, a / b);
            }
        }
    }
}

/// How much of a padded batch is padding, and whether the step's matrix products skip it
/// (`packed`: the backend packs rows and the method's forward uses it).
pub fn padding_note(batch: &Batch, packed: bool) -> String {
    let real: usize = batch.lens.iter().sum();
    let share = 1.0 - real as f64 / batch.rows() as f64;
    let skip = if share == 0.0 {
        ""
    } else if packed {
        ", which the matrix products skip"
    } else {
        ", which the matrix products run over too"
    };
    format!("tokens: {real} real of {} ({:.1}% padding{skip}); the GFLOP count the real ones", batch.rows(), 100.0 * share)
}

/// Masks at fractional values on every head and neuron, as sampled gates are: every mix runs.
pub fn fractional_masks(m: &LoadedModel) -> Masks {
    let shape = ModelShape::of(&m.weights.layers, |t| t.shape[0]);
    let mut masks = Masks::ones(&shape.n_heads, &shape.d_ff);
    for (i, v) in masks.heads.iter_mut().flatten().chain(masks.neurons.iter_mut().flatten()).enumerate() {
        *v = 0.5 + 0.4 * ((i % 7) as f32 / 7.0);
    }
    masks
}

impl Job for TrainBench<'_> {
    type Out = ();
    fn run<B: Backend>(self, be: &B) -> Result<()> {
        let m = self.m;
        let model = m.upload(be)?;
        let prompts: Vec<Vec<u32>> = self.prep.splits.discovery.iter().take(self.batch).map(|e| e.prompt.clone()).collect();
        anyhow::ensure!(!prompts.is_empty(), "the discovery split is empty");
        let batch = Batch::new(&prompts, &m.config)?;
        let masks = fractional_masks(m);
        let rss_before = peak_rss_mib();
        // On a device queue, the same parts again with a submit every OVERLAP_DISPATCHES and with
        // packing the other way, in turn.
        let modes = Mode::all(be);
        let mut times = vec![(Vec::new(), Vec::new(), Vec::new()); modes.len()];
        let mut created = (None, None);
        for i in 0..=self.iters {
            if i == 1 {
                created = crate::cmd::bench_train::created(be);
            }
            for (&mode, (plain, fwd, bwd)) in modes.iter().zip(&mut times) {
                mode.set(be);
                let t = Instant::now();
                let out = model.forward(be, &batch, &ForwardArgs { logits: LogitsAt::Last, ..ForwardArgs::default() })?;
                let full = pollster::block_on(be.read(out.logits.as_ref().context("no logits")?))?;
                let t_plain = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let tape = model.forward_tape(be, &batch, &masks, None)?;
                let logits = pollster::block_on(be.read(&tape.logits))?;
                let t_fwd = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let lg = kl_mean(&full, &logits)?;
                pollster::block_on(model.backward(be, &batch, tape, &lg.dlogits_tensor(&logits.shape)))?;
                let t_bwd = t.elapsed().as_secs_f64();
                if i > 0 {
                    plain.push(t_plain);
                    fwd.push(t_fwd);
                    bwd.push(t_bwd);
                }
            }
        }
        modes[0].set(be);
        let medians: Vec<(f64, f64, f64)> = times.into_iter().map(|(p, f, b)| (median(p), median(f), median(b))).collect();
        let (p, f, b) = medians[0];
        let ff = forward_flops(&m.config, &m.weights, &batch, true);
        let bf = backward_flops(&m.config, &m.weights, &batch);
        println!("backend: {}", be.describe());
        println!("batch: {} prompts padded to {} tokens; masks fractional on every head and neuron; {} timed steps after 1 warm-up (medians)", batch.size(), batch.seq, self.iters);
        println!("{}", padding_note(&batch, be.packs_rows()));
        println!("\n| part | ms | GFLOP | GFLOP/s | × plain forward |\n|---|---:|---:|---:|---:|");
        for (name, t, fl) in [("plain forward", p, ff), ("masked forward with tape", f, ff), ("backward to the masks", b, bf), ("training step (tape + backward)", f + b, ff + bf)] {
            println!("| {name} | {:.1} | {:.2} | {:.1} | {:.2} |", t * 1e3, fl / 1e9, fl / t / 1e9, t / p);
        }
        println!("\nbackward / masked forward: {:.2}×", b / f);
        let each = |g: fn(&(f64, f64, f64)) -> f64| medians.iter().map(g).collect::<Vec<f64>>();
        Mode::print_comparisons(&modes, &[
            ("plain forward", each(|m| m.0)),
            ("masked forward with tape", each(|m| m.1)),
            ("backward to the masks", each(|m| m.2)),
            ("training step", each(|m| m.1 + m.2)),
        ]);
        print_created(be, created, self.iters);
        if let (Some(a), Some(z)) = (rss_before, peak_rss_mib()) {
            println!("peak resident memory: {z:.0} MiB ({:+.0} MiB during the steps; the model's weights are loaded before)", z - a);
        }
        Ok(())
    }
}
