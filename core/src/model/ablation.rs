//! Ablation values: measured means over a batch of prompts, and their copies on a backend.

use crate::backend::Backend;
use crate::mask::{AblationValues, Site};
use crate::model::batch::Batch;
use crate::model::forward::{Capture, ForwardArgs, LogitsAt, Model};
use crate::{Error, HostTensor, Result};

/// `AblationValues` uploaded once, used by many forwards.
pub struct DeviceAblation<B: Backend> {
    pub values: AblationValues<B::Tensor>,
    /// Row count of every value tensor present (1, seq or batch*seq), for checking against a batch.
    rows: Vec<usize>,
}

impl<B: Backend> DeviceAblation<B> {
    pub fn upload(be: &B, v: &AblationValues) -> Result<Self> {
        let mut rows = Vec::new();
        let values = v.try_map(|t| {
            rows.push(t.rows_cols().0);
            be.upload(t)
        })?;
        Ok(DeviceAblation { values, rows })
    }

    /// The value at `site` of layer `l`, if any (None: zero).
    pub fn get(&self, site: Site, l: usize) -> Option<&B::Tensor> {
        self.values.get(site, l)
    }

    /// Every value must have one row, a row per position, or a row per row of the batch.
    pub fn check_rows(&self, batch: &Batch) -> Result<()> {
        match self.rows.iter().find(|&&r| r != 1 && r != batch.seq && r != batch.rows()) {
            Some(r) => Err(Error::Input(format!(
                "ablation values have {r} rows; a batch of {} prompts of {} positions needs 1, {} or {}",
                batch.size(),
                batch.seq,
                batch.seq,
                batch.rows()
            ))),
            None => Ok(()),
        }
    }
}

/// Mean of every site's activation over the real (unpadded) positions of `batch`: one row
/// (position-independent), or with `per_position` a row per position averaged over the prompts
/// long enough to have it (the batch's longest prompt sets the row count).
pub async fn mean_values<B: Backend>(model: &Model<B>, be: &B, batch: &Batch, per_position: bool) -> Result<AblationValues> {
    let capture = Capture { attn_out: true, mlp_out: true, z: true, hidden: true, ..Capture::default() };
    let out = model.forward(be, batch, &ForwardArgs { capture, logits: LogitsAt::None, ..ForwardArgs::default() })?;
    let c = out.captured;
    let site = async |ts: &[Option<B::Tensor>]| -> Result<Vec<Option<HostTensor>>> {
        let mut v = Vec::with_capacity(ts.len());
        for t in ts {
            v.push(match t {
                Some(t) => Some(mean_rows(&be.read(t).await?, batch, per_position)),
                None => None,
            });
        }
        Ok(v)
    };
    Ok(AblationValues {
        z: site(&c.z).await?,
        hidden: site(&c.hidden).await?,
        attn_out: site(&c.attn_out).await?,
        mlp_out: site(&c.mlp_out).await?,
    })
}

/// Averages the rows of `[batch*seq, C]` over real positions, in f64.
pub fn mean_rows(x: &HostTensor, batch: &Batch, per_position: bool) -> HostTensor {
    let (_, c) = x.rows_cols();
    let groups = if per_position { batch.seq } else { 1 };
    let mut sum = vec![0f64; groups * c];
    let mut count = vec![0usize; groups];
    for (b, &len) in batch.lens.iter().enumerate() {
        for t in 0..len {
            let g = if per_position { t } else { 0 };
            count[g] += 1;
            for (s, &v) in sum[g * c..(g + 1) * c].iter_mut().zip(x.row(b * batch.seq + t)) {
                *s += v as f64;
            }
        }
    }
    let data = sum.chunks(c.max(1)).zip(&count).flat_map(|(s, &n)| s.iter().map(move |v| (v / n.max(1) as f64) as f32)).collect();
    HostTensor::new(vec![groups, c], data)
}
