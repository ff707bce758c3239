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

/// Where a component's mask and ablation value act.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Site {
    /// The heads' z: `[rows, n_heads·head_dim]` (head masks).
    Z,
    /// The MLP hidden activations: `[rows, d_ff]` (neuron masks).
    Hidden,
    /// The attention block's output after its bias: `[rows, d_model]` (block and layer masks).
    AttnOut,
    /// The MLP block's output after its bias: `[rows, d_model]`.
    MlpOut,
}

impl Site {
    pub const ALL: [Site; 4] = [Site::Z, Site::Hidden, Site::AttnOut, Site::MlpOut];
    /// The name `means.safetensors` uses (`z.3`, `mlp_out.0`).
    pub fn name(self) -> &'static str {
        match self {
            Site::Z => "z",
            Site::Hidden => "hidden",
            Site::AttnOut => "attn_out",
            Site::MlpOut => "mlp_out",
        }
    }
    pub fn parse(s: &str) -> Option<Site> {
        Site::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// Ablation values for every site of every layer, on the host (`HostTensor`) or on a backend.
/// Each is `[rows, width]`: one row is the same value at every position (position-independent
/// mean); `seq` rows give row t to position t (per-position mean); `batch*seq` rows give one row
/// per row of the batch (a corrupted run). `None` for a site means zero.
#[derive(Clone, Debug, PartialEq)]
pub struct AblationValues<T = HostTensor> {
    /// `z[l]`: `[rows, n_heads*head_dim]`, values for the heads' z.
    pub z: Vec<Option<T>>,
    /// `hidden[l]`: `[rows, d_ff]`, values for the MLP hidden activations (neurons).
    pub hidden: Vec<Option<T>>,
    /// `attn_out[l]`, `mlp_out[l]`: `[rows, d_model]`, block outputs (for block and layer masks).
    pub attn_out: Vec<Option<T>>,
    pub mlp_out: Vec<Option<T>>,
}

impl<T> Default for AblationValues<T> {
    fn default() -> Self {
        AblationValues { z: Vec::new(), hidden: Vec::new(), attn_out: Vec::new(), mlp_out: Vec::new() }
    }
}

impl<T> AblationValues<T> {
    /// None at every site of `n` layers (zero ablation).
    pub fn none(n: usize) -> Self {
        let v = || (0..n).map(|_| None).collect();
        AblationValues { z: v(), hidden: v(), attn_out: v(), mlp_out: v() }
    }
    pub fn site(&self, s: Site) -> &Vec<Option<T>> {
        match s {
            Site::Z => &self.z,
            Site::Hidden => &self.hidden,
            Site::AttnOut => &self.attn_out,
            Site::MlpOut => &self.mlp_out,
        }
    }
    pub fn site_mut(&mut self, s: Site) -> &mut Vec<Option<T>> {
        match s {
            Site::Z => &mut self.z,
            Site::Hidden => &mut self.hidden,
            Site::AttnOut => &mut self.attn_out,
            Site::MlpOut => &mut self.mlp_out,
        }
    }
    /// The value at `site` of layer `l`, if any.
    pub fn get(&self, site: Site, l: usize) -> Option<&T> {
        self.site(site).get(l).and_then(Option::as_ref)
    }
    /// Every site with its values.
    pub fn sites(&self) -> [(Site, &Vec<Option<T>>); 4] {
        Site::ALL.map(|s| (s, self.site(s)))
    }
    /// Applies `f` to every value, keeping the structure (host → device upload, for one).
    pub fn try_map<U, E>(&self, mut f: impl FnMut(&T) -> Result<U, E>) -> Result<AblationValues<U>, E> {
        let mut m = |v: &Vec<Option<T>>| v.iter().map(|t| t.as_ref().map(&mut f).transpose()).collect::<Result<Vec<_>, E>>();
        Ok(AblationValues { z: m(&self.z)?, hidden: m(&self.hidden)?, attn_out: m(&self.attn_out)?, mlp_out: m(&self.mlp_out)? })
    }
}

impl AblationValues {
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
