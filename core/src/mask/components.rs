//! Components by name, in the usual interpretability notation (`L12H3`, `L12MLP`, `L12N345`,
//! layers, heads and neurons counted from 0), and the masks that ablate a set of them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Masks;
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
        let at = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (digits, tail) = rest.split_at_checked(at).ok_or_else(bad)?;
        let layer = parse_index(digits).ok_or_else(bad)?;
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
pub(crate) fn parse_index(s: &str) -> Option<usize> {
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

/// Heads and MLP widths per layer: what components a model has. Read from a file, it is checked
/// (one MLP width per layer, sizes within [`ModelShape::MAX_LAYERS`] and the like), so every
/// shape that exists names only components that can be counted and masked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ShapeFields")]
pub struct ModelShape {
    pub n_heads: Vec<usize>,
    pub d_ff: Vec<usize>,
}

/// A shape as written, before [`ModelShape::validate`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShapeFields {
    n_heads: Vec<usize>,
    d_ff: Vec<usize>,
}

impl TryFrom<ShapeFields> for ModelShape {
    type Error = String;
    fn try_from(f: ShapeFields) -> std::result::Result<ModelShape, String> {
        let s = ModelShape { n_heads: f.n_heads, d_ff: f.d_ff };
        s.problem().map_or(Ok(s), Err)
    }
}

impl ModelShape {
    /// More layers, heads in a layer or MLP neurons in a layer than any model carve loads has.
    pub const MAX_LAYERS: usize = 4096;
    pub const MAX_HEADS: usize = 4096;
    pub const MAX_D_FF: usize = 1 << 24;

    pub fn n_layers(&self) -> usize {
        self.n_heads.len()
    }

    /// Checks that `n_heads` and `d_ff` give one value per layer and that the sizes are within
    /// the bounds above, naming the first value that is not.
    pub fn validate(&self) -> Result<()> {
        self.problem().map_or(Ok(()), |p| Err(Error::Input(format!("shape: {p}"))))
    }

    /// What [`ModelShape::validate`] finds wrong, if anything.
    fn problem(&self) -> Option<String> {
        if self.n_heads.len() != self.d_ff.len() {
            return Some(format!(
                "`n_heads` lists {} layers and `d_ff` {}: give one value per layer in both",
                self.n_heads.len(),
                self.d_ff.len()
            ));
        }
        if self.n_layers() > Self::MAX_LAYERS {
            return Some(format!("{} layers; carve handles at most {}", self.n_layers(), Self::MAX_LAYERS));
        }
        if let Some((l, h)) = self.n_heads.iter().enumerate().find(|(_, &h)| h > Self::MAX_HEADS) {
            return Some(format!("`n_heads[{l}]` is {h}; carve handles at most {} heads in a layer", Self::MAX_HEADS));
        }
        if let Some((l, f)) = self.d_ff.iter().enumerate().find(|(_, &f)| f > Self::MAX_D_FF) {
            return Some(format!("`d_ff[{l}]` is {f}; carve handles at most {} MLP neurons in a layer", Self::MAX_D_FF));
        }
        None
    }

    /// Heads of layer `l`; 0 past the last layer.
    pub fn heads_in(&self, l: usize) -> usize {
        self.n_heads.get(l).copied().unwrap_or(0)
    }

    /// MLP neurons of layer `l`; 0 past the last layer.
    pub fn d_ff_in(&self, l: usize) -> usize {
        self.d_ff.get(l).copied().unwrap_or(0)
    }

    /// Errors unless `c` exists in this model, saying which part of its name is out of range.
    pub fn check(&self, c: Component) -> Result<()> {
        let l = c.layer();
        let n = self.n_layers();
        if l >= n || l >= self.d_ff.len() {
            return Err(Error::Input(format!("component {c} is not in this model: it has {n} layers (L0 to L{})", n.saturating_sub(1))));
        }
        let (heads, d_ff) = (self.heads_in(l), self.d_ff_in(l));
        let why = match c {
            Component::Head { head, .. } if head >= heads => match heads {
                0 => format!("layer {l} has no heads"),
                _ => format!("layer {l} has {heads} heads (H0 to H{})", heads - 1),
            },
            Component::Mlp { .. } | Component::Neuron { .. } if d_ff == 0 => format!("layer {l} has no MLP"),
            Component::Neuron { neuron, .. } if neuron >= d_ff => format!("layer {l}'s MLP has {d_ff} neurons (N0 to N{})", d_ff - 1),
            _ => return Ok(()),
        };
        Err(Error::Input(format!("component {c} is not in this model: {why}")))
    }

    /// All-ones masks with every component of `removed` set to 0.
    pub fn masks_without<'a>(&self, removed: impl IntoIterator<Item = &'a Component>) -> Result<Masks> {
        let mut m = Masks::ones(&self.n_heads, &self.d_ff);
        for &c in removed {
            self.check(c)?;
            let slot = match c {
                Component::Head { layer, head } => m.heads.get_mut(layer).and_then(|h| h.get_mut(head)),
                Component::Mlp { layer } => m.mlp.get_mut(layer),
                Component::Neuron { layer, neuron } => m.neurons.get_mut(layer).and_then(|n| n.get_mut(neuron)),
            };
            *slot.ok_or_else(|| Error::Input(format!("component {c} is not in this model")))? = 0.0;
        }
        Ok(m)
    }

    /// Every component of the model (heads, MLP blocks; neurons when `neurons`), in layer order.
    pub fn components(&self, neurons: bool) -> Vec<Component> {
        let mut v = Vec::new();
        for (l, (&heads, &d_ff)) in self.n_heads.iter().zip(&self.d_ff).enumerate() {
            v.extend((0..heads).map(|head| Component::Head { layer: l, head }));
            if d_ff > 0 {
                v.push(Component::Mlp { layer: l });
            }
            if neurons {
                v.extend((0..d_ff).map(|neuron| Component::Neuron { layer: l, neuron }));
            }
        }
        v
    }

    /// The first difference from `other`, for a message; `names` say which shape is which:
    /// "layer 3 has 4 heads in the circuit and 2 in the model".
    pub fn difference(&self, other: &ModelShape, names: (&str, &str)) -> Option<String> {
        let (a, b) = names;
        if self.n_layers() != other.n_layers() {
            return Some(format!("{} layers in {a} and {} in {b}", self.n_layers(), other.n_layers()));
        }
        for l in 0..self.n_layers() {
            let (x, y) = (self.heads_in(l), other.heads_in(l));
            if x != y {
                return Some(format!("layer {l} has {x} heads in {a} and {y} in {b}"));
            }
            let (x, y) = (self.d_ff_in(l), other.d_ff_in(l));
            if x != y {
                return Some(format!("layer {l} has {x} MLP neurons in {a} and {y} in {b}"));
            }
        }
        (self != other).then(|| format!("the MLP widths of {a} and {b} list different numbers of layers"))
    }
}
