//! `carve link`: the share link of a circuit (what the web app's "copy link" makes), or `--decode`
//! a link back into its state as JSON.

use anyhow::{bail, Context, Result};
use carve_core::circuit::{CircuitFile, LinkState, ModelShape};
use carve_core::model::load::{parse_config, weights_sha256};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// A run's circuit.json.
    #[arg(required_unless_present = "decode")]
    circuit: Option<PathBuf>,
    /// Where the page will fetch the model from: the run's pruned `model/` directory as served, or
    /// the full model (then the link carries the circuit's mask over it, see --full).
    #[arg(long)]
    model_url: Option<String>,
    /// The link is to the full model (with the circuit as its mask), not to the pruned model beside
    /// the circuit file.
    #[arg(long)]
    full: bool,
    /// The prompt the page opens with.
    #[arg(long, default_value = "")]
    prompt: String,
    /// The app's address.
    #[arg(long, default_value = "http://127.0.0.1:8080/")]
    base: String,
    /// Print the state a link carries, as JSON.
    #[arg(long, value_name = "LINK", conflicts_with_all = ["circuit", "model_url", "full"])]
    decode: Option<String>,
}

pub fn run(a: Args) -> Result<()> {
    if let Some(link) = &a.decode {
        let s = LinkState::decode(link)?;
        let v = json!({
            "version": carve_core::circuit::link::VERSION,
            "model_url": s.model_url,
            "model_sha256": s.model_sha256,
            "task": s.task,
            "prompt": s.prompt,
            "components": s.mask.len(),
            "kept": s.mask.iter().filter(|&&b| b).count(),
            "mask": s.mask.iter().map(|&b| if b { '1' } else { '0' }).collect::<String>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let path = a.circuit.as_ref().expect("clap requires it without --decode");
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cf = CircuitFile::from_json(&text).with_context(|| path.display().to_string())?;
    let pruned_dir = path.parent().unwrap_or(Path::new(".")).join("model");
    let (sha, mask) = if a.full {
        (cf.model.sha256.clone(), LinkState::mask_for(&cf.shape, &cf.removed))
    } else {
        if !pruned_dir.join("config.json").is_file() {
            bail!("{} has no pruned model beside it ({}): pass --full to link the full model with the circuit's mask", path.display(), pruned_dir.display());
        }
        (weights_sha256(&pruned_dir)?, vec![true; pruned_shape(&pruned_dir)?.components(false).len()])
    };
    let state = LinkState {
        model_url: a.model_url.clone().unwrap_or_default(),
        model_sha256: sha[..16].to_string(),
        task: LinkState::task_label(&cf.task.name),
        prompt: a.prompt.clone(),
        mask,
    };
    let link = state.encode(&a.base);
    // What was made must read back: the same checks the page applies.
    LinkState::decode(&link).context("the link made does not decode (the model URL or prompt is refused)")?;
    println!("{link}");
    Ok(())
}

/// Heads and MLP widths of a pruned model directory, from its config.json.
pub fn pruned_shape(dir: &Path) -> Result<ModelShape> {
    let p = dir.join("config.json");
    let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    let cfg = parse_config(&bytes, &p)?;
    let layers = carve_core::model::load::parse_layout(&bytes, &p, &cfg)?;
    Ok(match layers {
        Some(l) => ModelShape { n_heads: l.iter().map(|x| x.n_heads).collect(), d_ff: l.iter().map(|x| x.d_ff).collect() },
        None => ModelShape { n_heads: vec![cfg.n_heads; cfg.n_layers], d_ff: vec![cfg.d_ff; cfg.n_layers] },
    })
}
