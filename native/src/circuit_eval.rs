//! Ablation values for scoring a circuit on the test split, measured as extraction measured them
//! (the same forward over the patching split gives the same bits), so `extract` and
//! `eval --circuit` report the same numbers.

use anyhow::{bail, Result};
use carve_core::backend::Backend;
use carve_core::extract::AblationKind;
use carve_core::metrics::CircuitAblation;
use carve_core::model::ablation::{mean_values, DeviceAblation};
use carve_core::model::{Batch, Model};
use carve_core::tasks::Example;

pub enum Values<B: Backend> {
    Zero,
    Mean(DeviceAblation<B>),
    Resample,
}

impl<B: Backend> Values<B> {
    pub fn measure(kind: AblationKind, model: &Model<B>, be: &B, patching: &[Example]) -> Result<Self> {
        Ok(match kind {
            AblationKind::Zero => Values::Zero,
            AblationKind::Resample => Values::Resample,
            AblationKind::Mean => {
                if patching.is_empty() {
                    bail!("mean ablation needs patching prompts: the patching split is empty");
                }
                let prompts: Vec<Vec<u32>> = patching.iter().map(|e| e.prompt.clone()).collect();
                let batch = Batch::new(&prompts, &model.config)?;
                let v = pollster::block_on(mean_values(model, be, &batch, false))?;
                Values::Mean(DeviceAblation::upload(be, &v)?)
            }
            AblationKind::MeanPerPosition => bail!(
                "per-position means depend on the prompt length, so a circuit made with them can be neither scored on \
                 prompts of other lengths nor pruned: use --ablation mean, zero or resample"
            ),
        })
    }

    pub fn circuit_ablation(&self) -> CircuitAblation<'_, B> {
        match self {
            Values::Zero => CircuitAblation::Zero,
            Values::Mean(d) => CircuitAblation::Values(d),
            Values::Resample => CircuitAblation::Resample,
        }
    }
}
