//! The sweep's state: decisions so far, KL_cur and the position in the fixed candidate order.
//! Saved after every decision batch, it resumes a run exactly (KL_cur is kept to the bit).

use std::collections::BTreeMap;

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
    /// KL_new of candidates that the fast sweep evaluated but could not decide (S changed before
    /// their turn), as f64 bits by index in the order: they predict those candidates' verdicts in
    /// the next batch. Kept so that a resumed run predicts, and batches, as the uninterrupted one.
    #[serde(default)]
    pub earlier_kls: BTreeMap<usize, u64>,
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
            earlier_kls: BTreeMap::new(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the state always serializes")
    }

    /// Parses and checks a state file: format and version first, every field's type (a wrong one
    /// named by its path), then what [`AblateState::validate`] checks.
    pub fn from_json(s: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|e| Error::Input(format!("not an ablate state file (invalid JSON: {e})")))?;
        let field = |k: &str| v.get(k).map_or_else(|| "missing".to_string(), |x| format!("{x}"));
        let (format, version) = (v.get("format").and_then(|f| f.as_str()), v.get("version").and_then(|f| f.as_u64()));
        if format != Some(FORMAT) || version != Some(VERSION as u64) {
            return Err(Error::Input(format!(
                "not an ablate state file this carve reads: `format` is {} and `version` {}, expected \"{FORMAT}\" and {VERSION}",
                crate::circuit::file::shown(&field("format")),
                crate::circuit::file::shown(&field("version"))
            )));
        }
        let st: AblateState = crate::circuit::file::from_value(v, "ablate state")?;
        st.validate()?;
        Ok(st)
    }

    /// Checks what the types leave open, so that a state read from a file resumes or is refused,
    /// never misleads the sweep: format and version; α finite and above 0; the fingerprint as
    /// [`fingerprint`] writes it; the shape sane; every decision a candidate of the sweep order
    /// (MLP blocks only with `mlps`, neurons only with `neurons`), in that order, before `next`;
    /// `next` at most the number of candidates; KL_cur finite; `earlier_kls` finite, for candidates of
    /// the sweep.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(format!("ablate state: {m}")));
        if self.format != FORMAT || self.version != VERSION {
            return bad(format!("`{}` version {}; this carve reads `{FORMAT}` version {VERSION}", crate::circuit::file::shown(&self.format), self.version));
        }
        let alpha = self.options.alpha;
        if !(alpha.is_finite() && alpha > 0.0) {
            return bad(format!("`options.alpha` is {alpha}; it must be a finite number above 0"));
        }
        if self.fingerprint.len() != 16 || !self.fingerprint.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return bad(format!("`fingerprint` is `{}`, not 16 lowercase hex digits", crate::circuit::file::shown(&self.fingerprint)));
        }
        self.shape.validate()?;
        if !self.kl_cur().is_finite() || !self.kl_cur.is_finite() {
            return bad("KL_cur (`kl_cur_bits`) is not a finite number".into());
        }
        let too_many = || Error::Input("ablate state: the shape has too many candidates to count".into());
        let starts = self.layer_starts().ok_or_else(too_many)?;
        let total = match starts.first() {
            Some(&s0) => s0.checked_add(self.candidates_in(0).ok_or_else(too_many)?).ok_or_else(too_many)?,
            None => 0,
        };
        if self.next > total {
            return bad(format!("`next` is {}, but the sweep has {total} candidates", self.next));
        }
        for (&i, &bits) in &self.earlier_kls {
            if i >= total {
                return bad(format!("`earlier_kls` has a KL for candidate {i}, but the sweep has {total} candidates"));
            }
            if !f64::from_bits(bits).is_finite() {
                return bad(format!("`earlier_kls` has a KL for candidate {i} that is not a finite number"));
            }
        }
        let mut last: Option<usize> = None;
        for (i, d) in self.decisions.iter().enumerate() {
            let c = d.component;
            let pos = self.position(&starts, c).ok_or_else(|| {
                let why = match self.shape.check(c) {
                    Err(e) => e.to_string(),
                    Ok(()) => "the options do not decide on it".into(),
                };
                Error::Input(format!("ablate state: `decisions[{i}]` is {c}, not a candidate of this sweep: {why}"))
            })?;
            if last.is_some_and(|p| pos <= p) {
                return bad(format!("`decisions[{i}]` ({c}) is out of the sweep's order or given twice"));
            }
            if pos >= self.next {
                return bad(format!("`decisions[{i}]` ({c}) comes at or after `next` ({})", self.next));
            }
            if !d.kl.is_finite() {
                return bad(format!("`decisions[{i}]` ({c}) has a KL that is not a finite number"));
            }
            last = Some(pos);
        }
        Ok(())
    }

    /// Candidates layer `l` contributes to the sweep order.
    fn candidates_in(&self, l: usize) -> Option<usize> {
        let (o, d_ff) = (&self.options, self.shape.d_ff_in(l));
        let mlp = usize::from(o.mlps && d_ff > 0);
        let neurons = if o.neurons { d_ff } else { 0 };
        self.shape.heads_in(l).checked_add(mlp)?.checked_add(neurons)
    }

    /// Per layer, where its candidates start in [`AblateState::order`] (layers go last to first).
    fn layer_starts(&self) -> Option<Vec<usize>> {
        let n = self.shape.n_layers();
        let mut starts = vec![0; n];
        let mut at = 0usize;
        for l in (0..n).rev() {
            *starts.get_mut(l)? = at;
            at = at.checked_add(self.candidates_in(l)?)?;
        }
        Some(starts)
    }

    /// Where `c` is in [`AblateState::order`] (`starts` from [`AblateState::layer_starts`]),
    /// without building it; None when it is not a candidate.
    fn position(&self, starts: &[usize], c: Component) -> Option<usize> {
        let l = c.layer();
        self.shape.check(c).ok()?;
        let heads = self.shape.heads_in(l);
        let mlp = usize::from(self.options.mlps && self.shape.d_ff_in(l) > 0);
        let within = match c {
            Component::Head { head, .. } => head,
            Component::Mlp { .. } if self.options.mlps => heads,
            Component::Neuron { neuron, .. } if self.options.neurons => heads.checked_add(mlp)?.checked_add(neuron)?,
            _ => return None,
        };
        starts.get(l)?.checked_add(within)
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
            v.extend((0..s.heads_in(layer)).map(|head| Component::Head { layer, head }));
            if o.mlps && s.d_ff_in(layer) > 0 {
                v.push(Component::Mlp { layer });
            }
            if o.neurons {
                v.extend((0..s.d_ff_in(layer)).map(|neuron| Component::Neuron { layer, neuron }));
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
            if let Some(g) = gone.get_mut(d.component.layer()).filter(|_| matches!(d.component, Component::Mlp { .. })) {
                *g = true;
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
    matches!(c, Component::Neuron { layer, .. } if mlps_gone.get(*layer) == Some(&true))
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
