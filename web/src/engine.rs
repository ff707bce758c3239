//! What the page computes, over carve-core: a model on WebGPU (or the CPU backend compiled to wasm
//! when the browser has no WebGPU), its circuit, the mask being edited, top-k next tokens and the
//! task's evaluation. No DOM here, so it runs (and is tested) natively as well.
//!
//! The mask is over the model's components, or, for a standalone edge model, over its edges (its
//! own edge layout): then each run takes the mask as the edge forward's gates, and a cut edge
//! carries its writer's value from the model's edges file.

use carve_core::backend::cpu::CpuBackend;
use carve_core::backend::wgpu::{WgpuBackend, WgpuOptions};
use carve_core::backend::Backend;
use carve_core::circuit::{AblationValues, CircuitFile, Component, Masks, ModelShape};
use carve_core::mask::EdgeLayout;
use carve_core::model::ablation::DeviceAblation;
use carve_core::metrics::{evaluate, log_sum_exp, Circuit, CircuitAblation, EdgeGates, EvalOptions, Report};
use carve_core::model::load::LoadedModel;
use carve_core::model::{Batch, ForwardArgs, LogitsAt, Model};
use carve_core::prune::edge_bytes::weights_edge_layout;
use carve_core::prune::PrunedLayer;
use carve_core::tasks::Task;
use carve_core::{Error, Result};

/// A model as the page holds it.
pub struct Session {
    pub loaded: LoadedModel,
    /// sha256 (hex) of the weight bytes as fetched or picked.
    pub sha256: String,
    pub circuit: Option<CircuitFile>,
    /// The test split shipped with a run (`task.json`).
    pub task: Option<Task>,
    /// Source names of a pruned model's layers and heads (`carve_layers`), when it is one.
    pub layout: Option<Vec<PrunedLayer>>,
    pub shape: ModelShape,
    /// The circuit's means (`means.safetensors`, in this model's layout): what ablated components
    /// take. None: zero.
    pub means: Option<AblationValues>,
    /// A standalone edge model's own edge layout: the mask is then over these edges.
    pub edges: Option<EdgeLayout>,
}

impl Session {
    pub fn new(loaded: LoadedModel, sha256: String, circuit: Option<CircuitFile>, task: Option<Task>, layout: Option<Vec<PrunedLayer>>) -> Session {
        let shape = ModelShape::of(&loaded.weights.layers, |t| t.shape[0]);
        // The loader has read the edges against this very layout.
        let edges = loaded.edges.as_ref().and_then(|_| weights_edge_layout(&loaded.weights).ok());
        Session { loaded, sha256, circuit, task, layout, shape, means: None, edges }
    }

    /// The mask's length: the model's edges for a standalone edge model, else its components.
    pub fn mask_len(&self) -> usize {
        match &self.edges {
            Some(l) => l.n_edges(),
            None => self.components().len(),
        }
    }

    /// A full model with a circuit: the page shows the circuit and the full model side by side.
    pub fn side_by_side(&self) -> bool {
        self.layout.is_none() && self.circuit.is_some()
    }

    /// Reads `means.safetensors` for this model.
    pub fn set_means(&mut self, bytes: &[u8]) -> Result<()> {
        let c = &self.loaded.config;
        self.means = Some(carve_core::circuit::means::from_bytes(bytes, &self.shape, c.head_dim, c.d_model)?);
        Ok(())
    }

    /// What ablated components take, in words; with a warning when the circuit was found with
    /// means that did not come along.
    pub fn ablation_note(&self) -> (String, Option<String>) {
        if let Some(e) = &self.loaded.edges {
            let mean = self.circuit.as_ref().is_some_and(|c| c.ablation.kind == "mean");
            return match (&e.writer_values, mean) {
                (Some(_), _) => ("a cut edge carries its writer's mean (edges.safetensors)".into(), None),
                (None, false) => ("a cut edge carries zero".into(), None),
                (None, true) => (
                    "a cut edge carries zero".into(),
                    Some(
                        "this edge model's edges.safetensors has no writer values: an edge cut here carries zero, not its writer's \
                         mean as in the circuit"
                            .into(),
                    ),
                ),
            };
        }
        if self.means.is_some() {
            return ("mean ablation (means.safetensors)".into(), None);
        }
        let warn = match self.circuit.as_ref().map(|c| c.ablation.kind.as_str()) {
            None | Some("zero") => None,
            // A pruned model has its circuit's values folded in; only what is toggled here differs.
            Some(kind) if self.layout.is_some() => Some(format!(
                "components toggled off here are ablated with zeros, not with this circuit's {kind} values \
                 (no means.safetensors beside the model)"
            )),
            Some("mean") => Some(
                "this circuit was found with mean ablation, but its means.safetensors was not loaded: ablating with zeros, \
                 so the circuit's outputs differ from the extracted circuit's (load means.safetensors with circuit.json)"
                    .to_string(),
            ),
            Some(kind) => Some(format!(
                "this circuit was found with {kind} ablation, whose values depend on each prompt and cannot be shipped: \
                 the page ablates with zeros, so its outputs differ from the extracted circuit's"
            )),
        };
        ("zero ablation".into(), warn)
    }

    /// Components of the loaded model in link/mask order (heads, then the MLP, layer by layer).
    pub fn components(&self) -> Vec<Component> {
        self.shape.components(false)
    }

    /// A component's name in the source model (`L12H3`), also in a pruned model.
    pub fn source_name(&self, c: Component) -> String {
        let Some(layers) = &self.layout else { return c.to_string() };
        let Some(l) = layers.get(c.layer()) else { return c.to_string() };
        match c {
            Component::Head { head, .. } => format!("L{}H{}", l.source_layer, l.heads.get(head).copied().unwrap_or(head)),
            Component::Mlp { .. } => format!("L{}MLP", l.source_layer),
            Component::Neuron { neuron, .. } => format!("L{}N{neuron}", l.source_layer),
        }
    }

    /// The starting mask: a full model with a circuit starts at the circuit, a standalone edge
    /// model at its own edges; anything else with every component on.
    pub fn circuit_mask(&self) -> Vec<bool> {
        if let Some(e) = &self.loaded.edges {
            return e.gates.iter().map(|&g| g != 0.0).collect();
        }
        let comps = self.components();
        match &self.circuit {
            Some(c) if self.layout.is_none() && c.shape == self.shape => comps.iter().map(|x| !c.removed.contains(x)).collect(),
            _ => vec![true; comps.len()],
        }
    }

    pub fn masks(&self, mask: &[bool]) -> Result<Masks> {
        let comps = self.components();
        if comps.len() != mask.len() {
            return Err(Error::Input(format!("a mask of {} components for a model of {}", mask.len(), comps.len())));
        }
        let removed: Vec<Component> = comps.into_iter().zip(mask).filter(|(_, &on)| !on).map(|(c, _)| c).collect();
        self.shape.masks_without(&removed)
    }
}

/// The model on a backend, with its ablation values uploaded once.
pub struct On<B: Backend> {
    be: B,
    m: Model<B>,
    values: Option<DeviceAblation<B>>,
}

impl<B: Backend> On<B> {
    fn new(be: B, s: &Session) -> Result<On<B>> {
        let m = s.loaded.upload(&be)?;
        let values = s.means.as_ref().map(|v| DeviceAblation::upload(&be, v)).transpose()?;
        Ok(On { be, m, values })
    }
}

pub enum Engine {
    Gpu(On<WgpuBackend>),
    Cpu(On<CpuBackend>),
}

/// One next-token candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Next {
    pub id: u32,
    pub token: String,
    pub prob: f64,
}

impl Engine {
    /// WebGPU when the browser has it (and `gpu` is asked for), else the CPU backend; the string
    /// says which and why.
    pub async fn start(s: &Session, gpu: bool) -> Result<(Engine, String)> {
        if gpu {
            match WgpuBackend::new(WgpuOptions { prefer_hardware: true, ..WgpuOptions::default() }).await {
                Ok(be) => {
                    // In a browser the adapter often has no name to give.
                    let d = be.describe();
                    let d = if d.trim_end().ends_with(':') { "WebGPU".to_string() } else { format!("WebGPU ({d})") };
                    return Ok((Engine::Gpu(On::new(be, s)?), d));
                }
                Err(e) => return Ok((Engine::Cpu(On::new(CpuBackend::new(), s)?), format!("CPU (wasm): no WebGPU here ({e})"))),
            }
        }
        Ok((Engine::Cpu(On::new(CpuBackend::new(), s)?), "CPU".into()))
    }

    pub async fn top_k(&self, s: &Session, ids: &[u32], mask: &[bool], k: usize) -> Result<Vec<Next>> {
        let logits = if s.edges.is_some() {
            let gates = gates(s, mask)?;
            match self {
                Engine::Gpu(on) => edge_logits(on, ids, &gates).await?,
                Engine::Cpu(on) => edge_logits(on, ids, &gates).await?,
            }
        } else {
            let masks = s.masks(mask)?;
            match self {
                Engine::Gpu(on) => last_logits(on, ids, &masks).await?,
                Engine::Cpu(on) => last_logits(on, ids, &masks).await?,
            }
        };
        Ok(top_k(&logits, k)
            .into_iter()
            .map(|(id, prob)| Next { id, prob, token: token_text(s, id) })
            .collect())
    }

    /// The shipped test split through the model with `mask`, ablated as the toggles are.
    pub async fn evaluate(&self, s: &Session, mask: &[bool]) -> Result<Report> {
        let task = s.task.as_ref().ok_or_else(|| Error::Input("this model came without task.json: nothing to evaluate".into()))?;
        let opts = EvalOptions { batch_size: 16 };
        if s.edges.is_some() {
            let (gates, masks) = (gates(s, mask)?, s.shape.masks_without(&[])?);
            return match self {
                Engine::Gpu(on) => eval_edges(on, task, &masks, &gates, &opts).await,
                Engine::Cpu(on) => eval_edges(on, task, &masks, &gates, &opts).await,
            };
        }
        let masks = s.masks(mask)?;
        match self {
            Engine::Gpu(on) => eval(on, task, &masks, &opts).await,
            Engine::Cpu(on) => eval(on, task, &masks, &opts).await,
        }
    }
}

/// An edge mask as the edge forward's gates.
fn gates(s: &Session, mask: &[bool]) -> Result<Vec<f32>> {
    let n = s.mask_len();
    if mask.len() != n {
        return Err(Error::Input(format!("an edge mask of {} edges for a model of {n}", mask.len())));
    }
    Ok(mask.iter().map(|&on| if on { 1.0 } else { 0.0 }).collect())
}

async fn eval<B: Backend>(on: &On<B>, task: &Task, masks: &Masks, opts: &EvalOptions) -> Result<Report> {
    let ablation = match &on.values {
        Some(v) => CircuitAblation::Values(v),
        None => CircuitAblation::Zero,
    };
    let c = Circuit { masks, ablation, edges: None };
    evaluate(&on.m, &on.be, task, &task.examples, Some(&c), opts).await
}

/// The test split through the edge model with `gates`, beside the model as shipped (its own gates).
async fn eval_edges<B: Backend>(on: &On<B>, task: &Task, masks: &Masks, gates: &[f32], opts: &EvalOptions) -> Result<Report> {
    let e = on.m.edges.as_ref().ok_or_else(|| Error::Input("not a standalone edge model".into()))?;
    let eg = EdgeGates { weights: &e.weights, gates, values: e.values.as_deref() };
    let c = Circuit { masks, ablation: CircuitAblation::Zero, edges: Some(eg) };
    evaluate(&on.m, &on.be, task, &task.examples, Some(&c), opts).await
}

/// The last position's logits of a standalone edge model run with `gates`.
async fn edge_logits<B: Backend>(on: &On<B>, ids: &[u32], gates: &[f32]) -> Result<Vec<f32>> {
    let e = on.m.edges.as_ref().ok_or_else(|| Error::Input("not a standalone edge model".into()))?;
    let batch = Batch::new(&[ids.to_vec()], &on.m.config)?;
    let out = on.m.edge_forward(&on.be, &e.weights, &batch, gates, e.values.as_deref(), &batch.last_rows(), false)?;
    Ok(on.be.read(&out.logits).await?.data)
}

async fn last_logits<B: Backend>(on: &On<B>, ids: &[u32], masks: &Masks) -> Result<Vec<f32>> {
    let batch = Batch::new(&[ids.to_vec()], &on.m.config)?;
    let args = ForwardArgs { masks: Some(masks), ablation: on.values.as_ref(), logits: LogitsAt::Last, ..ForwardArgs::default() };
    let out = on.m.forward(&on.be, &batch, &args)?;
    let t = out.logits.ok_or_else(|| Error::Backend("the forward returned no logits".into()))?;
    Ok(on.be.read(&t).await?.data)
}

/// (id, probability) of the k largest logits, largest first (ties: lower id first).
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f64)> {
    let lse = log_sum_exp(logits);
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.into_iter().map(|i| (i, (logits[i as usize] as f64 - lse).exp())).collect()
}

fn token_text(s: &Session, id: u32) -> String {
    s.loaded.tokenizer.as_ref().and_then(|t| t.decode(&[id]).ok()).unwrap_or_else(|| format!("<{id}>"))
}
