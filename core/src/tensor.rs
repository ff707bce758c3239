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
