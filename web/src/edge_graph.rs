//! The edge graph of a standalone edge model: nodes by layer (embeddings at the bottom, logits on
//! top, what pruning removed dashed), and the circuit's edges as curves from writer to reader,
//! coloured by what they feed and as strong as their gate. A click on an edge toggles it; a click
//! on a node cuts all its edges, or brings back the circuit's. Edges cut from the circuit stay
//! drawn (dashed) so that they can be restored; the rest of the model's edges are drawn only when
//! asked (`show_all`).

use std::sync::Arc;

use leptos::prelude::*;

use crate::edge_view::{EEdge, ENode, EdgeDrawing, Kind};

const CELL: usize = 22;
const ROW: usize = CELL + 34;
/// About how wide the heads' columns spread.
const SPREAD: usize = 900;
const LEFT: usize = 40;
const TOP: usize = 6;

struct Geom {
    rows: usize,
    cols: usize,
    /// Column pitch: wider for models with few heads, so that their edges spread out.
    col: usize,
}

impl Geom {
    fn y(&self, row: usize) -> usize {
        TOP + (self.rows - 1 - row) * ROW
    }
    /// Left edge and width of a node's cell.
    fn x(&self, n: &ENode) -> (usize, usize) {
        match n.kind {
            Kind::Emb | Kind::Head => (LEFT + n.col * self.col, CELL),
            Kind::Mlp => (LEFT + self.cols * self.col + 4, 2 * CELL),
            Kind::Logits => (LEFT, 2 * CELL + self.col - CELL),
        }
    }
    fn center(&self, n: &ENode) -> (f64, f64) {
        let (x, w) = self.x(n);
        ((x + w / 2) as f64, (self.y(n.row) + CELL / 2) as f64)
    }
    /// A curve from writer to reader, bent to one side so that edges along a column or a row stay
    /// apart.
    fn path(&self, e: &EEdge, nodes: &[ENode]) -> String {
        let ((x0, y0), (x1, y1)) = (self.center(&nodes[e.from]), self.center(&nodes[e.to]));
        let (dx, dy) = (x1 - x0, y1 - y0);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let k = (8.0 + 0.12 * len).min(60.0);
        let (cx, cy) = ((x0 + x1) / 2.0 + dy / len * k, (y0 + y1) / 2.0 - dx / len * k);
        format!("M{x0:.1} {y0:.1} Q{cx:.1} {cy:.1} {x1:.1} {y1:.1}")
    }
}

fn on(m: &[bool], i: usize) -> bool {
    m.get(i).copied().unwrap_or(false)
}

#[component]
pub fn EdgeGraph(drawing: EdgeDrawing, mask: RwSignal<Vec<bool>>, baseline: Signal<Vec<bool>>, show_all: Signal<bool>) -> impl IntoView {
    let col = (SPREAD / (drawing.cols + 3)).clamp(CELL + 8, 3 * CELL);
    let g = Arc::new(Geom { rows: drawing.rows.len(), cols: drawing.cols, col });
    let width = LEFT + drawing.cols * col + 4 + 2 * CELL + 24;
    // Many edges are drawn fainter and thinner, so that the layers stay visible through them.
    let dense = match drawing.edges.iter().filter(|e| e.gate.is_some()).count() {
        n if n > 300 => 0.55,
        _ => 1.0,
    };
    let height = drawing.rows.len() * ROW + TOP;
    let labels = drawing
        .rows
        .iter()
        .enumerate()
        .map(|(r, name)| view! { <text x="4" y=(g.y(r) + CELL - 6).to_string() class="layer-label">{name.clone()}</text> })
        .collect_view();
    let d = Arc::new(drawing);

    // The edges drawn: those on, those of the circuit (cut ones too), or all of them.
    let shown = {
        let d = d.clone();
        Memo::new(move |_| {
            let (all, m, b) = (show_all.get(), mask.get(), baseline.get());
            (0..d.edges.len()).filter(|&j| all || on(&m, d.edges[j].index) || on(&b, d.edges[j].index)).collect::<Vec<usize>>()
        })
    };
    let edge_view = {
        let (d, g) = (d.clone(), g.clone());
        move |j: usize| {
            let e = &d.edges[j];
            let i = e.index;
            let path = g.path(e, &d.nodes);
            let (w, o) = match e.gate {
                Some(gate) => (0.8 + 1.6 * gate, 0.35 + 0.6 * gate),
                None => (1.2, 0.7),
            };
            let (w, o) = (w * dense, o * dense);
            let feeds = e.feeds;
            let class = move || {
                let (now, was) = (mask.with(|m| on(m, i)), baseline.with(|b| on(b, i)));
                let state = match (now, was) {
                    (true, true) => "on",
                    (true, false) => "on added",
                    (false, true) => "cut",
                    (false, false) => "off",
                };
                format!("edge {feeds} {state}")
            };
            let title = {
                let (name, gate, copies) = (e.name.clone(), e.gate, e.copies);
                move || {
                    let state = if mask.with(|m| on(m, i)) { "on (click to cut)" } else { "cut: carries its writer's value (click to restore)" };
                    let gate = gate.map(|g| format!("\ngate {g:.3} in the circuit")).unwrap_or_default();
                    let copies = if copies > 1 {
                        format!("\none of {copies} copies: the pruned model gives each query head that shares this KV input its own")
                    } else {
                        String::new()
                    };
                    format!("{name} — {state}{gate}{copies}")
                }
            };
            view! {
                <g class=class data-edge=e.name.clone() data-index=i.to_string()
                    on:click=move |_| mask.update(|m| if let Some(b) = m.get_mut(i) { *b = !*b })>
                    <title>{title}</title>
                    <path class="hit" d=path.clone() />
                    <path class="line" d=path stroke-width=format!("{w:.2}") stroke-opacity=format!("{o:.2}") />
                </g>
            }
        }
    };
    let nodes = d
        .nodes
        .iter()
        .map(|n| {
            let ((x, w), y) = (g.x(n), g.y(n.row));
            let text = matches!(n.kind, Kind::Emb | Kind::Logits).then(|| {
                view! { <text x=(x + w / 2).to_string() y=(y + CELL - 6).to_string() class="node-name" text-anchor="middle">{n.name.clone()}</text> }
            });
            if !n.present {
                let title = format!("{} — pruned away: not in this model", n.name);
                return view! {
                    <rect x=x.to_string() y=y.to_string() width=w.to_string() height=CELL.to_string() rx="3" class="node pruned" data-name=n.name.clone()>
                        <title>{title}</title>
                    </rect>
                }
                .into_any();
            }
            let (out, all) = (Arc::new(n.out.clone()), Arc::new(n.all.clone()));
            let is_on = |m: &[bool], out: &[usize]| out.iter().any(|&i| on(m, i));
            let class = {
                let out = out.clone();
                move || {
                    let now = mask.with(|m| is_on(m, &out));
                    let changed = baseline.with(|b| is_on(b, &out)) != now;
                    format!("node {}{}", if now { "kept" } else { "removed" }, if changed { " changed" } else { "" })
                }
            };
            let title = {
                let (out, name, n_all) = (out.clone(), n.name.clone(), n.all.len());
                move || {
                    let live = mask.with(|m| out.iter().filter(|&&i| on(m, i)).count());
                    let state = if live > 0 { "click to cut all its edges" } else { "cut (click to bring back its circuit edges)" };
                    format!("{name} — {live} of its {} edges out on, {n_all} edges in all: {state}", out.len())
                }
            };
            let toggle = move |_| {
                let b = baseline.get_untracked();
                mask.update(|m| {
                    let now = is_on(m, &out);
                    for &i in all.iter() {
                        if let Some(x) = m.get_mut(i) {
                            *x = !now && on(&b, i);
                        }
                    }
                    // A node the circuit had off comes back with all its edges.
                    if !now && !is_on(m, &out) {
                        for &i in all.iter() {
                            if let Some(x) = m.get_mut(i) {
                                *x = true;
                            }
                        }
                    }
                })
            };
            view! {
                <rect x=x.to_string() y=y.to_string() width=w.to_string() height=CELL.to_string() rx="3"
                    class=class data-name=n.name.clone() on:click=toggle>
                    <title>{title}</title>
                </rect>
                {text}
            }
            .into_any()
        })
        .collect_view();
    view! {
        <svg class="graph edges" width=width.to_string() height=height.to_string() viewBox=format!("0 0 {width} {height}")>
            {labels}
            <g class="edge-layer">
                <For each=move || shown.get() key=|j| *j children=edge_view />
            </g>
            {nodes}
        </svg>
    }
}
