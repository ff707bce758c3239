//! node-prune's state: the gates' log α, AdamW's moments, the step, the random source and the loss
//! curve. Saved regularly, it resumes a run to the same circuit (floats round-trip through JSON
//! exactly: serde_json parses them with `float_roundtrip`).

use serde::{Deserialize, Serialize};

use super::gates::{Kind, Layout};
use super::NodePruneOptions;
use crate::circuit::{Masks, ModelShape};
use crate::optim::adamw::Moments;
use crate::optim::{hard_concrete as hc, SplitMix64};
use crate::{Error, Result};

const FORMAT: &str = "carve-node-prune-state";
const VERSION: u32 = 1;

/// One step of the loss curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Steps done (1 after the first).
    pub step: u64,
    /// The whole loss: task terms weighted by 1 − λs, plus the sparsity term.
    pub loss: f64,
    /// Mean KL(P_full ‖ P_masked) on the step's minibatch, with sampled gates.
    pub kl: f64,
    /// Mean hinge relu(margin − logit_diff).
    pub margin: f64,
    pub lr: f64,
    /// Fraction of each granularity's gates whose deterministic value is above 0.5, by name
    /// (`attn`, `mlps`, `heads`, `neurons`; only those trained).
    pub kept: Vec<(String, f64)>,
    /// Expected fraction of the attention and MLP parameters removed.
    #[serde(default)]
    pub sparsity: f64,
    /// The target this step (target mode).
    #[serde(default)]
    pub target: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodePruneState {
    pub format: String,
    pub version: u32,
    pub options: NodePruneOptions,
    pub shape: ModelShape,
    /// Hash of the shape, options and prompts: a state only resumes the run it came from.
    pub fingerprint: String,
    /// Steps done.
    pub step: u64,
    pub log_alpha: Vec<f64>,
    pub moments: Moments,
    pub rng: SplitMix64,
    pub history: Vec<StepRecord>,
    /// Target mode's multipliers (λ1, λ2) and their AdamW moments.
    #[serde(default = "two_zeros")]
    pub lambda: Vec<f64>,
    #[serde(default = "two_moments")]
    pub lambda_moments: Moments,
}

fn two_zeros() -> Vec<f64> {
    vec![0.0; 2]
}
fn two_moments() -> Moments {
    Moments::new(2)
}

impl NodePruneState {
    pub fn new(shape: ModelShape, options: NodePruneOptions, fingerprint: String, log_alpha: Vec<f64>) -> Self {
        let n = log_alpha.len();
        let rng = SplitMix64::new(options.seed);
        NodePruneState {
            format: FORMAT.into(),
            version: VERSION,
            options,
            shape,
            fingerprint,
            step: 0,
            log_alpha,
            moments: Moments::new(n),
            rng,
            history: Vec::new(),
            lambda: two_zeros(),
            lambda_moments: two_moments(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the state always serializes")
    }

    /// Parses and checks a state file: format and version, every field's type (named by its path),
    /// then what [`NodePruneState::validate`] checks.
    pub fn from_json(s: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|e| Error::Input(format!("not a node-prune state file (invalid JSON: {e})")))?;
        let (format, version) = (v.get("format").and_then(|f| f.as_str()), v.get("version").and_then(|f| f.as_u64()));
        if format != Some(FORMAT) || version != Some(VERSION as u64) {
            return Err(Error::Input(format!(
                "not a node-prune state file this carve reads: expected `format` \"{FORMAT}\" and `version` {VERSION}"
            )));
        }
        let st: NodePruneState = crate::circuit::file::from_value(v, "node-prune state")?;
        st.validate()?;
        Ok(st)
    }

    /// Options valid, shape sane, one log α and one pair of moments per gate of the layout, all
    /// finite, `step` within the steps and the history one record per step.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(format!("node-prune state: {m}")));
        self.options.check().map_err(|e| Error::Input(format!("node-prune state: `options`: {e}")))?;
        self.shape.validate()?;
        let n = Layout::new(&self.shape, self.options.granularity).len();
        if self.log_alpha.len() != n || self.moments.m.len() != n || self.moments.v.len() != n {
            return bad(format!(
                "{} log α, {} and {} moments for the {n} gates of this shape and granularity",
                self.log_alpha.len(),
                self.moments.m.len(),
                self.moments.v.len()
            ));
        }
        if let Some(i) = (0..n).find(|&i| !(self.log_alpha[i].is_finite() && self.moments.m[i].is_finite() && self.moments.v[i].is_finite())) {
            return bad(format!("gate {i}'s log α or moments are not finite numbers"));
        }
        if self.lambda.len() != 2 || self.lambda_moments.m.len() != 2 || self.lambda_moments.v.len() != 2 {
            return bad("`lambda` and its moments hold 2 values each".into());
        }
        if self.lambda.iter().chain(&self.lambda_moments.m).chain(&self.lambda_moments.v).any(|x| !x.is_finite()) {
            return bad("`lambda` or its moments are not finite numbers".into());
        }
        if self.step > self.options.steps || self.moments.t != self.step || self.history.len() as u64 != self.step {
            return bad(format!(
                "step {} of {} with {} AdamW steps and {} records: they must agree",
                self.step,
                self.options.steps,
                self.moments.t,
                self.history.len()
            ));
        }
        Ok(())
    }

    /// Refuses to resume a run with another model, options or prompts.
    pub fn check_matches(&self, shape: &ModelShape, opts: &NodePruneOptions, fingerprint: &str, gates: usize) -> Result<()> {
        self.validate()?;
        if &self.shape != shape {
            return Err(Error::Input("the saved run is of a model with other heads or MLP widths".into()));
        }
        if &self.options != opts {
            return Err(Error::Input(format!(
                "the saved run used other options: {}; give the same ones to resume",
                serde_json::to_string(&self.options).unwrap_or_default()
            )));
        }
        if self.fingerprint != fingerprint {
            return Err(Error::Input("the saved run was trained on other prompts (task, seed or split sizes differ)".into()));
        }
        if self.log_alpha.len() != gates {
            return Err(Error::Input(format!("the saved run has {} gates, this one {gates}", self.log_alpha.len())));
        }
        Ok(())
    }

    /// The gates' deterministic values thresholded at 0.5, as masks (components without a gate at 1).
    pub fn hard_masks(&self, layout: &Layout) -> Masks {
        let z: Vec<f64> = self.log_alpha.iter().map(|&a| (hc::deterministic(a) > 0.5) as u8 as f64).collect();
        layout.masks(&z)
    }

    /// Fraction of each trained granularity's gates above 0.5.
    pub fn kept_fractions(&self, layout: &Layout) -> Vec<(String, f64)> {
        Kind::ALL
            .iter()
            .zip(&layout.ranges)
            .filter(|(_, r)| !r.is_empty())
            .map(|(k, r)| {
                let on = self.log_alpha[r.clone()].iter().filter(|&&a| hc::deterministic(a) > 0.5).count();
                (k.name().to_string(), on as f64 / r.len() as f64)
            })
            .collect()
    }
}
