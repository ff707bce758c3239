//! Ablation values: measured means over a batch of prompts, and their copies on a backend.

use crate::backend::Backend;
use crate::mask::{AblationValues, Masks, Site};
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

/// Resample ablation's values: the activations of the full model on `corrupted` (each prompt's
/// own corrupted prompt, of its length, so that the rows line up with the clean batch's) at the
/// sites `masks` ablates, one row per row of the batch, left on the device.
pub fn resampled_values<B: Backend>(model: &Model<B>, be: &B, corrupted: &[Vec<u32>], masks: &Masks) -> Result<DeviceAblation<B>> {
    let n = masks.n_layers().min(model.weights.layers.len());
    let need_z: Vec<bool> = (0..n).map(|l| !masks.heads_all_on(l)).collect();
    let need_hidden: Vec<bool> = (0..n).map(|l| !masks.neurons_all_on(l)).collect();
    let need_attn: Vec<bool> = (0..n).map(|l| masks.attn_block(l) != 1.0).collect();
    let need_mlp: Vec<bool> = (0..n).map(|l| masks.mlp_block(l) != 1.0).collect();
    let any = |v: &[bool]| v.iter().any(|&b| b);
    let capture = Capture { z: any(&need_z), hidden: any(&need_hidden), attn_out: any(&need_attn), mlp_out: any(&need_mlp), ..Capture::default() };
    let batch = Batch::new(corrupted, &model.config)?;
    let out = model.forward(be, &batch, &ForwardArgs { capture, logits: LogitsAt::None, ..ForwardArgs::default() })?;
    let mut c = out.captured;
    let mut values = AblationValues::none(n);
    for (site, need, src) in [
        (Site::Z, &need_z, &mut c.z),
        (Site::Hidden, &need_hidden, &mut c.hidden),
        (Site::AttnOut, &need_attn, &mut c.attn_out),
        (Site::MlpOut, &need_mlp, &mut c.mlp_out),
    ] {
        for (l, dst) in values.site_mut(site).iter_mut().enumerate() {
            if need[l] {
                *dst = src.get_mut(l).and_then(Option::take);
            }
        }
    }
    let rows = vec![batch.rows()];
    Ok(DeviceAblation { values, rows })
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
