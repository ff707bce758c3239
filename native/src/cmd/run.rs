//! `carve run`: a prompt through a model (full or pruned): the top-k next tokens with their
//! probabilities and, with `--max-new-tokens`, a greedy continuation. `--ablate` ablates
//! components first, named as in the source model (`L12H3`, `L12MLP`), also in a pruned model;
//! `--circuit` ablates a circuit's removed components. Ablated components take the circuit's means
//! (`means.safetensors`: beside the circuit file, or in a pruned model's directory) when there are
//! some, else zero, as the web app does.

use crate::backend_pick::{dispatch_at, BackendChoice, Job, PrecisionChoice};
use crate::cmd::tasks::tokenizer;
use crate::source;
use anyhow::{bail, Context, Result};
use carve_core::backend::Backend;
use carve_core::circuit::{means, AblationValues, CircuitFile, Component, Masks, ModelShape, MEANS_FILE};
use carve_core::model::ablation::DeviceAblation;
use carve_core::model::load::weights_sha256;
use carve_core::metrics::{argmax, log_sum_exp};
use carve_core::model::load::LoadedModel;
use carve_core::model::tokenizer::Tokenizer;
use carve_core::model::{check_logits, Batch, ForwardArgs, LogitsAt};
use carve_core::prune::PrunedLayer;
use serde_json::json;
use std::path::Path;

#[derive(clap::Args)]
pub struct Args {
    /// A model directory (full or pruned), a GGUF file, or a hub name.
    #[arg(long)]
    model: String,
    #[arg(long)]
    prompt: String,
    /// Put the model's BOS token in front of the prompt.
    #[arg(long)]
    bos: bool,
    /// How many of the most likely next tokens to print.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Also continue the prompt greedily by this many tokens.
    #[arg(long, default_value_t = 0)]
    max_new_tokens: usize,
    /// Components to ablate, comma-separated (`L3H1,L5MLP`), named as in the source model.
    #[arg(long, value_delimiter = ',')]
    ablate: Vec<String>,
    /// A circuit of this (full) model: its removed components are ablated, with its means.
    #[arg(long)]
    circuit: Option<std::path::PathBuf>,
    /// Ablation values to use (default: the circuit's, or the pruned model's `means.safetensors`).
    #[arg(long, conflicts_with = "zero_ablation")]
    means: Option<std::path::PathBuf>,
    /// Ablate with zeros even where means are at hand.
    #[arg(long)]
    zero_ablation: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// What every matrix product rounds its inputs to: f32, or mixed precision (f16 or bf16
    /// inputs, f32 sums).
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionChoice,
}

pub fn run(a: Args) -> Result<()> {
    let path = source::resolve(&a.model)?;
    let m = source::load(&a.model)?;
    let tok = tokenizer(&m)?;
    let ids = tok.encode(&a.prompt, a.bos)?;
    if ids.is_empty() {
        bail!("the prompt is empty: give some text to continue");
    }
    let mut comps = a.ablate.iter().map(|s| Component::parse(s.trim())).collect::<carve_core::Result<Vec<_>>>()?;
    let mut means_path = a.means.clone();
    if let Some(cp) = &a.circuit {
        let c = circuit_for(cp, &m, &path)?;
        for x in c.removed {
            if !comps.contains(&x) {
                comps.push(x);
            }
        }
        if let (None, Some(v)) = (&means_path, &c.ablation.values) {
            means_path = Some(cp.parent().unwrap_or(Path::new(".")).join(v));
        }
    }
    if means_path.is_none() && path.join(MEANS_FILE).is_file() && pruned_layout(&path)?.is_some() {
        means_path = Some(path.join(MEANS_FILE));
    }
    if a.zero_ablation {
        means_path = None;
    }
    if comps.is_empty() {
        if let Some(p) = &a.means {
            bail!("--means {} given, but nothing is ablated: name components with --ablate or give --circuit", p.display());
        }
    }
    let masks = if comps.is_empty() { None } else { Some(masks_for(&m, &path, &comps)?) };
    let values = match (&means_path, &masks) {
        (Some(p), Some(_)) => Some(read_means(p, &m)?),
        _ => None,
    };
    let job = RunJob { m: &m, ids: ids.clone(), masks: masks.as_ref(), values: values.as_ref(), new_tokens: a.max_new_tokens };
    let out = dispatch_at(a.backend, a.precision.into(), job)?;
    let ablation = match (&masks, &means_path) {
        (None, _) => json!(null),
        (Some(_), Some(p)) => json!({ "kind": "mean", "values": p }),
        (Some(_), None) => json!({ "kind": "zero" }),
    };
    let top = top_k(&out.first, a.top_k.max(1));
    if a.json {
        let tops: Vec<_> = top
            .iter()
            .map(|&(id, p, l)| json!({ "id": id, "token": token_text(tok, id), "prob": p, "logit": l }))
            .collect();
        let v = json!({
            "model": m.source,
            "prompt": a.prompt,
            "ids": ids,
            "ablated": comps,
            "ablation": ablation,
            "top": tops,
            "continuation": { "ids": out.generated, "text": tok.decode(&out.generated)? },
            "backend": out.backend,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:>4}  {:>7}  {:>9}  {:>8}  token", "rank", "id", "prob", "logit");
    for (i, &(id, p, l)) in top.iter().enumerate() {
        println!("{:>4}  {:>7}  {:>9.5}  {:>8.3}  {:?}", i + 1, id, p, l, token_text(tok, id));
    }
    if a.max_new_tokens > 0 {
        println!("\n{}{}", a.prompt, tok.decode(&out.generated)?);
    }
    if masks.is_some() {
        eprintln!("ablated: {} components, {}", comps.len(), means_path.map_or("with zeros".into(), |p| format!("with the means in {}", p.display())));
    }
    eprintln!("backend: {}", out.backend);
    Ok(())
}

/// The circuit file at `p`, checked whole (`CircuitFile::from_json`) and to be of this full
/// model: the weights' sha256, then the shape.
fn circuit_for(p: &Path, m: &LoadedModel, model_path: &Path) -> Result<CircuitFile> {
    if pruned_layout(model_path)?.is_some() {
        bail!("--circuit needs the full model the circuit was found in; {} is already pruned to its circuit", model_path.display());
    }
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let c = CircuitFile::from_json(&text).with_context(|| format!("{}", p.display()))?;
    let fits = |r: carve_core::Result<()>| r.with_context(|| format!("{} does not fit {}", p.display(), m.source));
    fits(c.check_model(&weights_sha256(model_path)?))?;
    fits(c.check_shape(&ModelShape::of(&m.weights.layers, |t| t.shape[0])))?;
    Ok(c)
}

fn read_means(p: &Path, m: &LoadedModel) -> Result<AblationValues> {
    let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    let shape = ModelShape::of(&m.weights.layers, |t| t.shape[0]);
    means::from_bytes(&bytes, &shape, m.config.head_dim, m.config.d_model).with_context(|| format!("{}", p.display()))
}

fn token_text(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id]).unwrap_or_else(|_| format!("<{id}>"))
}

/// (id, probability, logit) of the k largest logits, largest first.
fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f64, f32)> {
    let lse = log_sum_exp(logits);
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    idx.sort_by(|&x, &y| logits[y as usize].total_cmp(&logits[x as usize]).then(x.cmp(&y)));
    idx.truncate(k);
    idx.into_iter().map(|i| (i, (logits[i as usize] as f64 - lse).exp(), logits[i as usize])).collect()
}

/// Masks with `comps` ablated. In a pruned model, components keep their source names: the layout
/// in its config.json (`carve_layers`) maps them to the layers and heads that remain.
fn masks_for(m: &LoadedModel, path: &Path, comps: &[Component]) -> Result<Masks> {
    let shape = ModelShape::of(&m.weights.layers, |t| t.shape[0]);
    let layout = pruned_layout(path)?;
    let local: Vec<Component> = match &layout {
        None => comps.to_vec(),
        Some(layers) => comps.iter().map(|&c| to_local(layers, c)).collect::<Result<_>>()?,
    };
    Ok(shape.masks_without(&local)?)
}

pub fn pruned_layout(path: &Path) -> Result<Option<Vec<PrunedLayer>>> {
    let p = path.join("config.json");
    if !path.is_dir() || !p.is_file() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p)?).with_context(|| format!("{}: invalid JSON", p.display()))?;
    match v.get("carve_layers") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(l) => Ok(Some(serde_json::from_value(l.clone()).with_context(|| format!("{}: `carve_layers`", p.display()))?)),
    }
}

fn to_local(layers: &[PrunedLayer], c: Component) -> Result<Component> {
    let gone = || anyhow::anyhow!("{c} is not in this pruned model (it was removed from the circuit)");
    let (i, l) = layers.iter().enumerate().find(|(_, l)| l.source_layer == c.layer()).ok_or_else(gone)?;
    Ok(match c {
        Component::Head { head, .. } => Component::Head { layer: i, head: l.heads.iter().position(|&h| h == head).ok_or_else(gone)? },
        Component::Mlp { .. } if l.d_ff > 0 => Component::Mlp { layer: i },
        Component::Neuron { neuron, .. } => {
            let n = match &l.neurons {
                Some(v) => v.iter().position(|&x| x == neuron).ok_or_else(gone)?,
                None if neuron < l.d_ff => neuron,
                None => return Err(gone()),
            };
            Component::Neuron { layer: i, neuron: n }
        }
        Component::Mlp { .. } => return Err(gone()),
    })
}

struct RunOut {
    first: Vec<f32>,
    generated: Vec<u32>,
    backend: String,
}

struct RunJob<'a> {
    m: &'a LoadedModel,
    ids: Vec<u32>,
    masks: Option<&'a Masks>,
    values: Option<&'a AblationValues>,
    new_tokens: usize,
}

impl Job for RunJob<'_> {
    type Out = RunOut;
    fn run<B: Backend>(self, be: &B) -> Result<RunOut> {
        let model = self.m.upload(be)?;
        let ablation = self.values.map(|v| DeviceAblation::upload(be, v)).transpose()?;
        let last = |ids: &[u32]| -> Result<Vec<f32>> {
            let batch = Batch::new(&[ids.to_vec()], &model.config)?;
            let args = ForwardArgs { masks: self.masks, ablation: ablation.as_ref(), logits: LogitsAt::Last, ..ForwardArgs::default() };
            let out = model.forward(be, &batch, &args)?;
            let logits = pollster::block_on(be.read(out.logits.as_ref().context("no logits")?))?;
            pollster::block_on(check_logits(&model, be, &batch, &args, &logits))?;
            Ok(logits.data)
        };
        let first = last(&self.ids)?;
        let mut seq = self.ids.clone();
        let mut generated = Vec::new();
        let mut logits = first.clone();
        for i in 0..self.new_tokens {
            let next = argmax(&logits) as u32;
            generated.push(next);
            seq.push(next);
            let done = i + 1 == self.new_tokens || Some(next) == self.m.config.eos_token_id || seq.len() >= self.m.config.n_ctx;
            if done {
                break;
            }
            logits = last(&seq)?;
        }
        Ok(RunOut { first, generated, backend: be.describe() })
    }
}
