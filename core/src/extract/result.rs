//! What every method returns, in one type: the circuit's masks and components, the ablation values
//! it was found with, the method's name and settings, and what it measured on the way. The circuit
//! file is built from it (`CircuitFile::from_result`), so that every method writes the same file.

use serde_json::json;

use super::edge_prune::{EdgePruneOptions, EdgePruneRun, EdgeStepRecord};
use super::node_prune::{NodePruneOptions, NodePruneRun, StepRecord};
use super::{AblateOptions, AblateRun};
use crate::circuit::edges::live_components;
use crate::circuit::file::{DecisionRecord, MethodInfo};
use crate::circuit::EdgeCircuit;
use crate::mask::{Ablation, Component, EdgeLayout, Masks, ModelShape};
use crate::optim::hard_concrete as hc;
use crate::{HostTensor, Result};

pub struct MethodResult {
    /// The circuit's hard masks on the full model.
    pub masks: Masks,
    pub kept: Vec<Component>,
    pub removed: Vec<Component>,
    /// The values removed components take; None for resample ablation, whose values are each
    /// prompt's own corrupted run, measured afresh for every batch.
    pub ablation: Option<Ablation>,
    /// Name, settings and the discovery split's KL.
    pub method: MethodInfo,
    /// ablate's verdict on each candidate, in order (empty for learned methods).
    pub decisions: Vec<DecisionRecord>,
    /// node-prune's loss curve.
    pub training: Option<Vec<StepRecord>>,
    /// An edge circuit (edge-prune): its edges; `masks`, `kept` and `removed` then hold the
    /// components with a kept edge out.
    pub edges: Option<EdgeCircuit>,
    /// edge-prune's values per writer (`[1, d]`, mean ablation) and its loss curve.
    pub edge_values: Option<Vec<HostTensor>>,
    pub edge_training: Option<Vec<EdgeStepRecord>>,
    /// One line for people.
    pub summary: String,
}

impl AblateRun {
    /// The finished sweep as a method result (`seconds`: the time it took, for the summary).
    pub fn into_result(self, opts: &AblateOptions, seconds: f64) -> MethodResult {
        MethodResult {
            summary: format!(
                "ablate: {} of {} components removed in {seconds:.1} s (KL {:.5})",
                self.removed.len(),
                self.state.order().len(),
                self.state.kl_cur()
            ),
            method: MethodInfo {
                name: "ablate".into(),
                hyperparameters: json!({ "alpha": opts.alpha, "ablation": opts.ablation, "mlps": opts.mlps, "neurons": opts.neurons }),
                discovery_kl: self.state.kl_cur(),
            },
            decisions: self
                .state
                .decisions
                .iter()
                .map(|d| DecisionRecord { component: d.component, kl: d.kl, removed: d.accepted })
                .collect(),
            masks: self.masks,
            kept: self.kept,
            removed: self.removed,
            ablation: Some(self.ablation),
            training: None,
            edges: None,
            edge_values: None,
            edge_training: None,
        }
    }
}

impl NodePruneRun {
    /// The finished training as a method result.
    pub fn into_result(self, opts: &NodePruneOptions, seconds: f64) -> MethodResult {
        let last = self.state.history.last().cloned();
        MethodResult {
            summary: format!(
                "node-prune: {} steps in {seconds:.1} s · final loss {:.4} · {} components kept, {} removed · discovery KL {:.5}",
                self.state.step,
                last.as_ref().map_or(f64::NAN, |r| r.loss),
                self.kept.len(),
                self.removed.len(),
                self.discovery_kl
            ),
            method: MethodInfo {
                name: "node-prune".into(),
                hyperparameters: json!({
                    "granularity": opts.granularity.names(),
                    "sparsity_weight": opts.sparsity_weight,
                    "steps": opts.steps,
                    "lr": opts.lr,
                    "warmup": opts.warmup,
                    "batch": opts.batch,
                    "seed": opts.seed,
                    "ablation": opts.ablation,
                    "margin": opts.margin,
                    "init_open": opts.init_open,
                    "target_sparsity": opts.target_sparsity,
                    "lambda_lr": opts.lambda_lr,
                    "granularity_weights": opts.granularity_weights,
                    "final_loss": last.as_ref().map(|r| r.loss),
                    "final_expected_sparsity": last.as_ref().map(|r| r.sparsity),
                }),
                discovery_kl: self.discovery_kl,
            },
            decisions: vec![],
            masks: self.masks,
            kept: self.kept,
            removed: self.removed,
            ablation: self.ablation,
            training: Some(self.state.history),
            edges: None,
            edge_values: None,
            edge_training: None,
        }
    }
}

impl EdgePruneRun {
    /// The finished training as a method result on a model of `shape` with `n_kv_heads` per layer
    /// (the layout's): the effective edges with their gates, and as components those with a kept
    /// edge out.
    pub fn into_result(self, opts: &EdgePruneOptions, layout: &EdgeLayout, shape: &ModelShape, n_kv_heads: Vec<usize>,
        seconds: f64) -> Result<MethodResult> {
        let n = layout.n_edges();
        let selected = self.kept.iter().filter(|&&k| k).count();
        let log_alpha = &self.state.log_alpha;
        let edges = EdgeCircuit::new(layout, n_kv_heads, &self.effective, |i| hc::deterministic(log_alpha[i]), opts.target_sparsity, selected, self.closed);
        let gates: Vec<f32> = self.effective.iter().map(|&k| k as u8 as f32).collect();
        let kept = live_components(layout, &gates);
        let removed: Vec<Component> = shape.components(false).into_iter().filter(|c| !kept.contains(c)).collect();
        let masks = shape.masks_without(&removed)?;
        let last = self.state.history.last().cloned();
        Ok(MethodResult {
            summary: format!(
                "edge-prune: {} steps in {seconds:.1} s · {} of {n} edges kept ({} selected, the rest reach nothing{}) · {} heads and MLPs · discovery KL {:.5}",
                self.state.step,
                edges.kept.len(),
                selected,
                if self.closed > 0 { format!("; {} more of the target's were closed by the training", self.closed) } else { String::new() },
                kept.len(),
                self.discovery_kl
            ),
            method: MethodInfo {
                name: "edge-prune".into(),
                hyperparameters: json!({
                    "target_sparsity": opts.target_sparsity,
                    "steps": opts.steps,
                    "lr": opts.lr,
                    "lambda_lr": opts.lambda_lr,
                    "warmup": opts.warmup,
                    "batch": opts.batch,
                    "seed": opts.seed,
                    "ablation": opts.ablation,
                    "init_log_alpha": opts.init_log_alpha,
                    "kl_over": if opts.answer_vocab.is_some() { "answers" } else { "vocab" },
                    "answer_vocab": opts.answer_vocab,
                    "cut": opts.cut,
                    "hold": opts.hold,
                    "schedule": opts.schedule,
                    "lambda2_scale": opts.lambda2_scale,
                    "final_loss": last.as_ref().map(|r| r.loss),
                    "final_expected_sparsity": last.as_ref().map(|r| r.sparsity),
                    "count_held_from": self.state.held_from,
                }),
                discovery_kl: self.discovery_kl,
            },
            decisions: vec![],
            masks,
            kept,
            removed,
            ablation: None,
            training: None,
            edges: Some(edges),
            edge_values: self.values,
            edge_training: Some(self.state.history),
        })
    }
}
