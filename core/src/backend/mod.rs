//! The op set that both backends implement; the model code is written once over it.
//!
//! Tensors are row-major f32. Most ops view a tensor as a matrix `[rows, cols]` whose columns are
//! the last dimension. Weights are stored in the HF `[out, in]` layout, so `matmul` computes
//! `x · wᵀ`. Ops are recorded, not necessarily run: a GPU backend batches everything up to the next
//! `read` into one submit (or several, see `set_submit_every`, none of which waits). Only `read`
//! returns data to the host and waits for the device.

mod blocks;
pub mod cpu;
mod gates;
mod precision;
pub mod wgpu;

pub use blocks::{block_views, BiasBlocks, BlockProduct, BlockView, Blocks};
pub use gates::Gates;
pub(crate) use gates::{check_base, gated_shapes, GatedShapes};
pub use precision::Precision;

use crate::{HostTensor, Result};

/// How `mix` picks the mask or ablation row used for row `r` of `x`: `(r / div) % rows_of_that_tensor`.
/// `div = 1` and one row: the same row for all (position-independent); `div = 1`, `T` rows: per
/// position; `div = 1`, `R` rows: one row per row of x (e.g. a corrupted run); `div = T`: per prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowMap {
    pub div: usize,
}

impl RowMap {
    pub const SHARED: RowMap = RowMap { div: 1 };
    pub fn index(self, r: usize, rows: usize) -> usize {
        (r / self.div.max(1)) % rows.max(1)
    }
}

/// Shape of a batched attention call. `q` is `[batch*seq, n_heads*head_dim]`; `k`, `v` are
/// `[batch*seq, n_kv_heads*head_dim]`; query head `h` reads kv head `h / (n_heads / n_kv_heads)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnShape {
    pub batch: usize,
    pub seq: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies q·k before the softmax (1/sqrt(head_dim) for both families).
    pub scale: f32,
}

pub trait Backend {
    /// A cheap handle (clone = another reference to the same data).
    type Tensor: Clone;

    /// A short description: "cpu (2 threads)", "wgpu vulkan: NVIDIA GeForce RTX 4090".
    fn describe(&self) -> String;

    /// What matrix products round their inputs to (`--precision`).
    fn precision(&self) -> Precision;

    /// Largest tensor, in bytes, that one op can take as one input (the adapter's binding limit, or
    /// `usize::MAX`). Larger weights must be split by the backend or refused with a clear error.
    fn max_tensor_bytes(&self) -> usize;

    /// Device buffers created so far, where the backend allocates device memory itself (wgpu);
    /// None where tensors live in host memory. For benchmarks: a steady loop should add none.
    fn buffers_created(&self) -> Option<u64> {
        None
    }

    /// Bind groups created so far, where the backend binds buffers to kernels (wgpu, which caches
    /// them); None elsewhere. For benchmarks: a steady loop should add none.
    fn bind_groups_created(&self) -> Option<u64> {
        None
    }

    /// The largest upload, in bytes, that the backend stages with a step's other small data
    /// instead of creating a device buffer for it (wgpu); None where uploads create nothing.
    /// Per-step data over it can go up in row-chunks joined by `concat`.
    fn staged_upload_bytes(&self) -> Option<usize> {
        None
    }

    /// Where work is recorded and submitted to a device queue (wgpu): also submit it every
    /// `dispatches` dispatches (0: only at reads, the default), and return true. False elsewhere.
    /// For benchmarks that put the two side by side.
    fn set_submit_every(&self, _dispatches: usize) -> bool {
        false
    }

    /// Test aid: when on, every freshly allocated output is filled with NaN before the op writes
    /// it, so an element an op forgets to write shows up in the comparison.
    fn set_poison(&self, on: bool);

    /// Whether the model runs its matrix products on a padded batch's real rows only, gathered
    /// before each product and scattered back after it (`model/pack.rs`). It pays where a product
    /// costs far more than the copies around it (the CPU); on wgpu each copy is a dispatch of its
    /// own, so it is off there unless `WgpuOptions::pack_rows` asks for it.
    fn packs_rows(&self) -> bool {
        false
    }

    /// Whether a forward's time grows in proportion to its rows from the first on (the CPU: a
    /// product is about as fast per row at a few hundred rows as at thousands), rather than many
    /// rows sharing a forward's fixed cost (a GPU, up to its saturation). ablate's fast sweep
    /// evaluates one candidate per forward where it does (`Batching::for_backend`).
    fn cost_grows_with_rows(&self) -> bool {
        false
    }

    /// Where packing is a choice (wgpu): turn it on or off from the next forward on, and return
    /// true. False elsewhere. For benchmarks that put the two side by side.
    fn set_pack_rows(&self, _on: bool) -> bool {
        false
    }

    fn upload(&self, t: &HostTensor) -> Result<Self::Tensor>;
    /// `upload` for a matrix `w [N, K]` every forward multiplies by (`matmul(x, w)`: a layer's
    /// projection). A backend may keep it in a second layout as well: the CPU keeps `wᵀ`, which
    /// `gemm` reads without transposing it on every call.
    fn upload_weight(&self, t: &HostTensor) -> Result<Self::Tensor> {
        self.upload(t)
    }
    fn shape(&self, t: &Self::Tensor) -> Vec<usize>;
    /// Runs whatever is recorded and copies `t` back.
    fn read(&self, t: &Self::Tensor) -> impl std::future::Future<Output = Result<HostTensor>>;
    /// Runs whatever is recorded and copies every tensor of `ts` back, in one submit.
    fn read_many(&self, ts: &[&Self::Tensor]) -> impl std::future::Future<Output = Result<Vec<HostTensor>>>;

    /// `out[i, :] = table[ids[i], :]`. Callers validate ids against the table's rows.
    fn gather_rows(&self, table: &Self::Tensor, ids: &[u32]) -> Result<Self::Tensor>;
    /// `x [M, K] · w[N, K]ᵀ (+ bias [N])` → `[M, N]`.
    fn matmul(&self, x: &Self::Tensor, w: &Self::Tensor, bias: Option<&Self::Tensor>) -> Result<Self::Tensor>;
    /// n products in one call (`BlockProduct`): `out_b = x_b · w_bᵀ + bias_b` (or `x_b · w_b`
    /// with `w_kn`, no bias) for b < n, each operand's blocks stacked as rows of its tensor or set
    /// side by side as its columns: a layer's heads' projections from their own inputs, to their
    /// own outputs, and the input gradients of both. The bias is `[cols]` for every block or
    /// `[n·cols]`, one per block.
    fn matmul_blocks(&self, x: &Self::Tensor, w: &Self::Tensor, bias: Option<&Self::Tensor>, p: &BlockProduct)
        -> Result<Self::Tensor>;
    /// Elementwise `a + b`, same shapes.
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// Row-wise LayerNorm: `(x − mean) / sqrt(var + eps) · w + b` (biased variance, as PyTorch).
    fn layer_norm(&self, x: &Self::Tensor, w: &Self::Tensor, b: &Self::Tensor, eps: f32) -> Result<Self::Tensor>;
    /// Row-wise RMSNorm: `x / sqrt(mean(x²) + eps) · w`.
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Tensor, eps: f32) -> Result<Self::Tensor>;
    /// GPT-2's tanh GELU: `0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))`.
    fn gelu_new(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// `silu(gate) · up`, with `silu(g) = g / (1 + exp(−g))`.
    fn silu_mul(&self, gate: &Self::Tensor, up: &Self::Tensor) -> Result<Self::Tensor>;
    /// Rotary embedding, HF "rotate_half" layout, on `x [batch*seq, n_heads*head_dim]`. Row `r` is
    /// at position `r % seq`. Within a head, dim `i < head_dim/2` pairs with `i + head_dim/2` and
    /// turns by angle `pos · theta^(−2i/head_dim)`.
    fn rope(&self, x: &Self::Tensor, seq: usize, n_heads: usize, head_dim: usize, theta: f32) -> Result<Self::Tensor>;
    /// Causal attention probabilities `[batch*n_heads*seq, seq]`: row `(b·H + h)·T + i`, column `j`
    /// holds `softmax_j(scale · q_i·k_j)` for `j ≤ i` and exactly 0 for `j > i`.
    fn attn_scores(&self, q: &Self::Tensor, k: &Self::Tensor, s: AttnShape) -> Result<Self::Tensor>;
    /// `out [batch*seq, n_heads*head_dim]`: head h of row `b·T + i` is `Σ_j p[(b·H+h)·T+i, j] · v_j`.
    fn attn_apply(&self, probs: &Self::Tensor, v: &Self::Tensor, s: AttnShape) -> Result<Self::Tensor>;
    /// `attn_apply(attn_scores(q, k), v)` without the probabilities, for a forward that does not
    /// keep them: a backend may fuse the two (wgpu does).
    fn attention(&self, q: &Self::Tensor, k: &Self::Tensor, v: &Self::Tensor, s: AttnShape) -> Result<Self::Tensor> {
        let named = |e: crate::Error| match e {
            crate::Error::Backend(m) => crate::Error::Backend(format!("attention: {m}")),
            e => e,
        };
        self.attn_apply(&self.attn_scores(q, k, s).map_err(named)?, v, s).map_err(named)
    }
    /// The masked mix: `out[r, c] = m·x[r, c] + (1 − m)·a` with `m = mask[mrow, c]`,
    /// `a = abl[arow, c]`, rows picked by the two `RowMap`s. `mask` is `[*, C]`, `abl` is `[*, C]`.
    fn mix(&self, x: &Self::Tensor, mask: &Self::Tensor, mask_rows: RowMap, abl: &Self::Tensor, abl_rows: RowMap)
        -> Result<Self::Tensor>;
    /// The parts' elements one after another, as a tensor of `shape` (whose element count is the
    /// parts' total): stacks equal parts as rows (`[n, numel]`).
    fn concat(&self, parts: &[&Self::Tensor], shape: Vec<usize>) -> Result<Self::Tensor>;
    /// `t`'s elements in the same order as a tensor of `shape` (the same element count). Where
    /// `t` is its data's only holder the data is kept, not copied (CPU, and wgpu when `t` is one
    /// buffer); otherwise a copy, as `concat` of the one part.
    fn reshape(&self, t: Self::Tensor, shape: Vec<usize>) -> Result<Self::Tensor> {
        self.concat(&[&t], shape)
    }
    /// Row-wise `log_softmax`, numerically stable (max subtracted).
    fn log_softmax(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// The edge forward's mixing: `out [n, C] = Σ_g Z_g · stacks_g` with `stacks_g [k_g, C]` (a
    /// group of writers' outputs) and `Z_g [n, k_g]` their readers' gates, group g's columns of the
    /// view `gates` (`Z = gates`, `[n, Σ_g k_g]`): `Z` times the stacks joined as rows, never
    /// joined; plus `base` (L elements, L dividing C) repeated along every row,
    /// `out[i, c] += base[c mod L]` (the readers' Σ a_w: `[1, d]` on every row of `[rows·d]`).
    fn gated_sum(&self, gates: Gates<'_, Self::Tensor>, stacks: &[&Self::Tensor], base: Option<&Self::Tensor>)
        -> Result<Self::Tensor>;

    // Backward ops: gradients with respect to activations only (weights are frozen). Each takes
    // what its forward took plus `dy`, the gradient of the loss with respect to the forward's
    // output, and returns the gradients with respect to the forward's activation inputs.

    /// Input gradient of `matmul(x, w, _)`: `dx [M, K] = dy [M, N] · w [N, K]`.
    fn matmul_backward(&self, dy: &Self::Tensor, w: &Self::Tensor) -> Result<Self::Tensor>;
    /// `gated_sum` backward: `dgates [n, K] = dy · [stacks]ᵀ` (one tensor, the view's columns:
    /// group g's `dy · stacks_gᵀ` from column `Σ_{g' < g} k_g'`) and per group
    /// `dstacks_g [k_g, C] = acc_g + Z_gᵀ · dy`, `acc_g` a gradient gathered so far (None: 0),
    /// which a backend may update in place. With `sampled` the gates are hard-concrete samples,
    /// which have no gradient where they are exactly 0 or 1: there `dgates` is not needed, and a
    /// backend may return 0 (the CPU skips those products).
    #[allow(clippy::type_complexity)]
    fn gated_sum_backward(&self, gates: Gates<'_, Self::Tensor>, stacks: &[&Self::Tensor], dy: &Self::Tensor,
        acc: Vec<Option<Self::Tensor>>, sampled: bool) -> Result<(Self::Tensor, Vec<Self::Tensor>)>;
    /// `layer_norm` backward: with `x̂ = (x − μ)·r`, `r = 1/sqrt(var + eps)`, `g = dy·w`:
    /// `dx = r·(g − mean(g) − x̂·mean(g·x̂))`.
    fn layer_norm_backward(&self, x: &Self::Tensor, w: &Self::Tensor, dy: &Self::Tensor, eps: f32)
        -> Result<Self::Tensor>;
    /// `rms_norm` backward: with `r = 1/sqrt(mean(x²) + eps)`, `g = dy·w`:
    /// `dx = r·g − x·r³·mean(g·x)`.
    fn rms_norm_backward(&self, x: &Self::Tensor, w: &Self::Tensor, dy: &Self::Tensor, eps: f32)
        -> Result<Self::Tensor>;
    /// `gelu_new` backward: `dx = dy · (0.5·(1 + t) + 0.5·x·(1 − t²)·c·(1 + 3·0.044715·x²))`,
    /// `t = tanh(c·(x + 0.044715·x³))`, `c = sqrt(2/π)`.
    fn gelu_new_backward(&self, x: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor>;
    /// `silu_mul` backward: `dgate = dy·up·σ(g)·(1 + g·(1 − σ(g)))`, `dup = dy·silu(g)`.
    fn silu_mul_backward(&self, gate: &Self::Tensor, up: &Self::Tensor, dy: &Self::Tensor)
        -> Result<(Self::Tensor, Self::Tensor)>;
    /// `rope` backward: the rotation is orthogonal, so `dx` is `dy` turned by the opposite angle.
    fn rope_backward(&self, dy: &Self::Tensor, seq: usize, n_heads: usize, head_dim: usize, theta: f32)
        -> Result<Self::Tensor>;
    /// `attn_scores` backward from the probabilities `p` it produced: the softmax gradient
    /// `ds_ij = p_ij·(dp_ij − Σ_j' p_ij'·dp_ij')·scale`, then `dq_i = Σ_j ds_ij·k_j` and
    /// `dk_j = Σ_i ds_ij·q_i`, summed over the query heads that share the kv head. Returns (dq, dk).
    fn attn_scores_backward(&self, q: &Self::Tensor, k: &Self::Tensor, probs: &Self::Tensor, dprobs: &Self::Tensor,
        s: AttnShape) -> Result<(Self::Tensor, Self::Tensor)>;
    /// `attn_apply` backward: `dp_ij = dout_i·v_j` (j ≤ i, else 0) and `dv_j = Σ_i p_ij·dout_i`,
    /// summed over the query heads that share the kv head. Returns (dprobs, dv).
    fn attn_apply_backward(&self, probs: &Self::Tensor, v: &Self::Tensor, dout: &Self::Tensor, s: AttnShape)
        -> Result<(Self::Tensor, Self::Tensor)>;
    /// `mix` backward: `dx[r, c] = m·dy[r, c]` and the mask gradient
    /// `dmask[k, c] = Σ_{r: mask row of r is k} dy[r, c]·(x[r, c] − a)`, shaped like `mask`.
    /// Returns (dx, dmask).
    fn mix_backward(&self, x: &Self::Tensor, mask: &Self::Tensor, mask_rows: RowMap, abl: &Self::Tensor,
        abl_rows: RowMap, dy: &Self::Tensor) -> Result<(Self::Tensor, Self::Tensor)>;
    /// `gather_rows` backward: `out [rows, C]` is zero except `out[ids[i], :] += src[i, :]`.
    fn scatter_rows(&self, src: &Self::Tensor, ids: &[u32], rows: usize) -> Result<Self::Tensor>;
    /// A training loss at `B` rows of last-position logits and its gradient, on the device (one
    /// read brings back the loss with the mask gradients). With `P = softmax(full row)`,
    /// `Q = softmax(logits row)` and the hinge `h = relu(margin − (x_a − x_w))` on rows with a pair
    /// `(a, w)` of answer and wrong token (`None`: no hinge on that row):
    /// `loss = weight/B · Σ_rows (KL(P ‖ Q) + h)`, so
    /// `dlogits[r, j] = weight/B · (Q_j − P_j)`, minus `weight/B` at `a` and plus it at `w` where
    /// `h > 0`. Returns `(dlogits [B, V], terms [B, 4])`, a row of terms being
    /// `(KL(P ‖ Q) (terms with P_j = 0 add 0, clamped at 0), h, logsumexp(logits), logsumexp(full))`.
    fn kl_hinge(&self, logits: &Self::Tensor, full: &Self::Tensor, pairs: &[Option<(u32, u32)>], margin: f32, weight: f32)
        -> Result<(Self::Tensor, Self::Tensor)>;
}
