//! `carve link`: the share link of a circuit (what the web app's "copy link" makes), or `--decode`
//! a link back into its state as JSON. An edge circuit's link opens its standalone edge model with
//! the model's edges as the mask (format version 2); a mask too long for a link goes to a file.

use anyhow::{bail, Context, Result};
use carve_core::circuit::{CircuitFile, EdgeLinkState, EdgeMaskFile, Link, LinkState, ModelShape};
use carve_core::model::load::{parse_config, weights_sha256};
use carve_core::prune::edge_bytes::{edge_model_gates, edges_name};
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
    /// Where an edge mask too long for a link is written [default: edge-mask.json beside the
    /// circuit file].
    #[arg(long, value_name = "FILE")]
    mask_out: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    if let Some(link) = &a.decode {
        println!("{}", serde_json::to_string_pretty(&decoded(&Link::decode(link)?))?);
        return Ok(());
    }
    let path = a.circuit.as_ref().expect("clap requires it without --decode");
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cf = CircuitFile::from_json(&text).with_context(|| path.display().to_string())?;
    let pruned_dir = path.parent().unwrap_or(Path::new(".")).join("model");
    if cf.edges.is_some() {
        if a.full {
            bail!(
                "{} is an edge circuit: its link opens the standalone edge model beside it ({}); a link to the full model carries a \
                 component mask, which cannot hold edges",
                path.display(),
                pruned_dir.display()
            );
        }
        return edge_link(&a, path, &cf, &pruned_dir);
    }
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

/// A link's state as JSON: the mask as a string of 0s and 1s (null when an edge link left it out).
fn decoded(link: &Link) -> serde_json::Value {
    let bits = |m: &[bool]| m.iter().map(|&b| if b { '1' } else { '0' }).collect::<String>();
    match link {
        Link::Components(s) => json!({
            "version": carve_core::circuit::link::VERSION,
            "model_url": s.model_url,
            "model_sha256": s.model_sha256,
            "task": s.task,
            "prompt": s.prompt,
            "components": s.mask.len(),
            "kept": s.mask.iter().filter(|&&b| b).count(),
            "mask": bits(&s.mask),
        }),
        Link::Edges(s) => json!({
            "version": carve_core::circuit::edge_link::EDGE_VERSION,
            "model_url": s.model_url,
            "model_sha256": s.model_sha256,
            "task": s.task,
            "prompt": s.prompt,
            "edges": s.n_edges,
            "on": s.edges.as_ref().map(|m| m.iter().filter(|&&b| b).count()),
            "mask": s.edges.as_deref().map(bits),
        }),
    }
}

/// The link of an edge circuit's standalone model, its own edges on; when they make the link too
/// long, the link leaves them out and they go to the mask file.
fn edge_link(a: &Args, path: &Path, cf: &CircuitFile, model: &Path) -> Result<()> {
    let Some(gates) = edge_model_on(model)? else {
        bail!("{} is an edge circuit, and {} is not its standalone edge model (no config.json naming `carve_edges`)", path.display(), model.display());
    };
    let sha = weights_sha256(model)?;
    let state = EdgeLinkState {
        model_url: a.model_url.clone().unwrap_or_default(),
        model_sha256: sha[..16].to_string(),
        task: LinkState::task_label(&cf.task.name),
        prompt: a.prompt.clone(),
        n_edges: gates.len(),
        edges: Some(gates.clone()),
    };
    let (link, whole) = state.encode(&a.base);
    EdgeLinkState::decode(&link).context("the link made does not decode (the model URL or prompt is refused)")?;
    if !whole {
        let out = a.mask_out.clone().unwrap_or_else(|| path.parent().unwrap_or(Path::new(".")).join("edge-mask.json"));
        let file = EdgeMaskFile { model_sha256: sha[..16].to_string(), edges: gates };
        std::fs::write(&out, file.to_json()).with_context(|| format!("writing {}", out.display()))?;
        eprintln!(
            "the mask of {} edges would make a link longer than {} characters: the link leaves it out (it opens the model's own \
             edges) and {} holds it (the page's \"load edge mask\")",
            state.n_edges,
            carve_core::circuit::link::MAX_LINK_CHARS,
            out.display()
        );
    }
    println!("{link}");
    Ok(())
}

/// A standalone edge model's edges (true = on), from the edges file its config.json names; None
/// for a directory that is not an edge model.
pub fn edge_model_on(dir: &Path) -> Result<Option<Vec<bool>>> {
    let p = dir.join("config.json");
    if !p.is_file() {
        return Ok(None);
    }
    let config = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    let Some(name) = edges_name(&config).with_context(|| p.display().to_string())? else { return Ok(None) };
    let ep = dir.join(&name);
    let edges = std::fs::read(&ep).with_context(|| format!("reading {} (the edges file config.json names)", ep.display()))?;
    let (_, gates) = edge_model_gates(&config, &edges).with_context(|| dir.display().to_string())?;
    Ok(Some(gates.iter().map(|&g| g != 0.0).collect()))
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
