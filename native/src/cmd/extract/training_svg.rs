//! `training.svg`: a learned method's loss and KL (left) and what it keeps (right: node-prune's
//! kept fraction of each granularity; edge-prune's kept edges, expected sparsity and target)
//! against the step, drawn as plain SVG polylines.

use carve_core::extract::edge_prune::EdgeStepRecord;
use carve_core::extract::node_prune::StepRecord;
use std::fmt::Write;

const W: f64 = 360.0;
const H: f64 = 220.0;
const PAD: f64 = 40.0;
const COLORS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];

/// One panel at x offset `x0`: each series (name, values) scaled to [0, y_max].
fn panel(s: &mut String, x0: f64, title: &str, series: &[(String, Vec<f64>)], y_max: f64, steps: usize) {
    let (px, py, pw, ph) = (x0 + PAD, 30.0, W - PAD - 10.0, H - 60.0);
    let _ = write!(s, r##"<rect x="{px}" y="{py}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##);
    let _ = write!(s, r##"<text x="{}" y="20" font-size="13" text-anchor="middle">{title}</text>"##, px + pw / 2.0);
    let _ = write!(s, r##"<text x="{}" y="{}" font-size="10" text-anchor="end">{y_max:.3}</text>"##, px - 4.0, py + 8.0);
    let _ = write!(s, r##"<text x="{}" y="{}" font-size="10" text-anchor="end">0</text>"##, px - 4.0, py + ph);
    let _ = write!(s, r##"<text x="{}" y="{}" font-size="10" text-anchor="middle">step {steps}</text>"##, px + pw, py + ph + 14.0);
    for (i, (name, v)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts: Vec<String> = v
            .iter()
            .enumerate()
            .filter(|(_, y)| y.is_finite())
            .map(|(k, y)| {
                let x = px + pw * (k + 1) as f64 / steps.max(1) as f64;
                let y = py + ph * (1.0 - (y / y_max).clamp(0.0, 1.0));
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(s, r##"<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{}"/>"##, pts.join(" "));
        let _ = write!(s, r##"<text x="{}" y="{}" font-size="11" fill="{c}">{name}</text>"##, px + 6.0, py + 14.0 + 13.0 * i as f64);
    }
}

/// node-prune's curves.
pub fn node(history: &[StepRecord], title: &str) -> String {
    let loss: Vec<f64> = history.iter().map(|r| r.loss).collect();
    let kl: Vec<f64> = history.iter().map(|r| r.kl).collect();
    let names: Vec<String> = history.first().map(|r| r.kept.iter().map(|(k, _)| k.clone()).collect()).unwrap_or_default();
    let kept: Vec<(String, Vec<f64>)> = names
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("{k} kept"), history.iter().map(|r| r.kept.get(i).map_or(f64::NAN, |x| x.1)).collect()))
        .collect();
    render(loss, kl, "kept fraction", &kept, title)
}

/// edge-prune's curves.
pub fn edges(history: &[EdgeStepRecord], title: &str) -> String {
    let loss: Vec<f64> = history.iter().map(|r| r.loss).collect();
    let kl: Vec<f64> = history.iter().map(|r| r.kl).collect();
    let right = [
        ("edges kept (gate > 0.5)".to_string(), history.iter().map(|r| r.kept).collect()),
        ("expected sparsity".to_string(), history.iter().map(|r| r.sparsity).collect()),
        ("target".to_string(), history.iter().map(|r| r.target).collect()),
    ];
    render(loss, kl, "edges", &right, title)
}

fn render(loss: Vec<f64>, kl: Vec<f64>, right_title: &str, right: &[(String, Vec<f64>)], title: &str) -> String {
    let n = loss.len();
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif"><title>{}</title>"##,
        2.0 * W,
        H,
        esc(title)
    );
    let top = loss.iter().chain(&kl).filter(|v| v.is_finite()).fold(1e-9f64, |a, &b| a.max(b));
    panel(&mut s, 0.0, "loss and KL", &[("loss".into(), loss), ("KL".into(), kl)], top, n);
    panel(&mut s, W, right_title, right, 1.0, n);
    s += "</svg>\n";
    s
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
