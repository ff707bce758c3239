//! The run directory: what marks it as holding a run, and the state file that resumes one. Files
//! are written to a temporary name and renamed, so an interruption never leaves half a file.

use anyhow::{bail, Context, Result};
use carve_core::circuit::file::{check_sha256, from_value, prefix};
use carve_core::extract::AblateState;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const STATE: &str = "state.json";
pub const CIRCUIT: &str = "circuit.json";
pub const REPORT_JSON: &str = "report.json";
pub const REPORT_MD: &str = "report.md";
pub const SVG: &str = "circuit.svg";
pub const MODEL: &str = "model";
pub const TASK: &str = "task.json";
pub const MEANS: &str = carve_core::circuit::MEANS_FILE;

/// The files a run writes; any of them marks a directory as holding a run.
const RUN_FILES: [&str; 8] = [STATE, CIRCUIT, REPORT_JSON, REPORT_MD, SVG, MODEL, TASK, MEANS];

/// What `--resume` needs besides the sweep's own state.
#[derive(Serialize, Deserialize)]
pub struct SavedState {
    pub format: String,
    /// The model the sweep runs on: a resume on other weights is refused.
    pub model_sha256: String,
    /// Extraction time spent before this save, summed over interrupted runs.
    pub extract_seconds: f64,
    pub ablate: AblateState,
}

const STATE_FORMAT: &str = "carve-extract-state";

pub struct RunDir {
    pub dir: PathBuf,
}

impl RunDir {
    /// Checks `dir` before any work: a directory that holds another run is refused unless the run
    /// is to be resumed or replaced. `force` removes the previous run's files (only those).
    pub fn open(dir: &Path, resume: bool, force: bool) -> Result<RunDir> {
        let present: Vec<&str> = RUN_FILES.iter().copied().filter(|f| dir.join(f).exists()).collect();
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
            for f in present {
                let p = dir.join(f);
                let res = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
                res.with_context(|| format!("removing {}", p.display()))?;
            }
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(RunDir { dir: dir.to_path_buf() })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `name` whole or not at all.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let dst = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &dst).with_context(|| format!("renaming {} to {}", tmp.display(), dst.display()))
    }

    pub fn save_state(&self, st: &SavedState) -> Result<()> {
        self.write(STATE, serde_json::to_string_pretty(st)?.as_bytes())
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
        Ok(st)
    }
}

impl SavedState {
    pub fn new(model_sha256: String, extract_seconds: f64, ablate: AblateState) -> SavedState {
        SavedState { format: STATE_FORMAT.into(), model_sha256, extract_seconds, ablate }
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
        if !(st.extract_seconds.is_finite() && st.extract_seconds >= 0.0) {
            bail!("`extract_seconds` is {}; it must be a finite number of seconds, not negative", st.extract_seconds);
        }
        st.ablate.validate()?;
        Ok(st)
    }
}
