//! `x · wᵀ + b` through `gemm`: weights stay in their `[out, in]` layout, the strides do the transpose.

use super::{check, CpuBackend, CpuTensor};
use crate::Result;

pub(super) fn matmul(be: &CpuBackend, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>) -> Result<CpuTensor> {
    let (m, k) = x.rows_cols();
    let (n, kw) = w.rows_cols();
    check(kw == k && w.0.shape.len() == 2, "matmul", || format!("x {:?} · wᵀ with w {:?}", x.0.shape, w.0.shape))?;
    let mut out = be.out(m * n);
    if let Some(b) = bias {
        check(b.0.data.len() == n, "matmul", || format!("bias {:?} for {n} outputs", b.0.shape))?;
        for row in out.chunks_mut(n.max(1)) {
            row.copy_from_slice(&b.0.data);
        }
    }
    let mut shape = x.0.shape.clone();
    *shape.last_mut().unwrap() = n;
    if m == 0 || n == 0 {
        return Ok(CpuBackend::wrap(shape, out));
    }
    gemm_into(&mut out, &x.0.data, &w.0.data, m, k, n, bias.is_some());
    Ok(CpuBackend::wrap(shape, out))
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[n, k]ᵀ`, all row-major.
#[cfg(not(target_arch = "wasm32"))]
fn gemm_into(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    let par = if m * n * k >= 1 << 16 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the slices hold m·n, m·k and n·k elements (checked by the caller through the shapes),
    // and the strides below stay inside them.
    unsafe {
        gemm::gemm(
            m, n, k,
            dst.as_mut_ptr(), 1, n as isize, accumulate,
            lhs.as_ptr(), 1, k as isize,
            rhs.as_ptr(), k as isize, 1,
            1.0, 1.0, false, false, false, par,
        );
    }
}

/// In the browser: a cache-friendly dot-product kernel (rows of both operands are contiguous in k).
#[cfg(target_arch = "wasm32")]
fn gemm_into(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    for i in 0..m {
        let a = &lhs[i * k..(i + 1) * k];
        for j in 0..n {
            let b = &rhs[j * k..(j + 1) * k];
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let d = &mut dst[i * n + j];
            *d = if accumulate { *d + dot } else { dot };
        }
    }
}
