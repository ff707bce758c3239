//! edge-prune's state: the edge gates' log α, AdamW's moments, the multipliers, the step, the
//! random source and the loss curve; saved, it resumes a run to the same circuit.

use serde::{Deserialize, Serialize};

use super::EdgePruneOptions;
use crate::optim::adamw::Moments;
use crate::optim::SplitMix64;
use crate::{Error, Result};

const FORMAT: &str = "carve-edge-prune-state";
const VERSION: u32 = 1;

/// One step of the loss curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeStepRecord {
    /// Steps done (1 after the first).
    pub step: u64,
    /// KL plus the Lagrangian.
    pub loss: f64,
    /// Mean KL(P_full ‖ P_circuit) on the step's minibatch, with sampled gates.
    pub kl: f64,
    pub lr: f64,
    /// Expected fraction of edges removed, before the step.
    pub sparsity: f64,
    pub target: f64,
    /// Fraction of gates whose deterministic value is above 0.5, after the step.
    pub kept: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgePruneState {
    pub format: String,
    pub version: u32,
    pub options: EdgePruneOptions,
    /// Hash of the model, options and prompts: a state only resumes the run it came from.
    pub fingerprint: String,
    pub step: u64,
    pub log_alpha: Vec<f64>,
    pub moments: Moments,
    pub lambda: Vec<f64>,
    pub lambda_moments: Moments,
    pub rng: SplitMix64,
    pub history: Vec<EdgeStepRecord>,
    /// `Hold::Exact`: the step after which the count has been held (the first held step's number),
    /// once the open gates have come down to the target's count; before that, none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_from: Option<u64>,
}

impl EdgePruneState {
    /// log α from N(`init_log_alpha`, 0.01) (Box–Muller on the seed's stream), every edge on.
    pub fn new(options: EdgePruneOptions, fingerprint: String, n: usize) -> Self {
        let mut init = SplitMix64::new(options.seed ^ 0x5EED_ED6E);
        let log_alpha = (0..n)
            .map(|_| {
                let (u1, u2) = (init.open01(), init.open01());
                options.init_log_alpha + 0.01 * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect();
        let rng = SplitMix64::new(options.seed);
        EdgePruneState {
            format: FORMAT.into(),
            version: VERSION,
            options,
            fingerprint,
            step: 0,
            log_alpha,
            moments: Moments::new(n),
            lambda: vec![0.0; 2],
            lambda_moments: Moments::new(2),
            rng,
            history: Vec::new(),
            held_from: None,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the state always serializes")
    }

    /// Parses and checks a state file.
    pub fn from_json(s: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|e| Error::Input(format!("not an edge-prune state file (invalid JSON: {e})")))?;
        let (format, version) = (v.get("format").and_then(|f| f.as_str()), v.get("version").and_then(|f| f.as_u64()));
        if format != Some(FORMAT) || version != Some(VERSION as u64) {
            return Err(Error::Input(format!(
                "not an edge-prune state file this carve reads: expected `format` \"{FORMAT}\" and `version` {VERSION}"
            )));
        }
        let st: EdgePruneState = crate::circuit::file::from_value(v, "edge-prune state")?;
        st.validate()?;
        Ok(st)
    }

    /// Options valid; one finite log α and pair of moments per edge; two finite multipliers;
    /// step, AdamW's count and the curve in agreement.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(format!("edge-prune state: {m}")));
        self.options.check().map_err(|e| Error::Input(format!("edge-prune state: `options`: {e}")))?;
        let n = self.log_alpha.len();
        if self.moments.m.len() != n || self.moments.v.len() != n {
            return bad(format!("{n} log α with {} and {} moments", self.moments.m.len(), self.moments.v.len()));
        }
        if let Some(i) = (0..n).find(|&i| !(self.log_alpha[i].is_finite() && self.moments.m[i].is_finite() && self.moments.v[i].is_finite())) {
            return bad(format!("edge {i}'s log α or moments are not finite numbers"));
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
        if let Some(h) = self.held_from {
            if h == 0 || h > self.step || self.options.hold != super::Hold::Exact {
                return bad(format!("`held_from` {h} needs hold \"exact\" and a step from 1 to the state's {}", self.step));
            }
        }
        Ok(())
    }

    /// Refuses to resume a run with other options, prompts or model.
    pub fn check_matches(&self, opts: &EdgePruneOptions, fingerprint: &str, edges: usize) -> Result<()> {
        self.validate()?;
        // The cut is not saved: any cut resumes the run.
        if self.options != (EdgePruneOptions { cut: self.options.cut, ..opts.clone() }) {
            return Err(Error::Input(format!(
                "the saved run used other options: {}; give the same ones to resume",
                serde_json::to_string(&self.options).unwrap_or_default()
            )));
        }
        if self.log_alpha.len() != edges {
            return Err(Error::Input(format!("the saved run has {} edges, this model {edges}", self.log_alpha.len())));
        }
        if self.fingerprint != fingerprint {
            return Err(Error::Input("the saved run was trained on other prompts or another model".into()));
        }
        Ok(())
    }
}
