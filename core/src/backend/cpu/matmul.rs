//! `x · wᵀ + b` through `gemm`: weights stay in their `[out, in]` layout, the strides do the transpose.

use super::{check, CpuBackend, CpuTensor};
use crate::Result;

pub(super) fn matmul(be: &CpuBackend, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>) -> Result<CpuTensor> {
    let (m, k) = x.rows_cols();
    let (n, kw) = w.rows_cols();
    check(kw == k && w.0.shape.len() == 2 && !x.0.shape.is_empty(), "matmul", || format!("x {:?} · wᵀ with w {:?}", x.0.shape, w.0.shape))?;
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
    gemm_into(&mut out, &x.0.data, &w.0.data, m, k, n, bias.is_some(), Rhs::Transposed);
    Ok(CpuBackend::wrap(shape, out))
}

/// `dx [M, K] = dy [M, N] · w [N, K]`: the input gradient of `matmul`.
pub(super) fn matmul_backward(be: &CpuBackend, dy: &CpuTensor, w: &CpuTensor) -> Result<CpuTensor> {
    let (m, n) = dy.rows_cols();
    let (nw, k) = w.rows_cols();
    check(nw == n && w.0.shape.len() == 2 && !dy.0.shape.is_empty(), "matmul_backward", || format!("dy {:?} · w with w {:?}", dy.0.shape, w.0.shape))?;
    let mut out = be.out(m * k);
    let mut shape = dy.0.shape.clone();
    *shape.last_mut().unwrap() = k;
    if m == 0 || k == 0 {
        return Ok(CpuBackend::wrap(shape, out));
    }
    if n == 0 {
        out.fill(0.0);
        return Ok(CpuBackend::wrap(shape, out));
    }
    gemm_into(&mut out, &dy.0.data, &w.0.data, m, n, k, false, Rhs::Plain);
    Ok(CpuBackend::wrap(shape, out))
}

/// How the right operand is laid out: `[n, k]` read transposed (weights in the forward), or `[k, n]`.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Rhs {
    Transposed,
    Plain,
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[n, k]ᵀ` (or `· rhs[k, n]` for `Rhs::Plain`), all row-major.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_into(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize, accumulate: bool, layout: Rhs) {
    gemm_on(dst, lhs, rhs, m, k, n, accumulate, layout, m * n * k >= 1 << 16)
}

/// `gemm_into` on this thread only (`threads` false): for callers already running in parallel.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_on(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize, accumulate: bool, layout: Rhs,
    threads: bool) {
    let (rhs_cs, rhs_rs) = match layout {
        Rhs::Transposed => (k as isize, 1),
        Rhs::Plain => (1, n as isize),
    };
    let par = if threads { gemm::Parallelism::Rayon(rayon::current_num_threads()) } else { gemm::Parallelism::None };
    // SAFETY: the slices hold m·n, m·k and n·k elements (checked by the caller through the shapes),
    // and the strides below stay inside them.
    unsafe {
        gemm::gemm(
            m, n, k,
            dst.as_mut_ptr(), 1, n as isize, accumulate,
            lhs.as_ptr(), 1, k as isize,
            rhs.as_ptr(), rhs_cs, rhs_rs,
            1.0, 1.0, false, false, false, par,
        );
    }
}

/// In the browser there are no threads to share.
#[cfg(target_arch = "wasm32")]
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_on(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize, accumulate: bool, layout: Rhs,
    _threads: bool) {
    gemm_into(dst, lhs, rhs, m, k, n, accumulate, layout)
}

/// In the browser: a cache-friendly dot-product kernel (rows of both operands are contiguous in k).
#[cfg(target_arch = "wasm32")]
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_into(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize, accumulate: bool, layout: Rhs) {
    if layout == Rhs::Plain {
        for i in 0..m {
            let d = &mut dst[i * n..(i + 1) * n];
            if !accumulate {
                d.fill(0.0);
            }
            for p in 0..k {
                let a = lhs[i * k + p];
                for (d, &b) in d.iter_mut().zip(&rhs[p * n..(p + 1) * n]) {
                    *d += a * b;
                }
            }
        }
        return;
    }
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
