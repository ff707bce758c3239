//! Host-side f32 tensors: what loaders produce and what backends upload and read back.

#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "shape {shape:?} vs {} values", data.len());
        HostTensor { shape, data }
    }
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        HostTensor { shape, data: vec![0.0; n] }
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Rows and columns when viewed as a matrix whose last dimension is the columns.
    /// A `[1, 0]` tensor is one row of no columns (a layer whose heads are all gone).
    pub fn rows_cols(&self) -> (usize, usize) {
        rows_cols(&self.shape)
    }
    pub fn row(&self, r: usize) -> &[f32] {
        let (_, c) = self.rows_cols();
        &self.data[r * c..(r + 1) * c]
    }
    /// A matrix `[r, c]` as `[c, r]`: GPT-2's Conv1D weights (stored `[in, out]`; the canonical
    /// layout is `[out, in]`) both ways, and the CPU backend's weights' transposes. In tiles of
    /// 32 × 32, so that reads and writes stay in cache, rows of the output in parallel.
    pub fn transposed(&self) -> HostTensor {
        use rayon::prelude::*;
        const T: usize = 32;
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut out = vec![0f32; r * c];
        if r > 0 {
            out.par_chunks_mut(T * r).enumerate().for_each(|(t, rows)| {
                for i0 in (0..r).step_by(T) {
                    for (jj, row) in rows.chunks_mut(r).enumerate() {
                        let j = t * T + jj;
                        for i in i0..(i0 + T).min(r) {
                            row[i] = self.data[i * c + j];
                        }
                    }
                }
            });
        }
        HostTensor::new(vec![c, r], out)
    }
    /// Largest absolute value, the scale that relative tolerances are taken against.
    pub fn max_abs(&self) -> f32 {
        self.data.iter().fold(0.0f32, |m, v| m.max(v.abs()))
    }
}

/// A shape's rows and columns as a matrix whose last dimension is the columns (`[1, 0]`: one row
/// of no columns; `[]`: one element).
pub fn rows_cols(shape: &[usize]) -> (usize, usize) {
    match shape.split_last() {
        Some((&c, rows)) => (rows.iter().product(), c),
        None => (1, 1),
    }
}
