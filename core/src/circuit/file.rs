//! The circuit file, `circuit.json` (DESIGN.md "Outputs"): which model (by the sha256 of its
//! weights), which task and splits, which method with which settings, the kept and removed
//! components, where ablation values come from, and the held-out scores. Everything needed to
//! rebuild the circuit's masks on the full model, and to refuse another model.

use serde::{Deserialize, Serialize};

use super::{Component, Masks, ModelShape};
use crate::error::json_kind;
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
    /// An edge circuit's edges (edge-prune); `kept` then lists the components with a kept edge out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edges: Option<super::EdgeCircuit>,
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
    /// The circuit file of a method's result: model, task and split, the method and its settings,
    /// the ablation's source (`values`: the means file shipped beside it, if any), the components
    /// and the held-out scores.
    pub fn from_result(model: ModelIdentity, task: TaskInfo, kind: crate::extract::AblationKind, shape: ModelShape,
        r: &crate::extract::MethodResult, metrics: Option<CircuitMetrics>, values: Option<&str>) -> CircuitFile {
        use crate::extract::AblationKind;
        CircuitFile {
            format: FORMAT.into(),
            version: VERSION,
            model,
            task,
            method: r.method.clone(),
            ablation: AblationSource {
                kind: serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                split: match kind {
                    AblationKind::Zero => None,
                    AblationKind::Resample => Some("corrupted prompts of each split".into()),
                    _ => Some("patching".into()),
                },
                values: values.map(String::from),
            },
            shape,
            kept: r.kept.clone(),
            removed: r.removed.clone(),
            metrics,
            decisions: r.decisions.clone(),
            edges: r.edges.clone(),
        }
    }
}

/// The ablation kinds a circuit file names (`AblationKind` as it serializes).
pub const ABLATION_KINDS: [&str; 4] = ["zero", "mean", "mean-per-position", "resample"];

impl CircuitFile {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a circuit file always serializes")
    }

    /// Parses and checks a circuit file: its format and version, every field's type (a wrong one
    /// is named by its path, e.g. `shape.d_ff[2]`), and then what [`CircuitFile::validate`] checks.
    pub fn from_json(s: &str) -> Result<CircuitFile> {
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|e| Error::Input(format!("not a circuit file (invalid JSON: {e})")))?;
        if !v.is_object() {
            return Err(Error::Input(format!("not a circuit file: it holds {}, not a JSON object", json_kind(&v))));
        }
        match v.get("format") {
            Some(serde_json::Value::String(f)) if f == FORMAT => {}
            Some(serde_json::Value::String(f)) => {
                return Err(Error::Input(format!("not a circuit file: its format is `{}`, expected `{FORMAT}`", shown(f))))
            }
            Some(other) => {
                return Err(Error::Input(format!("not a circuit file: `format` is {}, expected the string `{FORMAT}`", json_kind(other))))
            }
            None => return Err(Error::Input(format!("not a circuit file: it has no `format` field (expected `{FORMAT}`)"))),
        }
        match v.get("version") {
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(VERSION as u64) => {}
            Some(serde_json::Value::Number(n)) => {
                return Err(Error::Input(format!("circuit file version {n}: this carve understands version {VERSION} only")))
            }
            Some(other) => {
                return Err(Error::Input(format!(
                    "circuit file: the `version` field has the wrong type: it is {} ({}), expected the number {VERSION}",
                    json_kind(other),
                    shown(&other.to_string())
                )))
            }
            None => return Err(Error::Input(format!("circuit file: it has no `version` field (expected {VERSION})"))),
        }
        let c: CircuitFile = from_value(v, "circuit file")?;
        c.validate()?;
        Ok(c)
    }

    /// Checks what the types leave open: the model's sha256 is 64 lowercase hex digits; the split
    /// sizes add up without overflow; the ablation kind is one carve knows and its values file a
    /// plain file name; the shape is sane; every component listed (kept, removed, decided on) is in
    /// the shape, none twice, none both kept and removed; every head and MLP block is either kept or
    /// removed, and a layer's neurons are listed all or none.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(format!("circuit file: {m}")));
        check_sha256("model.sha256", &self.model.sha256)?;
        let t = &self.task;
        if t.n_patching.checked_add(t.n_discovery).and_then(|n| n.checked_add(t.n_test)).is_none() {
            return bad(format!(
                "the split sizes in `task` ({}, {}, {}) add up past what carve can count",
                t.n_patching, t.n_discovery, t.n_test
            ));
        }
        if !ABLATION_KINDS.contains(&self.ablation.kind.as_str()) {
            return bad(format!(
                "`ablation.kind` is `{}`; the kinds are {}",
                shown(&self.ablation.kind),
                ABLATION_KINDS.map(|k| format!("`{k}`")).join(", ")
            ));
        }
        if let Some(v) = &self.ablation.values {
            let plain = matches!(std::path::Path::new(v).components().collect::<Vec<_>>().as_slice(), [std::path::Component::Normal(_)]);
            if !plain || v.contains(['/', '\\']) {
                return bad(format!("`ablation.values` is `{}`: it must name a file beside the circuit file", shown(v)));
            }
        }
        self.shape.validate()?;
        let shape = &self.shape;
        for (list, comps) in [("kept", &self.kept), ("removed", &self.removed)] {
            for &c in comps.iter() {
                shape.check(c).or_else(|e| bad(format!("`{list}`: {e}")))?;
            }
        }
        for d in &self.decisions {
            shape.check(d.component).or_else(|e| bad(format!("`decisions`: {e}")))?;
        }
        let mut seen = std::collections::HashMap::new();
        for (list, comps) in [("kept", &self.kept), ("removed", &self.removed)] {
            for &c in comps.iter() {
                match seen.insert(c, list) {
                    Some(first) if first == list => return bad(format!("{c} is listed twice in `{list}`")),
                    Some(_) => return bad(format!("{c} is listed both as kept and as removed")),
                    None => {}
                }
            }
        }
        let mut neurons = vec![0usize; shape.n_layers()];
        for c in seen.keys() {
            if let Component::Neuron { layer, .. } = c {
                if let Some(n) = neurons.get_mut(*layer) {
                    *n += 1;
                }
            }
        }
        for (l, (&heads, &d_ff)) in shape.n_heads.iter().zip(&shape.d_ff).enumerate() {
            let block = (d_ff > 0).then_some(Component::Mlp { layer: l });
            let missing = (0..heads).map(|head| Component::Head { layer: l, head }).chain(block).find(|c| !seen.contains_key(c));
            if let Some(c) = missing {
                return bad(format!("{c} is in the shape but neither kept nor removed"));
            }
            let listed = neurons.get(l).copied().unwrap_or(0);
            if listed != 0 && listed != d_ff {
                return bad(format!("{listed} of layer {l}'s {d_ff} MLP neurons are listed: list all or none"));
            }
        }
        if let Some(e) = &self.edges {
            e.validate(shape, &self.removed)?;
        }
        Ok(())
    }

    /// Errors unless `sha256` is the model this circuit was extracted from.
    pub fn check_model(&self, sha256: &str) -> Result<()> {
        if !self.model.sha256.eq_ignore_ascii_case(sha256) {
            return Err(Error::Input(format!(
                "this circuit was extracted from another model: {} has weights sha256 {}…, the model given has {}…",
                shown(&self.model.name),
                prefix(&self.model.sha256, 12),
                prefix(sha256, 12)
            )));
        }
        Ok(())
    }

    /// Errors unless `shape` (a model's) is the shape this circuit was extracted on, naming the
    /// first difference.
    pub fn check_shape(&self, shape: &ModelShape) -> Result<()> {
        match self.shape.difference(shape, ("the circuit", "the model")) {
            None => Ok(()),
            Some(d) => Err(Error::Input(format!("the circuit is for a model of another shape: {d}"))),
        }
    }

    /// Masks of the circuit on a model of `shape`: 0 on every removed component.
    pub fn masks(&self, shape: &ModelShape) -> Result<Masks> {
        self.check_shape(shape)?;
        shape.masks_without(&self.removed)
    }

    /// Kept heads and MLP blocks.
    pub fn kept_counts(&self) -> (usize, usize) {
        count(&self.kept)
    }
}

/// Errors unless `s` is a sha256 as carve writes it: 64 lowercase hex digits. `what` names the field.
pub fn check_sha256(what: &str, s: &str) -> Result<()> {
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Ok(());
    }
    Err(Error::Input(format!("`{what}` is `{}`: a weights sha256 is 64 lowercase hex digits", shown(s))))
}

/// The first `n` characters of `s` (never cut inside a character).
pub fn prefix(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| s.get(..i).unwrap_or(s))
}

/// Deserializes `v`; a value of the wrong type is named by its path (`shape.d_ff[2]`) in the
/// error, which `what` (the file) begins.
pub fn from_value<T: serde::de::DeserializeOwned>(v: serde_json::Value, what: &str) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => Error::Input(format!("{what}: {}", e.into_inner())),
            _ => Error::Input(format!("{what}: `{path}`: {}", e.into_inner())),
        }
    })
}

/// Text from a file for a message: at most 80 characters, control characters escaped.
pub(crate) fn shown(s: &str) -> String {
    let escape = |c: char| if c.is_control() { c.escape_debug().collect() } else { c.to_string() };
    let mut out: String = s.chars().take(80).map(escape).collect();
    if s.chars().nth(80).is_some() {
        out.push('…');
    }
    out
}

/// (heads, MLP blocks) among `components`.
pub fn count(components: &[Component]) -> (usize, usize) {
    let heads = components.iter().filter(|c| matches!(c, Component::Head { .. })).count();
    let mlps = components.iter().filter(|c| matches!(c, Component::Mlp { .. })).count();
    (heads, mlps)
}
