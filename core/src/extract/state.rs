//! The sweep's state: decisions so far, KL_cur and the position in the fixed candidate order.
//! Saved after every decision batch, it resumes a run exactly (KL_cur is kept to the bit).

use serde::{Deserialize, Serialize};

use super::{AblateOptions, ProgressInfo};
use crate::circuit::{Component, ModelShape};
use crate::{Error, Result};

const FORMAT: &str = "carve-ablate-state";
const VERSION: u32 = 1;

/// One candidate's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub component: Component,
    /// KL_new: mean KL(P ‖ P_{S∪{c}}) with S as it was then (nats).
    pub kl: f64,
    /// KL_new − KL_cur < α: the component is left out of the circuit.
    pub accepted: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AblateState {
    pub format: String,
    pub version: u32,
    pub options: AblateOptions,
    pub shape: ModelShape,
    /// Hash of the shape, options and prompts: a state only resumes the run it came from.
    pub fingerprint: String,
    /// Index of the next candidate in the sweep order.
    pub next: usize,
    /// KL_cur for people; `kl_cur_bits` is what a resumed run uses (JSON floats need not round-trip).
    pub kl_cur: f64,
    pub kl_cur_bits: u64,
    pub decisions: Vec<Decision>,
    /// Candidates the fast sweep evaluates in its next batch (adaptive batching). Kept so that a
    /// resumed run batches, and therefore rounds, exactly as the uninterrupted one.
    #[serde(default = "one")]
    pub batch: usize,
}

fn one() -> usize {
    1
}

impl AblateState {
    pub fn new(shape: ModelShape, options: AblateOptions, fingerprint: String) -> Self {
        AblateState {
            format: FORMAT.into(),
            version: VERSION,
            options,
            shape,
            fingerprint,
            next: 0,
            kl_cur: 0.0,
            kl_cur_bits: 0f64.to_bits(),
            decisions: Vec::new(),
            batch: 1,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the state always serializes")
    }

    pub fn from_json(s: &str) -> Result<Self> {
        let st: AblateState =
            serde_json::from_str(s).map_err(|e| Error::Input(format!("not an ablate state file: {e}")))?;
        if st.format != FORMAT || st.version != VERSION {
            return Err(Error::Input(format!(
                "state file is `{}` version {}; this carve reads `{FORMAT}` version {VERSION}",
                st.format, st.version
            )));
        }
        Ok(st)
    }

    /// A resumed state must come from the same model shape, options and prompts.
    pub(super) fn check_matches(&self, shape: &ModelShape, opts: &AblateOptions, fingerprint: &str) -> Result<()> {
        if &self.shape != shape {
            return Err(Error::Input("the saved state is for a model of another shape".into()));
        }
        if &self.options != opts {
            return Err(Error::Input(format!(
                "the saved state was made with {}, not {}: resume with the options the run started with",
                opts_flags(&self.options),
                opts_flags(opts)
            )));
        }
        if self.fingerprint != fingerprint {
            return Err(Error::Input("the saved state was made on other prompts (fingerprint differs)".into()));
        }
        let order = self.order();
        let known: std::collections::HashSet<&Component> = order.iter().collect();
        if self.next > order.len() || self.decisions.iter().any(|d| !known.contains(&d.component)) {
            return Err(Error::Input("the saved state is inconsistent with its model shape".into()));
        }
        Ok(())
    }

    pub fn kl_cur(&self) -> f64 {
        f64::from_bits(self.kl_cur_bits)
    }

    /// The fixed candidate order: layers last to first; heads, the MLP block, then its neurons.
    pub fn order(&self) -> Vec<Component> {
        let (s, o) = (&self.shape, &self.options);
        let mut v = Vec::new();
        for layer in (0..s.n_layers()).rev() {
            v.extend((0..s.n_heads[layer]).map(|head| Component::Head { layer, head }));
            if o.mlps && s.d_ff[layer] > 0 {
                v.push(Component::Mlp { layer });
            }
            if o.neurons {
                v.extend((0..s.d_ff[layer]).map(|neuron| Component::Neuron { layer, neuron }));
            }
        }
        v
    }

    pub fn removed(&self) -> Vec<Component> {
        self.decisions.iter().filter(|d| d.accepted).map(|d| d.component).collect()
    }

    /// Components of the model not removed: heads, MLP blocks, and with `neurons` the neurons of
    /// kept MLPs.
    pub fn kept(&self) -> Vec<Component> {
        let removed: std::collections::HashSet<Component> = self.removed().into_iter().collect();
        let gone = self.mlps_gone();
        self.shape
            .components(self.options.neurons)
            .into_iter()
            .filter(|c| !removed.contains(c) && !skipped(c, &gone))
            .collect()
    }

    /// Per layer: its MLP block was removed.
    fn mlps_gone(&self) -> Vec<bool> {
        let mut gone = vec![false; self.shape.n_layers()];
        for d in self.decisions.iter().filter(|d| d.accepted) {
            if let Component::Mlp { layer } = d.component {
                gone[layer] = true;
            }
        }
        gone
    }

    /// Candidates of the layer at `next`, from `next` on, with their indices in the order.
    pub(super) fn layer_candidates(&self, order: &[Component]) -> Vec<(usize, Component)> {
        let Some(first) = order.get(self.next) else { return Vec::new() };
        let gone = self.mlps_gone();
        (self.next..order.len())
            .take_while(|&i| order[i].layer() == first.layer())
            .filter(|&i| !skipped(&order[i], &gone))
            .map(|i| (i, order[i]))
            .collect()
    }

    /// Records the verdict on candidate `index` of the order: accepted when KL_new − KL_cur < α.
    pub(super) fn decide(&mut self, index: usize, c: Component, kl_new: f64) -> bool {
        let accepted = kl_new - self.kl_cur() < self.options.alpha;
        if accepted {
            self.kl_cur_bits = kl_new.to_bits();
            self.kl_cur = kl_new;
        }
        self.decisions.push(Decision { component: c, kl: kl_new, accepted });
        self.next = index + 1;
        accepted
    }

    /// Moves `next` past candidates that are skipped (neurons of a removed MLP).
    pub(super) fn skip_ahead(&mut self, order: &[Component]) {
        let gone = self.mlps_gone();
        while self.next < order.len() && skipped(&order[self.next], &gone) {
            self.next += 1;
        }
    }

    pub(super) fn info(&self, order: &[Component], layer: usize) -> ProgressInfo {
        let gone = self.mlps_gone();
        let left_iter = || (self.next..order.len()).filter(|&i| !skipped(&order[i], &gone));
        ProgressInfo {
            layer,
            left_in_layer: left_iter().filter(|&i| order[i].layer() == layer).count(),
            left: left_iter().count(),
            total: order.len(),
            kl: self.kl_cur(),
            removed: self.decisions.iter().filter(|d| d.accepted).count(),
        }
    }
}

/// A neuron of a removed MLP block is not a candidate: the block's ablation already covers it.
fn skipped(c: &Component, mlps_gone: &[bool]) -> bool {
    matches!(c, Component::Neuron { layer, .. } if mlps_gone[*layer])
}

/// FNV-1a over the given words: a stable fingerprint (not a security hash).
pub(super) fn fingerprint(parts: &[&[u32]], extra: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    for p in parts {
        for &w in p.iter().chain(std::iter::once(&u32::MAX)) {
            w.to_le_bytes().into_iter().for_each(&mut eat);
        }
    }
    extra.bytes().for_each(&mut eat);
    format!("{h:016x}")
}

/// Options as the command-line flags that give them: `--alpha 0.01 --ablation mean --mlps`.
fn opts_flags(o: &AblateOptions) -> String {
    let kind = serde_json::to_value(o.ablation).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let mut s = format!("--alpha {} --ablation {kind}", o.alpha);
    if o.mlps {
        s += " --mlps";
    }
    if o.neurons {
        s += " --neurons";
    }
    s
}
