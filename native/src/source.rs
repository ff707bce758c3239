//! `--model`: a directory, a GGUF file, or a hub name (`gpt2`, `HuggingFaceTB/SmolLM2-135M`)
//! found in the Hugging Face cache or, where a network allows, downloaded into it.

use anyhow::{anyhow, Context, Result};
use carve_core::model::load::{load_path, resolve_hub_cache, LoadedModel};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub fn load(spec: &str) -> Result<LoadedModel> {
    let t = Instant::now();
    let path = resolve(spec)?;
    let m = load_path(&path).with_context(|| format!("loading {}", path.display()))?;
    eprintln!("loaded {} in {:.1} s", path.display(), t.elapsed().as_secs_f32());
    Ok(m)
}

pub fn resolve(spec: &str) -> Result<PathBuf> {
    let p = Path::new(spec);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    let looks_like_path = spec.ends_with(".gguf") || spec.starts_with('.') || spec.starts_with('/') || spec.contains(std::path::MAIN_SEPARATOR) && spec.matches('/').count() > 1;
    if looks_like_path {
        return Err(anyhow!("{spec}: no such file or directory"));
    }
    match resolve_hub_cache(spec) {
        Ok(dir) => Ok(dir),
        Err(cache_err) => download(spec).map_err(|dl| {
            // The client repeats its cause chain; its first line says enough (e.g. no DNS).
            let dl = dl.to_string();
            let first = dl.split(": ").take(3).collect::<Vec<_>>().join(": ");
            anyhow!("{cache_err}\n(downloading it failed too: {first})")
        }),
    }
}

/// Fetches config.json, the weights and tokenizer.json into the standard cache.
fn download(name: &str) -> Result<PathBuf> {
    let api = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true).build()?;
    let repo = api.model(name.to_string());
    let config = repo.get("config.json")?;
    match repo.get("model.safetensors") {
        Ok(_) => {}
        Err(_) => {
            let index = repo.get("model.safetensors.index.json")?;
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&index)?)?;
            let mut files: Vec<&str> = v["weight_map"].as_object().into_iter().flatten().filter_map(|(_, f)| f.as_str()).collect();
            files.sort();
            files.dedup();
            for f in files {
                repo.get(f)?;
            }
        }
    }
    let _ = repo.get("tokenizer.json");
    Ok(config.parent().expect("a file in the cache has a folder").to_path_buf())
}
