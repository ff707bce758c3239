//! The edge forward's mixing on the CPU, fused: `out [n, C] = Σ_g gates_g · stacks_g` and its
//! backward. The columns go in blocks, in parallel, so a layer reads its writers' outbox once,
//! where a product per group over every column would write and re-add a full-size sum per group:
//! in each block a `gemm` per group reads the stack where it lies and adds into the output's
//! block, which stays in cache. Where some rows' gates are all 0 (a standalone edge model's cut
//! edges, or gates sampled shut) the block packs the other rows (`[W, w]`) and runs one `gemm`
//! against all the gates at once; mostly-zero gates are summed sparsely. The backward reads each
//! stack's block where it lies, without packing: dgates per group as one `gemm` (`dy · stackᵀ`)
//! when most of its entries are needed, else one dot product per entry needed (for sampled gates
//! only those strictly between 0 and 1, since a clamped sample has no gradient); dstacks per group
//! as one `gemm` (`gatesᵀ · dy`) written straight into the stacks' gradients, added to the ones
//! gathered so far in place (when no one else holds them), where a fresh buffer and a sum would
//! touch every page twice more. In the browser (no SIMD gemm kernels) the backward keeps the dot products and
//! one packed gemm over the rows with a nonzero gate.

use std::sync::Arc;

use rayon::prelude::*;

use super::matmul::{gemm_on, gemm_raw, Out, Rhs};
use super::vector::dot;
use super::{check, CpuBackend, CpuTensor};
use crate::backend::{check_base, gated_shapes, GatedShapes, Gates};
use crate::Result;

/// Columns per block: W = 300 packed rows of a block are 2.4 MiB.
const BLOCK: usize = 2048;

/// Checks the view against the stacks (`gated_shapes`).
fn shapes(op: &str, gates: Gates<'_, CpuTensor>, stacks: &[&CpuTensor]) -> Result<GatedShapes> {
    let ss: Vec<&[usize]> = stacks.iter().map(|t| t.0.shape.as_slice()).collect();
    gated_shapes(op, gates.table.0.data.len(), gates.offset, gates.stride, gates.rows, &ss)
}

/// The view's element (i, j).
fn at(z: Gates<'_, CpuTensor>, i: usize, j: usize) -> f32 {
    z.table.0.data[z.offset + i * z.stride + j]
}

/// The stack rows to use, as (group, row), and their gates as one `[n, W]` matrix (`transposed`:
/// `[W, n]`). Rows with every gate 0 are left out when `skip_zero`.
fn gather(z: Gates<'_, CpuTensor>, sh: &GatedShapes, transposed: bool, skip_zero: bool) -> (Vec<(usize, usize)>, Vec<f32>) {
    let n = sh.n;
    let mut rows = Vec::new();
    let mut cols: Vec<Vec<f32>> = Vec::new();
    for (g, (&k, &at0)) in sh.ks.iter().zip(&sh.starts).enumerate() {
        for j in 0..k {
            let col: Vec<f32> = (0..n).map(|i| at(z, i, at0 + j)).collect();
            if skip_zero && col.iter().all(|&v| v == 0.0) {
                continue;
            }
            rows.push((g, j));
            cols.push(col);
        }
    }
    let w = rows.len();
    let z = if transposed { cols.concat() } else { (0..n).flat_map(|i| cols.iter().map(move |c| c[i])).collect() };
    debug_assert_eq!(z.len(), n * w);
    (rows, z)
}

/// Rows `rows` of the stacks, columns `c0..c1`, packed as `[rows, c1 − c0]`.
fn pack(stacks: &[&CpuTensor], rows: &[(usize, usize)], c: usize, c0: usize, c1: usize) -> Vec<f32> {
    let mut p = Vec::with_capacity(rows.len() * (c1 - c0));
    for &(g, j) in rows {
        p.extend_from_slice(&stacks[g].0.data[j * c + c0..j * c + c1]);
    }
    p
}

/// `out[j] = base[(c0 + j) mod L]` (a block of a row from column c0), or 0 without a base.
fn base_fill(out: &mut [f32], base: Option<&[f32]>, c0: usize) {
    let Some(b) = base else {
        out.fill(0.0);
        return;
    };
    let (mut j, mut p) = (0, c0 % b.len());
    while j < out.len() {
        let take = (b.len() - p).min(out.len() - j);
        out[j..j + take].copy_from_slice(&b[p..p + take]);
        j += take;
        p = 0;
    }
}

pub fn gated_sum(be: &CpuBackend, gates: Gates<'_, CpuTensor>, stacks: &[&CpuTensor], base: Option<&CpuTensor>) -> Result<CpuTensor> {
    let sh = shapes("gated_sum", gates, stacks)?;
    let (n, c) = (sh.n, sh.c);
    if let Some(b) = base {
        check_base("gated_sum", b.0.data.len(), c)?;
    }
    let base = base.map(|b| b.0.data.as_slice());
    let (rows, z) = gather(gates, &sh, false, true);
    let mut out = be.out(n * c);
    if rows.is_empty() || c == 0 {
        out.chunks_mut(c.max(1)).for_each(|row| base_fill(row, base, 0));
        return Ok(CpuBackend::wrap(vec![n, c], out));
    }
    let w_all = rows.len();
    let dst = Out(out.as_mut_ptr());
    if z.iter().filter(|&&v| v != 0.0).count() * SPARSE < z.len() {
        sparse_sum(dst, stacks, &rows, &z, n, c, base);
        return Ok(CpuBackend::wrap(vec![n, c], out));
    }
    if IN_PLACE && w_all == sh.width() {
        // Every row has a gate: a product per group reading its stack where it lies, summed into
        // the output's block (which stays in cache across the groups), with no packed copy.
        (0..c.div_ceil(BLOCK)).into_par_iter().for_each(|b| {
            let (c0, c1) = (b * BLOCK, ((b + 1) * BLOCK).min(c));
            if base.is_some() {
                for i in 0..n {
                    // SAFETY: row i's columns c0..c1 of the [n, c] output; blocks own disjoint columns.
                    base_fill(unsafe { dst.slice(i * c + c0, c1 - c0) }, base, c0);
                }
            }
            for (g, (&k, &at0)) in sh.ks.iter().zip(&sh.starts).enumerate() {
                let rhs = if k == 0 { &[][..] } else { &stacks[g].0.data[c0..] };
                // Group g's gates where they lie in the table, rows `stride` apart.
                let lhs = &gates.table.0.data[gates.offset + at0..];
                // SAFETY: rows i < n of the [n, c] output, this block's columns c0..c1 (blocks own
                // disjoint columns); an empty group writes 0 where it comes first.
                unsafe { gemm_raw(dst.at(c0), c, g > 0 || base.is_some(), lhs, gates.stride, rhs, c, 1, n, c1 - c0, k, 1) };
            }
        });
        return Ok(CpuBackend::wrap(vec![n, c], out));
    }
    (0..c.div_ceil(BLOCK)).into_par_iter().for_each(|b| {
        let (c0, c1) = (b * BLOCK, ((b + 1) * BLOCK).min(c));
        let w = c1 - c0;
        let packed = pack(stacks, &rows, c, c0, c1);
        let mut local = vec![0.0f32; n * w];
        gemm_on(&mut local, &z, &packed, n, w_all, w, false, Rhs::Plain, false);
        for i in 0..n {
            // SAFETY: row i's columns c0..c1 of an [n, c] buffer; blocks own disjoint columns.
            unsafe {
                if base.is_some() {
                    base_fill(dst.slice(i * c + c0, w), base, c0);
                    dst.add(i * c + c0, &local[i * w..(i + 1) * w]);
                } else {
                    dst.put(i * c + c0, &local[i * w..(i + 1) * w]);
                }
            }
        }
    });
    Ok(CpuBackend::wrap(vec![n, c], out))
}

/// What the backward computes: per stack row (of `gates_t`'s `[W, n]`), the readers whose dgates
/// are needed (all, or for sampled gates those strictly between 0 and 1), and the rows with a
/// nonzero gate (`live`, with their gates `zt_live`) or none (`dead`, whose dstacks are 0).
struct Plan {
    needed: Vec<Vec<usize>>,
    live: Vec<usize>,
    dead: Vec<usize>,
    zt_live: Vec<f32>,
}

impl Plan {
    fn of(zt: &[f32], w: usize, n: usize, sampled: bool) -> Plan {
        let row = |r: usize| &zt[r * n..(r + 1) * n];
        let needed = (0..w).map(|r| (0..n).filter(|&i| !sampled || (row(r)[i] > 0.0 && row(r)[i] < 1.0)).collect()).collect();
        let (live, dead): (Vec<usize>, Vec<usize>) = (0..w).partition(|&r| row(r).iter().any(|&v| v != 0.0));
        let zt_live = live.iter().flat_map(|&r| row(r).iter().copied()).collect();
        Plan { needed, live, dead, zt_live }
    }
}

/// Whether the stacks go through `gemm` read in place (row stride C), without packing: natively.
/// In the browser the gemm has no threads or SIMD kernels, and the packed path stays.
const IN_PLACE: bool = cfg!(not(target_arch = "wasm32"));

/// `dst[i, j] (+)= Σ_p lhs[i, p] · rhs(p, j)` for i < m, j < n, p < k, on this thread, with
/// `dst` and `lhs` row-major at row strides `dst_rs` and `lhs_rs`, and `rhs(p, j)` at
/// `rhs[p·rhs_rs + j·rhs_cs]`: a stack's column block read where it lies.
#[allow(clippy::too_many_arguments)]
fn gemm_strided(dst: &mut [f32], dst_rs: usize, accumulate: bool, lhs: &[f32], lhs_rs: usize, rhs: &[f32], rhs_rs: usize,
    rhs_cs: usize, m: usize, n: usize, k: usize) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len());
    // SAFETY: dst is checked above; `gemm_raw` checks the operands.
    unsafe { gemm_raw(dst.as_mut_ptr(), dst_rs, accumulate, lhs, lhs_rs, rhs, rhs_rs, rhs_cs, m, n, k, 1) }
}

/// Gates at most 1 in `SPARSE` nonzero (a standalone edge model's, or late in training) go
/// through `sparse_sum`: there a product costs what it reads, where a packed gemm reads every row.
const SPARSE: usize = 4;

/// `out[i] = Σ_{j: z_ij ≠ 0} z_ij · stack row j`, a column block at a time so each row's block
/// stays in cache while its readers add it; no packing.
fn sparse_sum(dst: Out, stacks: &[&CpuTensor], rows: &[(usize, usize)], z: &[f32], n: usize, c: usize, base: Option<&[f32]>) {
    let w_all = rows.len();
    (0..c.div_ceil(BLOCK)).into_par_iter().for_each(|b| {
        let (c0, c1) = (b * BLOCK, ((b + 1) * BLOCK).min(c));
        for i in 0..n {
            // SAFETY: row i's columns c0..c1 of the [n, c] output; blocks own disjoint columns.
            let out = unsafe { dst.slice(i * c + c0, c1 - c0) };
            base_fill(out, base, c0);
            for (j, &(g, r)) in rows.iter().enumerate() {
                let zij = z[i * w_all + j];
                if zij == 0.0 {
                    continue;
                }
                let src = &stacks[g].0.data[r * c + c0..r * c + c1];
                if zij == 1.0 {
                    out.iter_mut().zip(src).for_each(|(o, &x)| *o += x);
                } else {
                    out.iter_mut().zip(src).for_each(|(o, &x)| *o += zij * x);
                }
            }
        }
    });
}

#[allow(clippy::type_complexity)]
pub fn gated_sum_backward(be: &CpuBackend, gates: Gates<'_, CpuTensor>, stacks: &[&CpuTensor], dy: &CpuTensor,
    acc: Vec<Option<CpuTensor>>, sampled: bool) -> Result<(CpuTensor, Vec<CpuTensor>)> {
    let sh = shapes("gated_sum_backward", gates, stacks)?;
    let (n, c) = (sh.n, sh.c);
    check(dy.rows_cols() == (n, c), "gated_sum_backward", || format!("dy {:?} for {n} readers of {c} columns", dy.0.shape))?;
    check(acc.len() == stacks.len(), "gated_sum_backward", || format!("{} gradients for {} stacks", acc.len(), stacks.len()))?;
    for (g, (a, s)) in acc.iter().zip(stacks).enumerate() {
        if let Some(a) = a {
            check(a.0.shape == s.0.shape, "gated_sum_backward", || format!("group {g}: gradient {:?} for a stack {:?}", a.0.shape, s.0.shape))?;
        }
    }
    let (ks, starts) = (&sh.ks, &sh.starts);
    let (rows, zt) = gather(gates, &sh, true, false);
    let w_all = rows.len();
    // The gradients so far, taken over when this is their only holder.
    let adding: Vec<bool> = acc.iter().map(Option::is_some).collect();
    let mut ds_bufs: Vec<Vec<f32>> = acc
        .into_iter()
        .zip(ks)
        .map(|(a, &k)| match a {
            Some(t) => Arc::try_unwrap(t.0).map(|h| h.data).unwrap_or_else(|shared| shared.data.clone()),
            None => be.out(k * c),
        })
        .collect();
    let ptrs: Vec<Out> = ds_bufs.iter_mut().map(|b| Out(b.as_mut_ptr())).collect();
    let dyd = &dy.0.data;
    let plan = Plan::of(&zt, w_all, n, sampled);
    // Per block: dz [n, W] partial sums, summed after.
    let dz_parts: Vec<Vec<f32>> = (0..c.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            let (c0, c1) = (b * BLOCK, ((b + 1) * BLOCK).min(c));
            let w = c1 - c0;
            let mut dyb = Vec::with_capacity(n * w);
            for i in 0..n {
                dyb.extend_from_slice(&dyd[i * c + c0..i * c + c1]);
            }
            let mut dz = vec![0.0f32; n * w_all];
            // SAFETY (both arms): row j's columns c0..c1 of group g's [k_g, c] buffer; blocks own
            // disjoint columns.
            let write = |g: usize, j: usize, src: &[f32]| unsafe {
                if adding[g] {
                    ptrs[g].add(j * c + c0, src)
                } else {
                    ptrs[g].put(j * c + c0, src)
                }
            };
            // dz where a gate needs it: a group whose entries are mostly needed in one gemm that
            // reads its stack in place; the others a dot product per entry needed.
            for (g, (&k, &at)) in ks.iter().zip(starts).enumerate() {
                let need: usize = plan.needed[at..at + k].iter().map(Vec::len).sum();
                if IN_PLACE && k > 0 && need * 2 >= n * k {
                    // Entries whose gate is clamped get a value too; their gradient is 0 anyway.
                    gemm_strided(&mut dz[at..], w_all, false, &dyb, w, &stacks[g].0.data[c0..], 1, c, n, k, w);
                    continue;
                }
                for j in 0..k {
                    let src = &stacks[g].0.data[j * c + c0..j * c + c1];
                    for &i in &plan.needed[at + j] {
                        dz[i * w_all + at + j] = dot(&dyb[i * w..(i + 1) * w], src);
                    }
                }
            }
            if IN_PLACE {
                // dstacks straight into their buffers, a group at a time (rows with every gate 0
                // get their 0 from the product).
                for (g, (&k, &at)) in ks.iter().zip(starts).enumerate().filter(|(_, (&k, _))| k > 0) {
                    // SAFETY: rows j < k of group g's [k, c] buffer, this block's columns c0..c1.
                    unsafe { gemm_raw(ptrs[g].0.add(c0), c, adding[g], &zt[at * n..], n, &dyb, w, 1, k, w, n, 1) };
                }
                return dz;
            }
            // dstacks for the rows with a nonzero gate; a row whose gates are all 0 gets 0.
            let live: Vec<(usize, usize)> = plan.live.iter().map(|&r| rows[r]).collect();
            let mut ds = vec![0.0f32; live.len() * w];
            if !live.is_empty() {
                gemm_on(&mut ds, &plan.zt_live, &dyb, live.len(), n, w, false, Rhs::Plain, false);
            }
            for (k, &(g, j)) in live.iter().enumerate() {
                write(g, j, &ds[k * w..(k + 1) * w]);
            }
            let zeros = vec![0.0f32; w];
            for &r in &plan.dead {
                let (g, j) = rows[r];
                if !adding[g] {
                    write(g, j, &zeros);
                }
            }
            dz
        })
        .collect();
    let mut dz = vec![0.0f32; n * w_all];
    for part in &dz_parts {
        dz.iter_mut().zip(part).for_each(|(d, p)| *d += p);
    }
    let dgates = CpuBackend::wrap(vec![n, w_all], dz);
    let dstacks = ks.iter().zip(ds_bufs).map(|(&k, buf)| CpuBackend::wrap(vec![k, c], buf)).collect();
    Ok((dgates, dstacks))
}
