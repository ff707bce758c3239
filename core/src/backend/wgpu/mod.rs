//! The wgpu (WGSL) backend: the main engine, natively (Vulkan, Metal, DX12) and in the browser
//! (WebGPU).
//!
//! Ops only record: every dispatch goes into one pending command encoder, and `read` submits it
//! once, copies the tensor to a staging buffer and maps it. Pipelines are built once on first use
//! (`pipelines.rs`), buffers are pooled by size class (`pool.rs`), small per-dispatch data goes
//! through an arena written at submit (`recorder.rs`). Weights over the adapter's binding limit
//! are stored as row-chunks (`tensor.rs`).

mod attention;
mod backward;
mod concat;
mod context;
mod coop;
mod elementwise;
mod embedding;
mod gated_sum;
mod matmul;
mod pipelines;
mod pool;
mod profile;
mod readback;
mod recorder;
mod rows;
mod tensor;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub use context::{is_software, WgpuOptions};
#[cfg(not(target_arch = "wasm32"))]
pub use context::list_adapters;
pub use profile::{KernelSpan, KernelTime};
pub use recorder::OVERLAP_DISPATCHES;
pub use tensor::GpuTensor;

use super::{AttnShape, Backend, Gates, Precision, RowMap};
use crate::{HostTensor, Result};
use context::Context;
use pipelines::{Kernel, Pipelines};
use pool::{Pool, STORAGE_USAGE};
use recorder::{lock_err, Binding, Recorder};
use tensor::{shape_err, Chunk};

pub struct WgpuBackend {
    ctx: Context,
    pool: Arc<Pool>,
    pipes: Pipelines,
    rec: Mutex<Recorder>,
    poison: AtomicBool,
    /// Bound where a kernel's optional input (matmul's bias) is absent.
    dummy: wgpu::Buffer,
    /// rope (cos, sin) tables by (seq, head_dim, theta bits), computed in f64 on the host.
    rope_tables: Mutex<HashMap<(usize, usize, u32), GpuTensor>>,
    /// `WgpuOptions::gemm_tile`.
    gemm_tile: Option<usize>,
    /// `WgpuOptions::vec4_loads`.
    vec4_loads: bool,
    /// The tiled GEMMs run on cooperative matrices (`coop.rs`).
    coop: bool,
    /// What `describe()` says of them at mixed precision: on them, or why not.
    coop_note: String,
    /// `WgpuOptions::pack_rows`, or as `set_pack_rows` left it.
    pack_rows: AtomicBool,
}

impl WgpuBackend {
    /// Picks an adapter (see `WgpuOptions`), requests a device with the adapter's own limits and
    /// no optional features.
    pub async fn new(opts: WgpuOptions) -> Result<Self> {
        if let Some(t) = opts.gemm_tile.filter(|t| ![64, 128].contains(t)) {
            return Err(crate::Error::Backend(format!("GEMM tile {t}: the tiled GEMM has 64×64 and 128×128 tiles")));
        }
        let ctx = Context::new(&opts).await?;
        let pool = Pool::new(ctx.device.clone(), ctx.limits.max_buffer_size);
        let pipes = Pipelines::new(&ctx.device, opts.precision);
        let rec = Mutex::new(Recorder::new(&ctx.limits, opts.profile, opts.submit_every));
        let dummy = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("carve dummy"),
            size: 16,
            usage: STORAGE_USAGE,
            mapped_at_creation: false,
        });
        let coop_state = ctx.coop.clone();
        let mut be = WgpuBackend {
            ctx,
            pool,
            pipes,
            rec,
            poison: AtomicBool::new(false),
            dummy,
            rope_tables: Mutex::new(HashMap::new()),
            gemm_tile: opts.gemm_tile,
            vec4_loads: opts.vec4_loads,
            coop: false,
            coop_note: String::new(),
            pack_rows: AtomicBool::new(opts.pack_rows),
        };
        be.coop_note = match coop_state {
            None if opts.precision == Precision::Mixed => ", plain kernels".into(),
            None => String::new(),
            Some(Err(why)) => format!(", plain kernels ({why})"),
            Some(Ok(())) => {
                let checked = be.check_coop().await;
                // Whatever the check left set (it may stop at an error halfway).
                be.coop = checked.is_ok();
                match checked {
                    Ok(()) => ", on cooperative matrices".into(),
                    Err(why) => format!(", plain kernels (the cooperative-matrix GEMM failed its check: {why})"),
                }
            }
        };
        Ok(be)
    }

    /// The cooperative-matrix GEMM against the plain one, both rounding the same inputs to f16, on
    /// every variant a forward and a backward use: a product with ragged edges and a bias;
    /// attention's batched products (causal tiles skipped, `[K, N]` weights); and its backward's
    /// (`[K, M]` inputs, sums over the query heads of a kv head added into the output). Within
    /// `coop::CHECK_TOLERANCE`, or the reason it is not.
    async fn check_coop(&mut self) -> std::result::Result<(), String> {
        let fill = |shape: &[usize], seed: usize| -> HostTensor {
            let n = shape.iter().product();
            let v = (0..n).map(|i| (((i * 7919 + seed * 104729) % 2001) as f32 / 1000.0 - 1.0) * 1.5).collect();
            HostTensor::new(shape.to_vec(), v)
        };
        let (x, w, b) = (fill(&[100, 72], 1), fill(&[40, 72], 2), fill(&[40], 3));
        let s = AttnShape { batch: 2, seq: 70, n_heads: 4, n_kv_heads: 2, head_dim: 16, scale: 0.25 };
        let (q, k, v) = (fill(&[140, 64], 4), fill(&[140, 32], 5), fill(&[140, 32], 6));
        let dp = fill(&[560, 70], 7);
        let mut outs = Vec::new();
        for coop in [false, true] {
            self.coop = coop;
            let run = || -> Result<Vec<GpuTensor>> {
                let up = |t: &HostTensor| self.upload(t);
                let y = self.matmul(&up(&x)?, &up(&w)?, Some(&up(&b)?))?;
                let (qd, kd, vd) = (up(&q)?, up(&k)?, up(&v)?);
                let p = self.attn_scores(&qd, &kd, s)?;
                let o = self.attn_apply(&p, &vd, s)?;
                let (dq, dk) = self.attn_scores_backward(&qd, &kd, &p, &up(&dp)?, s)?;
                let (dprobs, dv) = self.attn_apply_backward(&p, &vd, &qd, s)?;
                Ok(vec![y, o, dq, dk, dprobs, dv])
            };
            let ts = run().map_err(|e| e.to_string())?;
            let mut host = Vec::new();
            for t in &ts {
                host.push(self.read(t).await.map_err(|e| e.to_string())?);
            }
            outs.push(host);
        }
        let names = ["matmul", "attention", "attention's dq", "attention's dk", "attention's dprobs", "attention's dv"];
        for (what, (plain, coop)) in names.into_iter().zip(outs[0].iter().zip(&outs[1])) {
            let scale = plain.data.iter().fold(1f64, |m, v| m.max(v.abs() as f64));
            let err = plain.data.iter().zip(&coop.data).map(|(a, b)| (*a as f64 - *b as f64).abs()).fold(0.0, f64::max) / scale;
            if err.is_nan() || err > coop::CHECK_TOLERANCE {
                return Err(format!("{what} differs from the plain kernel's by {err:e} (relative)"));
            }
        }
        Ok(())
    }

    /// Test aid: the cooperative-matrix check as run at start (with `gemm_tile` set both sides run
    /// the plain kernel, which tests the check itself: its products and its comparison).
    #[doc(hidden)]
    pub async fn run_cooperative_matrix_check(&mut self) -> std::result::Result<(), String> {
        let was = self.coop;
        let r = self.check_coop().await;
        self.coop = was;
        r
    }

    /// Whether the tiled GEMMs run on cooperative matrices (`--precision mixed` on an adapter
    /// that has them, the kernel having passed its check).
    pub fn uses_cooperative_matrices(&self) -> bool {
        self.coop
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.ctx.info
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.ctx.limits
    }

    /// Dispatches recorded and not yet submitted.
    pub fn pending_dispatches(&self) -> usize {
        self.rec.lock().map(|r| r.dispatches).unwrap_or(0)
    }

    /// Command buffers submitted so far (at each read, and every `submit_every` dispatches if set).
    pub fn submits(&self) -> u64 {
        self.rec.lock().map(|r| r.submits).unwrap_or(0)
    }

    /// Reads so far: the times the host waited for the device.
    pub fn reads(&self) -> u64 {
        self.rec.lock().map(|r| r.reads).unwrap_or(0)
    }

    /// Bytes held by free pooled buffers, and a way to release them.
    pub fn pooled_bytes(&self) -> u64 {
        self.pool.free_bytes()
    }
    pub fn trim_pool(&self) {
        // Cached bind groups hold their buffers: the pool's free ones go only with them.
        if let Ok(mut rec) = self.rec.lock() {
            rec.bind_groups.clear();
        }
        self.pool.trim();
    }

    /// Test aid: destroys the device, as a driver reset would; later `read`s return an error.
    #[doc(hidden)]
    pub fn simulate_device_loss(&self) {
        self.ctx.device.destroy();
    }

    fn limit(&self) -> u64 {
        self.ctx.max_binding
    }

    /// Records one kernel launch. `extra`, when given, is staged in the arena and bound as the
    /// last input (gather's index pairs).
    fn run(
        &self,
        k: Kernel,
        out: Binding<'_>,
        inputs: &[Binding<'_>],
        extra: Option<&[u8]>,
        params: &[u32],
        groups: [u32; 3],
    ) -> Result<()> {
        if params.len() as u64 * 4 > recorder::PARAMS_BYTES {
            return Err(crate::Error::Backend(format!(
                "{}: {} bytes of params, over the {} bound for every kernel",
                k.name(),
                params.len() * 4,
                recorder::PARAMS_BYTES
            )));
        }
        let pipe = self.pipes.get(&self.ctx.device, k)?;
        let mut rec = self.rec.lock().map_err(lock_err)?;
        let staged = extra.map(|d| rec.stage(&self.ctx.device, d));
        let mut all: Vec<Binding<'_>> = inputs.to_vec();
        if let Some((buf, offset, _)) = &staged {
            let size = extra.map_or(4, |d| d.len() as u64).max(4);
            all.push(Binding { buf, offset: *offset, size });
        }
        debug_assert_eq!(all.len(), k.inputs());
        rec.dispatch(&self.ctx.device, &self.ctx.queue, k, &pipe, self.pipes.bind_group_layout(k), out, &all, params, groups);
        Ok(())
    }

    /// A launch over `n` items with 256 per workgroup.
    fn groups_for(&self, n: usize) -> Result<[u32; 3]> {
        self.ctx.grid(n.div_ceil(256) as u64)
    }

    /// Lanes per row for the row kernels (norms, softmaxes), and the launch for `rows` rows: a
    /// power of two with about 4 columns per lane, 4 to 256, so short rows share a workgroup.
    fn row_launch(&self, rows: usize, cols: usize) -> Result<(u32, [u32; 3])> {
        let lanes = cols.div_ceil(4).next_power_of_two().clamp(4, 256);
        let groups = self.ctx.grid(rows.div_ceil(256 / lanes) as u64)?;
        Ok((lanes as u32, groups))
    }

    /// A fresh output of `shape` (poisoned with NaN when asked), which must fit one binding.
    fn output(&self, op: &str, shape: Vec<usize>) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        let bytes = n as u64 * 4;
        if bytes > self.limit() {
            return Err(shape_err(
                op,
                format!("output {shape:?} is {bytes} bytes, over this adapter's binding limit of {} bytes", self.limit()),
            ));
        }
        tensor::u32p(op, n)?;
        let (rows, _) = tensor::rows_cols(&shape);
        let buf = self.pool.take(bytes, STORAGE_USAGE);
        if self.poison.load(Ordering::Relaxed) && n > 0 {
            let params = [n as u32, f32::NAN.to_bits(), 0, 0, 0, 0, 0, 0];
            self.run(Kernel::Fill, Binding::whole(&buf.buf, bytes), &[], None, &params, self.groups_for(n)?)?;
        }
        Ok(GpuTensor::new(shape, vec![Chunk { row0: 0, rows, buf }]))
    }
}

impl Backend for WgpuBackend {
    type Tensor = GpuTensor;

    fn describe(&self) -> String {
        format!("wgpu {}{}{}", context::describe_info(&self.ctx.info), self.pipes.precision().note(), self.coop_note)
    }
    fn precision(&self) -> Precision {
        self.pipes.precision()
    }

    fn max_tensor_bytes(&self) -> usize {
        usize::try_from(self.limit()).unwrap_or(usize::MAX)
    }

    fn buffers_created(&self) -> Option<u64> {
        Some(self.pool.created())
    }

    fn bind_groups_created(&self) -> Option<u64> {
        self.rec.lock().ok().map(|r| r.bind_groups.created)
    }

    fn staged_upload_bytes(&self) -> Option<usize> {
        Some(readback::SMALL_UPLOAD.min(self.limit() as usize))
    }

    fn packs_rows(&self) -> bool {
        self.pack_rows.load(Ordering::Relaxed)
    }

    fn set_pack_rows(&self, on: bool) -> bool {
        self.pack_rows.store(on, Ordering::Relaxed);
        true
    }

    fn set_submit_every(&self, dispatches: usize) -> bool {
        match self.rec.lock() {
            Ok(mut r) => {
                r.submit_every = dispatches;
                true
            }
            Err(_) => false,
        }
    }

    fn set_poison(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    fn upload(&self, t: &HostTensor) -> Result<GpuTensor> {
        self.upload_host(t)
    }

    fn shape(&self, t: &GpuTensor) -> Vec<usize> {
        t.shape().to_vec()
    }

    fn read(&self, t: &GpuTensor) -> impl std::future::Future<Output = Result<HostTensor>> {
        self.read_tensor(t)
    }

    fn read_many(&self, ts: &[&GpuTensor]) -> impl std::future::Future<Output = Result<Vec<HostTensor>>> {
        self.read_tensors(ts)
    }

    fn gather_rows(&self, table: &GpuTensor, ids: &[u32]) -> Result<GpuTensor> {
        self.op_gather_rows(table, ids)
    }

    fn matmul(&self, x: &GpuTensor, w: &GpuTensor, bias: Option<&GpuTensor>) -> Result<GpuTensor> {
        self.op_matmul(x, w, bias)
    }
    fn matmul_blocks(&self, x: &GpuTensor, w: &GpuTensor, bias: Option<&GpuTensor>, p: &super::BlockProduct) -> Result<GpuTensor> {
        self.op_matmul_blocks(x, w, bias, p)
    }

    fn add(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.op_binary("add", Kernel::Add, a, b)
    }

    fn layer_norm(&self, x: &GpuTensor, w: &GpuTensor, b: &GpuTensor, eps: f32) -> Result<GpuTensor> {
        self.op_norm("layer_norm", x, w, Some(b), eps)
    }

    fn rms_norm(&self, x: &GpuTensor, w: &GpuTensor, eps: f32) -> Result<GpuTensor> {
        self.op_norm("rms_norm", x, w, None, eps)
    }

    fn gelu_new(&self, x: &GpuTensor) -> Result<GpuTensor> {
        self.op_unary("gelu_new", Kernel::Gelu, x)
    }

    fn silu_mul(&self, gate: &GpuTensor, up: &GpuTensor) -> Result<GpuTensor> {
        self.op_binary("silu_mul", Kernel::SiluMul, gate, up)
    }

    fn rope(&self, x: &GpuTensor, seq: usize, n_heads: usize, head_dim: usize, theta: f32) -> Result<GpuTensor> {
        self.op_rope(x, seq, n_heads, head_dim, theta)
    }

    fn attn_scores(&self, q: &GpuTensor, k: &GpuTensor, s: AttnShape) -> Result<GpuTensor> {
        self.op_attn_scores(q, k, s)
    }

    fn attn_apply(&self, probs: &GpuTensor, v: &GpuTensor, s: AttnShape) -> Result<GpuTensor> {
        self.op_attn_apply(probs, v, s)
    }

    fn attention(&self, q: &GpuTensor, k: &GpuTensor, v: &GpuTensor, s: AttnShape) -> Result<GpuTensor> {
        self.op_attention(q, k, v, s)
    }

    fn mix(&self, x: &GpuTensor, mask: &GpuTensor, mask_rows: RowMap, abl: &GpuTensor, abl_rows: RowMap) -> Result<GpuTensor> {
        self.op_mix(x, mask, mask_rows, abl, abl_rows)
    }

    fn concat(&self, parts: &[&GpuTensor], shape: Vec<usize>) -> Result<GpuTensor> {
        self.op_concat(parts, shape)
    }
    fn reshape(&self, t: GpuTensor, shape: Vec<usize>) -> Result<GpuTensor> {
        self.op_reshape(t, shape)
    }
    fn log_softmax(&self, x: &GpuTensor) -> Result<GpuTensor> {
        self.op_log_softmax(x)
    }

    fn matmul_backward(&self, dy: &GpuTensor, w: &GpuTensor) -> Result<GpuTensor> {
        self.op_matmul_backward(dy, w)
    }
    fn layer_norm_backward(&self, x: &GpuTensor, w: &GpuTensor, dy: &GpuTensor, eps: f32) -> Result<GpuTensor> {
        self.op_norm_backward("layer_norm_backward", x, w, dy, false, eps)
    }
    fn rms_norm_backward(&self, x: &GpuTensor, w: &GpuTensor, dy: &GpuTensor, eps: f32) -> Result<GpuTensor> {
        self.op_norm_backward("rms_norm_backward", x, w, dy, true, eps)
    }
    fn gelu_new_backward(&self, x: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        self.op_gelu_new_backward(x, dy)
    }
    fn silu_mul_backward(&self, gate: &GpuTensor, up: &GpuTensor, dy: &GpuTensor) -> Result<(GpuTensor, GpuTensor)> {
        self.op_silu_mul_backward(gate, up, dy)
    }
    fn rope_backward(&self, dy: &GpuTensor, seq: usize, n_heads: usize, head_dim: usize, theta: f32) -> Result<GpuTensor> {
        self.op_rope_backward(dy, seq, n_heads, head_dim, theta)
    }
    fn attn_scores_backward(&self, q: &GpuTensor, k: &GpuTensor, probs: &GpuTensor, dprobs: &GpuTensor, s: AttnShape)
        -> Result<(GpuTensor, GpuTensor)> {
        self.op_attn_scores_backward(q, k, probs, dprobs, s)
    }
    fn attn_apply_backward(&self, probs: &GpuTensor, v: &GpuTensor, dout: &GpuTensor, s: AttnShape)
        -> Result<(GpuTensor, GpuTensor)> {
        self.op_attn_apply_backward(probs, v, dout, s)
    }
    fn mix_backward(&self, x: &GpuTensor, mask: &GpuTensor, mask_rows: RowMap, abl: &GpuTensor, abl_rows: RowMap,
        dy: &GpuTensor) -> Result<(GpuTensor, GpuTensor)> {
        self.op_mix_backward(x, mask, mask_rows, abl, abl_rows, dy)
    }
    fn gated_sum(&self, gates: Gates<'_, GpuTensor>, stacks: &[&GpuTensor], base: Option<&GpuTensor>) -> Result<GpuTensor> {
        self.op_gated_sum(gates, stacks, base)
    }
    fn gated_sum_backward(&self, gates: Gates<'_, GpuTensor>, stacks: &[&GpuTensor], dy: &GpuTensor, acc: Vec<Option<GpuTensor>>,
        _sampled: bool) -> Result<(GpuTensor, Vec<GpuTensor>)> {
        self.op_gated_sum_backward(gates, stacks, dy, acc)
    }
    fn scatter_rows(&self, src: &GpuTensor, ids: &[u32], rows: usize) -> Result<GpuTensor> {
        self.op_scatter_rows(src, ids, rows)
    }
    fn kl_hinge(&self, logits: &GpuTensor, full: &GpuTensor, pairs: &[Option<(u32, u32)>], margin: f32, weight: f32)
        -> Result<(GpuTensor, GpuTensor)> {
        self.op_kl_hinge(logits, full, pairs, margin, weight)
    }
}
