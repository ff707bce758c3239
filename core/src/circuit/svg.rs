//! `circuit.svg`: the circuit at a glance. A row per layer (layer 0 at the bottom, as the residual
//! stream flows up), a cell per head and one for the MLP; kept components filled, removed ones
//! hollow and grey. Each cell carries its name (`L12H3`) as a tooltip.

use std::collections::HashSet;
use std::fmt::Write;

use super::{Component, ModelShape};

const CELL: usize = 22;
const GAP: usize = 4;
const LEFT: usize = 44;
const TOP: usize = 40;
const MLP_W: usize = 44;

/// Draws `shape` with `kept` marked; an MLP cell shows how many of its neurons are kept when
/// neurons were decided on.
pub fn render(shape: &ModelShape, kept: &[Component], title: &str) -> String {
    let kept: HashSet<Component> = kept.iter().copied().collect();
    let max_heads = shape.n_heads.iter().copied().max().unwrap_or(0);
    let width = LEFT + max_heads * (CELL + GAP) + GAP + MLP_W + 16;
    let height = TOP + shape.n_layers() * (CELL + GAP) + 40;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(s, r##"<text x="8" y="18" font-size="13" fill="#222">{}</text>"##, escape(title));
    for l in 0..shape.n_layers() {
        let row = shape.n_layers() - 1 - l;
        let y = TOP + row * (CELL + GAP);
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
    let y = TOP + shape.n_layers() * (CELL + GAP) + 14;
    let _ = writeln!(s, r##"<text x="{LEFT}" y="{y}" fill="#555">heads 0…{}, then the MLP · filled: in the circuit</text>"##, max_heads.saturating_sub(1));
    s.push_str("</svg>\n");
    s
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
