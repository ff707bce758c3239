//! The run directory: what marks it as holding a run, and the state file that resumes one. Files
//! are written to a temporary name and renamed, so an interruption never leaves half a file.
//!
//! `--force` replaces a run only: the directory must hold a `circuit.json` or `state.json` that
//! carve wrote (their `format` fields say so), each file to go must be one a run writes, and
//! nothing is removed until the new run writes its first file, so a run that fails early (a
//! model that doesn't load, a task file with errors) leaves the old one as it was.

use anyhow::{bail, Context, Result};
use carve_core::backend::Precision;
use carve_core::circuit::file::{check_sha256, from_value, prefix};
use carve_core::extract::edge_prune::EdgePruneState;
use carve_core::extract::node_prune::NodePruneState;
use carve_core::extract::AblateState;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const STATE: &str = "state.json";
pub const CIRCUIT: &str = "circuit.json";
pub const REPORT_JSON: &str = "report.json";
pub const REPORT_MD: &str = "report.md";
pub const SVG: &str = "circuit.svg";
pub const MODEL: &str = "model";
pub const TASK: &str = "task.json";
pub const MEANS: &str = carve_core::circuit::MEANS_FILE;
pub const TRAINING_SVG: &str = "training.svg";

/// The files a run writes; any of them marks a directory as holding a run.
const RUN_FILES: [&str; 9] = [STATE, CIRCUIT, REPORT_JSON, REPORT_MD, SVG, MODEL, TASK, MEANS, TRAINING_SVG];

/// What `--resume` needs besides the sweep's own state.
#[derive(Serialize, Deserialize)]
pub struct SavedState {
    pub format: String,
    /// The model the sweep runs on: a resume on other weights is refused.
    pub model_sha256: String,
    /// Extraction time spent before this save, summed over interrupted runs.
    pub extract_seconds: f64,
    /// `--precision` when not f32 (written by `RunDir::save_state`): f32, mixed or mixed-bf16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    /// The method's own state: one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ablate: Option<AblateState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_prune: Option<NodePruneState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_prune: Option<EdgePruneState>,
}

const STATE_FORMAT: &str = "carve-extract-state";
const CIRCUIT_FORMAT: &str = carve_core::circuit::file::FORMAT;
/// JSON files larger than this are not a run's marker files (a run's circuit.json is kilobytes).
const MARKER_MAX_BYTES: u64 = 256 << 20;

pub struct RunDir {
    pub dir: PathBuf,
    /// `--precision`: saved with the state (when not f32); a resume at another is refused.
    precision: Precision,
    /// The previous run's files, removed just before the new run's first write (`--force`).
    replaced: Mutex<Vec<PathBuf>>,
}

impl RunDir {
    /// Checks `dir` before any work: a directory that holds another run is refused unless the run
    /// is to be resumed or replaced, and one that holds files of a run's names that carve did not
    /// write is refused even with `force`. `source` is the model extracted from: a run whose
    /// files hold it is never replaced. The directory is checked to be writable.
    pub fn open(dir: &Path, resume: bool, force: bool, source: &Path, precision: Precision) -> Result<RunDir> {
        let present: Vec<&str> = RUN_FILES.iter().copied().filter(|f| dir.join(f).symlink_metadata().is_ok()).collect();
        let mut replaced = Vec::new();
        if resume {
            if !dir.join(STATE).is_file() {
                bail!("{} has no {STATE} to resume from (was the run started with --out {}?)", dir.display(), dir.display());
            }
        } else if !present.is_empty() {
            if !force {
                bail!(
                    "{} already holds a run ({}): pass --resume to continue it, or --force to replace it",
                    dir.display(),
                    present.join(", ")
                );
            }
            replaced = replaceable(dir, &present, source)?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let rd = RunDir { dir: dir.to_path_buf(), precision, replaced: Mutex::new(replaced) };
        rd.check_writable()?;
        Ok(rd)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A run that works for an hour and then can't write its result is the worst outcome:
    /// write and remove a probe file now.
    fn check_writable(&self) -> Result<()> {
        let probe = self.path(".carve-write-probe.tmp");
        std::fs::write(&probe, b"probe").with_context(|| format!("{} is not writable", self.dir.display()))?;
        std::fs::remove_file(&probe).with_context(|| format!("removing {}", probe.display()))
    }

    /// Removes the replaced run's files, once, before the first file of the new run is written.
    pub fn clear_replaced(&self) -> Result<()> {
        let mut pending = self.replaced.lock().unwrap_or_else(|p| p.into_inner());
        for p in pending.drain(..) {
            let meta = match p.symlink_metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            let res = if meta.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            res.with_context(|| format!("removing the replaced run's {}", p.display()))?;
        }
        Ok(())
    }

    /// Writes `name` whole or not at all.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.clear_replaced()?;
        let dst = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &dst).with_context(|| format!("renaming {} to {}", tmp.display(), dst.display()))
    }

    pub fn save_state(&self, st: &SavedState) -> Result<()> {
        let mut v = serde_json::to_value(st)?;
        if self.precision != Precision::F32 {
            v["precision"] = self.precision.name().into();
        }
        self.write(STATE, serde_json::to_string_pretty(&v)?.as_bytes())
    }

    /// Reads the state to resume from and checks it whole (format, every field's type, the
    /// sweep's state) before comparing its model with `model_sha256`.
    pub fn load_state(&self, model_sha256: &str) -> Result<SavedState> {
        let p = self.path(STATE);
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let st = SavedState::from_json(&text).with_context(|| format!("{} is not a carve extract state file", p.display()))?;
        if st.model_sha256 != model_sha256 {
            bail!(
                "{} was saved for another model (weights sha256 {}…, this one {}…): resume with the model it started on",
                p.display(),
                prefix(&st.model_sha256, 12),
                prefix(model_sha256, 12)
            );
        }
        let saved = st.precision.as_deref().unwrap_or("f32");
        if saved != self.precision.name() {
            bail!(
                "{} was trained at --precision {saved}: resume it at that precision (this run asks for {})",
                p.display(),
                self.precision.name()
            );
        }
        Ok(st)
    }
}

impl SavedState {
    fn empty(model_sha256: String, extract_seconds: f64) -> SavedState {
        SavedState {
            format: STATE_FORMAT.into(),
            model_sha256,
            extract_seconds,
            precision: None,
            ablate: None,
            node_prune: None,
            edge_prune: None,
        }
    }
    pub fn new(model_sha256: String, extract_seconds: f64, ablate: AblateState) -> SavedState {
        SavedState { ablate: Some(ablate), ..SavedState::empty(model_sha256, extract_seconds) }
    }
    pub fn node_prune(model_sha256: String, extract_seconds: f64, st: NodePruneState) -> SavedState {
        SavedState { node_prune: Some(st), ..SavedState::empty(model_sha256, extract_seconds) }
    }
    pub fn edge_prune(model_sha256: String, extract_seconds: f64, st: EdgePruneState) -> SavedState {
        SavedState { edge_prune: Some(st), ..SavedState::empty(model_sha256, extract_seconds) }
    }

    /// Parses a state file: its format, every field's type (named by its path), the sha256 (64
    /// lowercase hex digits), the time spent (finite, not negative) and the sweep's own state.
    pub fn from_json(text: &str) -> Result<SavedState> {
        let v: serde_json::Value = serde_json::from_str(text).context("invalid JSON")?;
        match v.get("format") {
            Some(serde_json::Value::String(f)) if f == STATE_FORMAT => {}
            Some(f) => bail!("`format` is {}, expected \"{STATE_FORMAT}\"", prefix(&f.to_string(), 80)),
            None => bail!("it has no `format` field (expected \"{STATE_FORMAT}\")"),
        }
        let st: SavedState = from_value(v, "state")?;
        check_sha256("model_sha256", &st.model_sha256)?;
        if let Some(p) = st.precision.as_deref().filter(|p| !["f32", "mixed", "mixed-bf16"].contains(p)) {
            bail!("`precision` is \"{}\": it is one of f32, mixed, mixed-bf16", prefix(p, 40));
        }
        if !(st.extract_seconds.is_finite() && st.extract_seconds >= 0.0) {
            bail!("`extract_seconds` is {}; it must be a finite number of seconds, not negative", st.extract_seconds);
        }
        match (&st.ablate, &st.node_prune, &st.edge_prune) {
            (Some(a), None, None) => a.validate()?,
            (None, Some(n), None) => n.validate()?,
            (None, None, Some(e)) => e.validate()?,
            (None, None, None) => bail!("it holds no method's state (`ablate`, `node_prune` or `edge_prune`)"),
            _ => bail!("it holds more than one method's state (of `ablate`, `node_prune` and `edge_prune`): a run has one"),
        }
        Ok(st)
    }
}

/// The `format` field of a small JSON file, if it is one.
fn json_format(p: &Path) -> Option<String> {
    let meta = std::fs::metadata(p).ok()?;
    if !meta.is_file() || meta.len() > MARKER_MAX_BYTES {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    v.get("format")?.as_str().map(str::to_string)
}

/// Whether `p` holds what carve writes under that name (a run's own files are recognisable by
/// their content; report.md and circuit.svg by their first line).
fn written_by_carve(p: &Path, name: &str) -> bool {
    let starts_with = |first: &[u8]| {
        use std::io::Read;
        let mut head = vec![0u8; first.len()];
        std::fs::File::open(p).and_then(|mut f| f.read_exact(&mut head)).is_ok() && head == first
    };
    match name {
        STATE => json_format(p).as_deref() == Some(STATE_FORMAT),
        CIRCUIT => json_format(p).as_deref() == Some(CIRCUIT_FORMAT),
        // A pruned model carries its circuit.json.
        MODEL => p.is_dir() && json_format(&p.join(CIRCUIT)).as_deref() == Some(CIRCUIT_FORMAT),
        REPORT_JSON | TASK => {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() <= MARKER_MAX_BYTES)
                && std::fs::read(p).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()).is_some_and(|v| v.is_object())
        }
        REPORT_MD => starts_with(b"# carve: "),
        SVG => starts_with(b"<svg"),
        MEANS => means_format(p).as_deref() == Some("carve-means"),
        _ => false,
    }
}

/// The files `--force` may remove from `dir`: only when `dir` holds a run carve wrote, each of
/// `present` is a file such a run writes, and none of them holds the model extracted from.
fn replaceable(dir: &Path, present: &[&str], source: &Path) -> Result<Vec<PathBuf>> {
    if !(written_by_carve(&dir.join(CIRCUIT), CIRCUIT) || written_by_carve(&dir.join(STATE), STATE)) {
        bail!(
            "{} holds {} but no circuit.json or state.json that carve wrote: it is not a carve run, so --force \
             will not replace it; choose another --out",
            dir.display(),
            present.join(", ")
        );
    }
    let source = source.canonicalize().unwrap_or_else(|_| source.to_path_buf());
    let mut out = Vec::new();
    for name in present {
        let p = dir.join(name);
        if p.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
            bail!("{} is a symbolic link: --force replaces only files a run wrote; move it away first", p.display());
        }
        if !written_by_carve(&p, name) {
            bail!(
                "{} is not the {name} a carve run writes: --force will not replace it; move it away or choose another --out",
                p.display()
            );
        }
        if p.canonicalize().is_ok_and(|c| source.starts_with(&c)) {
            bail!("--model {} is inside {}, which --force would replace: copy the model elsewhere first", source.display(), p.display());
        }
        out.push(p);
    }
    Ok(out)
}

/// The `format` entry of a safetensors file's metadata (means.safetensors says `carve-means`).
fn means_format(p: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let n = u64::from_le_bytes(len);
    if n > MARKER_MAX_BYTES || n > f.metadata().ok()?.len() {
        return None;
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&header).ok()?;
    v.get("__metadata__")?.get("format")?.as_str().map(str::to_string)
}
