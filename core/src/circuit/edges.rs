//! The `edges` section of an edge circuit's `circuit.json` (edge-prune): the model's edge layout
//! (with the file's `shape`), the target and the sparsity reached, and each kept edge with its gate.
//!
//! ```json
//! "edges": {
//!   "n_kv_heads": [2, 2], "pos": false, "total": 40, "target_sparsity": 0.9,
//!   "selected": 4, "closed": 0, "sparsity": 0.925,
//!   "kept": [ { "edge": "emb -> L0H1.q", "gate": 0.98 }, { "edge": "L1MLP -> logits", "gate": 1.0 } ]
//! }
//! ```

use serde::{Deserialize, Serialize};

use crate::mask::{Component, Edge, EdgeLayout, ModelShape, Writer};
use crate::{Error, Result};

/// The edges an edge circuit keeps, on the layout of the model it was found on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeCircuit {
    /// KV heads per layer: with the circuit's `shape` (query heads, MLP widths), the model's
    /// writers and readers (`mask::edges`).
    pub n_kv_heads: Vec<usize>,
    /// Whether GPT-2's position embedding is a writer.
    pub pos: bool,
    /// Edges of the whole model.
    pub total: usize,
    /// The fraction of edges the method was asked to remove.
    pub target_sparsity: f64,
    /// Edges the threshold kept, before the edges that reach nothing were dropped.
    pub selected: usize,
    /// Edges among the target's top ones by gate that the training had closed (gate at most ½),
    /// left out rather than reopened: `selected + closed` is the target's edge count (0 in files
    /// written before it was recorded).
    #[serde(default)]
    pub closed: usize,
    /// 1 − kept / total.
    pub sparsity: f64,
    /// The circuit's edges, in layout order.
    pub kept: Vec<KeptEdge>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeptEdge {
    pub edge: Edge,
    /// The gate's deterministic value at the end of training, in [0, 1].
    pub gate: f64,
}

impl EdgeCircuit {
    /// The circuit of the edges `kept` of `layout` (a model with `n_kv_heads` per layer), each with
    /// `gate(i)`; `selected` edges were chosen for `target_sparsity` before the dangling ones went,
    /// and `closed` more of the target's were left out as closed.
    pub fn new(layout: &EdgeLayout, n_kv_heads: Vec<usize>, kept: &[bool], gate: impl Fn(usize) -> f64, target_sparsity: f64,
        selected: usize, closed: usize) -> EdgeCircuit {
        let n = layout.n_edges();
        let kept: Vec<KeptEdge> = (0..n)
            .filter(|&i| kept.get(i) == Some(&true))
            .filter_map(|i| layout.edge(i).map(|edge| KeptEdge { edge, gate: gate(i) }))
            .collect();
        EdgeCircuit {
            n_kv_heads,
            pos: layout.writers.contains(&Writer::Pos),
            total: n,
            target_sparsity,
            selected,
            closed,
            sparsity: 1.0 - kept.len() as f64 / n.max(1) as f64,
            kept,
        }
    }

    /// The edge layout of a model of `shape` with these KV heads.
    pub fn layout(&self, shape: &ModelShape) -> Result<EdgeLayout> {
        if self.n_kv_heads.len() != shape.n_heads.len() {
            return Err(Error::Input(format!(
                "circuit file: `edges.n_kv_heads` has {} layers, the shape {}",
                self.n_kv_heads.len(),
                shape.n_heads.len()
            )));
        }
        for (l, (&kv, &q)) in self.n_kv_heads.iter().zip(&shape.n_heads).enumerate() {
            if q == 0 && kv != 0 || q > 0 && (kv == 0 || q % kv != 0) {
                return Err(Error::Input(format!("circuit file: layer {l} has {q} query heads and {kv} KV heads (`edges.n_kv_heads`)")));
            }
        }
        let has_mlp: Vec<bool> = shape.d_ff.iter().map(|&d| d > 0).collect();
        EdgeLayout::new(&shape.n_heads, &self.n_kv_heads, &has_mlp, self.pos)
    }

    /// Gate 1 on each kept edge of `layout`, 0 elsewhere.
    pub fn gates(&self, layout: &EdgeLayout) -> Result<Vec<f32>> {
        let mut g = vec![0.0f32; layout.n_edges()];
        for k in &self.kept {
            g[layout.index(k.edge).map_err(|e| Error::Input(format!("circuit file: `edges.kept`: {e}")))?] = 1.0;
        }
        Ok(g)
    }

    /// Checks the section against the circuit's shape and its removed components: the layout's edge
    /// count is `total`, every kept edge is in the layout (once), gates are in [0, 1], the counts and
    /// sparsities are consistent, and no kept edge leaves a component listed as removed.
    pub fn validate(&self, shape: &ModelShape, removed: &[Component]) -> Result<()> {
        let bad = |m: String| Err(Error::Input(format!("circuit file: `edges`: {m}")));
        let layout = self.layout(shape)?;
        if layout.n_edges() != self.total {
            return bad(format!("`total` is {}, but a model of this shape has {} edges", self.total, layout.n_edges()));
        }
        for (name, v) in [("target_sparsity", self.target_sparsity), ("sparsity", self.sparsity)] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return bad(format!("`{name}` is {v}: a fraction in [0, 1]"));
            }
        }
        if self.kept.len() > self.selected || self.selected > self.total {
            return bad(format!("{} kept of {} selected of {} edges: each count must be at most the next", self.kept.len(), self.selected, self.total));
        }
        if self.selected + self.closed > self.total {
            return bad(format!("{} selected and {} closed are more than the {} edges", self.selected, self.closed, self.total));
        }
        let reached = 1.0 - self.kept.len() as f64 / self.total.max(1) as f64;
        if (reached - self.sparsity).abs() > 1e-9 {
            return bad(format!("`sparsity` is {}, but {} kept of {} edges is {reached}", self.sparsity, self.kept.len(), self.total));
        }
        let mut seen = vec![false; layout.n_edges()];
        for k in &self.kept {
            let i = layout.index(k.edge).map_err(|e| Error::Input(format!("circuit file: `edges.kept`: {e}")))?;
            if std::mem::replace(&mut seen[i], true) {
                return bad(format!("`{}` is kept twice", k.edge));
            }
            if !(k.gate.is_finite() && (0.0..=1.0).contains(&k.gate)) {
                return bad(format!("`{}` has gate {}: a gate is in [0, 1]", k.edge, k.gate));
            }
            let node = match k.edge.writer {
                Writer::Head { layer, head } => Some(Component::Head { layer, head }),
                Writer::Mlp { layer } => Some(Component::Mlp { layer }),
                Writer::Emb | Writer::Pos => None,
            };
            if let Some(c) = node.filter(|c| removed.contains(c)) {
                return bad(format!("`{}` leaves {c}, which `removed` lists", k.edge));
            }
        }
        Ok(())
    }
}

/// The heads and MLP blocks an edge circuit keeps: those with a kept edge out (the others compute
/// nothing the logits see).
pub fn live_components(layout: &EdgeLayout, gates: &[f32]) -> Vec<Component> {
    let mut live = vec![false; layout.writers.len()];
    for (i, &g) in gates.iter().enumerate() {
        if g != 0.0 {
            if let Some(e) = layout.edge(i) {
                let w = layout.writers.iter().position(|&x| x == e.writer).expect("the layout's writer");
                live[w] = true;
            }
        }
    }
    layout
        .writers
        .iter()
        .zip(live)
        .filter(|(_, l)| *l)
        .filter_map(|(w, _)| match *w {
            Writer::Head { layer, head } => Some(Component::Head { layer, head }),
            Writer::Mlp { layer } => Some(Component::Mlp { layer }),
            _ => None,
        })
        .collect()
}
