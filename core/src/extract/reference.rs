//! The reference sweep: the definition, one candidate at a time, each a full forward from the
//! token ids with logits at every position (of which the last real ones are used). Tests and
//! `bench extract` compare the fast sweep against it.

use super::ablate::no_logits;
use super::prepare::{mean_kls, Context, FullModel};
use super::{AblateState, Flow, Progress, SweepStats};
use crate::backend::Backend;
use crate::circuit::Masks;
use crate::model::{check_logits, Batch, Capture, ForwardArgs, LogitsAt};
use crate::{HostTensor, Result};

pub(super) async fn sweep<B: Backend>(ctx: &Context<'_, B>, st: &mut AblateState, progress: &mut dyn Progress,
    stats: &mut SweepStats) -> Result<bool> {
    let order = st.order();
    st.skip_ahead(&order);
    if st.next >= order.len() {
        return Ok(true);
    }
    let p = last_logits(ctx, None).await?;
    check_logits(ctx.model, ctx.be, &ctx.batch, &ctx.args(LogitsAt::Last, Capture::default()), &p).await?;
    let p = FullModel::new(&p)?;
    stats.forwards += 1;
    while st.next < order.len() {
        let (index, c) = (st.next, order[st.next]);
        let masks = st.shape.masks_without(st.removed().iter().chain(std::iter::once(&c)))?;
        let q = last_logits(ctx, Some(&masks)).await?;
        stats.forwards += 1;
        stats.evaluations += 1;
        st.decide(index, c, mean_kls(&p, &q)?[0]);
        st.skip_ahead(&order);
        if progress.update(&st.info(&order, c.layer()), st) == Flow::Stop {
            return Ok(st.next >= order.len());
        }
    }
    Ok(true)
}

/// A full forward of the discovery prompts; the logits at each prompt's last real position.
async fn last_logits<B: Backend>(ctx: &Context<'_, B>, masks: Option<&Masks>) -> Result<HostTensor> {
    let batch: &Batch = &ctx.batch;
    let args = ForwardArgs { masks, ..ctx.args(LogitsAt::All, Capture::default()) };
    let out = ctx.model.forward(ctx.be, batch, &args)?;
    let all = ctx.be.read(out.logits.as_ref().ok_or_else(no_logits)?).await?;
    let v = all.shape[1];
    let data = batch.last_rows().iter().flat_map(|&r| all.row(r as usize).iter().copied()).collect();
    Ok(HostTensor::new(vec![batch.size(), v], data))
}
