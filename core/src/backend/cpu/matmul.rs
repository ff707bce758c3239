//! `x · wᵀ + b` through `gemm`: a weight's transpose where it has one (`upload_weight`), else its
//! `[out, in]` layout with the strides doing the transpose.

use rayon::prelude::*;
#[cfg(not(target_arch = "wasm32"))]
use std::sync::atomic::{AtomicU8, Ordering};

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
    {
        let one = |dst: Out, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>, par: gemm::Parallelism| {
            gemm::gemm(
                rows.len(), cols.len(), k,
                dst.at(rows.start * dst_rs + cols.start), 1, dst_rs as isize, accumulate,
                lhs.as_ptr().add(rows.start * lhs_rs), 1, lhs_rs as isize,
                rhs.as_ptr().add(cols.start * rhs_cs), rhs_cs as isize, rhs_rs as isize,
                1.0, 1.0, false, false, false, par,
            )
        };
        let dst = Out(dst);
        let how = GEMM_THREADS.load(Ordering::Relaxed);
        // A strided right operand: gemm's own threads share one copy of it (`GemmThreads`).
        let own = how == GemmThreads::Gemm as u8 || rhs_cs != 1;
        let threads = if how == GemmThreads::One as u8 { 1 } else { threads };
        match tiles(m, n, threads) {
            _ if threads > 1 && own => one(dst, 0..m, 0..n, gemm::Parallelism::Rayon(threads)),
            Some((rows, cols)) => (0..(rows.len() - 1) * (cols.len() - 1)).into_par_iter().for_each(|t| {
                let (i, j) = (t / (cols.len() - 1), t % (cols.len() - 1));
                // SAFETY: the tiles are disjoint parts of the caller's m × n block.
                one(dst, rows[i]..rows[i + 1], cols[j]..cols[j + 1], gemm::Parallelism::None)
            }),
            None => one(dst, 0..m, 0..n, gemm::Parallelism::None),
        }
    }
}

/// How products share the threads: as tiles (`tiles`), each a one-thread `gemm` (the default), on
/// `gemm`'s own threads, or not at all. A product whose right operand is strided (a weight read as
/// `[n, k]`) runs on gemm's own threads either way: each tile would copy its part of it into
/// gemm's layout, and tiles of rows would copy the same parts (measured 0.6–0.96× as fast as one
/// copy shared by gemm's threads). At SmolLM2's layer products on 515 rows (a batch of 32 IOI
/// prompts), 2 threads on tiles ran 1.00–1.25× as fast as on gemm's own threads (`carve bench
/// matmul --backend cpu` shows all three side by side).
#[cfg(not(target_arch = "wasm32"))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GemmThreads {
    Tiles = 0,
    Gemm = 1,
    One = 2,
}

#[cfg(not(target_arch = "wasm32"))]
static GEMM_THREADS: AtomicU8 = AtomicU8::new(GemmThreads::Tiles as u8);

/// Sets how products share the threads, for the whole process: for benchmarks that put the ways
/// side by side.
#[cfg(not(target_arch = "wasm32"))]
pub fn set_gemm_threads(how: GemmThreads) {
    GEMM_THREADS.store(how as u8, Ordering::Relaxed)
}

/// The smallest side a cut makes: a tile with a side of at most 64 where the whole product had
/// none could take one of `gemm`'s small-size paths, which sum in another order, and the product
/// would then depend on the number of threads. Sides past 64 keep the blocking along k, and so
/// each output's sum, what it is for the whole product: the tiles give the same bits.
#[cfg(not(target_arch = "wasm32"))]
const MIN_SIDE: usize = 65;

/// How an m × n product is cut into tiles for `threads` threads: the row and column boundaries
/// (columns at multiples of 16, a vector of `gemm`'s kernels), as many tiles as threads where the
/// sides allow, and of the grids that give that many, the one whose tiles read least (rows +
/// columns per tile, each a row of an operand). None where no cut keeps every side at
/// `MIN_SIDE` or more, or for one thread.
#[cfg(not(target_arch = "wasm32"))]
pub(super) fn tiles(m: usize, n: usize, threads: usize) -> Option<(Vec<usize>, Vec<usize>)> {
    let cuts = |len: usize, parts: usize, align: usize| -> Option<Vec<usize>> {
        let units = len.div_ceil(align);
        let c: Vec<usize> = (0..=parts).map(|i| (units * i / parts * align).min(len)).collect();
        (parts == 1 || c.windows(2).all(|w| w[1] - w[0] >= MIN_SIDE)).then_some(c)
    };
    (2..=threads).rev().find_map(|count| {
        (1..=count)
            .filter(|tm| count % tm == 0)
            .filter_map(|tm| Some((cuts(m, tm, 1)?, cuts(n, count / tm, 16)?)))
            .min_by_key(|(r, c)| m.div_ceil(r.len() - 1) + n.div_ceil(c.len() - 1))
    })
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
        Rhs::Transposed => (k, 1),
        Rhs::Plain => (1, n),
    };
    assert!(dst.len() >= m * n);
    let threads = if threads { rayon::current_num_threads() } else { 1 };
    // SAFETY: dst holds m·n elements (asserted); gemm_raw checks lhs and rhs.
    unsafe { gemm_raw(dst.as_mut_ptr(), n, accumulate, lhs, k, rhs, rhs_rs, rhs_cs, m, n, k, threads) }
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

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// The tiles cover the product once, as many as the threads where every side can stay at
    /// `MIN_SIDE` or more, columns cut at multiples of 16; one thread or sides too short: none.
    #[test]
    fn tiles_cover_the_product_with_sides_past_64() {
        for (m, n, threads) in [(2000, 576, 2), (2000, 576, 16), (515, 192, 16), (288, 1536, 7), (130, 130, 4), (100, 49152, 16), (3000, 20, 8)] {
            let (rows, cols) = tiles(m, n, threads).unwrap_or_else(|| panic!("{m}×{n} on {threads} threads: no tiles"));
            assert_eq!((rows[0], *rows.last().unwrap(), cols[0], *cols.last().unwrap()), (0, m, 0, n), "{m}×{n}");
            let count = (rows.len() - 1) * (cols.len() - 1);
            assert!((2..=threads).contains(&count), "{m}×{n} on {threads} threads: {count} tiles");
            for cuts in [&rows, &cols] {
                assert!(cuts.len() == 2 || cuts.windows(2).all(|w| w[1] - w[0] >= MIN_SIDE), "{m}×{n}: {cuts:?}");
            }
            assert!(cols[1..cols.len() - 1].iter().all(|c| c % 16 == 0), "{m}×{n}: columns cut at {cols:?}");
        }
        assert_eq!(tiles(2000, 576, 16).map(|(r, c)| (r.len() - 1, c.len() - 1)), Some((8, 2)), "the grid that reads least");
        assert_eq!(tiles(2000, 576, 1), None);
        assert_eq!(tiles(129, 64, 4), None, "no side of 65 or more after a cut");
        assert_eq!(tiles(20, 20, 16), None);
    }

    /// Tiles give the bits of the whole product on one thread, whatever the number of threads
    /// (the sides they leave keep gemm's blocking along k), for both layouts of the right
    /// operand, with and without accumulating, at sizes around gemm's small-size limits (64, and
    /// k past 512, where its small-size path blocks k differently).
    #[test]
    fn tiles_give_the_bits_of_one_thread() {
        let val = |i: usize, s: usize| ((i * s) % 1013) as f32 / 1013.0 - 0.5;
        for (m, k, n) in [(130, 600, 131), (200, 1536, 70), (66, 513, 300), (515, 576, 192), (1000, 40, 2000)] {
            let x: Vec<f32> = (0..m * k).map(|i| val(i, 7919)).collect();
            let w: Vec<f32> = (0..n * k).map(|i| val(i, 104729)).collect();
            for layout in [Rhs::Plain, Rhs::Transposed] {
                for accumulate in [false, true] {
                    let start: Vec<f32> = (0..m * n).map(|i| val(i, 31)).collect();
                    let (rs, cs) = match layout {
                        Rhs::Plain => (n, 1),
                        Rhs::Transposed => (1, k),
                    };
                    let run = |threads: usize| {
                        let mut out = start.clone();
                        // SAFETY: out holds m·n elements; gemm_raw checks x and w.
                        unsafe { gemm_raw(out.as_mut_ptr(), n, accumulate, &x, k, &w, rs, cs, m, n, k, threads) };
                        out
                    };
                    let one = run(1);
                    for threads in [2, 3, 8, 16] {
                        assert!(run(threads) == one, "{m}×{k}×{n} on {threads} threads: other bits than on one");
                    }
                }
            }
        }
    }
}
