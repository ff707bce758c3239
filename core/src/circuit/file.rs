//! The circuit file, `circuit.json` (DESIGN.md "Outputs"): which model (by the sha256 of its
//! weights), which task and splits, which method with which settings, the kept and removed
//! components, where ablation values come from, and the held-out scores. Everything needed to
//! rebuild the circuit's masks on the full model, and to refuse another model.

use serde::{Deserialize, Serialize};

use super::{Component, Masks, ModelShape};
use crate::{Error, Result};

pub const FORMAT: &str = "carve-circuit";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CircuitFile {
    pub format: String,
    pub version: u32,
    pub model: ModelIdentity,
    pub task: TaskInfo,
    pub method: MethodInfo,
    pub ablation: AblationSource,
    /// Heads and MLP widths per layer of the full model.
    pub shape: ModelShape,
    /// Components in the circuit (heads and MLP blocks; neurons of kept MLPs when decided on).
    pub kept: Vec<Component>,
    /// Components ablated, in the order they were removed.
    pub removed: Vec<Component>,
    /// Scores on the held-out test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<CircuitMetrics>,
    /// The method's verdict on each component it tried, in order (ablate: KL on the discovery
    /// split with the component and everything removed before it ablated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<DecisionRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub component: Component,
    /// Mean KL(P_full ‖ P) when it was tried (nats).
    pub kl: f64,
    /// Removed from the circuit.
    pub removed: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// Where it was loaded from (a path or hub name), for people.
    pub name: String,
    pub arch: String,
    /// sha256 of the weight bytes (`model::load::weights_sha256`): what identifies the model.
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// `ioi`, `acronyms`, `greater-than`, or the JSONL file it came from.
    pub name: String,
    /// Seed of the generator and the split.
    pub seed: u64,
    pub bos: bool,
    /// The task's metric key (`logit_diff`, `prob_diff`).
    pub metric: String,
    pub n_patching: usize,
    pub n_discovery: usize,
    pub n_test: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodInfo {
    /// `ablate`.
    pub name: String,
    /// The method's settings, as it names them (ablate: alpha, ablation, mlps, neurons).
    pub hyperparameters: serde_json::Value,
    /// Mean KL(P_full ‖ P_circuit) on the discovery split when the method stopped.
    pub discovery_kl: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AblationSource {
    /// `zero`, `mean`, `mean-per-position` or `resample`.
    pub kind: String,
    /// Which split the values are measured on (`patching`; `discovery` for resample), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// The file beside this one holding the values (`means.safetensors`), when they can be shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub accuracy: f64,
    pub metric: f64,
    pub answer_prob: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CircuitMetrics {
    pub split: String,
    pub n: usize,
    pub full: Scores,
    pub circuit: Scores,
    /// Mean KL(P_full ‖ P_circuit) at the last position (nats).
    pub kl: f64,
}

impl CircuitFile {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a circuit file always serializes")
    }

    /// Parses and checks a circuit file: format, version, and that every component exists in the
    /// shape it declares.
    pub fn from_json(s: &str) -> Result<CircuitFile> {
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|e| Error::Input(format!("not a circuit file (invalid JSON: {e})")))?;
        let format = v.get("format").and_then(|f| f.as_str()).unwrap_or("");
        if format != FORMAT {
            return Err(Error::Input(format!("not a circuit file: its format is `{format}`, expected `{FORMAT}`")));
        }
        let version = v.get("version").and_then(|f| f.as_u64()).unwrap_or(0);
        if version != VERSION as u64 {
            return Err(Error::Input(format!("circuit file version {version}; this carve reads version {VERSION}")));
        }
        let c: CircuitFile = serde_json::from_value(v).map_err(|e| Error::Input(format!("circuit file: {e}")))?;
        for &comp in c.kept.iter().chain(&c.removed) {
            c.shape.check(comp)?;
        }
        Ok(c)
    }

    /// Errors unless `sha256` is the model this circuit was extracted from.
    pub fn check_model(&self, sha256: &str) -> Result<()> {
        if !self.model.sha256.eq_ignore_ascii_case(sha256) {
            return Err(Error::Input(format!(
                "this circuit was extracted from another model: {} has weights sha256 {}…, the model given has {}…",
                self.model.name,
                &self.model.sha256[..self.model.sha256.len().min(12)],
                &sha256[..sha256.len().min(12)]
            )));
        }
        Ok(())
    }

    /// Masks of the circuit on a model of `shape`: 0 on every removed component.
    pub fn masks(&self, shape: &ModelShape) -> Result<Masks> {
        if shape != &self.shape {
            return Err(Error::Input(format!(
                "the circuit is for a model with {} layers and {:?} heads; this one has {} layers and {:?}",
                self.shape.n_layers(),
                self.shape.n_heads,
                shape.n_layers(),
                shape.n_heads
            )));
        }
        shape.masks_without(&self.removed)
    }

    /// Kept heads and MLP blocks.
    pub fn kept_counts(&self) -> (usize, usize) {
        count(&self.kept)
    }
}

/// (heads, MLP blocks) among `components`.
pub fn count(components: &[Component]) -> (usize, usize) {
    let heads = components.iter().filter(|c| matches!(c, Component::Head { .. })).count();
    let mlps = components.iter().filter(|c| matches!(c, Component::Mlp { .. })).count();
    (heads, mlps)
}
