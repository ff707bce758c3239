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

    /// Rows in the packed layout: the real rows, or every row of the batch when it is not packed.
    pub(crate) fn len(&self) -> usize {
        if self.rows.is_empty() { self.total } else { self.rows.len() }
    }

    /// The entries of `per_row` (one per row of the batch) at the packed layout's rows.
    pub(crate) fn select<T: Copy>(&self, per_row: &[T]) -> Vec<T> {
        if self.rows.is_empty() {
            return per_row.to_vec();
        }
        self.rows.iter().map(|&r| per_row[r as usize]).collect()
    }

    /// Row `r` of the batch in the packed layout; None where `r` is a padding row that packing left
    /// out (or past the batch).
    pub(crate) fn position(&self, r: u32) -> Option<u32> {
        if self.rows.is_empty() {
            return ((r as usize) < self.total).then_some(r);
        }
        self.rows.binary_search(&r).ok().map(|i| i as u32)
    }

    /// `[R, C]` values that the padded layout reads cyclically (row r reads row r mod R: one row
    /// for all, one per position, or one per row) → the rows the packed layout reads, `[real, C]`;
    /// a single row stays shared.
    pub(crate) fn gather_cyclic<B: Backend>(&self, be: &B, v: &B::Tensor) -> Result<B::Tensor> {
        let n = be.shape(v)[0];
        if self.rows.is_empty() || n == 1 {
            return Ok(v.clone());
        }
        be.gather_rows(v, &self.rows.iter().map(|&r| r % n as u32).collect::<Vec<_>>())
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
