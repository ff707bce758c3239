//! Hub names (`gpt2`, `HuggingFaceTB/SmolLM2-135M`) resolved through the standard Hugging Face
//! cache: `<cache>/models--org--name/refs/main` holds a revision, whose files are in
//! `snapshots/<rev>/`. Downloading is the CLI's job; this only finds what is already there.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The hub cache directory: `$HF_HUB_CACHE` (or `$HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` (as `huggingface_hub` does).
pub fn hub_cache_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    // HUGGINGFACE_HUB_CACHE is the older spelling, still honoured by huggingface_hub.
    if let Some(p) = env("HF_HUB_CACHE").or_else(|| env("HUGGINGFACE_HUB_CACHE")) {
        return p;
    }
    let home = env("HF_HOME").unwrap_or_else(|| {
        let cache = env("XDG_CACHE_HOME")
            .unwrap_or_else(|| env("HOME").or_else(|| env("USERPROFILE")).unwrap_or_default().join(".cache"));
        cache.join("huggingface")
    });
    home.join("hub")
}

/// The snapshot directory of hub model `name` in the local cache, or an error saying which files
/// to put where.
pub fn resolve_hub_cache(name: &str) -> Result<PathBuf> {
    resolve_in(&hub_cache_dir(), name)
}

/// `resolve_hub_cache` against an explicit cache directory.
pub fn resolve_in(cache: &Path, name: &str) -> Result<PathBuf> {
    check_name(name)?;
    let repo = cache.join(format!("models--{}", name.replace('/', "--")));
    let snapshot = snapshot_dir(&repo);
    let missing: Vec<&str> = match &snapshot {
        Some(dir) => missing_files(dir),
        None => vec!["config.json", "model.safetensors", "tokenizer.json"],
    };
    match snapshot {
        Some(dir) if missing.is_empty() => Ok(dir),
        _ => Err(not_found(name, &repo, snapshot.as_deref(), &missing)),
    }
}

/// Hub names are `name` or `org/name` of letters, digits, `-`, `_`, `.`; anything else (`..`, an
/// absolute path) could walk out of the cache.
fn check_name(name: &str) -> Result<()> {
    let parts: Vec<&str> = name.split('/').collect();
    let ok_part = |p: &&str| {
        !p.is_empty() && *p != "." && *p != ".." && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if parts.len() > 2 || !parts.iter().all(ok_part) {
        return Err(Error::Input(format!("`{name}` is not a hub model name (expected `name` or `org/name`)")));
    }
    Ok(())
}

/// `snapshots/<refs/main>`, or the only snapshot when there is no ref (a hand-made cache).
fn snapshot_dir(repo: &Path) -> Option<PathBuf> {
    let snaps = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs").join("main")) {
        let dir = snaps.join(rev.trim());
        if !rev.trim().is_empty() && dir.is_dir() {
            return Some(dir);
        }
    }
    let mut dirs = std::fs::read_dir(&snaps).ok()?.filter_map(|e| e.ok()).filter(|e| e.path().is_dir());
    let first = dirs.next()?;
    dirs.next().is_none().then(|| first.path())
}

/// Files a loadable snapshot lacks (the tokenizer is optional for loading, so it is not required).
fn missing_files(dir: &Path) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if !dir.join("config.json").is_file() {
        missing.push("config.json");
    }
    if !dir.join("model.safetensors").is_file() && !dir.join("model.safetensors.index.json").is_file() {
        missing.push("model.safetensors");
    }
    missing
}

fn not_found(name: &str, repo: &Path, snapshot: Option<&Path>, missing: &[&str]) -> Error {
    let place = match snapshot {
        Some(dir) => format!("{} lacks {}", dir.display(), missing.join(" and ")),
        None => format!("{} has no snapshot", repo.display()),
    };
    Error::Input(format!(
        "hub model `{name}` is not in the local Hugging Face cache ({place}). Put config.json, \
         model.safetensors (or model.safetensors.index.json with its shards) and tokenizer.json from \
         https://huggingface.co/{name} into {repo}/snapshots/<rev>/ and write <rev> (any name, e.g. `main`) \
         into {repo}/refs/main; `huggingface-cli download {name} config.json model.safetensors tokenizer.json` \
         does this where a network is available. Set HF_HOME or HF_HUB_CACHE to use another cache.",
        repo = repo.display(),
    ))
}
