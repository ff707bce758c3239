//! `GpuTensor`: a cheap handle to device data, stored as one buffer or, for a weight over the
//! adapter's binding limit, as several row-chunks (each chunk is bound on its own).

use std::sync::Arc;

use super::pool::PooledBuffer;
use super::recorder::Binding;
use crate::{Error, Result};

/// Clone = another reference to the same device data; the buffers go back to the backend's pool
/// when the last handle drops.
#[derive(Clone)]
pub struct GpuTensor(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub shape: Vec<usize>,
    /// Row ranges in order; a single chunk unless the tensor is over the binding limit.
    pub chunks: Vec<Chunk>,
}

pub(crate) struct Chunk {
    /// First row (of the tensor viewed as `[rows, cols]`) held by this chunk.
    pub row0: usize,
    pub rows: usize,
    pub buf: PooledBuffer,
}

impl std::fmt::Debug for GpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuTensor{:?}", self.0.shape)?;
        if self.0.chunks.len() > 1 {
            write!(f, " in {} chunks", self.0.chunks.len())?;
        }
        Ok(())
    }
}

impl GpuTensor {
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    pub(crate) fn new(shape: Vec<usize>, chunks: Vec<Chunk>) -> GpuTensor {
        GpuTensor(Arc::new(Inner { shape, chunks }))
    }

    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    pub fn numel(&self) -> usize {
        self.0.shape.iter().product()
    }

    pub fn bytes(&self) -> u64 {
        self.numel() as u64 * 4
    }

    /// Number of row-chunks (1 unless the tensor is over the binding limit).
    pub fn chunk_count(&self) -> usize {
        self.0.chunks.len()
    }

    /// `[rows, cols]` view, the last dimension being the columns.
    pub(crate) fn rows_cols(&self) -> (usize, usize) {
        rows_cols(&self.0.shape)
    }

    pub(crate) fn chunks(&self) -> &[Chunk] {
        &self.0.chunks
    }

    /// The whole tensor as one binding, or a clear error when it had to be split: only
    /// `upload`, `gather_rows` and the `w` of `matmul` and `matmul_backward` work on split tensors.
    pub(crate) fn single(&self, op: &str, name: &str, limit: u64) -> Result<Binding<'_>> {
        match self.0.chunks.as_slice() {
            [c] => Ok(Binding::whole(&c.buf.buf, c.buf.bytes)),
            _ => Err(Error::Backend(format!(
                "{op}: `{name}` {:?} is {} bytes, over this adapter's binding limit of {limit} bytes; \
                 only upload, gather_rows and the weight of matmul and matmul_backward accept tensors that large",
                self.0.shape,
                self.bytes()
            ))),
        }
    }
}

pub(crate) fn rows_cols(shape: &[usize]) -> (usize, usize) {
    let c = shape.last().copied().unwrap_or(1);
    let n: usize = shape.iter().product();
    (n.checked_div(c).unwrap_or(0), c)
}

/// How many rows of `cols` f32 fit one binding of `limit` bytes, or an error naming the op.
pub(crate) fn rows_per_chunk(op: &str, shape: &[usize], limit: u64) -> Result<usize> {
    let (_, cols) = rows_cols(shape);
    let row_bytes = (cols as u64 * 4).max(4);
    if row_bytes > limit {
        return Err(Error::Backend(format!(
            "{op}: one row of {shape:?} is {row_bytes} bytes, over this adapter's binding limit of {limit} bytes"
        )));
    }
    Ok((limit / row_bytes) as usize)
}

/// `Error::Backend` for a shape problem in `op`.
pub(crate) fn shape_err(op: &str, msg: impl std::fmt::Display) -> Error {
    Error::Backend(format!("{op}: {msg}"))
}

/// u32 for a kernel parameter, or an error (kernels index with u32).
pub(crate) fn u32p(op: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| shape_err(op, format!("size {v} does not fit the kernels' 32-bit indices")))
}
