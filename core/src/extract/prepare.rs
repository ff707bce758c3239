//! What both implementations share: the checked discovery batch, the ablation values (on the
//! device and on the host) and the KL against the full model.

use rayon::prelude::*;

use super::{state, AblateData, AblateOptions, AblationKind};
use crate::backend::Backend;
use crate::circuit::{Ablation, AblationValues};
use crate::metrics::KlFrom;
use crate::model::ablation::{mean_values, DeviceAblation};
use crate::model::{Batch, Capture, ForwardArgs, LogitsAt, Model};
use crate::{Error, HostTensor, Result};

pub(super) struct Context<'a, B: Backend> {
    pub model: &'a Model<B>,
    pub be: &'a B,
    pub batch: Batch,
    /// None: zero ablation.
    pub ablation: Option<DeviceAblation<B>>,
    pub host_ablation: Ablation,
    pub fingerprint: String,
}

impl<'a, B: Backend> Context<'a, B> {
    pub async fn new(model: &'a Model<B>, be: &'a B, data: &AblateData, opts: &AblateOptions) -> Result<Self> {
        if data.discovery.is_empty() {
            return Err(Error::Input("ablate needs discovery prompts: the discovery split is empty".into()));
        }
        let batch = Batch::new(&data.discovery, &model.config)?;
        let (host_ablation, used): (Ablation, Vec<&[Vec<u32>]>) = match opts.ablation {
            AblationKind::Zero => (Ablation::Zero, vec![]),
            AblationKind::Mean | AblationKind::MeanPerPosition => {
                (Ablation::Given(means(model, be, data, &batch, opts.ablation).await?), vec![&data.patching])
            }
            AblationKind::Resample => {
                let c = check_corrupted(data)?;
                (Ablation::Given(resample(model, be, c, opts).await?), vec![c])
            }
        };
        let ablation = match &host_ablation {
            Ablation::Zero => None,
            Ablation::Given(v) => Some(DeviceAblation::upload(be, v)?),
        };
        let mut parts: Vec<&[u32]> = data.discovery.iter().map(|p| &p[..]).collect();
        parts.push(&[]); // separates the discovery prompts from the others
        parts.extend(used.iter().flat_map(|set| set.iter().map(|p| &p[..])));
        let extra = serde_json::to_string(&(opts, &model.config)).expect("serializable");
        let fingerprint = state::fingerprint(&parts, &extra);
        Ok(Context { model, be, batch, ablation, host_ablation, fingerprint })
    }

    pub fn args<'b>(&'b self, logits: LogitsAt, capture: Capture) -> ForwardArgs<'b, B> {
        ForwardArgs { masks: None, ablation: self.ablation.as_ref(), capture, logits }
    }
}

async fn means<B: Backend>(model: &Model<B>, be: &B, data: &AblateData, batch: &Batch, kind: AblationKind)
    -> Result<AblationValues> {
    if data.patching.is_empty() {
        return Err(Error::Input("mean ablation needs patching prompts: the patching split is empty".into()));
    }
    let patching = Batch::new(&data.patching, &model.config)?;
    let per_position = kind == AblationKind::MeanPerPosition;
    let mut v = mean_values(model, be, &patching, per_position).await?;
    if per_position {
        if patching.seq < batch.seq {
            return Err(Error::Input(format!(
                "per-position means cover {} positions, but a discovery prompt has {}: give longer patching prompts",
                patching.seq, batch.seq
            )));
        }
        // Keep the rows of the positions the discovery prompts have.
        for site in [&mut v.z, &mut v.hidden, &mut v.attn_out, &mut v.mlp_out] {
            for t in site.iter_mut().flatten() {
                let c = t.shape[1];
                *t = HostTensor::new(vec![batch.seq, c], t.data[..batch.seq * c].to_vec());
            }
        }
    }
    Ok(v)
}

fn check_corrupted(data: &AblateData) -> Result<&[Vec<u32>]> {
    let c = data.corrupted.as_deref().ok_or_else(|| {
        Error::Input("resample ablation needs a corrupted prompt for every discovery prompt".into())
    })?;
    if c.len() != data.discovery.len() {
        return Err(Error::Input(format!(
            "resample ablation: {} corrupted prompts for {} discovery prompts",
            c.len(),
            data.discovery.len()
        )));
    }
    if let Some(i) = (0..c.len()).find(|&i| c[i].len() != data.discovery[i].len()) {
        return Err(Error::Input(format!(
            "resample ablation: corrupted prompt {i} has {} tokens, its discovery prompt {}",
            c[i].len(),
            data.discovery[i].len()
        )));
    }
    Ok(c)
}

/// The activations on the corrupted prompts (full model) at the sites the candidates need, one row
/// per row of the batch. Only those: all sites of a large model over many prompts are gigabytes.
async fn resample<B: Backend>(model: &Model<B>, be: &B, corrupted: &[Vec<u32>], opts: &AblateOptions) -> Result<AblationValues> {
    let batch = Batch::new(corrupted, &model.config)?;
    let capture = Capture { z: true, hidden: opts.neurons, mlp_out: opts.mlps, ..Capture::default() };
    let out = model.forward(be, &batch, &ForwardArgs { capture, logits: LogitsAt::None, ..ForwardArgs::default() })?;
    let c = out.captured;
    let mut v = AblationValues::default();
    for (site, dst) in [(&c.z, &mut v.z), (&c.hidden, &mut v.hidden), (&c.attn_out, &mut v.attn_out), (&c.mlp_out, &mut v.mlp_out)] {
        for t in site {
            dst.push(match t {
                Some(t) => Some(be.read(t).await?),
                None => None,
            });
        }
    }
    Ok(v)
}

/// The full model's distribution at each discovery prompt's last position, against which every
/// candidate's KL is measured (held in f64 once for the whole sweep: see [`KlFrom`]).
pub(super) struct FullModel(Vec<KlFrom>);

impl FullModel {
    /// Logits that are not finite are an error (see [`mean_kls`]).
    pub fn new(p: &HostTensor) -> Result<Self> {
        finite(p)?;
        Ok(FullModel((0..p.rows_cols().0).into_par_iter().map(|r| KlFrom::new(p.row(r))).collect()))
    }
}

/// Mean over prompts of KL(P ‖ Q) for each group of `p`'s rows of `q` (rows in the same order
/// as `p`'s, repeated per group). Summed in prompt order, so the result does not depend on threads.
/// Logits that are not finite are an error: `kl_div` clamps a NaN to 0, which would read as a
/// harmless ablation and be accepted.
pub(super) fn mean_kls(p: &FullModel, q: &HostTensor) -> Result<Vec<f64>> {
    finite(q)?;
    let n = p.0.len();
    let (rows, _) = q.rows_cols();
    let per_row: Vec<f64> = (0..rows).into_par_iter().map(|r| p.0[r % n].to(q.row(r))).collect();
    Ok(per_row.chunks(n).map(|g| g.iter().sum::<f64>() / n as f64).collect())
}

fn finite(t: &HostTensor) -> Result<()> {
    match t.data.iter().find(|x| !x.is_finite()) {
        Some(x) => Err(Error::Backend(format!("the forward gave a logit of {x}: KL cannot be measured"))),
        None => Ok(()),
    }
}
