//! A backend that times every op of another: `carve bench ops`. Each op's wall time is added to
//! its name's total. On the CPU every op has finished when it returns, so these are the ops' real
//! costs. A GPU backend only records its ops there (their time is spent on the device later): on a
//! GPU `bench ops` reads the kernels' timestamps instead (`WgpuBackend::take_kernel_times`).

use carve_core::backend::{AttnShape, Backend, BlockProduct, Gates, RowMap};
use carve_core::{HostTensor, Result};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `inner` with a clock on every op.
pub struct Timed<B> {
    inner: B,
    times: RefCell<BTreeMap<&'static str, (u64, Duration)>>,
}

impl<B: Backend> Timed<B> {
    pub fn new(inner: B) -> Self {
        Timed { inner, times: RefCell::new(BTreeMap::new()) }
    }

    /// The totals so far by op, (calls, time), and a fresh start.
    pub fn take(&self) -> BTreeMap<&'static str, (u64, Duration)> {
        std::mem::take(&mut *self.times.borrow_mut())
    }

    fn time<R>(&self, op: &'static str, f: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let r = f();
        self.record(op, t.elapsed());
        r
    }

    /// One call of `op` that took `spent`.
    fn record(&self, op: &'static str, spent: Duration) {
        let mut times = self.times.borrow_mut();
        let e = times.entry(op).or_default();
        e.0 += 1;
        e.1 += spent;
    }
}

type T<B> = <B as Backend>::Tensor;

impl<B: Backend> Backend for Timed<B> {
    type Tensor = B::Tensor;

    fn describe(&self) -> String {
        format!("{}, every op timed", self.inner.describe())
    }
    fn precision(&self) -> carve_core::backend::Precision {
        self.inner.precision()
    }
    fn max_tensor_bytes(&self) -> usize {
        self.inner.max_tensor_bytes()
    }
    fn set_poison(&self, on: bool) {
        self.inner.set_poison(on)
    }
    fn buffers_created(&self) -> Option<u64> {
        self.inner.buffers_created()
    }
    fn bind_groups_created(&self) -> Option<u64> {
        self.inner.bind_groups_created()
    }
    fn set_submit_every(&self, dispatches: usize) -> bool {
        self.inner.set_submit_every(dispatches)
    }
    fn staged_upload_bytes(&self) -> Option<usize> {
        self.inner.staged_upload_bytes()
    }
    fn packs_rows(&self) -> bool {
        self.inner.packs_rows()
    }
    fn set_pack_rows(&self, on: bool) -> bool {
        self.inner.set_pack_rows(on)
    }
    fn upload(&self, t: &HostTensor) -> Result<T<B>> {
        self.time("upload", || self.inner.upload(t))
    }
    fn shape(&self, t: &T<B>) -> Vec<usize> {
        self.inner.shape(t)
    }
    async fn read(&self, t: &T<B>) -> Result<HostTensor> {
        let start = Instant::now();
        let r = self.inner.read(t).await;
        self.record("read", start.elapsed());
        r
    }
    async fn read_many(&self, ts: &[&T<B>]) -> Result<Vec<HostTensor>> {
        let start = Instant::now();
        let r = self.inner.read_many(ts).await;
        self.record("read", start.elapsed());
        r
    }
    fn gather_rows(&self, table: &T<B>, ids: &[u32]) -> Result<T<B>> {
        self.time("gather_rows", || self.inner.gather_rows(table, ids))
    }
    fn matmul(&self, x: &T<B>, w: &T<B>, bias: Option<&T<B>>) -> Result<T<B>> {
        self.time("matmul", || self.inner.matmul(x, w, bias))
    }
    fn matmul_blocks(&self, x: &T<B>, w: &T<B>, bias: Option<&T<B>>, p: &BlockProduct) -> Result<T<B>> {
        self.time("matmul_blocks", || self.inner.matmul_blocks(x, w, bias, p))
    }
    fn add(&self, a: &T<B>, b: &T<B>) -> Result<T<B>> {
        self.time("add", || self.inner.add(a, b))
    }
    fn layer_norm(&self, x: &T<B>, w: &T<B>, b: &T<B>, eps: f32) -> Result<T<B>> {
        self.time("layer_norm", || self.inner.layer_norm(x, w, b, eps))
    }
    fn rms_norm(&self, x: &T<B>, w: &T<B>, eps: f32) -> Result<T<B>> {
        self.time("rms_norm", || self.inner.rms_norm(x, w, eps))
    }
    fn gelu_new(&self, x: &T<B>) -> Result<T<B>> {
        self.time("gelu_new", || self.inner.gelu_new(x))
    }
    fn silu_mul(&self, gate: &T<B>, up: &T<B>) -> Result<T<B>> {
        self.time("silu_mul", || self.inner.silu_mul(gate, up))
    }
    fn rope(&self, x: &T<B>, seq: usize, n_heads: usize, head_dim: usize, theta: f32) -> Result<T<B>> {
        self.time("rope", || self.inner.rope(x, seq, n_heads, head_dim, theta))
    }
    fn attn_scores(&self, q: &T<B>, k: &T<B>, s: AttnShape) -> Result<T<B>> {
        self.time("attn_scores", || self.inner.attn_scores(q, k, s))
    }
    fn attn_apply(&self, probs: &T<B>, v: &T<B>, s: AttnShape) -> Result<T<B>> {
        self.time("attn_apply", || self.inner.attn_apply(probs, v, s))
    }
    fn mix(&self, x: &T<B>, mask: &T<B>, mask_rows: RowMap, abl: &T<B>, abl_rows: RowMap) -> Result<T<B>> {
        self.time("mix", || self.inner.mix(x, mask, mask_rows, abl, abl_rows))
    }
    fn concat(&self, parts: &[&T<B>], shape: Vec<usize>) -> Result<T<B>> {
        self.time("concat", || self.inner.concat(parts, shape))
    }
    fn reshape(&self, t: T<B>, shape: Vec<usize>) -> Result<T<B>> {
        self.time("reshape", || self.inner.reshape(t, shape))
    }
    fn log_softmax(&self, x: &T<B>) -> Result<T<B>> {
        self.time("log_softmax", || self.inner.log_softmax(x))
    }
    fn gated_sum(&self, gates: Gates<'_, T<B>>, stacks: &[&T<B>], base: Option<&T<B>>) -> Result<T<B>> {
        self.time("gated_sum", || self.inner.gated_sum(gates, stacks, base))
    }
    fn matmul_backward(&self, dy: &T<B>, w: &T<B>) -> Result<T<B>> {
        self.time("matmul_backward", || self.inner.matmul_backward(dy, w))
    }
    fn gated_sum_backward(&self, gates: Gates<'_, T<B>>, stacks: &[&T<B>], dy: &T<B>, acc: Vec<Option<T<B>>>, sampled: bool)
        -> Result<(T<B>, Vec<T<B>>)> {
        self.time("gated_sum_backward", || self.inner.gated_sum_backward(gates, stacks, dy, acc, sampled))
    }
    fn layer_norm_backward(&self, x: &T<B>, w: &T<B>, dy: &T<B>, eps: f32) -> Result<T<B>> {
        self.time("layer_norm_backward", || self.inner.layer_norm_backward(x, w, dy, eps))
    }
    fn rms_norm_backward(&self, x: &T<B>, w: &T<B>, dy: &T<B>, eps: f32) -> Result<T<B>> {
        self.time("rms_norm_backward", || self.inner.rms_norm_backward(x, w, dy, eps))
    }
    fn gelu_new_backward(&self, x: &T<B>, dy: &T<B>) -> Result<T<B>> {
        self.time("gelu_new_backward", || self.inner.gelu_new_backward(x, dy))
    }
    fn silu_mul_backward(&self, gate: &T<B>, up: &T<B>, dy: &T<B>) -> Result<(T<B>, T<B>)> {
        self.time("silu_mul_backward", || self.inner.silu_mul_backward(gate, up, dy))
    }
    fn rope_backward(&self, dy: &T<B>, seq: usize, n_heads: usize, head_dim: usize, theta: f32) -> Result<T<B>> {
        self.time("rope_backward", || self.inner.rope_backward(dy, seq, n_heads, head_dim, theta))
    }
    fn attn_scores_backward(&self, q: &T<B>, k: &T<B>, probs: &T<B>, dprobs: &T<B>, s: AttnShape) -> Result<(T<B>, T<B>)> {
        self.time("attn_scores_backward", || self.inner.attn_scores_backward(q, k, probs, dprobs, s))
    }
    fn attn_apply_backward(&self, probs: &T<B>, v: &T<B>, dout: &T<B>, s: AttnShape) -> Result<(T<B>, T<B>)> {
        self.time("attn_apply_backward", || self.inner.attn_apply_backward(probs, v, dout, s))
    }
    fn mix_backward(&self, x: &T<B>, mask: &T<B>, mask_rows: RowMap, abl: &T<B>, abl_rows: RowMap, dy: &T<B>)
        -> Result<(T<B>, T<B>)> {
        self.time("mix_backward", || self.inner.mix_backward(x, mask, mask_rows, abl, abl_rows, dy))
    }
    fn scatter_rows(&self, src: &T<B>, ids: &[u32], rows: usize) -> Result<T<B>> {
        self.time("scatter_rows", || self.inner.scatter_rows(src, ids, rows))
    }
    fn kl_hinge(&self, logits: &T<B>, full: &T<B>, pairs: &[Option<(u32, u32)>], margin: f32, weight: f32) -> Result<(T<B>, T<B>)> {
        self.time("kl_hinge", || self.inner.kl_hinge(logits, full, pairs, margin, weight))
    }
}
