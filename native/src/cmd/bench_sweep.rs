//! `carve bench extract --save-sweep FILE`: the sweep ablate just ran, written for
//! `bench/torch_ablate.py`, which runs it as the paper's code does (a full forward per candidate)
//! in PyTorch and compares its decisions and its time with carve's.
//!
//! The file: `format` ("carve-ablate-sweep"), `version` (1), `task`, `options` (as state.json has
//! them: alpha, ablation, mlps, neurons), `discovery` and `patching` (token ids, one list per
//! prompt), `corrupted` (the discovery prompts' corrupted versions, or null), and `decisions` (the
//! reference implementation's, in sweep order: component, KL_new, accepted).

use anyhow::{bail, Context, Result};
use carve_core::extract::{AblateData, AblateOptions, Decision};
use serde::Serialize;
use std::path::Path;

const FORMAT: &str = "carve-ablate-sweep";

#[derive(Serialize)]
struct SweepFile<'a> {
    format: &'static str,
    version: u32,
    task: &'a str,
    options: &'a AblateOptions,
    discovery: &'a [Vec<u32>],
    patching: &'a [Vec<u32>],
    corrupted: Option<&'a [Vec<u32>]>,
    decisions: &'a [Decision],
}

/// Before the sweep runs: a file that is there must be one this command wrote (it is then
/// replaced), and the folder must exist, so that a long sweep never ends unable to write.
pub fn check_writable(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!("--save-sweep {}: the folder {} does not exist", path.display(), dir.display());
    }
    if path.symlink_metadata().is_err() {
        return Ok(());
    }
    let ours = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("format").and_then(|f| f.as_str()) == Some(FORMAT));
    if !ours {
        bail!("--save-sweep {}: the file exists and is not a sweep carve wrote; choose another path", path.display());
    }
    Ok(())
}

/// Writes the file (through a temporary file beside it, renamed into place).
pub fn save(path: &Path, task: &str, options: &AblateOptions, data: &AblateData, decisions: &[Decision]) -> Result<()> {
    let file = SweepFile {
        format: FORMAT,
        version: 1,
        task,
        options,
        discovery: &data.discovery,
        patching: &data.patching,
        corrupted: data.corrupted.as_deref(),
        decisions,
    };
    let json = serde_json::to_vec(&file).context("serializing the sweep")?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, json).with_context(|| format!("writing {}", Path::new(&tmp).display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", Path::new(&tmp).display(), path.display()))
}
