//! `carve info`: what a model is, and where it would run.

use crate::backend_pick::auto_choice;
use crate::cmd::run::pruned_layout;
use crate::source;
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// A model directory, a GGUF file, or a hub name.
    #[arg(long)]
    model: String,
}

pub fn run(a: Args) -> Result<()> {
    let path = source::resolve(&a.model)?;
    let m = source::load(&a.model)?;
    let c = &m.config;
    let (all, non_emb) = m.weights.param_counts();
    let row = |k: &str, v: String| println!("{k:<22} {v}");
    row("model", m.source.clone());
    row("architecture", c.arch.name().to_string());
    row("layers", c.n_layers.to_string());
    row("heads / kv heads", format!("{} / {}", c.n_heads, c.n_kv_heads));
    row("head dim", c.head_dim.to_string());
    row("d_model", c.d_model.to_string());
    row("d_ff", c.d_ff.to_string());
    row("vocab", c.vocab.to_string());
    row("context", c.n_ctx.to_string());
    if c.arch == carve_core::model::Arch::Llama {
        row("rope theta", c.rope_theta.to_string());
    }
    row("tied embeddings", c.tied_embeddings.to_string());
    row("parameters", format!("{} ({:.1} M)", all, all as f64 / 1e6));
    row("  non-embedding", format!("{} ({:.1} M)", non_emb, non_emb as f64 / 1e6));
    row("tokenizer", match &m.tokenizer {
        Some(t) => t.kind.clone(),
        None => "none (no tokenizer.json: give token ids)".into(),
    });
    row("backend (auto)", auto_choice().1);
    if let Some(layers) = pruned_layout(&path)? {
        let heads: usize = layers.iter().map(|l| l.n_heads).sum();
        println!("\npruned by carve: {} layers, {heads} heads, {} MLPs kept", layers.len(), layers.iter().filter(|l| l.d_ff > 0).count());
        println!("{:<6} {:<8} {:>6} {:>9} {:>6}  heads kept", "layer", "source", "heads", "kv heads", "d_ff");
        for (i, l) in layers.iter().enumerate() {
            let names: Vec<String> = l.heads.iter().map(|h| format!("L{}H{h}", l.source_layer)).collect();
            println!("{i:<6} {:<8} {:>6} {:>9} {:>6}  {}", format!("L{}", l.source_layer), l.n_heads, l.n_kv_heads, l.d_ff, names.join(" "));
        }
    }
    Ok(())
}
