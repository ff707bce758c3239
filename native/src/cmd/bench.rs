//! `carve bench`: speed measured side by side in one run, printed as a table.

use crate::backend_pick::{dispatch, dispatch_at, BackendChoice, Job, PrecisionChoice};
use crate::cmd::extract::AblateArgs;
use crate::cmd::tasks::{tokenizer, Prepared, TaskArgs};
use crate::measure::forward_flops;
use carve_core::extract::{ablate, AblateData, Batching, Implementation, RunOptions};
use crate::source;
use crate::timed::Timed;
use anyhow::{Context, Result};
use carve_core::backend::cpu::{set_gemm_threads, CpuBackend, GemmThreads};
use carve_core::backend::wgpu::{WgpuBackend, WgpuOptions, OVERLAP_DISPATCHES};
use carve_core::backend::Backend;
use carve_core::model::load::LoadedModel;
use carve_core::model::{Batch, ForwardArgs, LogitsAt};
use carve_core::HostTensor;
use std::time::Instant;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// Forward passes over a batch of random prompts: all-position and last-position logits.
    Forward(ForwardArgsCli),
    /// One matmul `x[M, K] · w[N, K]ᵀ`, the op that dominates every forward.
    Matmul(MatmulArgs),
    /// Causal attention on a GPU: the fused kernel (scores, softmax and apply in one pass) against
    /// the two GEMMs with the softmax between them; device time and wall time, and their agreement.
    Attention(AttentionArgs),
    /// ablate's fast implementation against the straightforward one: time, forwards, same decisions.
    Extract(ExtractBenchArgs),
    /// One training step of the learned methods: the masked forward that keeps its tape, the
    /// backward to every mask, beside the plain forward; time, GFLOP/s and peak memory.
    Train(TrainBenchArgs),
    /// Where a forward's and a training step's time goes, op by op (CPU backend: each op's wall time;
    /// GPU: each kernel's device time from timestamp queries).
    Ops(TrainBenchArgs),
    /// What mixed precision changes: the task's test prompts at f32, mixed (f16 matmul inputs) and
    /// mixed-bf16; logits error, KL and top-token agreement against f32, accuracy, time.
    Precision(crate::cmd::bench_precision::PrecisionArgs),
}

#[derive(clap::Args)]
pub struct TrainBenchArgs {
    #[arg(long)]
    model: String,
    /// ioi, acronyms, greater-than, or a JSONL file: the step runs on its discovery prompts.
    #[arg(long, default_value = "ioi")]
    task: String,
    #[command(flatten)]
    task_args: TaskArgs,
    /// Prompts per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Timed steps (after one warm-up step); medians are reported.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// The method whose step is timed: node-prune (masks on heads and neurons) or edge-prune
    /// (gates on every edge).
    #[arg(long, value_enum, default_value = "node-prune")]
    method: TrainMethod,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// What every matrix product rounds its inputs to: f32, or mixed precision (f16 or bf16
    /// inputs, f32 sums).
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionChoice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TrainMethod {
    NodePrune,
    EdgePrune,
}

#[derive(clap::Args)]
pub struct ExtractBenchArgs {
    #[arg(long)]
    model: String,
    /// ioi, acronyms, greater-than, or a JSONL file.
    #[arg(long, default_value = "ioi")]
    task: String,
    #[command(flatten)]
    task_args: TaskArgs,
    #[command(flatten)]
    ablate: AblateArgs,
    /// Also time the fast implementation with one candidate per forward and with whole layers.
    #[arg(long)]
    all_batchings: bool,
    /// Write the sweep (options, token ids of the prompts, the reference's decisions) to this JSON
    /// file, for `bench/torch_ablate.py`: the same sweep as a PyTorch loop in the paper's style.
    #[arg(long)]
    save_sweep: Option<std::path::PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
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
    /// mixed: the products at f16 inputs, on cooperative matrices (tensor cores) beside the plain
    /// kernels where the GPU has them.
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionChoice,
}

#[derive(clap::Args)]
pub struct AttentionArgs {
    /// Prompts.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Positions per prompt.
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Query heads (SmolLM2-135M's 9 by default).
    #[arg(long, default_value_t = 9)]
    heads: usize,
    /// Key/value heads (a divisor of --heads).
    #[arg(long, default_value_t = 3)]
    kv_heads: usize,
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
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
    /// What every matrix product rounds its inputs to: f32, or mixed precision (f16 or bf16
    /// inputs, f32 sums).
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionChoice,
}

pub fn run(b: Bench) -> Result<()> {
    match b {
        Bench::Forward(a) => {
            let m = source::load(&a.model)?;
            dispatch_at(a.backend, a.precision.into(), ForwardBench { m: &m, a: &a })
        }
        Bench::Matmul(a) => match crate::backend_pick::resolve(a.backend) {
            BackendChoice::Gpu => gpu_matmul(&a),
            _ => MatmulBench(&a).run(&CpuBackend::with_precision(a.precision.into())),
        },
        Bench::Attention(a) => match crate::backend_pick::resolve(a.backend) {
            BackendChoice::Gpu => gpu_attention(&a),
            _ => anyhow::bail!(
                "bench attention compares the wgpu backend's fused attention kernel with its two-GEMM path: it needs a GPU (--backend gpu)"
            ),
        },
        Bench::Train(a) => {
            a.task_args.check(Some(&a.task), None)?;
            if a.batch == 0 || a.iters == 0 {
                anyhow::bail!("--batch and --iters must be at least 1");
            }
            let m = source::load(&a.model)?;
            let prep = a.task_args.prepare(Some(&a.task), None, tokenizer(&m)?, m.config.n_ctx)?;
            match a.method {
                TrainMethod::NodePrune => {
                    dispatch_at(a.backend, a.precision.into(), crate::cmd::bench_train::TrainBench { m: &m, batch: a.batch, iters: a.iters, prep: &prep })
                }
                TrainMethod::EdgePrune => dispatch_at(
                    a.backend,
                    a.precision.into(),
                    crate::cmd::bench_train_edges::EdgeTrainBench { m: &m, batch: a.batch, iters: a.iters, prep: &prep },
                ),
            }
        }
        Bench::Ops(a) => {
            a.task_args.check(Some(&a.task), None)?;
            if a.batch == 0 || a.iters == 0 {
                anyhow::bail!("--batch and --iters must be at least 1");
            }
            let m = source::load(&a.model)?;
            let prep = a.task_args.prepare(Some(&a.task), None, tokenizer(&m)?, m.config.n_ctx)?;
            match crate::backend_pick::resolve(a.backend) {
                BackendChoice::Gpu => {
                    let opts = WgpuOptions { prefer_hardware: true, profile: true, precision: a.precision.into(), ..WgpuOptions::default() };
                    let be = pollster::block_on(WgpuBackend::new(opts)).context("starting the wgpu backend with kernel timing")?;
                    crate::cmd::bench_ops::run(&be, &m, &prep, a.batch, a.iters, a.method)
                }
                _ => {
                    let be = Timed::new(CpuBackend::with_precision(a.precision.into()));
                    crate::cmd::bench_ops::run(&be, &m, &prep, a.batch, a.iters, a.method)
                }
            }
        }
        Bench::Precision(a) => crate::cmd::bench_precision::run(a),
        Bench::Extract(a) => {
            a.task_args.check(Some(&a.task), None)?;
            if let Some(p) = &a.save_sweep {
                crate::cmd::bench_sweep::check_writable(p)?;
            }
            let m = source::load(&a.model)?;
            let prep = a.task_args.prepare(Some(&a.task), None, tokenizer(&m)?, m.config.n_ctx)?;
            dispatch(a.backend, ExtractBench { m: &m, a: &a, prep: &prep })
        }
    }
}

struct ExtractBench<'a> {
    m: &'a LoadedModel,
    a: &'a ExtractBenchArgs,
    prep: &'a Prepared,
}

impl Job for ExtractBench<'_> {
    type Out = ();
    fn run<B: Backend>(self, be: &B) -> Result<()> {
        let (a, s) = (self.a, &self.prep.splits);
        let model = self.m.upload(be)?;
        let opts = a.ablate.options(false)?;
        let data = AblateData::from_examples(&s.discovery, &s.patching);
        let mut variants = vec![("reference".to_string(), RunOptions { implementation: Implementation::Reference, ..RunOptions::default() })];
        let default = RunOptions::for_backend(be);
        if a.all_batchings {
            for batching in [Batching::Single, Batching::WholeLayer, Batching::Adaptive] {
                variants.push((format!("fast, {}", batching.name()), RunOptions { batching, ..default }));
            }
        } else {
            variants.push(("fast".to_string(), default));
        }
        println!(
            "backend: {}   task {} · {} discovery prompts · α {} · {:?} ablation · {}",
            be.describe(),
            self.prep.task.name,
            s.discovery.len(),
            opts.alpha,
            opts.ablation,
            if opts.mlps { "heads and MLPs" } else { "heads" }
        );
        // On a GPU, the buffers and bind groups each sweep created beyond what the pool and the
        // cache held (a sweep's candidates should take theirs from both).
        let buffers = |n: Option<u64>, width: usize| n.map_or(String::new(), |n| format!(" {n:>width$}"));
        println!(
            "{:<18} {:>10} {:>12} {:>9} {:>8} {:>10} {:>9}{}{}",
            "implementation", "time (s)", "evaluations", "forwards", "removed", "KL", "speedup",
            if be.buffers_created().is_some() { " new buffers" } else { "" },
            if be.bind_groups_created().is_some() { " new bind groups" } else { "" }
        );
        let mut first: Option<(f64, Vec<carve_core::extract::Decision>)> = None;
        let mut same = true;
        for (name, run) in variants {
            let before = crate::cmd::bench_train::created(be);
            let t = Instant::now();
            let r = pollster::block_on(ablate(&model, be, &data, &opts, &run, None, &mut ()))?;
            let secs = t.elapsed().as_secs_f64();
            let (created, bound) = crate::cmd::bench_train::created_since(be, before);
            let decisions: Vec<_> = r.state.decisions.iter().map(|d| (d.component, d.accepted)).collect();
            let speedup = first.as_ref().map_or(1.0, |(t0, _)| t0 / secs);
            if let Some((_, d0)) = &first {
                same &= d0.iter().map(|d| (d.component, d.accepted)).eq(decisions.iter().copied());
            }
            println!(
                "{name:<18} {secs:>10.2} {:>12} {:>9} {:>8} {:>10.5} {:>8.2}×{}{}",
                r.stats.evaluations,
                r.stats.forwards,
                r.removed.len(),
                r.state.kl_cur(),
                speedup,
                buffers(created, 11),
                buffers(bound, 15)
            );
            if first.is_none() {
                first = Some((secs, r.state.decisions.clone()));
            }
        }
        println!("same decisions as the reference: {}", if same { "yes" } else { "NO" });
        println!("the batching `extract` uses on this backend: {}", default.batching.name());
        if !same {
            anyhow::bail!("the implementations disagree: this is a bug");
        }
        if let (Some(path), Some((_, decisions))) = (&a.save_sweep, &first) {
            crate::cmd::bench_sweep::save(path, &self.prep.task.name, &opts, &data, decisions)?;
            println!("sweep written to {} (bench/torch_ablate.py --inputs runs it as a PyTorch loop)", path.display());
        }
        Ok(())
    }
}

struct MatmulBench<'a>(&'a MatmulArgs);

/// On the CPU: w uploaded as a tensor (`gemm` copies it transposed at every call) and as a weight
/// (its transpose kept beside it, what a model's projections are), each on every thread as tiles
/// (what carve does), on `gemm`'s own threads, and on one thread; timed in alternating runs, with
/// the largest difference from the first product.
impl Job for MatmulBench<'_> {
    type Out = ();
    fn run<B: Backend>(self, be: &B) -> Result<()> {
        let a = self.0;
        let fill = |r: usize, c: usize| HostTensor::new(vec![r, c], (0..r * c).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect());
        let x = be.upload(&fill(a.m, a.k))?;
        let w_host = fill(a.n, a.k);
        let ws = [be.upload(&w_host)?, be.upload_weight(&w_host)?];
        // (row, w, how the threads share the product)
        let variants: [(&str, usize, GemmThreads); 5] = [
            ("uploaded as a tensor, the threads on tiles", 0, GemmThreads::Tiles),
            ("uploaded as a weight (its transpose kept), the threads on tiles", 1, GemmThreads::Tiles),
            ("uploaded as a tensor, on gemm's own threads", 0, GemmThreads::Gemm),
            ("uploaded as a weight, on gemm's own threads", 1, GemmThreads::Gemm),
            ("uploaded as a weight, one thread", 1, GemmThreads::One),
        ];
        let once = |(_, w, how): &(&str, usize, GemmThreads)| -> Result<(f64, HostTensor)> {
            set_gemm_threads(*how);
            let t = Instant::now();
            let out = be.matmul(&x, &ws[*w], None).and_then(|y| pollster::block_on(be.read(&y)));
            set_gemm_threads(GemmThreads::Tiles);
            Ok((t.elapsed().as_secs_f64(), out?))
        };
        let outs = variants.iter().map(|v| Ok(once(v)?.1)).collect::<Result<Vec<_>>>()?;
        let mut times = vec![Vec::new(); variants.len()];
        for _ in 0..a.iters.max(1) {
            for (t, v) in times.iter_mut().zip(&variants) {
                t.push(once(v)?.0);
            }
        }
        let times: Vec<f64> = times.into_iter().map(crate::measure::median).collect();
        let diff = outs[1..].iter().flat_map(|o| o.data.iter().zip(&outs[0].data)).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let gflops = |t: f64| 2.0 * (a.m * a.k * a.n) as f64 / t / 1e9;
        println!("backend: {}   {}×{}×{} (x [M, K] · w [N, K]ᵀ), medians of {} alternating runs", be.describe(), a.m, a.k, a.n, a.iters.max(1));
        println!("\n| w | ms (read-back included) | GFLOP/s | speedup |\n|---|---:|---:|---:|");
        for ((name, _, _), t) in variants.iter().zip(&times) {
            println!("| {name} | {:.3} | {:.1} | {:.2}× |", t * 1e3, gflops(*t), times[2] / t);
        }
        println!("\n(speedups against w as a tensor on gemm's own threads)");
        println!("largest difference between the products: {diff:e}");
        Ok(())
    }
}

/// Medians over `iters` runs (after a warm-up run) of `op` on a profiled backend, read back.
struct Profiled {
    /// Seconds in kernels, from timestamp queries.
    device: f64,
    /// Seconds on the host, the read-back included.
    wall: f64,
    /// The kernels of one run, with their calls.
    kernels: String,
    /// The first timed run's output.
    out: HostTensor,
}

fn profiled(be: &WgpuBackend, iters: usize, op: impl Fn() -> carve_core::Result<<WgpuBackend as Backend>::Tensor>) -> Result<Profiled> {
    let once = || -> Result<(f64, f64, String, HostTensor)> {
        be.take_kernel_times()?;
        let t = Instant::now();
        let out = pollster::block_on(be.read(&op()?))?;
        let wall = t.elapsed().as_secs_f64();
        let times = be.take_kernel_times()?;
        let device = times.values().map(|k| k.time.as_secs_f64()).sum();
        let names = times.iter().map(|(n, k)| format!("{n} ×{}", k.calls)).collect::<Vec<_>>().join(", ");
        Ok((device, wall, names, out))
    };
    once()?; // pipelines, pools
    let runs = (0..iters.max(1)).map(|_| once()).collect::<Result<Vec<_>>>()?;
    let device = crate::measure::median(runs.iter().map(|r| r.0).collect());
    let wall = crate::measure::median(runs.iter().map(|r| r.1).collect());
    let (_, _, kernels, out) = runs.into_iter().next().expect("one run");
    Ok(Profiled { device, wall, kernels, out })
}

/// On a GPU: the tiled GEMM kernels side by side on one device each (the choice by size, then
/// 64×64 and 128×128 each with vec4 loads where the product is aligned for them and with an f32
/// load per element), timed on the device with timestamp queries (the kernel alone) and on the
/// host (read-back included).
fn gpu_matmul(a: &MatmulArgs) -> Result<()> {
    let fill = |r: usize, c: usize| HostTensor::new(vec![r, c], (0..r * c).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect());
    let (xh, wh) = (fill(a.m, a.k), fill(a.n, a.k));
    let flop = 2.0 * (a.m * a.k * a.n) as f64;
    let mut first = true;
    let mut results: Vec<HostTensor> = Vec::new();
    let mut coop = false;
    for (tile, vec4_loads) in [(None, true), (Some(64), true), (Some(64), false), (Some(128), true), (Some(128), false)] {
        let opts = WgpuOptions {
            prefer_hardware: true,
            profile: true,
            gemm_tile: tile,
            vec4_loads,
            precision: a.precision.into(),
            ..WgpuOptions::default()
        };
        let be = pollster::block_on(WgpuBackend::new(opts)).context("starting the wgpu backend with kernel timing")?;
        coop |= be.uses_cooperative_matrices();
        if first {
            println!("backend: {}   {}×{}×{} (x [M, K] · w [N, K]ᵀ), medians of {} runs", be.describe(), a.m, a.k, a.n, a.iters.max(1));
            println!("\n| GEMM tile | kernels | device ms | device GFLOP/s | wall ms (read-back included) | wall GFLOP/s |\n|---|---|---:|---:|---:|---:|");
            first = false;
        }
        let (x, w) = (be.upload(&xh)?, be.upload(&wh)?);
        let r = profiled(&be, a.iters, || be.matmul(&x, &w, None))?;
        let label = match tile {
            Some(t) if !vec4_loads => format!("{t}×{t}, an f32 load per element"),
            Some(t) => format!("{t}×{t}"),
            None if be.uses_cooperative_matrices() => "64×64 on cooperative matrices".to_string(),
            None => "chosen by size".to_string(),
        };
        println!("| {label} | {} | {:.3} | {:.0} | {:.2} | {:.0} |", r.kernels, r.device * 1e3, flop / r.device / 1e9, r.wall * 1e3, flop / r.wall / 1e9);
        results.push(r.out);
    }
    if coop {
        agree(&results[0], &results[1], "the cooperative-matrix and plain kernels'", "the cooperative-matrix and 64×64 kernels")?;
    }
    // The two stagings fill the same tiles with the same values: the same sums in the same order.
    anyhow::ensure!(results[1].data == results[2].data, "the 64×64 kernel's vec4 and f32 loads gave different outputs");
    anyhow::ensure!(results[3].data == results[4].data, "the 128×128 kernel's vec4 and f32 loads gave different outputs");
    agree(&results[1], &results[3], "the two kernels'", "the 64×64 and 128×128 kernels")
}

/// The two outputs must agree (a fast wrong kernel is no result): prints their largest difference
/// relative to the largest |b| (at least 1), and fails past 1e-4.
fn agree(a: &HostTensor, b: &HostTensor, whose: &str, which: &str) -> Result<()> {
    let diff = a.data.iter().zip(&b.data).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = b.data.iter().map(|v| v.abs()).fold(1.0f32, f32::max);
    println!("\nlargest difference between {whose} outputs: {:.2e} (relative to max |out| {scale:.2})", diff / scale);
    anyhow::ensure!(diff / scale < 1e-4, "{which} disagree by {:.2e}", diff / scale);
    Ok(())
}

/// On a GPU: `attention` (the fused kernel) against `attn_apply(attn_scores)` on one profiled
/// device, each timed on the device with timestamp queries and on the host (read-back included).
fn gpu_attention(a: &AttentionArgs) -> Result<()> {
    use carve_core::backend::AttnShape;
    let ok = a.batch > 0 && a.seq > 0 && a.heads > 0 && a.kv_heads > 0 && a.head_dim > 0 && a.heads.is_multiple_of(a.kv_heads) && a.iters > 0;
    anyhow::ensure!(ok, "sizes and --iters must be positive, and --heads a multiple of --kv-heads");
    let s = AttnShape {
        batch: a.batch,
        seq: a.seq,
        n_heads: a.heads,
        n_kv_heads: a.kv_heads,
        head_dim: a.head_dim,
        scale: 1.0 / (a.head_dim as f32).sqrt(),
    };
    let rows = a.batch * a.seq;
    let fill = |c: usize, seed: usize| {
        HostTensor::new(vec![rows, c], (0..rows * c).map(|i| (((i + seed) * 7919) % 1000) as f32 / 500.0 - 1.0).collect())
    };
    let opts = WgpuOptions { prefer_hardware: true, profile: true, ..WgpuOptions::default() };
    let be = pollster::block_on(WgpuBackend::new(opts)).context("starting the wgpu backend with kernel timing")?;
    let q = be.upload(&fill(a.heads * a.head_dim, 1))?;
    let k = be.upload(&fill(a.kv_heads * a.head_dim, 2))?;
    let v = be.upload(&fill(a.kv_heads * a.head_dim, 3))?;
    // The causal half: q·kᵀ and p·v over j ≤ i.
    let flop = 2.0 * 2.0 * (a.batch * a.heads) as f64 * (a.seq * (a.seq + 1) / 2) as f64 * a.head_dim as f64;
    println!(
        "backend: {}   batch {} × seq {}, {} heads ({} KV) of {}, medians of {} runs",
        be.describe(),
        a.batch,
        a.seq,
        a.heads,
        a.kv_heads,
        a.head_dim,
        a.iters
    );
    println!("\n| path | kernels | device ms | device GFLOP/s | wall ms (read-back included) |\n|---|---|---:|---:|---:|");
    let mut outs = Vec::new();
    for fused in [true, false] {
        let r = profiled(&be, a.iters, || if fused { be.attention(&q, &k, &v, s) } else { be.attn_apply(&be.attn_scores(&q, &k, s)?, &v, s) })?;
        let label = if fused { "fused (one pass)" } else { "scores, softmax, apply" };
        println!("| {label} | {} | {:.3} | {:.0} | {:.2} |", r.kernels, r.device * 1e3, flop / r.device / 1e9, r.wall * 1e3);
        outs.push(r.out);
    }
    agree(&outs[0], &outs[1], "the two paths'", "the fused and two-GEMM attention")
}

struct ForwardBench<'a> {
    m: &'a LoadedModel,
    a: &'a ForwardArgsCli,
}

impl Job for ForwardBench<'_> {
    type Out = ();
    fn run<B: Backend>(self, be: &B) -> Result<()> {
        let (c, a) = (&self.m.config, self.a);
        let model = self.m.upload(be)?;
        // Fixed pseudo-random ids (an LCG): the same prompts every run.
        let mut s = 12345u64;
        let prompts: Vec<Vec<u32>> = (0..a.batch)
            .map(|_| (0..a.seq).map(|_| { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 33) % c.vocab as u64) as u32 }).collect())
            .collect();
        let batch = Batch::new(&prompts, c)?;
        println!("backend: {}   batch {} × seq {} = {} tokens, median of {} runs", be.describe(), a.batch, a.seq, batch.rows(), a.iters);
        // "time": the forward with its logits left where they are, finished by reading one row
        // (as PyTorch's timing ends with a device sync); "read back": the same, then every logit
        // copied to the host.
        // On a device queue, "overlapped": the time with a submit every OVERLAP_DISPATCHES
        // dispatches as well as at the read (the default), timed in alternate runs; and "recorded":
        // the host's share of "time", the forward's call alone (with a submit per read nothing is
        // submitted before it returns: its kernels are only recorded).
        let queue = be.set_submit_every(0);
        let overlapped_head = if queue { format!(" {:>15} {:>13}", "overlapped (s)", "recorded (s)") } else { String::new() };
        println!("{:<16} {:>10} {:>12} {:>10} {:>15}{overlapped_head}", "logits", "time (s)", "tokens/s", "GFLOP/s", "read back (s)");
        for (name, at) in [("all positions", LogitsAt::All), ("last position", LogitsAt::Last)] {
            let out_bytes = if at == LogitsAt::All { batch.rows() } else { batch.size() } * c.vocab * 4;
            if out_bytes > be.max_tensor_bytes() {
                println!("{name:<16} skipped: {} MiB of logits exceed the backend's binding limit", out_bytes >> 20);
                continue;
            }
            // (the whole time, the forward's call alone)
            let time_one = |read_all: bool, every: usize| -> Result<(f64, f64)> {
                be.set_submit_every(every);
                let t = Instant::now();
                let out = model.forward(be, &batch, &ForwardArgs { logits: at, ..ForwardArgs::default() })?;
                let recorded = t.elapsed().as_secs_f64();
                let logits = out.logits.as_ref().expect("logits were asked for");
                if read_all {
                    pollster::block_on(be.read(logits))?;
                } else {
                    pollster::block_on(be.read(&be.gather_rows(logits, &[0])?))?;
                }
                Ok((t.elapsed().as_secs_f64(), recorded))
            };
            // Warm-up first: pipelines, buffer pools, page faults.
            let modes: &[(bool, usize)] = if queue { &[(false, 0), (false, OVERLAP_DISPATCHES), (true, 0)] } else { &[(false, 0), (true, 0)] };
            let mut times = vec![Vec::new(); modes.len()];
            for run in 0..=a.iters.max(1) {
                for (&(read_all, every), ts) in modes.iter().zip(&mut times) {
                    let t = time_one(read_all, every)?;
                    if run > 0 {
                        ts.push(t);
                    }
                }
            }
            be.set_submit_every(0);
            let recorded = crate::measure::median(times[0].iter().map(|t| t.1).collect());
            let m: Vec<f64> = times.into_iter().map(|ts| crate::measure::median(ts.iter().map(|t| t.0).collect())).collect();
            let (t, t_read) = (m[0], m[m.len() - 1]);
            let flops = forward_flops(c, &self.m.weights, &batch, at == LogitsAt::Last);
            let overlapped = if queue { format!(" {:>15.3} {:>13.4}", m[1], recorded) } else { String::new() };
            println!("{:<16} {:>10.3} {:>12.0} {:>10.1} {:>15.3}{overlapped}", name, t, batch.rows() as f64 / t, flops / t / 1e9, t_read);
        }
        Ok(())
    }
}
