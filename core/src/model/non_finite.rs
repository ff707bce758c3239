//! Non-finite values (NaN, ±inf) out of a forward are an error, never a result: this finds where
//! they first appear, re-running the forward with every intermediate kept and reading the sites in
//! the order the forward computes them (embeddings, then per layer the heads' z, the attention
//! output, the MLP hidden activations, the MLP output, and last the logits), real positions only.

use crate::backend::Backend;
use crate::model::{Batch, Capture, ForwardArgs, LogitsAt, Model};
use crate::{Error, HostTensor, Result};

/// The first non-finite value in `t` (rows `batch*seq`, padded rows skipped): (prompt, position,
/// column, value).
fn first_bad(t: &HostTensor, batch: &Batch) -> Option<(usize, usize, usize, f32)> {
    let (rows, cols) = t.rows_cols();
    (0..rows)
        .filter(|&r| batch.seq > 0 && r / batch.seq < batch.lens.len() && r % batch.seq < batch.lens[r / batch.seq])
        .find_map(|r| t.data[r * cols..(r + 1) * cols].iter().position(|v| !v.is_finite()).map(|c| (r, c)))
        .map(|(r, c)| (r / batch.seq, r % batch.seq, c, t.data[r * cols + c]))
}

/// Where non-finite values first appear in the forward of `batch` with `args`' masks and
/// ablation values, in words; None when the whole forward is finite.
pub async fn locate_non_finite<B: Backend>(model: &Model<B>, be: &B, batch: &Batch, args: &ForwardArgs<'_, B>) -> Result<Option<String>> {
    let capture = Capture { resid: true, attn_out: true, mlp_out: true, pattern: false, z: true, hidden: true };
    let all = ForwardArgs { masks: args.masks, ablation: args.ablation, capture, logits: LogitsAt::All };
    let out = model.forward(be, batch, &all)?;
    let c = &out.captured;
    let head_dim = model.config.head_dim.max(1);
    let mut sites: Vec<(String, Option<&B::Tensor>, bool)> = vec![("the embeddings".into(), c.resid.first().and_then(Option::as_ref), false)];
    for l in 0..c.z.len() {
        sites.push((format!("layer {l}'s attention heads (z, before W_O)"), c.z[l].as_ref(), true));
        sites.push((format!("layer {l}'s attention output"), c.attn_out[l].as_ref(), false));
        sites.push((format!("layer {l}'s MLP hidden activations"), c.hidden[l].as_ref(), false));
        sites.push((format!("layer {l}'s MLP output"), c.mlp_out[l].as_ref(), false));
        sites.push((format!("the residual stream after layer {l}"), c.resid.get(l + 1).and_then(Option::as_ref), false));
    }
    sites.push(("the final norm and unembedding (the logits)".into(), out.logits.as_ref(), false));
    for (what, t, heads) in sites {
        let Some(t) = t else { continue };
        let host = be.read(t).await?;
        if let Some((prompt, pos, col, v)) = first_bad(&host, batch) {
            let which = if heads { format!("head {}", col / head_dim) } else { format!("column {col}") };
            return Ok(Some(format!("{v} first appears in {what}, {which}, at position {pos} of prompt {prompt}")));
        }
    }
    Ok(None)
}

/// Checks logits read back from the forward of `batch` with `args`: Ok when all are finite, else
/// an error that says where the first non-finite value appeared.
pub async fn check_logits<B: Backend>(model: &Model<B>, be: &B, batch: &Batch, args: &ForwardArgs<'_, B>, logits: &HostTensor) -> Result<()> {
    if logits.data.iter().all(|v| v.is_finite()) {
        return Ok(());
    }
    let at = locate_non_finite(model, be, batch, args).await?;
    Err(Error::NonFinite(at.unwrap_or_else(|| "they appear in the logits but not when the forward is repeated with every intermediate kept".into())))
}
