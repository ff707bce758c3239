//! `carve grad`: the loss and its gradient with respect to every mask, at the mask values given.
//! The loss is the mean over prompts of KL(P_full ‖ P_masked) at each prompt's last position,
//! P_full the forward with every mask at 1. It is how anyone checks carve's backward against
//! their own autograd.

use crate::backend_pick::{dispatch, BackendChoice, Job};
use crate::source;
use anyhow::{bail, Context, Result};
use carve_core::backend::Backend;
use carve_core::circuit::{means, Masks, ModelShape};
use carve_core::metrics::loss::kl_mean;
use carve_core::model::ablation::DeviceAblation;
use carve_core::model::load::LoadedModel;
use carve_core::model::Batch;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const FORMAT: &str = "carve-grad";
const KINDS: [&str; 5] = ["heads", "attn", "mlp", "neurons", "layers"];

#[derive(clap::Args)]
pub struct Args {
    /// A model directory, a GGUF file, or a hub name.
    #[arg(long)]
    model: String,
    /// A JSON file with a list of lists of token ids (prompts may differ in length).
    #[arg(long)]
    token_ids: PathBuf,
    /// Mask values in [0, 1]: f32 tensors `heads` [L, H], `attn` [L], `mlp` [L], `neurons` [L, d_ff],
    /// `layers` [L]; a kind left out is 1 everywhere.
    #[arg(long)]
    masks: PathBuf,
    /// Ablation values as `carve extract` writes them (means.safetensors); zero without.
    #[arg(long)]
    means: Option<PathBuf>,
    /// Where to write `loss` and `grad.heads`, `grad.attn`, `grad.mlp`, `grad.neurons`, `grad.layers`.
    #[arg(long)]
    out: PathBuf,
    /// Replace --out when it is a file `carve grad` wrote.
    #[arg(long)]
    force: bool,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
}

pub fn run(a: Args) -> Result<()> {
    check_out(&a.out, a.force)?;
    let m = source::load(&a.model)?;
    let text = std::fs::read_to_string(&a.token_ids).with_context(|| format!("reading {}", a.token_ids.display()))?;
    let prompts: Vec<Vec<u32>> = serde_json::from_str(&text)
        .with_context(|| format!("{}: expected a JSON list of lists of token ids", a.token_ids.display()))?;
    Batch::new(&prompts, &m.config).with_context(|| format!("{}", a.token_ids.display()))?;
    let shape = ModelShape::of(&m.weights.layers, |t| t.shape[0]);
    let masks = read_masks(&a.masks, &shape)?;
    let values = match &a.means {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let d_model = m.weights.wte.shape[1];
            Some(means::from_bytes(&bytes, &shape, m.config.head_dim, d_model).with_context(|| format!("{}", p.display()))?)
        }
        None => None,
    };
    let (loss, g) = dispatch(a.backend, Grad { m: &m, prompts: &prompts, masks: &masks, values: values.as_ref() })?;
    write(&a.out, loss, &g)?;
    println!("loss (mean KL at the last position, {} prompts): {loss:.9}", prompts.len());
    for (k, v) in KINDS.iter().zip(flat(&g)) {
        let max = v.iter().fold(0f32, |a, x| a.max(x.abs()));
        println!("grad.{k:<8} {:>6} values, max |g| {max:.3e}", v.len());
    }
    println!("wrote {}", a.out.display());
    Ok(())
}

/// Refuses to replace a file carve grad did not write.
fn check_out(out: &Path, force: bool) -> Result<()> {
    if out.symlink_metadata().is_err() {
        return Ok(());
    }
    let ours = std::fs::read(out).ok().and_then(|b| {
        let (_, meta) = SafeTensors::read_metadata(&b).ok()?;
        meta.metadata().as_ref()?.get("format").map(|f| f == FORMAT)
    });
    match (ours, force) {
        (Some(true), true) => Ok(()),
        (Some(true), false) => bail!("{} already exists: give --force to replace it", out.display()),
        _ => bail!("{} exists and is not a file carve grad wrote: choose another --out", out.display()),
    }
}

/// Reads and checks the masks: known names only, f32, the model's shapes, values in [0, 1].
fn read_masks(path: &Path, shape: &ModelShape) -> Result<Masks> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes).with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let l = shape.n_layers();
    let mut m = Masks::ones(&shape.n_heads, &shape.d_ff);
    let mut seen: HashMap<String, ()> = HashMap::new();
    for (name, v) in st.tensors() {
        let p = path.display();
        if !KINDS.contains(&name.as_str()) {
            bail!("{p}: tensor `{name}` is not a mask; the masks are {}", KINDS.join(", "));
        }
        if v.dtype() != Dtype::F32 {
            bail!("{p}: `{name}` is {:?}; masks are F32", v.dtype());
        }
        let want: Vec<usize> = match name.as_str() {
            "heads" => vec![l, shape.n_heads.iter().copied().max().unwrap_or(0)],
            "neurons" => vec![l, shape.d_ff.iter().copied().max().unwrap_or(0)],
            _ => vec![l],
        };
        if v.shape() != want {
            bail!("{p}: `{name}` has shape {:?}; this model needs {want:?}", v.shape());
        }
        let data: Vec<f32> = v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if let Some((i, x)) = data.iter().enumerate().find(|(_, x)| !(x.is_finite() && (0.0..=1.0).contains(*x))) {
            bail!("{p}: `{name}` value {i} is {x}; masks are numbers in [0, 1]");
        }
        let cols = want.get(1).copied().unwrap_or(1);
        for layer in 0..l {
            let row = &data[layer * cols..(layer + 1) * cols];
            match name.as_str() {
                "heads" => m.heads[layer].copy_from_slice(&row[..shape.n_heads[layer]]),
                "neurons" => m.neurons[layer].copy_from_slice(&row[..shape.d_ff[layer]]),
                "attn" => m.attn[layer] = row[0],
                "mlp" => m.mlp[layer] = row[0],
                _ => m.layers[layer] = row[0],
            }
        }
        seen.insert(name, ());
    }
    let missing: Vec<&str> = KINDS.iter().copied().filter(|k| !seen.contains_key(*k)).collect();
    if !missing.is_empty() {
        eprintln!("note    {} not in {}: 1 everywhere", missing.join(", "), path.display());
    }
    Ok(m)
}

fn flat(g: &Masks) -> [Vec<f32>; 5] {
    [g.heads.concat(), g.attn.clone(), g.mlp.clone(), g.neurons.concat(), g.layers.clone()]
}

struct Grad<'a> {
    m: &'a LoadedModel,
    prompts: &'a [Vec<u32>],
    masks: &'a Masks,
    values: Option<&'a carve_core::circuit::AblationValues>,
}

impl Job for Grad<'_> {
    type Out = (f64, Masks);
    fn run<B: Backend>(self, be: &B) -> Result<(f64, Masks)> {
        let model = self.m.upload(be)?;
        let batch = Batch::new(self.prompts, &self.m.config)?;
        let dev = self.values.map(|v| DeviceAblation::upload(be, v)).transpose()?;
        let shape = ModelShape::of(&self.m.weights.layers, |t| t.shape[0]);
        let ones = Masks::ones(&shape.n_heads, &shape.d_ff);
        let full = model.forward_tape(be, &batch, &ones, None)?;
        let full = pollster::block_on(be.read(&full.logits))?;
        let tape = model.forward_tape(be, &batch, self.masks, dev.as_ref())?;
        let logits = pollster::block_on(be.read(&tape.logits))?;
        if let Some(x) = full.data.iter().chain(&logits.data).find(|x| !x.is_finite()) {
            bail!("the forward gave a logit of {x}: the loss cannot be measured");
        }
        let lg = kl_mean(&full, &logits)?;
        let g = pollster::block_on(model.backward(be, &batch, tape, &lg.dlogits_tensor(&logits.shape)))?;
        Ok((lg.loss, g))
    }
}

/// Gradients shaped like the masks (`heads` and `neurons` padded to the widest layer with 0).
fn write(path: &Path, loss: f64, g: &Masks) -> Result<()> {
    let l = g.layers.len();
    let pad = |rows: &[Vec<f32>]| {
        let w = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut v = vec![0f32; l * w];
        for (r, row) in rows.iter().enumerate() {
            v[r * w..r * w + row.len()].copy_from_slice(row);
        }
        (v, w)
    };
    let (heads, hw) = pad(&g.heads);
    let (neurons, nw) = pad(&g.neurons);
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = vec![
        ("loss".into(), vec![1], bytes(&[loss as f32])),
        ("grad.heads".into(), vec![l, hw], bytes(&heads)),
        ("grad.attn".into(), vec![l], bytes(&g.attn)),
        ("grad.mlp".into(), vec![l], bytes(&g.mlp)),
        ("grad.neurons".into(), vec![l, nw], bytes(&neurons)),
        ("grad.layers".into(), vec![l], bytes(&g.layers)),
    ];
    let views = tensors
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([("format".to_string(), FORMAT.to_string()), ("loss_f64".to_string(), format!("{loss:e}"))]);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    safetensors::serialize_to_file(views, Some(meta), path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
