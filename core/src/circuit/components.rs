//! Components by name, in the usual interpretability notation (`L12H3`, `L12MLP`, `L12N345`,
//! layers, heads and neurons counted from 0), and the masks that ablate a set of them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::circuit::Masks;
use crate::model::LayerWeights;
use crate::{Error, Result};

/// A node of the circuit: what extraction decides on and pruning removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Head { layer: usize, head: usize },
    Mlp { layer: usize },
    Neuron { layer: usize, neuron: usize },
}

impl Component {
    pub fn layer(self) -> usize {
        match self {
            Component::Head { layer, .. } | Component::Mlp { layer } | Component::Neuron { layer, .. } => layer,
        }
    }

    /// Parses `L12H3`, `L12MLP` or `L12N345`.
    pub fn parse(s: &str) -> Result<Component> {
        let bad = || Error::Input(format!("`{s}` is not a component name (L12H3, L12MLP or L12N345)"));
        let rest = s.strip_prefix('L').ok_or_else(bad)?;
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let layer = parse_index(&rest[..digits]).ok_or_else(bad)?;
        let tail = &rest[digits..];
        if tail == "MLP" {
            return Ok(Component::Mlp { layer });
        }
        if let Some(h) = tail.strip_prefix('H') {
            return parse_index(h).map(|head| Component::Head { layer, head }).ok_or_else(bad);
        }
        if let Some(n) = tail.strip_prefix('N') {
            return parse_index(n).map(|neuron| Component::Neuron { layer, neuron }).ok_or_else(bad);
        }
        Err(bad())
    }
}

/// A decimal index without sign or leading zeros (so that every component has one spelling).
fn parse_index(s: &str) -> Option<usize> {
    let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Component::Head { layer, head } => write!(f, "L{layer}H{head}"),
            Component::Mlp { layer } => write!(f, "L{layer}MLP"),
            Component::Neuron { layer, neuron } => write!(f, "L{layer}N{neuron}"),
        }
    }
}

// JSON spells a component by its name.
impl Serialize for Component {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Component {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Component::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Heads and MLP widths per layer: what components a model has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelShape {
    pub n_heads: Vec<usize>,
    pub d_ff: Vec<usize>,
}

impl ModelShape {
    pub fn of<T>(layers: &[LayerWeights<T>], d_ff: impl Fn(&T) -> usize) -> ModelShape {
        ModelShape { n_heads: layers.iter().map(|l| l.n_heads).collect(), d_ff: layers.iter().map(|l| d_ff(&l.w_up)).collect() }
    }
    pub fn n_layers(&self) -> usize {
        self.n_heads.len()
    }

    /// Errors unless `c` exists in this model.
    pub fn check(&self, c: Component) -> Result<()> {
        let l = c.layer();
        let ok = l < self.n_layers()
            && match c {
                Component::Head { head, .. } => head < self.n_heads[l],
                Component::Mlp { .. } => self.d_ff[l] > 0,
                Component::Neuron { neuron, .. } => neuron < self.d_ff[l],
            };
        if ok {
            Ok(())
        } else {
            Err(Error::Input(format!("component {c} is not in this model ({} layers)", self.n_layers())))
        }
    }

    /// All-ones masks with every component of `removed` set to 0.
    pub fn masks_without<'a>(&self, removed: impl IntoIterator<Item = &'a Component>) -> Result<Masks> {
        let mut m = Masks::ones(&self.n_heads, &self.d_ff);
        for &c in removed {
            self.check(c)?;
            match c {
                Component::Head { layer, head } => m.heads[layer][head] = 0.0,
                Component::Mlp { layer } => m.mlp[layer] = 0.0,
                Component::Neuron { layer, neuron } => m.neurons[layer][neuron] = 0.0,
            }
        }
        Ok(m)
    }

    /// Every component of the model (heads, MLP blocks; neurons when `neurons`), in layer order.
    pub fn components(&self, neurons: bool) -> Vec<Component> {
        let mut v = Vec::new();
        for l in 0..self.n_layers() {
            v.extend((0..self.n_heads[l]).map(|head| Component::Head { layer: l, head }));
            if self.d_ff[l] > 0 {
                v.push(Component::Mlp { layer: l });
            }
            if neurons {
                v.extend((0..self.d_ff[l]).map(|neuron| Component::Neuron { layer: l, neuron }));
            }
        }
        v
    }
}
