//! The fast sweep: the same decisions as the reference, with less work.
//!
//! - Layers go from last to first, so when layer l is tested S holds only components of layers
//!   ≥ l: the residual stream entering layer l is the full model's. It is captured once, by the
//!   first forward, and every evaluation starts there (`forward_from`).
//! - Logits only at each prompt's last position (`LogitsAt::Last`).
//! - A layer's remaining candidates run in one batch: the discovery prompts repeated once per
//!   candidate, each copy with its own masks (S ∪ {c}, `MaskGroups`). Their KLs are exact for
//!   S as it stands, so the candidates are decided in order until one is accepted; S then changes
//!   and the ones after it are evaluated again with the new S. How many go in one batch is a
//!   trade-off between forwards and wasted evaluations (`Batching`).

use super::prepare::{mean_kls, Context, FullModel};
use super::{AblateState, Batching, Flow, Progress, RunOptions, SweepStats};
use crate::backend::Backend;
use crate::circuit::{Component, Masks};
use crate::model::forward::MaskGroups;
use crate::model::{check_logits, Batch, Capture, LogitsAt};
use crate::{Error, Result};

/// Runs the sweep from `st.next`; false when the progress hook stopped it.
pub(super) async fn sweep<B: Backend>(ctx: &Context<'_, B>, st: &mut AblateState, run: &RunOptions,
    progress: &mut dyn Progress, stats: &mut SweepStats) -> Result<bool> {
    let (model, be) = (ctx.model, ctx.be);
    let order = st.order();
    st.skip_ahead(&order);
    if st.next >= order.len() {
        return Ok(true);
    }
    let full = model.forward(be, &ctx.batch, &ctx.args(LogitsAt::Last, Capture { resid: true, ..Capture::default() }))?;
    stats.forwards += 1;
    let p = be.read(full.logits.as_ref().ok_or_else(no_logits)?).await?;
    // A model that computes NaN is reported where the NaN begins, before any decision.
    check_logits(model, be, &ctx.batch, &ctx.args(LogitsAt::Last, Capture::default()), &p).await?;
    let p = FullModel::new(&p)?;
    let resid = full.captured.resid;
    let max_groups = (run.max_batch_rows / ctx.batch.rows()).max(1);
    while st.next < order.len() {
        let layer = order[st.next].layer();
        let cands = st.layer_candidates(&order);
        let want = match run.batching {
            Batching::Single => 1,
            Batching::WholeLayer => cands.len(),
            Batching::Adaptive => st.batch.max(1),
        };
        let chunk = &cands[..cands.len().min(max_groups).min(want)];
        let start = resid[layer].clone().ok_or_else(|| Error::Backend("the residual stream was not captured".into()))?;
        let kls = evaluate(ctx, st, layer, start, chunk, &p).await?;
        stats.forwards += 1;
        stats.evaluations += chunk.len();
        // Decide in order up to the first acceptance (`decide` records each verdict); the KLs after
        // it were taken with the old S and are dropped.
        let decided = chunk.iter().zip(&kls).position(|(&(index, c), &kl)| st.decide(index, c, kl));
        // Adaptive batching: next take as many as this batch decided, or twice as many if it
        // accepted none.
        st.batch = decided.map_or(2 * chunk.len(), |j| j + 1).min(max_groups);
        st.skip_ahead(&order);
        if progress.update(&st.info(&order, layer), st) == Flow::Stop {
            return Ok(st.next >= order.len());
        }
    }
    Ok(true)
}

/// KL_new of each candidate of one layer, in one forward from the layer's residual stream.
async fn evaluate<B: Backend>(ctx: &Context<'_, B>, st: &AblateState, layer: usize, resid: B::Tensor,
    chunk: &[(usize, Component)], p: &FullModel) -> Result<Vec<f64>> {
    let (model, be, batch) = (ctx.model, ctx.be, &ctx.batch);
    let removed = st.removed();
    let masks = chunk
        .iter()
        .map(|&(_, c)| st.shape.masks_without(removed.iter().chain(std::iter::once(&c))))
        .collect::<Result<Vec<Masks>>>()?;
    let g = masks.len();
    let rows = batch.rows();
    let ids: Vec<u32> = (0..g).flat_map(|_| 0..rows as u32).collect();
    let resid = be.gather_rows(&resid, &ids)?;
    let repeated = repeat(batch, g);
    let groups = MaskGroups { masks: &masks, rows_per_group: rows };
    let out = model.forward_from_groups(be, &repeated, layer, resid, &ctx.args(LogitsAt::Last, Capture::default()), &groups)?;
    let q = be.read(out.logits.as_ref().ok_or_else(no_logits)?).await?;
    mean_kls(p, &q)
}

/// The batch's prompts `g` times over, in order.
fn repeat(batch: &Batch, g: usize) -> Batch {
    Batch { ids: batch.ids.repeat(g), lens: batch.lens.repeat(g), seq: batch.seq }
}

pub(super) fn no_logits() -> Error {
    Error::Backend("the forward returned no logits".into())
}
