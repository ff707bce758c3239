//! Masks and ablation values for every component of a model.
//!
//! A component contributes `m·out + (1−m)·a`. Head outputs are linear in the head's value-weighted
//! sum `z_h` (its slice of the attention output before W_O), so a head's mask and ablation act on
//! `z_h`, and `a` is measured there: mixing `z_h` then applying W_O equals mixing the head's output
//! after its slice of W_O, without ever materialising per-head outputs. Neurons act on the MLP's
//! hidden activations likewise. Blocks and layers act on the block outputs (after the output bias).

use crate::HostTensor;

/// Where a component's ablation value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Ablation {
    /// a = 0.
    Zero,
    /// Values measured elsewhere (a mean over a patching set, or a corrupted run).
    Given(AblationValues),
}

/// Measured ablation values for every site of every layer. Each is `[rows, width]`: one row is
/// the same value at every position (position-independent mean); `seq` rows give row t to
/// position t (per-position mean); `batch*seq` rows give one row per row of the batch (a
/// corrupted run). `None` for a site means zero.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct AblationValues {
    /// `z[l]`: `[rows, n_heads*head_dim]`, values for the heads' z.
    pub z: Vec<Option<HostTensor>>,
    /// `hidden[l]`: `[rows, d_ff]`, values for the MLP hidden activations (neurons).
    pub hidden: Vec<Option<HostTensor>>,
    /// `attn_out[l]`, `mlp_out[l]`: `[rows, d_model]`, block outputs (for block and layer masks).
    pub attn_out: Vec<Option<HostTensor>>,
    pub mlp_out: Vec<Option<HostTensor>>,
}

impl AblationValues {
    /// Every site with its name, as `means.safetensors` names them.
    pub fn sites(&self) -> [(&'static str, &Vec<Option<HostTensor>>); 4] {
        [("z", &self.z), ("hidden", &self.hidden), ("attn_out", &self.attn_out), ("mlp_out", &self.mlp_out)]
    }

    /// One row everywhere (`[1, width]`, width 0 included: a layer without heads): the same value
    /// at every position, so the values fold into a pruned model and can be shipped beside a circuit.
    pub fn position_independent(&self) -> bool {
        self.sites().iter().flat_map(|(_, ts)| ts.iter().flatten()).all(|t| matches!(t.shape.as_slice(), [1, _]))
    }
}

/// One mask per component; 1 keeps, 0 ablates, values between interpolate.
#[derive(Clone, Debug, PartialEq)]
pub struct Masks {
    /// `heads[l][h]`
    pub heads: Vec<Vec<f32>>,
    /// `attn[l]`: the whole attention block.
    pub attn: Vec<f32>,
    /// `mlp[l]`: the whole MLP block.
    pub mlp: Vec<f32>,
    /// `neurons[l][n]`
    pub neurons: Vec<Vec<f32>>,
    /// `layers[l]`: multiplies into both block masks of layer l.
    pub layers: Vec<f32>,
}

impl Masks {
    /// Everything kept: the forward is then exactly the plain forward.
    pub fn ones(n_heads: &[usize], d_ff: &[usize]) -> Masks {
        let l = n_heads.len();
        Masks {
            heads: n_heads.iter().map(|&h| vec![1.0; h]).collect(),
            attn: vec![1.0; l],
            mlp: vec![1.0; l],
            neurons: d_ff.iter().map(|&f| vec![1.0; f]).collect(),
            layers: vec![1.0; l],
        }
    }
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }
    pub fn attn_block(&self, l: usize) -> f32 {
        self.attn[l] * self.layers[l]
    }
    pub fn mlp_block(&self, l: usize) -> f32 {
        self.mlp[l] * self.layers[l]
    }
    pub fn heads_all_on(&self, l: usize) -> bool {
        self.heads[l].iter().all(|&m| m == 1.0)
    }
    pub fn neurons_all_on(&self, l: usize) -> bool {
        self.neurons[l].iter().all(|&m| m == 1.0)
    }
}
