//! Layout helpers shared by the loaders: shape checks, splitting fused matrices and
//! undoing llama.cpp's RoPE row permutation.

use std::path::Path;

use crate::{Error, HostTensor, Result};

/// Errors unless a tensor's declared shape `got` is exactly `want`; `name` is the tensor's name in
/// the file at `path`. Called before the tensor is converted, so that nothing is allocated for it.
pub fn check_shape(path: &Path, name: &str, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return Err(Error::format(path, format!("tensor `{name}` has shape {got:?}, but the config implies {want:?}")));
    }
    Ok(())
}

/// `a × b` for a width from the config: `validate` has checked the product for every layer the
/// files hold, so an overflow here is an error, never a wrapped width.
pub fn width(a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| Error::Input(format!("a layer width of {a} × {b} overflows")))
}

/// Splits the rows (first dimension) of `t` into consecutive parts of the given sizes; works for
/// vectors (a fused bias) and matrices (a fused weight).
pub fn split_rows(t: &HostTensor, rows: &[usize]) -> Vec<HostTensor> {
    let row_len: usize = t.shape[1..].iter().product();
    let mut start = 0;
    rows.iter()
        .map(|&n| {
            let mut shape = t.shape.clone();
            shape[0] = n;
            let part = t.data[start * row_len..(start + n) * row_len].to_vec();
            start += n;
            HostTensor::new(shape, part)
        })
        .collect()
}

/// Undoes llama.cpp's permutation of `attn_q` / `attn_k` rows (made for its RoPE, which rotates
/// adjacent pairs where HF rotates the two halves of a head):
/// `w.reshape(nh, rows/nh/2, 2, cols).swapaxes(1, 2).reshape(rows, cols)`.
/// Row `h·hd + 2i + j` of the file becomes row `h·hd + j·hd/2 + i`.
pub fn unpermute_rope_rows(t: &HostTensor, n_heads: usize) -> Result<HostTensor> {
    let rows = t.shape[0];
    let cols: usize = t.shape[1..].iter().product();
    if n_heads == 0 || !rows.is_multiple_of(2 * n_heads) {
        return Err(Error::Unsupported(format!(
            "cannot undo the RoPE permutation: {rows} rows are not a whole number of {n_heads} heads \
             with an even head size"
        )));
    }
    let hd = rows / n_heads;
    let half = hd / 2;
    let mut out = vec![0f32; t.data.len()];
    for h in 0..n_heads {
        for i in 0..half {
            for j in 0..2 {
                let src = (h * hd + 2 * i + j) * cols;
                let dst = (h * hd + j * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&t.data[src..src + cols]);
            }
        }
    }
    Ok(HostTensor::new(t.shape.clone(), out))
}
