//! `circuit.svg`: the circuit at a glance. A row per layer (layer 0 at the bottom, as the residual
//! stream flows up), a cell per head and one for the MLP; kept components filled, removed ones
//! hollow and grey. Each cell carries its name (`L12H3`) as a tooltip. An edge circuit
//! (`render_edges`) adds the embeddings below and the logits above, and draws each kept edge from
//! its writer to its reader's component, coloured by what it feeds (query, key, value, MLP,
//! logits) and as strong as its gate.

use std::collections::HashSet;
use std::fmt::Write;

use super::{Component, EdgeCircuit, ModelShape};
use crate::mask::{Reader, Writer};

const CELL: usize = 22;
const GAP: usize = 4;
const LEFT: usize = 44;
const TOP: usize = 40;
const MLP_W: usize = 44;

/// Draws `shape` with `kept` marked; an MLP cell shows how many of its neurons are kept when
/// neurons were decided on.
pub fn render(shape: &ModelShape, kept: &[Component], title: &str) -> String {
    draw(shape, kept, None, title)
}

/// Draws an edge circuit: the components with a kept edge out filled, and every kept edge.
pub fn render_edges(shape: &ModelShape, kept: &[Component], edges: &EdgeCircuit, title: &str) -> String {
    draw(shape, kept, Some(edges), title)
}

/// Where a row's cells start: the embeddings' row below the layers and the logits' above them
/// in an edge drawing.
struct Grid {
    rows: usize,
    max_heads: usize,
    top: usize,
}

impl Grid {
    fn y(&self, layer_row: usize) -> usize {
        self.top + (self.rows - 1 - layer_row) * (CELL + GAP)
    }
    fn head(&self, layer: usize, head: usize) -> (usize, usize) {
        (LEFT + head * (CELL + GAP) + CELL / 2, self.y(layer + 1) + CELL / 2)
    }
    fn mlp(&self, layer: usize) -> (usize, usize) {
        (LEFT + self.max_heads * (CELL + GAP) + GAP + MLP_W / 2, self.y(layer + 1) + CELL / 2)
    }
}

const EDGE_COLORS: [(&str, &str); 5] = [("q", "#2b6cb0"), ("k", "#2f855a"), ("v", "#dd6b20"), ("MLP", "#6b46c1"), ("logits", "#222222")];

fn draw(shape: &ModelShape, kept: &[Component], edges: Option<&EdgeCircuit>, title: &str) -> String {
    let kept: HashSet<Component> = kept.iter().copied().collect();
    let max_heads = shape.n_heads.iter().copied().max().unwrap_or(0).max(if edges.is_some() { 2 } else { 0 });
    let width = LEFT + max_heads * (CELL + GAP) + GAP + MLP_W + 16;
    let extra = if edges.is_some() { 2 } else { 0 };
    let grid = Grid { rows: shape.n_layers() + 2, max_heads, top: TOP - if edges.is_some() { 0 } else { CELL + GAP } };
    let height = TOP + (shape.n_layers() + extra) * (CELL + GAP) + if edges.is_some() { 56 } else { 40 };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(s, r##"<text x="8" y="18" font-size="13" fill="#222">{}</text>"##, escape(title));
    if let Some(e) = edges {
        draw_edges(&mut s, &grid, shape, e);
        let y = grid.y(0);
        let _ = writeln!(s, r##"<text x="8" y="{}" fill="#555">in</text>"##, y + CELL - 7);
        cell(&mut s, LEFT, y, CELL, true, "emb", None);
        if e.pos {
            cell(&mut s, LEFT + CELL + GAP, y, CELL, true, "pos", None);
        }
        let y = grid.y(shape.n_layers() + 1);
        let _ = writeln!(s, r##"<text x="8" y="{}" fill="#555">out</text>"##, y + CELL - 7);
        cell(&mut s, LEFT, y, 2 * CELL + GAP, true, "logits", None);
    }
    for l in 0..shape.n_layers() {
        let y = grid.y(l + 1);
        let _ = writeln!(s, r##"<text x="8" y="{}" fill="#555">L{l}</text>"##, y + CELL - 7);
        for h in 0..shape.n_heads[l] {
            let c = Component::Head { layer: l, head: h };
            let x = LEFT + h * (CELL + GAP);
            cell(&mut s, x, y, CELL, kept.contains(&c), &c.to_string(), None);
        }
        if shape.d_ff[l] > 0 {
            let c = Component::Mlp { layer: l };
            let x = LEFT + max_heads * (CELL + GAP) + GAP;
            let neurons = kept.iter().filter(|k| matches!(k, Component::Neuron { layer, .. } if *layer == l)).count();
            let label = (neurons > 0).then(|| format!("{neurons}"));
            cell(&mut s, x, y, MLP_W, kept.contains(&c), &c.to_string(), label.as_deref());
        }
    }
    let y = grid.y(0) + if edges.is_some() { CELL + GAP } else { 0 } + 14;
    let _ = writeln!(s, r##"<text x="{LEFT}" y="{y}" fill="#555">heads 0…{}, then the MLP · filled: in the circuit</text>"##, max_heads.saturating_sub(1));
    if let Some(e) = edges {
        let mut x = LEFT;
        let _ = write!(s, r##"<text x="{x}" y="{}" fill="#555">{} edges into:</text>"##, y + 14, e.kept.len());
        x += 92;
        for (name, color) in EDGE_COLORS {
            let _ = write!(s, r##"<text x="{x}" y="{}" fill="{color}">{name}</text>"##, y + 14);
            x += 12 + 7 * name.len();
        }
        s.push('\n');
    }
    s.push_str("</svg>\n");
    s
}

/// Each kept edge as a curve from its writer's cell to its reader's component.
fn draw_edges(s: &mut String, g: &Grid, shape: &ModelShape, e: &EdgeCircuit) {
    for k in &e.kept {
        let from = match k.edge.writer {
            Writer::Emb => (LEFT + CELL / 2, g.y(0) + CELL / 2),
            Writer::Pos => (LEFT + CELL + GAP + CELL / 2, g.y(0) + CELL / 2),
            Writer::Head { layer, head } => g.head(layer, head),
            Writer::Mlp { layer } => g.mlp(layer),
        };
        let (to, color) = match k.edge.reader {
            Reader::Q { layer, head } => (g.head(layer, head), EDGE_COLORS[0].1),
            // A KV head's inputs serve its group: drawn into the group's first query head.
            Reader::K { layer, kv } => (g.head(layer, kv * group(shape, e, layer)), EDGE_COLORS[1].1),
            Reader::V { layer, kv } => (g.head(layer, kv * group(shape, e, layer)), EDGE_COLORS[2].1),
            Reader::Mlp { layer } => (g.mlp(layer), EDGE_COLORS[3].1),
            Reader::Logits => ((LEFT + CELL + GAP / 2, g.y(g.rows - 1) + CELL / 2), EDGE_COLORS[4].1),
        };
        // Bend sideways so that edges between cells of one column stay apart.
        let bend = 10.0 + 0.15 * (to.1 as f64 - from.1 as f64).abs();
        let (cx, cy) = ((from.0 + to.0) as f64 / 2.0 + bend, (from.1 + to.1) as f64 / 2.0);
        let _ = writeln!(
            s,
            r#"<path d="M{} {} Q{cx:.1} {cy:.1} {} {}" fill="none" stroke="{color}" stroke-opacity="{:.2}" stroke-width="{:.2}"><title>{} (gate {:.3})</title></path>"#,
            from.0,
            from.1,
            to.0,
            to.1,
            0.25 + 0.6 * k.gate,
            0.6 + 1.2 * k.gate,
            escape(&k.edge.to_string()),
            k.gate
        );
    }
}

/// Query heads per KV head in `layer`.
fn group(shape: &ModelShape, e: &EdgeCircuit, layer: usize) -> usize {
    let kv = e.n_kv_heads.get(layer).copied().unwrap_or(1).max(1);
    (shape.n_heads.get(layer).copied().unwrap_or(0) / kv).max(1)
}

fn cell(s: &mut String, x: usize, y: usize, w: usize, on: bool, name: &str, label: Option<&str>) {
    let (fill, stroke) = if on { ("#2b6cb0", "#1a4480") } else { ("#f2f2f2", "#c8c8c8") };
    let _ = writeln!(
        s,
        r#"<rect x="{x}" y="{y}" width="{w}" height="{CELL}" rx="3" fill="{fill}" stroke="{stroke}"><title>{name}{}</title></rect>"#,
        if on { " (kept)" } else { " (removed)" }
    );
    if let Some(t) = label {
        let _ = writeln!(s, r##"<text x="{}" y="{}" fill="#fff" text-anchor="middle">{t}</text>"##, x + w / 2, y + CELL - 7);
    }
}

/// Text for SVG/XML content.
pub fn escape(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
