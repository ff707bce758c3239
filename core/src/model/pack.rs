//! The rows of a padded batch that hold real tokens. A right-padded batch of prompts of different
//! lengths has padding rows that no real row ever reads (attention is causal, and the padding comes
//! after each prompt's tokens), so the matrix products, which work row by row, need only the real
//! rows: `gather` packs them before a product and `scatter` puts the product's rows back, with
//! zeros on the padding rows. Everything else (attention, rope, the mixes and their per-position
//! ablation values) keeps the padded layout. Their backward is the same pair read the other way:
//! `scatter`'s gradient is a `gather` and the reverse.

use crate::backend::Backend;
use crate::model::batch::Batch;
use crate::Result;

pub(crate) struct Pack {
    /// Real rows, ascending; empty when the batch has no padding (then both ops are the identity).
    rows: Vec<u32>,
    total: usize,
}

impl Pack {
    /// The real rows of `batch` where it has padding and the backend packs rows; else the identity.
    pub(crate) fn new<B: Backend>(be: &B, batch: &Batch) -> Pack {
        let padded = be.packs_rows() && batch.lens.iter().any(|&l| l < batch.seq);
        Pack { rows: if padded { batch.real_rows() } else { Vec::new() }, total: batch.rows() }
    }

    /// `[rows, C]` → the real rows `[real, C]`.
    pub(crate) fn gather<B: Backend>(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        if self.rows.is_empty() {
            return Ok(x.clone());
        }
        be.gather_rows(x, &self.rows)
    }

    /// `[real, C]` → `[rows, C]`, zero on the padding rows.
    pub(crate) fn scatter<B: Backend>(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        if self.rows.is_empty() {
            return Ok(x.clone());
        }
        be.scatter_rows(x, &self.rows, self.total)
    }
}
