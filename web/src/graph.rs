//! The circuit graph: a row per layer (layer 0 at the bottom), a node per head and one for the MLP.
//! Kept nodes are filled, ablated ones hollow, ones pruned away dashed; a click toggles one;
//! hovering shows its name and what the method measured of it.

use leptos::prelude::*;

/// One node as drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Index in the mask; None for a component a pruned model no longer has.
    pub index: Option<usize>,
    pub name: String,
    /// What the circuit file says of it (the method's verdict and KL), shown on hover.
    pub detail: String,
    pub layer: usize,
    /// Column: head index, or `max_heads` for the MLP.
    pub col: usize,
    pub mlp: bool,
    /// An MLP that keeps only some of its neurons: how many, drawn on the node.
    pub neurons: Option<usize>,
}

const CELL: usize = 20;
const GAP: usize = 4;
const LEFT: usize = 40;

#[component]
pub fn Graph(nodes: Vec<Node>, labels: Vec<String>, cols: usize, mask: RwSignal<Vec<bool>>, baseline: Signal<Vec<bool>>) -> impl IntoView {
    let layers = labels.len();
    let width = LEFT + (cols + 1) * (CELL + GAP) + CELL + 8;
    let height = layers * (CELL + GAP) + 8;
    let y_of = move |layer: usize| (layers - 1 - layer) * (CELL + GAP) + 4;
    // Layers are named as in the source model (a pruned model keeps some of them).
    let labels = labels
        .into_iter()
        .enumerate()
        .map(|(l, name)| view! { <text x="4" y=(y_of(l) + CELL - 6).to_string() class="layer-label">{name}</text> })
        .collect_view();
    let cells = nodes
        .into_iter()
        .map(|n| {
            let x = LEFT + n.col * (CELL + GAP) + if n.mlp { GAP } else { 0 };
            let w = if n.mlp { 2 * CELL } else { CELL };
            let count = n.neurons.map(|k| {
                view! { <text x=(x + w / 2).to_string() y=(y_of(n.layer) + CELL - 6).to_string() class="neuron-count" text-anchor="middle">{k.to_string()}</text> }
            });
            let Some(i) = n.index else {
                let title = format!("{} — pruned away: its weights are not in this model{}", n.name, n.detail);
                return view! {
                    <rect x=x.to_string() y=y_of(n.layer).to_string() width=w.to_string() height=CELL.to_string() rx="3"
                        class="node pruned" data-name=n.name.clone()>
                        <title>{title}</title>
                    </rect>
                }
                .into_any();
            };
            let class = move || {
                let on = mask.with(|m| m.get(i).copied().unwrap_or(true));
                let changed = baseline.with(|b| b.get(i).copied().unwrap_or(true)) != on;
                format!("node {}{}", if on { "kept" } else { "removed" }, if changed { " changed" } else { "" })
            };
            let title = {
                let (name, detail) = (n.name.clone(), n.detail.clone());
                move || {
                    let state = if mask.with(|m| m.get(i).copied().unwrap_or(true)) { "on (click to ablate)" } else { "ablated (click to restore)" };
                    format!("{name} — {state}{detail}")
                }
            };
            view! {
                <rect
                    x=x.to_string() y=y_of(n.layer).to_string() width=w.to_string() height=CELL.to_string() rx="3"
                    class=class data-name=n.name.clone()
                    on:click=move |_| mask.update(|m| if let Some(b) = m.get_mut(i) { *b = !*b })
                >
                    <title>{title}</title>
                </rect>
                {count}
            }
            .into_any()
        })
        .collect_view();
    view! {
        <svg class="graph" width=width.to_string() height=height.to_string() viewBox=format!("0 0 {width} {height}")>
            {labels}
            {cells}
        </svg>
    }
}
