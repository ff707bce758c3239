//! The CPU backend: eager ops over `Vec<f32>`, matmuls through the `gemm` crate, rows in parallel
//! with rayon. This is the backend that real work uses where no GPU is present, so every op is
//! written for speed, not as a reference.

mod attention;
mod backward;
mod elementwise;
mod gated_sum;
mod loss;
mod matmul;
mod norms;
mod vector;

#[cfg(not(target_arch = "wasm32"))]
pub use matmul::{set_gemm_threads, GemmThreads};

use crate::backend::{AttnShape, Backend, Gates, Precision, RowMap};
use crate::{Error, HostTensor, Result};
use rayon::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// A tensor's values, row-major, and for a weight (`upload_weight`) its transpose: `w [N, K]`
/// as `[K, N]`, rounded to the backend's precision, which products `x · wᵀ` read.
#[derive(Clone, Debug)]
pub struct CpuTensor(Arc<HostTensor>, Option<Arc<Vec<f32>>>);

impl CpuTensor {
    pub fn host(&self) -> &HostTensor {
        &self.0
    }
    fn rows_cols(&self) -> (usize, usize) {
        self.0.rows_cols()
    }
}

pub struct CpuBackend {
    poison: Cell<bool>,
    precision: Precision,
    /// At mixed precision, the rounded copies of uploaded tensors (weights) that products read.
    rounded: RefCell<Rounded>,
}

/// Uploaded tensors by address, and the rounded copy of each one a product has read. The weak
/// handle keeps the tensor's allocation, so no other tensor takes its address while it is listed.
#[derive(Default)]
struct Rounded {
    uploaded: HashMap<usize, Weak<HostTensor>>,
    copies: HashMap<usize, CpuTensor>,
}

impl Rounded {
    /// Drops the copies of tensors that are gone (at every upload: a copy may be large), and the
    /// entries of uploads that are gone once they outnumber a model's weights many times.
    fn prune(&mut self) {
        let Rounded { uploaded, copies } = self;
        copies.retain(|k, _| uploaded.get(k).is_some_and(|w| w.strong_count() > 0));
        if uploaded.len() > 4096 {
            uploaded.retain(|_, w| w.strong_count() > 0);
        }
    }
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    pub fn new() -> Self {
        Self::with_precision(Precision::F32)
    }

    /// A backend whose matrix products round their inputs to `precision` (see `Precision`).
    pub fn with_precision(precision: Precision) -> Self {
        CpuBackend { poison: Cell::new(false), precision, rounded: RefCell::new(Rounded::default()) }
    }

    /// `t` as a matrix product reads it: itself at f32, else a rounded copy (made once for an
    /// uploaded tensor: a weight is read by every forward).
    fn gemm_input(&self, t: &CpuTensor) -> CpuTensor {
        let p = self.precision;
        if p == Precision::F32 {
            return t.clone();
        }
        let round = || CpuBackend::wrap(t.0.shape.clone(), p.round_all(&t.0.data));
        let key = Arc::as_ptr(&t.0) as usize;
        let mut c = self.rounded.borrow_mut();
        if !c.uploaded.contains_key(&key) {
            return round(); // an activation: read once
        }
        c.copies.entry(key).or_insert_with(round).clone()
    }

    /// `w` as a product reads it: a weight read as `x · wᵀ` (`transposed`) is read from its
    /// transpose, which `upload_weight` rounded already; anything else as `gemm_input`.
    fn weight_input(&self, w: &CpuTensor, transposed: bool) -> CpuTensor {
        if transposed && w.1.is_some() {
            return w.clone();
        }
        CpuTensor(self.gemm_input(w).0, None)
    }

    /// A fresh output buffer: NaN when poisoning, so any element an op does not write shows up.
    fn out(&self, n: usize) -> Vec<f32> {
        vec![if self.poison.get() { f32::NAN } else { 0.0 }; n]
    }

    fn wrap(shape: Vec<usize>, data: Vec<f32>) -> CpuTensor {
        CpuTensor(Arc::new(HostTensor { shape, data }), None)
    }
}

/// Rows per parallel task: enough work per task to beat rayon's overhead.
pub(crate) fn rows_per_task(cols: usize) -> usize {
    (16384 / cols.max(1)).max(1)
}

pub(crate) fn check(cond: bool, op: &str, msg: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Backend(format!("{op}: {}", msg())))
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn describe(&self) -> String {
        format!("cpu ({} threads){}", rayon::current_num_threads(), self.precision.note())
    }
    fn precision(&self) -> Precision {
        self.precision
    }
    fn max_tensor_bytes(&self) -> usize {
        usize::MAX
    }
    fn packs_rows(&self) -> bool {
        true
    }
    fn cost_grows_with_rows(&self) -> bool {
        true
    }

    fn set_poison(&self, on: bool) {
        self.poison.set(on);
    }
    fn upload(&self, t: &HostTensor) -> Result<CpuTensor> {
        check(t.shape.iter().product::<usize>() == t.data.len(), "upload", || {
            format!("shape {:?} does not hold {} values", t.shape, t.data.len())
        })?;
        let t = CpuTensor(Arc::new(t.clone()), None);
        if self.precision != Precision::F32 {
            let mut c = self.rounded.borrow_mut();
            c.uploaded.insert(Arc::as_ptr(&t.0) as usize, Arc::downgrade(&t.0));
            c.prune();
        }
        Ok(t)
    }
    /// With the transpose `[K, N]` beside `w [N, K]` (twice the memory for it): `gemm` multiplies
    /// by a matrix laid out as `[N, K]` only after copying it transposed, on one thread where N is
    /// a layer's width, at every call. SmolLM2's layer products at 288 rows ran 1.04–1.48× faster
    /// on two threads from the transpose (`carve bench matmul --backend cpu`), 1.06–1.33× on one.
    /// In the browser there is no `gemm` (its kernel reads either layout without a copy), and a
    /// second copy of the weights would only take memory: no transpose there.
    fn upload_weight(&self, t: &HostTensor) -> Result<CpuTensor> {
        let mut w = self.upload(t)?;
        if cfg!(target_arch = "wasm32") {
            return Ok(w);
        }
        if t.shape.len() == 2 {
            let wt = match self.precision {
                Precision::F32 => t.transposed(),
                p => HostTensor::new(t.shape.clone(), p.round_all(&t.data)).transposed(),
            };
            w.1 = Some(Arc::new(wt.data));
        }
        Ok(w)
    }
    fn shape(&self, t: &CpuTensor) -> Vec<usize> {
        t.0.shape.clone()
    }
    async fn read(&self, t: &CpuTensor) -> Result<HostTensor> {
        Ok((*t.0).clone())
    }
    async fn read_many(&self, ts: &[&CpuTensor]) -> Result<Vec<HostTensor>> {
        Ok(ts.iter().map(|t| (*t.0).clone()).collect())
    }

    fn gather_rows(&self, table: &CpuTensor, ids: &[u32]) -> Result<CpuTensor> {
        let (rows, cols) = table.rows_cols();
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= rows) {
            return Err(Error::Backend(format!("gather_rows: id {bad} out of range for a table of {rows} rows")));
        }
        let mut out = self.out(ids.len() * cols);
        let per = rows_per_task(cols);
        out.par_chunks_mut(per * cols.max(1)).zip(ids.par_chunks(per)).for_each(|(o, ids)| {
            for (o, &i) in o.chunks_mut(cols.max(1)).zip(ids) {
                o.copy_from_slice(table.0.row(i as usize));
            }
        });
        Ok(Self::wrap(vec![ids.len(), cols], out))
    }
    fn matmul(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>) -> Result<CpuTensor> {
        matmul::matmul(self, &self.gemm_input(x), &self.weight_input(w, true), bias)
    }
    fn matmul_blocks(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>, p: &crate::backend::BlockProduct) -> Result<CpuTensor> {
        matmul::matmul_blocks(self, &self.gemm_input(x), &self.weight_input(w, !p.w_kn), bias, p)
    }
    fn add(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        elementwise::zip(self, "add", a, b, |x, y| x + y)
    }
    fn layer_norm(&self, x: &CpuTensor, w: &CpuTensor, b: &CpuTensor, eps: f32) -> Result<CpuTensor> {
        norms::layer_norm(self, x, w, b, eps)
    }
    fn rms_norm(&self, x: &CpuTensor, w: &CpuTensor, eps: f32) -> Result<CpuTensor> {
        norms::rms_norm(self, x, w, eps)
    }
    fn gelu_new(&self, x: &CpuTensor) -> Result<CpuTensor> {
        Ok(elementwise::map(self, x, elementwise::gelu_new))
    }
    fn silu_mul(&self, gate: &CpuTensor, up: &CpuTensor) -> Result<CpuTensor> {
        elementwise::zip(self, "silu_mul", gate, up, |g, u| g / (1.0 + vector::exp(-g)) * u)
    }
    fn rope(&self, x: &CpuTensor, seq: usize, n_heads: usize, head_dim: usize, theta: f32) -> Result<CpuTensor> {
        elementwise::rope(self, x, seq, n_heads, head_dim, theta, 1.0)
    }
    fn attn_scores(&self, q: &CpuTensor, k: &CpuTensor, s: AttnShape) -> Result<CpuTensor> {
        attention::scores(self, &self.gemm_input(q), &self.gemm_input(k), s)
    }
    fn attn_apply(&self, probs: &CpuTensor, v: &CpuTensor, s: AttnShape) -> Result<CpuTensor> {
        attention::apply(self, &self.gemm_input(probs), &self.gemm_input(v), s)
    }
    fn mix(&self, x: &CpuTensor, mask: &CpuTensor, mask_rows: RowMap, abl: &CpuTensor, abl_rows: RowMap)
        -> Result<CpuTensor> {
        elementwise::mix(self, x, mask, mask_rows, abl, abl_rows)
    }
    fn concat(&self, parts: &[&CpuTensor], shape: Vec<usize>) -> Result<CpuTensor> {
        let n: usize = shape.iter().product();
        let total: usize = parts.iter().map(|p| p.0.data.len()).sum();
        check(n == total, "concat", || format!("parts of {total} elements in all as a tensor of shape {shape:?} ({n})"))?;
        let mut data = Vec::with_capacity(n);
        for p in parts {
            data.extend_from_slice(&p.0.data);
        }
        Ok(CpuBackend::wrap(shape, data))
    }
    fn reshape(&self, t: CpuTensor, shape: Vec<usize>) -> Result<CpuTensor> {
        let (n, total) = (shape.iter().product::<usize>(), t.0.data.len());
        check(n == total, "reshape", || format!("a tensor of {total} elements as shape {shape:?} ({n})"))?;
        match Arc::try_unwrap(t.0) {
            Ok(h) => Ok(CpuBackend::wrap(shape, h.data)),
            Err(shared) => Ok(CpuBackend::wrap(shape, shared.data.clone())),
        }
    }
    fn log_softmax(&self, x: &CpuTensor) -> Result<CpuTensor> {
        norms::log_softmax(self, x)
    }
    fn gated_sum(&self, gates: Gates<'_, CpuTensor>, stacks: &[&CpuTensor], base: Option<&CpuTensor>) -> Result<CpuTensor> {
        gated_sum::gated_sum(self, gates, stacks, base)
    }
    fn gated_sum_backward(&self, gates: Gates<'_, CpuTensor>, stacks: &[&CpuTensor], dy: &CpuTensor, acc: Vec<Option<CpuTensor>>,
        sampled: bool) -> Result<(CpuTensor, Vec<CpuTensor>)> {
        gated_sum::gated_sum_backward(self, gates, stacks, dy, acc, sampled)
    }

    fn matmul_backward(&self, dy: &CpuTensor, w: &CpuTensor) -> Result<CpuTensor> {
        matmul::matmul_backward(self, &self.gemm_input(dy), &self.weight_input(w, false))
    }
    fn layer_norm_backward(&self, x: &CpuTensor, w: &CpuTensor, dy: &CpuTensor, eps: f32) -> Result<CpuTensor> {
        backward::layer_norm_backward(self, x, w, dy, eps)
    }
    fn rms_norm_backward(&self, x: &CpuTensor, w: &CpuTensor, dy: &CpuTensor, eps: f32) -> Result<CpuTensor> {
        backward::rms_norm_backward(self, x, w, dy, eps)
    }
    fn gelu_new_backward(&self, x: &CpuTensor, dy: &CpuTensor) -> Result<CpuTensor> {
        backward::gelu_new_backward(self, x, dy)
    }
    fn silu_mul_backward(&self, gate: &CpuTensor, up: &CpuTensor, dy: &CpuTensor) -> Result<(CpuTensor, CpuTensor)> {
        backward::silu_mul_backward(self, gate, up, dy)
    }
    fn rope_backward(&self, dy: &CpuTensor, seq: usize, n_heads: usize, head_dim: usize, theta: f32) -> Result<CpuTensor> {
        elementwise::rope(self, dy, seq, n_heads, head_dim, theta, -1.0)
    }
    fn attn_scores_backward(&self, q: &CpuTensor, k: &CpuTensor, probs: &CpuTensor, dprobs: &CpuTensor, s: AttnShape)
        -> Result<(CpuTensor, CpuTensor)> {
        // The products' third input, the softmax's gradient, is rounded where it is made.
        backward::attn_scores_backward(self, &self.gemm_input(q), &self.gemm_input(k), probs, dprobs, s)
    }
    fn attn_apply_backward(&self, probs: &CpuTensor, v: &CpuTensor, dout: &CpuTensor, s: AttnShape)
        -> Result<(CpuTensor, CpuTensor)> {
        let dout = self.gemm_input(dout);
        backward::attn_apply_backward(self, &self.gemm_input(probs), &self.gemm_input(v), &dout, s)
    }
    fn mix_backward(&self, x: &CpuTensor, mask: &CpuTensor, mask_rows: RowMap, abl: &CpuTensor, abl_rows: RowMap,
        dy: &CpuTensor) -> Result<(CpuTensor, CpuTensor)> {
        backward::mix_backward(self, x, mask, mask_rows, abl, abl_rows, dy)
    }
    fn scatter_rows(&self, src: &CpuTensor, ids: &[u32], rows: usize) -> Result<CpuTensor> {
        backward::scatter_rows(self, src, ids, rows)
    }
    fn kl_hinge(&self, logits: &CpuTensor, full: &CpuTensor, pairs: &[Option<(u32, u32)>], margin: f32, weight: f32)
        -> Result<(CpuTensor, CpuTensor)> {
        loss::kl_hinge(self, logits, full, pairs, margin, weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_keeps_the_data_of_a_tensor_only_it_holds() {
        let be = CpuBackend::new();
        let t = be.upload(&HostTensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])).unwrap();
        let at = t.host().data.as_ptr();
        let r = be.reshape(t, vec![3, 2]).unwrap();
        assert_eq!((r.host().shape.as_slice(), r.host().data.as_ptr()), (&[3, 2][..], at), "moved, not copied");
        let kept = r.clone();
        let copy = be.reshape(r, vec![6]).unwrap();
        assert_ne!(copy.host().data.as_ptr(), at, "a tensor held elsewhere is copied");
        assert_eq!((kept.host().shape.as_slice(), &copy.host().data), (&[3, 2][..], &kept.host().data));
    }

    /// A weight keeps its transpose, which `matmul` reads; the products agree with those from the
    /// `[N, K]` layout (to the bit at most sizes, where `gemm` sums over K in the same order;
    /// `ops.rs` checks both against f64). Sizes across the 32-element tiles of `transpose`.
    #[test]
    fn a_weight_keeps_its_transpose_and_multiplies_from_it() {
        let be = CpuBackend::new();
        for (m, k, n) in [(3, 5, 7), (40, 33, 65), (288, 576, 192), (17, 1536, 100)] {
            let val = |i: usize, s: usize| ((i * s) % 1013) as f32 / 1013.0 - 0.5;
            let x = HostTensor::new(vec![m, k], (0..m * k).map(|i| val(i, 7919)).collect());
            let w = HostTensor::new(vec![n, k], (0..n * k).map(|i| val(i, 104729)).collect());
            let weight = be.upload_weight(&w).unwrap();
            let wt = weight.1.as_ref().expect("a weight keeps its transpose");
            assert!((0..n * k).all(|i| wt[(i % k) * n + i / k] == w.data[i]), "{n}×{k}: wt[p, j] = w[j, p]");
            assert_eq!(weight.host(), &w, "the tensor itself is unchanged");
            let xu = be.upload(&x).unwrap();
            let plain = be.matmul(&xu, &be.upload(&w).unwrap(), None).unwrap();
            let from_t = be.matmul(&xu, &weight, None).unwrap();
            let diff = plain.host().data.iter().zip(&from_t.host().data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(diff <= 1e-5, "{m}×{k}×{n}: the products differ by {diff}");
        }
        assert!(be.upload(&HostTensor::zeros(vec![2, 2])).unwrap().1.is_none(), "only weights keep a transpose");
    }

    /// A weight with no inputs (a layer whose heads or neurons were all cut) multiplies to zeros,
    /// alone and in blocks: the transpose is empty, and nothing divides by its width.
    #[test]
    fn an_empty_weight_multiplies_to_zeros() {
        use crate::backend::{BlockProduct, Blocks};
        let be = CpuBackend::new();
        let x = be.upload(&HostTensor::zeros(vec![6, 0])).unwrap();
        let w = be.upload_weight(&HostTensor::zeros(vec![8, 0])).unwrap();
        assert_eq!(be.matmul(&x, &w, None).unwrap().host(), &HostTensor::zeros(vec![6, 8]));
        let p = BlockProduct { n: 2, m: 3, k: 0, cols: 4, x: Blocks::Rows, x_first: 0, w: Blocks::Rows, w_kn: false, out: Blocks::Rows };
        be.set_poison(true);
        assert_eq!(be.matmul_blocks(&x, &w, None, &p).unwrap().host(), &HostTensor::zeros(vec![6, 4]));
    }
}
