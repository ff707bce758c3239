//! **attribute**: attribution patching. One forward and one backward with every mask at 1 give
//! each component's linear estimate of what ablating it alone does to the task metric:
//! `metric(m = 0) − metric(m = 1) ≈ −∂metric/∂m = Σ_positions (a − x)·∂metric/∂x`, x the
//! component's output and a its ablation value. The top k are then ablated one at a time (a
//! forward each) for their true effect, so the estimate's faithfulness is in plain view.

use crate::backend::Backend;
use crate::circuit::{Masks, ModelShape};
use crate::extract::node_prune::{Granularity, Kind, Layout};
use crate::metrics::loss::example_metric;
use crate::model::ablation::DeviceAblation;
use crate::model::{Batch, Model};
use crate::tasks::{Example, Target, Task, YearTokens};
use crate::{Error, HostTensor, Result};

/// One component's estimate and, for the top ones, its true effect.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Attribution {
    /// `L3H2`, `L3ATTN` (the whole attention block), `L3MLP`, `L3N12`.
    pub component: String,
    /// Predicted change of the mean metric when the component alone is ablated.
    pub estimate: f64,
    /// The change measured by ablating it (top k only).
    pub actual: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AttributeResult {
    /// The task's metric key and its mean over the examples on the full model.
    pub metric: String,
    pub full: f64,
    pub n: usize,
    /// Every component asked for, largest |estimate| first.
    pub items: Vec<Attribution>,
}

/// Attribution of every component of the granularities asked for on `examples`; the `top` of
/// them by |estimate| also ablated one at a time. `batch` prompts per forward.
#[allow(clippy::too_many_arguments)]
pub async fn attribute<B: Backend>(model: &Model<B>, be: &B, task: &Task, examples: &[Example],
    ablation: Option<&DeviceAblation<B>>, granularity: Granularity, top: usize, batch: usize) -> Result<AttributeResult> {
    if examples.is_empty() {
        return Err(Error::Input(format!("{}: no examples to attribute on", task.name)));
    }
    let shape = ModelShape::of(&model.weights.layers, |t| be.shape(t)[0]);
    let layout = Layout::new(&shape, granularity);
    if layout.is_empty() {
        return Err(Error::Input("the model has no components of the granularities asked for".into()));
    }
    let ones = Masks::ones(&shape.n_heads, &shape.d_ff);
    let (full, grads) = metric_and_grad(model, be, task, examples, &ones, ablation, batch, true).await?;
    let grads = grads.expect("asked for");
    let g = layout.gate_grads(&grads);
    let mut items: Vec<(usize, Attribution)> =
        (0..layout.len()).map(|i| (i, Attribution { component: name(&layout, i), estimate: -g[i], actual: None })).collect();
    items.sort_by(|a, b| b.1.estimate.abs().total_cmp(&a.1.estimate.abs()).then(a.0.cmp(&b.0)));
    for (i, item) in items.iter_mut().take(top) {
        let mut z = vec![1.0; layout.len()];
        z[*i] = 0.0;
        let (m, _) = metric_and_grad(model, be, task, examples, &layout.masks(&z), ablation, batch, false).await?;
        item.actual = Some(m - full);
    }
    Ok(AttributeResult { metric: task.metric.key().into(), full, n: examples.len(), items: items.into_iter().map(|x| x.1).collect() })
}

/// The component a gate of `layout` sits on, by name.
fn name(layout: &Layout, i: usize) -> String {
    let s = &layout.shape;
    let k = layout.kind_of(i);
    let j = i - layout.ranges[Kind::ALL.iter().position(|&x| x == k).expect("kind")].start;
    let split = |widths: &[usize]| {
        let mut j = j;
        for (l, &w) in widths.iter().enumerate() {
            if j < w {
                return (l, j);
            }
            j -= w;
        }
        (widths.len(), 0)
    };
    match k {
        Kind::Attn => format!("L{j}ATTN"),
        Kind::Mlp => format!("L{j}MLP"),
        Kind::Head => {
            let (l, h) = split(&s.n_heads);
            format!("L{l}H{h}")
        }
        Kind::Neuron => {
            let (l, n) = split(&s.d_ff);
            format!("L{l}N{n}")
        }
    }
}

/// The mean metric over `examples` under `masks` and, with `grad`, its gradient with respect to
/// every mask. Years written digit by digit read two positions: the prompt's last, and the one
/// after the year's first digit.
#[allow(clippy::too_many_arguments)]
async fn metric_and_grad<B: Backend>(model: &Model<B>, be: &B, task: &Task, examples: &[Example], masks: &Masks,
    ablation: Option<&DeviceAblation<B>>, batch: usize, grad: bool) -> Result<(f64, Option<Masks>)> {
    let digits = match &task.years {
        Some(YearTokens::Digits(d)) => Some(d.clone()),
        _ => None,
    };
    let n = examples.len() as f64;
    let mut total = 0.0;
    let mut acc: Option<Masks> = None;
    for chunk in examples.chunks(batch.max(1)) {
        let seqs: Vec<Vec<u32>> = chunk
            .iter()
            .map(|e| {
                let mut p = e.prompt.clone();
                if let (Some(d), Target::Year { yy }) = (&digits, &e.target) {
                    p.push(d[(*yy / 10) as usize]);
                }
                p
            })
            .collect();
        let b = Batch::new(&seqs, &model.config)?;
        let two = digits.is_some();
        let rows: Vec<u32> = b
            .last_rows()
            .iter()
            .flat_map(|&r| if two { vec![r - 1, r] } else { vec![r] })
            .collect();
        let per = if two { 2 } else { 1 };
        let tape = model.forward_tape_at(be, &b, masks, ablation, rows)?;
        let logits = be.read(&tape.logits).await?;
        if let Some(x) = logits.data.iter().find(|x| !x.is_finite()) {
            return Err(Error::NonFinite(format!("{}: the forward gave a logit of {x}", task.name)));
        }
        let v = model.config.vocab;
        let mut dl = vec![0f32; logits.data.len()];
        for (i, e) in chunk.iter().enumerate() {
            let first = logits.row(i * per);
            let cond = two.then(|| logits.row(i * per + 1));
            let (m, g1, g2) = example_metric(task, e, first, cond)?;
            total += m / n;
            for (d, g) in dl[i * per * v..][..v].iter_mut().zip(&g1) {
                *d = (g / n) as f32;
            }
            if let Some(g2) = g2 {
                for (d, g) in dl[(i * per + 1) * v..][..v].iter_mut().zip(&g2) {
                    *d = (g / n) as f32;
                }
            }
        }
        if grad {
            let g = model.backward(be, &b, tape, &HostTensor::new(logits.shape.clone(), dl)).await?;
            acc = Some(match acc {
                None => g,
                Some(a) => add(&a, &g),
            });
        }
    }
    Ok((total, acc))
}

fn add(a: &Masks, b: &Masks) -> Masks {
    let v = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(x, y)| x + y).collect::<Vec<_>>();
    Masks {
        heads: a.heads.iter().zip(&b.heads).map(|(x, y)| v(x, y)).collect(),
        attn: v(&a.attn, &b.attn),
        mlp: v(&a.mlp, &b.mlp),
        neurons: a.neurons.iter().zip(&b.neurons).map(|(x, y)| v(x, y)).collect(),
        layers: v(&a.layers, &b.layers),
    }
}
