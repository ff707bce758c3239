//! The fast sweep: the same decisions as the reference, with less work.
//!
//! - Layers go from last to first, so when layer l is tested S holds only components of layers
//!   ≥ l: the residual stream entering layer l is the full model's. It is captured once, by the
//!   first forward, and every evaluation starts there (`forward_from`).
//! - Logits only at each prompt's last position (`LogitsAt::Last`).
//! - A layer's remaining candidates run in one batch: the discovery prompts repeated once per
//!   candidate, each copy with its own masks (`MaskGroups`). Each candidate's verdict is first
//!   predicted, and each is evaluated with S ∪ {the ones before it predicted accepted} ∪ {c}, so
//!   its KL is exact for the S that stands at its turn as long as the predictions before it hold.
//!   The candidates are decided in order until a verdict differs from its prediction; the ones
//!   after it are evaluated again in the next batch, their KLs kept to predict their verdicts
//!   then. A candidate not evaluated before is predicted rejected (with no prediction at all,
//!   decisions would stop at the first acceptance). How many go in one batch is a trade-off
//!   between forwards and wasted evaluations (`Batching`).

use super::prepare::{mean_kls, Context, FullModel};
use super::{AblateState, Batching, Flow, Progress, RunOptions, SweepStats};
use crate::backend::Backend;
use crate::circuit::Component;
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
        let predicted = predict(st, chunk);
        let start = resid[layer].clone().ok_or_else(|| Error::Backend("the residual stream was not captured".into()))?;
        let kls = evaluate(ctx, st, layer, start, chunk, &predicted, &p).await?;
        stats.forwards += 1;
        stats.evaluations += chunk.len();
        // Decide in order up to the first verdict that was not the predicted one (`decide` records
        // each verdict); the KLs after it were taken with another S than the one that now stands:
        // they are dropped, and kept only to predict those candidates' verdicts next time.
        let decided = chunk.iter().zip(&kls).zip(&predicted).position(|((&(index, c), &kl), &v)| st.decide(index, c, kl) != v);
        let done = decided.map_or(chunk.len(), |j| j + 1);
        for (&(index, _), &kl) in chunk.iter().zip(&kls).skip(done) {
            st.earlier_kls.insert(index, kl.to_bits());
        }
        // Adaptive batching: next take as many as this batch decided, or twice as many if every
        // prediction held.
        st.batch = decided.map_or(2 * chunk.len(), |j| j + 1).min(max_groups);
        st.skip_ahead(&order);
        // Only the candidates still ahead use them: the ones before `next` are decided, or skipped
        // (the neurons of a removed MLP, whose KLs would otherwise stay in every saved state).
        let next = st.next;
        st.earlier_kls.retain(|&i, _| i >= next);
        if progress.update(&st.info(&order, layer), st) == Flow::Stop {
            return Ok(st.next >= order.len());
        }
    }
    Ok(true)
}

/// Each candidate's predicted verdict, given those predicted before it in the batch: accepted when
/// a KL measured for it earlier (under another S) passes the test against the KL_cur that the
/// predicted verdicts before it would leave; rejected when it has none. An MLP block is never
/// predicted accepted when its neurons are candidates: they would then be skipped, not decided.
fn predict(st: &AblateState, chunk: &[(usize, Component)]) -> Vec<bool> {
    let mut kl_cur = st.kl_cur();
    let neurons = st.options.neurons;
    chunk
        .iter()
        .map(|(index, c)| match st.earlier_kls.get(index).map(|&bits| f64::from_bits(bits)) {
            Some(kl) if !(neurons && matches!(c, Component::Mlp { .. })) && kl - kl_cur < st.options.alpha => {
                kl_cur = kl;
                true
            }
            _ => false,
        })
        .collect()
}

/// KL_new of each candidate of one layer, in one forward from the layer's residual stream: each
/// with S ∪ {the candidates before it predicted accepted} ∪ {itself}, so that its KL is exact
/// for the S that stands when it is decided, as long as the predictions before it hold.
async fn evaluate<B: Backend>(ctx: &Context<'_, B>, st: &AblateState, layer: usize, resid: B::Tensor,
    chunk: &[(usize, Component)], predicted: &[bool], p: &FullModel) -> Result<Vec<f64>> {
    let (model, be, batch) = (ctx.model, ctx.be, &ctx.batch);
    let mut removed = st.removed();
    let mut masks = Vec::with_capacity(chunk.len());
    for (&(_, c), &accepted) in chunk.iter().zip(predicted) {
        masks.push(st.shape.masks_without(removed.iter().chain(std::iter::once(&c)))?);
        if accepted {
            removed.push(c);
        }
    }
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
