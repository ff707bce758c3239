//! Weights in one canonical layout: every matrix `[out, in]` (HF Linear), biases optional, so the
//! forward reads the same structure whatever the source (GPT-2 Conv1D, Llama, GGUF, a pruned model).

use crate::mask::ModelShape;
use crate::HostTensor;

/// One transformer block. Head counts come from the weights, not the config, so a pruned layer with
/// fewer heads (or none: `wq` with 0 rows) runs through the same code.
#[derive(Clone, Debug)]
pub struct LayerWeights<T> {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// Norm before attention (LayerNorm has a bias, RMSNorm has none).
    pub ln1_w: T,
    pub ln1_b: Option<T>,
    pub wq: T, // [n_heads*head_dim, d]
    pub bq: Option<T>,
    pub wk: T, // [n_kv_heads*head_dim, d]
    pub bk: Option<T>,
    pub wv: T,
    pub bv: Option<T>,
    pub wo: T, // [d, n_heads*head_dim]
    pub bo: Option<T>,
    pub ln2_w: T,
    pub ln2_b: Option<T>,
    /// SwiGLU gate (Llama); None for GPT-2.
    pub w_gate: Option<T>, // [d_ff, d]
    pub w_up: T,           // [d_ff, d] (GPT-2 c_fc)
    pub b_up: Option<T>,
    pub w_down: T, // [d, d_ff] (GPT-2 mlp.c_proj)
    pub b_down: Option<T>,
}

#[derive(Clone, Debug)]
pub struct ModelWeights<T> {
    pub wte: T,         // [vocab, d]
    pub wpe: Option<T>, // [n_ctx, d], GPT-2 only
    pub layers: Vec<LayerWeights<T>>,
    pub ln_f_w: T,
    pub ln_f_b: Option<T>,
    /// Unembedding `[vocab, d]`; None when tied to `wte`.
    pub lm_head: Option<T>,
}

impl<T> LayerWeights<T> {
    /// Applies `f` to every tensor, keeping the structure (host → device upload, for one).
    pub fn try_map<U, E>(&self, mut f: impl FnMut(&T) -> Result<U, E>) -> Result<LayerWeights<U>, E> {
        self.try_map_parts(|t, _| f(t))
    }

    /// `try_map`, telling `f` which tensors are the layer's projections (`Part::Product`): the
    /// matrices every forward multiplies by, which a backend may keep in a second layout.
    pub fn try_map_parts<U, E>(&self, mut f: impl FnMut(&T, Part) -> Result<U, E>) -> Result<LayerWeights<U>, E> {
        Ok(LayerWeights {
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            ln1_b: self.ln1_b.as_ref().map(|t| f(t, Part::Other)).transpose()?,
            bq: self.bq.as_ref().map(|t| f(t, Part::Other)).transpose()?,
            bk: self.bk.as_ref().map(|t| f(t, Part::Other)).transpose()?,
            bv: self.bv.as_ref().map(|t| f(t, Part::Other)).transpose()?,
            bo: self.bo.as_ref().map(|t| f(t, Part::Other)).transpose()?,
            ln2_b: self.ln2_b.as_ref().map(|t| f(t, Part::Other)).transpose()?,
            w_gate: self.w_gate.as_ref().map(|t| f(t, Part::Product)).transpose()?,
            b_up: self.b_up.as_ref().map(|t| f(t, Part::Other)).transpose()?,
            b_down: self.b_down.as_ref().map(|t| f(t, Part::Other)).transpose()?,
            ln1_w: f(&self.ln1_w, Part::Other)?,
            wq: f(&self.wq, Part::Product)?,
            wk: f(&self.wk, Part::Product)?,
            wv: f(&self.wv, Part::Product)?,
            wo: f(&self.wo, Part::Product)?,
            ln2_w: f(&self.ln2_w, Part::Other)?,
            w_up: f(&self.w_up, Part::Product)?,
            w_down: f(&self.w_down, Part::Product)?,
        })
    }
}

/// What a weight tensor is to `try_map_parts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// A layer's projection `[out, in]` (W_Q, W_K, W_V, W_O, the MLP's gate, up and down), read
    /// by every forward as `x · wᵀ`.
    Product,
    /// Everything else: embeddings (the tied unembedding among them: it is also a table rows are
    /// gathered from), an unembedding, norms, biases.
    Other,
}

impl<T> ModelWeights<T> {
    pub fn try_map<U, E>(&self, mut f: impl FnMut(&T) -> Result<U, E>) -> Result<ModelWeights<U>, E> {
        self.try_map_parts(|t, _| f(t))
    }

    /// `try_map`, telling `f` which tensors are the layers' projections (`Part`).
    pub fn try_map_parts<U, E>(&self, mut f: impl FnMut(&T, Part) -> Result<U, E>) -> Result<ModelWeights<U>, E> {
        Ok(ModelWeights {
            wte: f(&self.wte, Part::Other)?,
            wpe: self.wpe.as_ref().map(|t| f(t, Part::Other)).transpose()?,
            layers: self.layers.iter().map(|l| l.try_map_parts(&mut f)).collect::<Result<_, E>>()?,
            ln_f_w: f(&self.ln_f_w, Part::Other)?,
            ln_f_b: self.ln_f_b.as_ref().map(|t| f(t, Part::Other)).transpose()?,
            lm_head: self.lm_head.as_ref().map(|t| f(t, Part::Other)).transpose()?,
        })
    }
}

impl ModelWeights<HostTensor> {
    /// Parameter counts: (all, without token and position embeddings). A tied head counts once.
    pub fn param_counts(&self) -> (usize, usize) {
        let mut n = 0usize;
        let _ = self.try_map(|t| -> Result<(), ()> {
            n += t.len();
            Ok(())
        });
        let emb = self.wte.len() + self.wpe.as_ref().map_or(0, |t| t.len());
        (n, n - emb - self.lm_head.as_ref().map_or(0, |t| t.len()))
    }
}

impl ModelShape {
    /// The heads and MLP widths of a model's layers (`d_ff` reads a tensor's rows on its backend).
    pub fn of<T>(layers: &[LayerWeights<T>], d_ff: impl Fn(&T) -> usize) -> ModelShape {
        ModelShape { n_heads: layers.iter().map(|l| l.n_heads).collect(), d_ff: layers.iter().map(|l| d_ff(&l.w_up)).collect() }
    }
}
