//! What the page draws of a standalone edge model: its nodes placed by layer in the source
//! model's shape (the embeddings in the bottom row, a row per layer, the logits on top; what
//! pruning removed is kept as a placeholder), and each edge of the model's own layout named as in
//! the source model, joining its writer's node to its reader's, with its gate in the circuit. A
//! node holds the edges it toggles. No DOM here.

use std::collections::HashMap;

use carve_core::mask::{Edge, EdgeLayout, Reader, Writer};

use crate::engine::Session;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Emb,
    Head,
    Mlp,
    Logits,
}

/// A node as drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct ENode {
    /// Its name in the source model (`L3H2`, `L3MLP`, `emb`, `logits`).
    pub name: String,
    pub kind: Kind,
    /// 0: the embeddings; 1 + source layer; the last row: the logits.
    pub row: usize,
    /// Head index, or the column after the widest layer's heads for an MLP.
    pub col: usize,
    /// In this model (else pruned away: drawn, not clickable).
    pub present: bool,
    /// Edges out of it (for the logits: into it); on while any of them is.
    pub out: Vec<usize>,
    /// Every edge a click toggles: `out`, the edges into its query (or MLP input), and into its
    /// key and value when it alone reads them.
    pub all: Vec<usize>,
}

/// An edge of the model's own layout.
#[derive(Clone, Debug, PartialEq)]
pub struct EEdge {
    /// Its number in the layout (its place in the mask).
    pub index: usize,
    /// Its name in the source model (`L0MLP -> L1H1.q`).
    pub name: String,
    pub from: usize,
    pub to: usize,
    /// What it feeds: `q`, `k`, `v`, `mlp` or `logits` (its colour).
    pub feeds: &'static str,
    /// Its gate in the circuit file, when it lists it.
    pub gate: Option<f64>,
    /// How many edges of this model carry this name: more than one for a key or value input that
    /// the pruned model gives each of the query heads sharing it.
    pub copies: usize,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct EdgeDrawing {
    /// Row labels, bottom up.
    pub rows: Vec<String>,
    /// Head columns of the widest layer.
    pub cols: usize,
    pub nodes: Vec<ENode>,
    pub edges: Vec<EEdge>,
}

/// Source layer and head names of the model's own layers (identity without `carve_layers`).
struct Names<'a> {
    s: &'a Session,
}

impl Names<'_> {
    fn layer(&self, l: usize) -> usize {
        self.s.layout.as_ref().and_then(|p| p.get(l)).map_or(l, |p| p.source_layer)
    }
    fn head(&self, l: usize, h: usize) -> usize {
        self.s.layout.as_ref().and_then(|p| p.get(l)).and_then(|p| p.heads.get(h).copied()).unwrap_or(h)
    }
    fn kv(&self, l: usize, kv: usize) -> usize {
        self.s.layout.as_ref().and_then(|p| p.get(l)).and_then(|p| p.kv_heads.get(kv).copied()).unwrap_or(kv)
    }
    fn writer(&self, w: Writer) -> Writer {
        match w {
            Writer::Head { layer, head } => Writer::Head { layer: self.layer(layer), head: self.head(layer, head) },
            Writer::Mlp { layer } => Writer::Mlp { layer: self.layer(layer) },
            other => other,
        }
    }
    fn reader(&self, r: Reader) -> Reader {
        match r {
            Reader::Q { layer, head } => Reader::Q { layer: self.layer(layer), head: self.head(layer, head) },
            Reader::K { layer, kv } => Reader::K { layer: self.layer(layer), kv: self.kv(layer, kv) },
            Reader::V { layer, kv } => Reader::V { layer: self.layer(layer), kv: self.kv(layer, kv) },
            Reader::Mlp { layer } => Reader::Mlp { layer: self.layer(layer) },
            Reader::Logits => Reader::Logits,
        }
    }
}

/// The drawing of `s`'s edges (`layout`, the model's own).
pub fn edge_drawing(s: &Session, layout: &EdgeLayout) -> EdgeDrawing {
    let names = Names { s };
    let own = &s.shape;
    // The source model's shape: the circuit's, else as much as this model shows of it.
    let (n_layers, heads_of, mlp_of): (usize, Vec<usize>, Vec<bool>) = match s.circuit.as_ref().map(|c| &c.shape) {
        Some(c) if c.n_layers() > 0 && (0..own.n_layers()).all(|l| names.layer(l) < c.n_layers()) => {
            (c.n_layers(), c.n_heads.clone(), c.d_ff.iter().map(|&d| d > 0).collect())
        }
        _ => {
            let n = (0..own.n_layers()).map(|l| names.layer(l) + 1).max().unwrap_or(0);
            let (mut heads, mut mlp) = (vec![0; n], vec![false; n]);
            for l in 0..own.n_layers() {
                let src = names.layer(l);
                heads[src] = heads[src].max((0..own.n_heads[l]).map(|h| names.head(l, h) + 1).max().unwrap_or(0));
                mlp[src] |= own.d_ff[l] > 0;
            }
            (n, heads, mlp)
        }
    };
    let cols = heads_of.iter().copied().max().unwrap_or(0).max(2);
    let mut nodes = vec![ENode { name: "emb".into(), kind: Kind::Emb, row: 0, col: 0, present: true, out: vec![], all: vec![] }];
    if layout.writers.contains(&Writer::Pos) {
        nodes.push(ENode { name: "pos".into(), kind: Kind::Emb, row: 0, col: 1, present: true, out: vec![], all: vec![] });
    }
    let mut at: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
    for l in 0..n_layers {
        let heads = (0..heads_of[l]).map(|h| (format!("L{l}H{h}"), Kind::Head, h));
        let mlp = mlp_of[l].then(|| (format!("L{l}MLP"), Kind::Mlp, cols));
        for (name, kind, col) in heads.chain(mlp) {
            at.insert(name.clone(), nodes.len());
            nodes.push(ENode { name, kind, row: l + 1, col, present: false, out: vec![], all: vec![] });
        }
    }
    at.insert("logits".into(), nodes.len());
    nodes.push(ENode { name: "logits".into(), kind: Kind::Logits, row: n_layers + 1, col: 0, present: true, out: vec![], all: vec![] });

    let writer_node = |w: Writer| at.get(&names.writer(w).to_string()).copied();
    // Query heads per KV head in each of this model's layers.
    let group = |l: usize| own.n_heads[l] / s.loaded.weights.layers[l].n_kv_heads.max(1);
    // The node a reader feeds, and whether that node alone reads it.
    let reader_node = |r: Reader| -> Option<(usize, bool)> {
        let (name, alone) = match r {
            Reader::Q { layer, head } => (format!("L{}H{}", names.layer(layer), names.head(layer, head)), true),
            // A KV head's inputs serve its group: drawn into the group's first query head.
            Reader::K { layer, kv } | Reader::V { layer, kv } => {
                let g = group(layer).max(1);
                (format!("L{}H{}", names.layer(layer), names.head(layer, kv * g)), g == 1)
            }
            Reader::Mlp { layer } => (format!("L{}MLP", names.layer(layer)), true),
            Reader::Logits => ("logits".into(), true),
        };
        at.get(&name).map(|&i| (i, alone))
    };
    let gates: HashMap<String, f64> = s
        .circuit
        .as_ref()
        .and_then(|c| c.edges.as_ref())
        .map(|e| e.kept.iter().map(|k| (k.edge.to_string(), k.gate)).collect())
        .unwrap_or_default();
    let mut edges = Vec::with_capacity(layout.n_edges());
    for (r, &reader) in layout.readers.iter().enumerate() {
        let Some((to, alone)) = reader_node(reader) else { continue };
        for w in 0..layout.reads[r] {
            let i = layout.first[r] + w;
            let writer = layout.writers[w];
            let Some(from) = writer_node(writer) else { continue };
            let name = Edge { writer: names.writer(writer), reader: names.reader(reader) }.to_string();
            let feeds = match reader {
                Reader::Q { .. } => "q",
                Reader::K { .. } => "k",
                Reader::V { .. } => "v",
                Reader::Mlp { .. } => "mlp",
                Reader::Logits => "logits",
            };
            let gate = gates.get(&name).copied();
            nodes[from].present = true;
            nodes[from].out.push(i);
            nodes[from].all.push(i);
            nodes[to].present = true;
            if reader == Reader::Logits {
                nodes[to].out.push(i);
            }
            if alone {
                nodes[to].all.push(i);
            }
            edges.push(EEdge { index: i, name, from, to, feeds, gate, copies: 1 });
        }
    }
    let mut count: HashMap<&str, usize> = HashMap::new();
    for e in &edges {
        *count.entry(e.name.as_str()).or_default() += 1;
    }
    let copies: Vec<usize> = edges.iter().map(|e| count[e.name.as_str()]).collect();
    for (e, c) in edges.iter_mut().zip(copies) {
        e.copies = c;
    }
    let mut rows = vec!["in".to_string()];
    rows.extend((0..n_layers).map(|l| format!("L{l}")));
    rows.push("out".into());
    EdgeDrawing { rows, cols, nodes, edges }
}
