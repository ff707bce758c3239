//! The architecture description every loader produces, whatever file it came from.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Learned positions, LayerNorm, GELU-new MLP, biases everywhere.
    Gpt2,
    /// RoPE, RMSNorm, SwiGLU MLP, grouped-query attention.
    Llama,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Gpt2 => "gpt2",
            Arch::Llama => "llama",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layers: usize,
    /// Query heads per layer in the full model (a pruned layer may have fewer: see `LayerWeights`).
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub vocab: usize,
    /// Longest sequence the model takes (n_positions / max_position_embeddings / context_length).
    pub n_ctx: usize,
    pub norm_eps: f32,
    /// RoPE base; unused for GPT-2.
    pub rope_theta: f32,
    pub tied_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}
