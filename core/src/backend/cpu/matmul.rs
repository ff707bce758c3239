//! `x · wᵀ + b` through `gemm`: a weight's transpose where it has one (`upload_weight`), else its
//! `[out, in]` layout with the strides doing the transpose.

use rayon::prelude::*;

use super::{check, CpuBackend, CpuTensor};
use crate::backend::{block_views, BiasBlocks, BlockProduct};
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
    match &w.1 {
        Some(wt) => gemm_into(&mut out, &x.0.data, wt, m, k, n, bias.is_some(), Rhs::Plain),
        None => gemm_into(&mut out, &x.0.data, &w.0.data, m, k, n, bias.is_some(), Rhs::Transposed),
    }
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

/// n products over blocks of rows or columns (`Backend::matmul_blocks`): a strided `gemm` per
/// block into its place in the output, the blocks in parallel where there are enough of them.
pub(super) fn matmul_blocks(be: &CpuBackend, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>, p: &BlockProduct)
    -> Result<CpuTensor> {
    let (xv, wv, ov, shape, bias_kind) = block_views("matmul_blocks", p, &x.0.shape, &w.0.shape, bias.map(|b| b.0.shape.as_slice()))?;
    let mut out = be.out(shape.iter().product());
    let (m, k, n) = (p.m, p.k, p.cols);
    if out.is_empty() {
        return Ok(CpuBackend::wrap(shape, out));
    }
    if let Some(b) = bias {
        for blk in 0..p.n {
            let src = &b.0.data[if bias_kind == BiasBlocks::PerBlock { blk * n } else { 0 }..][..n];
            for i in 0..m {
                let at = ov.off + blk * ov.stride + i * ov.row;
                out[at..at + n].copy_from_slice(src);
            }
        }
    }
    // w_b's element (j, kk) of [cols, k], or (kk, j) of [k, cols] with w_kn: gemm's rhs [k, n].
    // Read as [cols, k] from a weight's transpose wt [C, R] of w [R, C]: w's element (r, c) is
    // wt's (c, r), and a block starting at w's (r0, c0) starts at wt's (c0, r0) (the view's rows
    // are w's: `wv.row == C`). A w of no columns has nothing to read.
    let (w_rows, w_cols) = w.rows_cols();
    let wt = w.1.as_deref().filter(|_| !p.w_kn && w_cols > 0);
    let (rhs_cs, rhs_rs) = match (p.w_kn, wt) {
        (true, _) => (1, wv.row),
        (false, Some(_)) => (1, w_rows),
        (false, None) => (wv.row, 1),
    };
    let rhs_at = |blk: usize| -> &[f32] {
        let at = wv.off + blk * wv.stride;
        match wt {
            Some(wt) => &wt[(at % w_cols) * w_rows + at / w_cols..],
            None => &w.0.data[at..],
        }
    };
    let accumulate = bias.is_some();
    let dst = Out(out.as_mut_ptr());
    let one = |blk: usize, threads: usize| {
        let (lhs, rhs) = (&x.0.data[xv.off + blk * xv.stride..], rhs_at(blk));
        // SAFETY: block_views checked that every block's rows and columns lie inside x, w and out,
        // and the blocks of out are disjoint, so parallel blocks never write the same element.
        unsafe { gemm_raw(dst.at(ov.off + blk * ov.stride), ov.row, accumulate, lhs, xv.row, rhs, rhs_rs, rhs_cs, m, n, k, threads) };
    };
    // The blocks in parallel, each product on its share of the threads (all of them for one block,
    // one where there are more blocks than threads).
    let share = if m * n * k >= 1 << 16 { rayon::current_num_threads().div_ceil(p.n) } else { 1 };
    match p.n {
        1 => one(0, share),
        _ => (0..p.n).into_par_iter().for_each(|blk| one(blk, share)),
    }
    Ok(CpuBackend::wrap(shape, out))
}

/// A pointer that parallel blocks write disjoint parts of one buffer through (`gemm_raw`'s
/// destinations, `gated_sum`'s column blocks).
#[derive(Clone, Copy)]
pub(super) struct Out(pub(super) *mut f32);
// SAFETY: every block writes only its own elements (disjoint ranges), and the buffer
// outlives the parallel loop that uses it.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The buffer's element `at`.
    /// SAFETY: `at` lies inside the buffer.
    pub(super) unsafe fn at(self, at: usize) -> *mut f32 {
        self.0.add(at)
    }

    /// Writes `src` at `dst[at..at + src.len()]`.
    /// SAFETY: the caller keeps `at + src.len()` inside the buffer and no two writers overlap.
    pub(super) unsafe fn put(self, at: usize, src: &[f32]) {
        std::ptr::copy_nonoverlapping(src.as_ptr(), self.0.add(at), src.len());
    }

    /// `dst[at..at + len]`.
    /// SAFETY: as `put`, and nothing else touches that range while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn slice<'a>(self, at: usize, len: usize) -> &'a mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(at), len)
    }

    /// Adds `src` into `dst[at..at + src.len()]`.
    /// SAFETY: as `put`.
    pub(super) unsafe fn add(self, at: usize, src: &[f32]) {
        let dst = std::slice::from_raw_parts_mut(self.0.add(at), src.len());
        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
    }
}

/// `dst[i, j] (+)= Σ_p lhs[i, p] · rhs(p, j)` for i < m, j < n, p < k, on up to `threads` threads,
/// with `dst` and `lhs` row-major at row strides `dst_rs` and `lhs_rs` and `rhs(p, j)` at
/// `rhs[p·rhs_rs + j·rhs_cs]`, into a raw destination (a block of a buffer that other blocks write
/// at the same time, in other elements).
/// SAFETY: rows i < m at `dst + i·dst_rs`, n elements each, lie inside one live buffer, and no one
/// else reads or writes them meanwhile.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(target_arch = "wasm32", allow(unused_variables))] // no threads in the browser
pub(super) unsafe fn gemm_raw(dst: *mut f32, dst_rs: usize, accumulate: bool, lhs: &[f32], lhs_rs: usize, rhs: &[f32], rhs_rs: usize,
    rhs_cs: usize, m: usize, n: usize, k: usize, threads: usize) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: 0, or what was there.
        if !accumulate {
            for i in 0..m {
                std::ptr::write_bytes(dst.add(i * dst_rs), 0, n);
            }
        }
        return;
    }
    assert!((m - 1) * lhs_rs + k <= lhs.len() && (k - 1) * rhs_rs + (n - 1) * rhs_cs < rhs.len());
    #[cfg(target_arch = "wasm32")]
    for i in 0..m {
        // In the browser: a dot product per element.
        for j in 0..n {
            let sum: f32 = (0..k).map(|p| lhs[i * lhs_rs + p] * rhs[p * rhs_rs + j * rhs_cs]).sum();
            let d = dst.add(i * dst_rs + j);
            *d = if accumulate { *d + sum } else { sum };
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    gemm::gemm(
        m, n, k,
        dst, 1, dst_rs as isize, accumulate,
        lhs.as_ptr(), 1, lhs_rs as isize,
        rhs.as_ptr(), rhs_cs as isize, rhs_rs as isize,
        1.0, 1.0, false, false, false,
        if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None },
    );
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
