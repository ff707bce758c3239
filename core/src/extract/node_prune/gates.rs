//! The gates node-prune learns: one hard-concrete gate per component of each granularity asked
//! for, laid out flat (attention blocks, MLP blocks, heads layer by layer, neurons layer by layer),
//! and how a set of gate values becomes the masks the forward takes.

use serde::{Deserialize, Serialize};

use crate::circuit::{Component, Masks, ModelShape};
use crate::{Error, Result};

/// Which components carry a gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granularity {
    pub attn: bool,
    pub mlps: bool,
    pub heads: bool,
    pub neurons: bool,
}

impl Granularity {
    pub const NAMES: [&'static str; 4] = ["attn", "mlps", "heads", "neurons"];
    pub const ALL: Granularity = Granularity { attn: true, mlps: true, heads: true, neurons: true };

    /// Parses a comma-separated list of `attn`, `mlps`, `heads`, `neurons` (at least one).
    pub fn parse(s: &str) -> Result<Granularity> {
        let mut g = Granularity { attn: false, mlps: false, heads: false, neurons: false };
        for part in s.split(',').map(str::trim) {
            match part {
                "attn" => g.attn = true,
                "mlps" | "mlp" => g.mlps = true,
                "heads" => g.heads = true,
                "neurons" => g.neurons = true,
                other => {
                    return Err(Error::Input(format!(
                        "`{other}` is not a granularity: give a comma-separated list of {}",
                        Self::NAMES.join(", ")
                    )))
                }
            }
        }
        Ok(g)
    }

    pub fn names(&self) -> Vec<&'static str> {
        let on = [self.attn, self.mlps, self.heads, self.neurons];
        Self::NAMES.iter().zip(on).filter(|(_, o)| *o).map(|(n, _)| *n).collect()
    }
}

/// The kinds of gate, in layout order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Attn,
    Mlp,
    Head,
    Neuron,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Attn, Kind::Mlp, Kind::Head, Kind::Neuron];
    pub fn name(self) -> &'static str {
        match self {
            Kind::Attn => "attn",
            Kind::Mlp => "mlps",
            Kind::Head => "heads",
            Kind::Neuron => "neurons",
        }
    }
}

/// Where each kind's gates sit in the flat vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub shape: ModelShape,
    pub granularity: Granularity,
    /// `ranges[k]` for `Kind::ALL[k]`: empty when that kind carries no gate.
    pub ranges: [std::ops::Range<usize>; 4],
}

impl Layout {
    pub fn new(shape: &ModelShape, g: Granularity) -> Layout {
        let l = shape.n_layers();
        let counts = [
            if g.attn { l } else { 0 },
            if g.mlps { l } else { 0 },
            if g.heads { shape.n_heads.iter().sum() } else { 0 },
            if g.neurons { shape.d_ff.iter().sum() } else { 0 },
        ];
        let mut at = 0;
        let ranges = counts.map(|n| {
            let r = at..at + n;
            at += n;
            r
        });
        Layout { shape: shape.clone(), granularity: g, ranges }
    }

    pub fn len(&self) -> usize {
        self.ranges[3].end
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn kind_of(&self, i: usize) -> Kind {
        Kind::ALL[self.ranges.iter().position(|r| r.contains(&i)).expect("gate index in the layout")]
    }

    /// Masks from gate values (`z` per gate); components without a gate stay at 1.
    pub fn masks(&self, z: &[f64]) -> Masks {
        let s = &self.shape;
        let mut m = Masks::ones(&s.n_heads, &s.d_ff);
        let mut it = self.ranges[0].clone();
        for l in 0..s.n_layers() {
            if let Some(i) = it.next() {
                m.attn[l] = z[i] as f32;
            }
        }
        let mut it = self.ranges[1].clone();
        for l in 0..s.n_layers() {
            if let Some(i) = it.next() {
                m.mlp[l] = z[i] as f32;
            }
        }
        let mut it = self.ranges[2].clone();
        for (l, &h) in s.n_heads.iter().enumerate() {
            for head in 0..h {
                if let Some(i) = it.next() {
                    m.heads[l][head] = z[i] as f32;
                }
            }
        }
        let mut it = self.ranges[3].clone();
        for (l, &f) in s.d_ff.iter().enumerate() {
            for n in 0..f {
                if let Some(i) = it.next() {
                    m.neurons[l][n] = z[i] as f32;
                }
            }
        }
        m
    }

    /// `∂loss/∂z` per gate from the gradient with respect to the masks (shaped as `masks`).
    pub fn gate_grads(&self, g: &Masks) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.len());
        if self.granularity.attn {
            out.extend(g.attn.iter().map(|&v| v as f64));
        }
        if self.granularity.mlps {
            out.extend(g.mlp.iter().map(|&v| v as f64));
        }
        if self.granularity.heads {
            out.extend(g.heads.iter().flatten().map(|&v| v as f64));
        }
        if self.granularity.neurons {
            out.extend(g.neurons.iter().flatten().map(|&v| v as f64));
        }
        debug_assert_eq!(out.len(), self.len());
        out
    }

    /// The circuit of hard 0/1 masks: which components are kept and removed. A head goes with its
    /// attention block and a neuron with its MLP block; with mean ablation (`linear_blocks`) an MLP
    /// all of whose neurons go is removed too: a block's mean output is its output at its neurons'
    /// means, so the circuit is the same. Neurons are listed (all of them) when they carry gates.
    pub fn circuit(&self, hard: &Masks, linear_blocks: bool) -> (Vec<Component>, Vec<Component>, Masks) {
        let s = &self.shape;
        let mut m = hard.clone();
        let (mut kept, mut removed) = (Vec::new(), Vec::new());
        for l in 0..s.n_layers() {
            let attn_on = hard.attn[l] > 0.5;
            for h in 0..s.n_heads[l] {
                let on = attn_on && hard.heads[l][h] > 0.5;
                m.heads[l][h] = on as u8 as f32;
                let c = Component::Head { layer: l, head: h };
                if on { kept.push(c) } else { removed.push(c) }
            }
            m.attn[l] = 1.0;
            let d_ff = s.d_ff[l];
            let neurons_on = (0..d_ff).filter(|&n| hard.neurons[l][n] > 0.5).count();
            let mlp_on = d_ff > 0 && hard.mlp[l] > 0.5 && (neurons_on > 0 || !linear_blocks);
            if d_ff > 0 {
                m.mlp[l] = mlp_on as u8 as f32;
                if mlp_on { kept.push(Component::Mlp { layer: l }) } else { removed.push(Component::Mlp { layer: l }) }
            }
            for n in 0..d_ff {
                let on = mlp_on && hard.neurons[l][n] > 0.5;
                m.neurons[l][n] = on as u8 as f32;
                if self.granularity.neurons {
                    let c = Component::Neuron { layer: l, neuron: n };
                    if on { kept.push(c) } else { removed.push(c) }
                }
            }
        }
        (kept, removed, m)
    }
}

/// Parameters each component holds, per layer: a head's share of its layer's attention weights, a
/// neuron's share of its MLP's. What target sparsity is measured in.
#[derive(Clone, Debug, PartialEq)]
pub struct Costs {
    pub head: Vec<f64>,
    pub neuron: Vec<f64>,
    /// All of them: the attention and MLP weights of every layer.
    pub total: f64,
}

impl Layout {
    /// The expected fraction of the attention and MLP parameters removed, ŝ = 1 − E[kept]/total,
    /// with a head kept when it and its block are open (independent gates, P(open) the expected
    /// L0 of each), likewise a neuron; and ∂ŝ/∂log α for every gate. Components without a gate
    /// count as open.
    pub fn expected_sparsity(&self, p_open: &[f64], dp_open: &[f64], c: &Costs) -> (f64, Vec<f64>) {
        let s = &self.shape;
        let mut grad = vec![0.0; self.len()];
        let mut kept = 0.0;
        let (mut hi, mut ni) = (self.ranges[2].start, self.ranges[3].start);
        for l in 0..s.n_layers() {
            let gate = |r: &std::ops::Range<usize>| (!r.is_empty()).then(|| r.start + l);
            let (ga, gm) = (gate(&self.ranges[0]), gate(&self.ranges[1]));
            let pa = ga.map_or(1.0, |i| p_open[i]);
            let pm = gm.map_or(1.0, |i| p_open[i]);
            let mut heads = 0.0;
            for _ in 0..s.n_heads[l] {
                if self.granularity.heads {
                    heads += p_open[hi] * c.head[l];
                    grad[hi] = -dp_open[hi] * pa * c.head[l] / c.total;
                    hi += 1;
                } else {
                    heads += c.head[l];
                }
            }
            let mut neurons = 0.0;
            for _ in 0..s.d_ff[l] {
                if self.granularity.neurons {
                    neurons += p_open[ni] * c.neuron[l];
                    grad[ni] = -dp_open[ni] * pm * c.neuron[l] / c.total;
                    ni += 1;
                } else {
                    neurons += c.neuron[l];
                }
            }
            if let Some(i) = ga {
                grad[i] = -dp_open[i] * heads / c.total;
            }
            if let Some(i) = gm {
                grad[i] = -dp_open[i] * neurons / c.total;
            }
            kept += pa * heads + pm * neurons;
        }
        (1.0 - kept / c.total, grad)
    }
}
