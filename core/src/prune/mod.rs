//! The standalone pruned model (DESIGN.md "Outputs"): removed heads' Q/K/V/O slices, removed MLP
//! blocks and neurons, KV heads whose query heads are all gone and layers with nothing left are
//! physically dropped, and each removed component's ablation value is folded into a bias, so the
//! model runs at any prompt length and its logits equal the masked full model's.
//!
//! Where the constants go: a removed component leaves a constant vector added to the residual
//! stream (see `layer`). When its block keeps something, the constant is that block's output bias.
//! When the whole block is gone, the constant moves to the output bias of the last kept block
//! before it (nothing between them reads the residual stream, so adding it earlier changes
//! nothing). When there is no kept block before it, the constant stays where it is as a bias-only
//! attention block (no heads, just `o_proj.bias`): the one case a layer with no weights is kept.
//! Only position-independent ablation values (zero, a plain mean) can be folded; per-position
//! means and resampled values depend on the prompt and are refused.

pub mod edge_bytes;
pub mod edges;
mod gqa;
mod layer;
mod write;

use serde::{Deserialize, Serialize};

use crate::circuit::{Ablation, Masks};
use crate::model::{LayerWeights, ModelConfig, ModelWeights};
use crate::{Error, HostTensor, Result};

pub use edge_bytes::{edge_model_gates, load_hf_bytes_with_edges};
pub use edges::{prune_edges, EdgeModelWeights, EDGES_FILE};
pub use gqa::regroup;
pub use write::{dir_files, write_dir, DirExtras};

/// What a layer of the pruned model holds, as written to `config.json` (`carve_layers`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedLayer {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_ff: usize,
    /// Index of this layer in the source model.
    pub source_layer: usize,
    /// Source index of each query head.
    pub heads: Vec<usize>,
    /// Source index of each KV head (a source KV head may appear more than once, see `regroup`).
    pub kv_heads: Vec<usize>,
    /// Source index of each MLP neuron, when some were removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neurons: Option<Vec<usize>>,
}

pub struct PrunedModel {
    /// The source config with `n_layers` set to the kept layers; per-layer counts are in `layers`.
    pub config: ModelConfig,
    pub weights: ModelWeights<HostTensor>,
    pub layers: Vec<PrunedLayer>,
    /// Source layers with nothing left, dropped.
    pub removed_layers: Vec<usize>,
    /// An edge circuit's edges on this model (`edges`); None for a node circuit.
    pub edges: Option<EdgeModelWeights>,
}

/// Which block of a new layer last wrote to the residual stream.
#[derive(Clone, Copy)]
enum Writer {
    Attn(usize),
    Mlp(usize),
}

/// A new layer while constants are being placed; biases summed in f64.
struct Building {
    lw: LayerWeights<HostTensor>,
    info: PrunedLayer,
    bo: Option<Vec<f64>>,
    b_down: Option<Vec<f64>>,
}

/// Prunes `weights` to the components that `masks` keeps (every mask 0 or 1), folding the
/// ablation values of the removed ones.
pub fn prune(config: &ModelConfig, weights: &ModelWeights<HostTensor>, masks: &Masks, ablation: &Ablation) -> Result<PrunedModel> {
    check_masks(weights, masks)?;
    let values = match ablation {
        Ablation::Zero => None,
        Ablation::Given(v) => Some(v),
    };
    let (hd, d) = (config.head_dim, config.d_model);
    let mut out: Vec<Building> = Vec::new();
    let mut removed_layers = Vec::new();
    let mut last: Option<Writer> = None;
    for (l, lw) in weights.layers.iter().enumerate() {
        let a = layer::attention(lw, masks, values, l, hd, d)?;
        let m = layer::mlp(lw, masks, values, l, d)?;
        let (has_heads, has_neurons) = (!a.heads.is_empty(), !m.neurons.is_empty());
        let (a_bias, m_bias) = (a.bias.clone(), m.bias.clone());
        out.push(build(lw, l, a, m));
        let k = out.len() - 1;
        if has_heads {
            last = Some(Writer::Attn(k));
        } else if let Some(c) = a_bias {
            place(&mut out, &mut last, k, c);
        }
        if has_neurons {
            last = Some(Writer::Mlp(k));
        } else if let Some(c) = m_bias {
            place(&mut out, &mut last, k, c);
        }
        let b = &out[k];
        if b.info.n_heads == 0 && b.info.d_ff == 0 && b.bo.is_none() && b.b_down.is_none() {
            out.pop();
            removed_layers.push(l);
        }
    }
    let mut config = config.clone();
    config.n_layers = out.len();
    let mut layers = Vec::with_capacity(out.len());
    let mut new_weights = ModelWeights { layers: Vec::with_capacity(out.len()), ..weights.clone_without_layers() };
    for b in out {
        let f32s = |v: Vec<f64>| HostTensor::new(vec![v.len()], v.into_iter().map(|x| x as f32).collect());
        let mut lw = b.lw;
        lw.bo = b.bo.map(f32s);
        lw.b_down = b.b_down.map(f32s);
        new_weights.layers.push(lw);
        layers.push(b.info);
    }
    Ok(PrunedModel { config, weights: new_weights, layers, removed_layers, edges: None })
}

/// A removed block's constant `c` goes to the last kept writer, or stays here as a bias-only
/// attention block. An all-zero constant needs no home.
fn place(out: &mut [Building], last: &mut Option<Writer>, k: usize, c: Vec<f64>) {
    if c.iter().all(|&x| x == 0.0) {
        return;
    }
    let add = |b: &mut Option<Vec<f64>>| {
        let b = b.get_or_insert_with(|| vec![0.0; c.len()]);
        b.iter_mut().zip(&c).for_each(|(b, c)| *b += c);
    };
    match *last {
        Some(Writer::Attn(i)) => add(&mut out[i].bo),
        Some(Writer::Mlp(i)) => add(&mut out[i].b_down),
        None => {
            add(&mut out[k].bo);
            *last = Some(Writer::Attn(k));
        }
    }
}

fn build(src: &LayerWeights<HostTensor>, l: usize, a: layer::AttnPart, m: layer::MlpPart) -> Building {
    let d_ff = m.neurons.len();
    let info = PrunedLayer {
        n_heads: a.heads.len(),
        n_kv_heads: a.kv_heads.len(),
        d_ff,
        source_layer: l,
        neurons: (d_ff > 0 && d_ff < src.w_up.shape[0]).then(|| m.neurons.clone()),
        heads: a.heads,
        kv_heads: a.kv_heads,
    };
    let lw = LayerWeights {
        n_heads: info.n_heads,
        n_kv_heads: info.n_kv_heads,
        ln1_w: src.ln1_w.clone(),
        ln1_b: src.ln1_b.clone(),
        wq: a.wq,
        bq: a.bq,
        wk: a.wk,
        bk: a.bk,
        wv: a.wv,
        bv: a.bv,
        wo: a.wo,
        bo: None,
        ln2_w: src.ln2_w.clone(),
        ln2_b: src.ln2_b.clone(),
        w_gate: m.w_gate,
        w_up: m.w_up,
        b_up: m.b_up,
        w_down: m.w_down,
        b_down: None,
    };
    // Biases of kept blocks; a removed block's constant is placed by the caller.
    let bo = if info.n_heads > 0 { a.bias } else { None };
    let b_down = if d_ff > 0 { m.bias } else { None };
    Building { lw, info, bo, b_down }
}

fn check_masks(w: &ModelWeights<HostTensor>, m: &Masks) -> Result<()> {
    let n = w.layers.len();
    let fits = m.n_layers() == n
        && m.attn.len() == n
        && m.mlp.len() == n
        && m.heads.len() == n
        && m.neurons.len() == n
        && w.layers.iter().enumerate().all(|(l, lw)| m.heads[l].len() == lw.n_heads && m.neurons[l].len() == lw.w_up.shape[0]);
    if !fits {
        return Err(Error::Input(format!("the masks do not fit the model's {n} layers and their heads and neurons")));
    }
    let all = m.heads.iter().chain(&m.neurons).flatten().chain(&m.attn).chain(&m.mlp).chain(&m.layers);
    if let Some(x) = all.into_iter().find(|&&x| x != 0.0 && x != 1.0) {
        return Err(Error::Input(format!("pruning needs masks of 0 or 1; found {x}")));
    }
    Ok(())
}

trait WithoutLayers {
    fn clone_without_layers(&self) -> Self;
}

impl WithoutLayers for ModelWeights<HostTensor> {
    /// Embeddings, final norm and head, without cloning the layers.
    fn clone_without_layers(&self) -> Self {
        ModelWeights {
            wte: self.wte.clone(),
            wpe: self.wpe.clone(),
            layers: Vec::new(),
            ln_f_w: self.ln_f_w.clone(),
            ln_f_b: self.ln_f_b.clone(),
            lm_head: self.lm_head.clone(),
        }
    }
}
