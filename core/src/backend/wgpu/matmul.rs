//! `matmul` host side: shape checks, kernel choice (tiled GEMM or the few-rows kernel), one
//! launch per row-chunk of `w` (each writes its own column range of the output), and grids split
//! where a dimension would pass the adapter's workgroup-count limit.

use super::pipelines::{Gemm, Kernel, SMALL_M};
use super::recorder::Binding;
use super::tensor::{shape_err, u32p, GpuTensor};
use super::WgpuBackend;
use crate::backend::{block_views, BiasBlocks, BlockProduct};
use crate::Result;

/// The matmul kernels' uniform block, in WGSL field order (see shaders/matmul_params.wgsl).
#[derive(Clone, Copy, Default)]
pub(super) struct MmParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub heads: u32,
    pub group: u32,
    pub has_bias: u32,
    pub bias_off: u32,
    /// The bias's offset per head (z % heads): `matmul_blocks`' one bias per block.
    pub bias_sh: u32,
    /// (offset, row stride, batch stride, head stride) of x, w and out, in f32 elements.
    pub x: [u32; 4],
    pub w: [u32; 4],
    pub o: [u32; 4],
}

impl MmParams {
    pub fn words(&self) -> [u32; 20] {
        let s = self;
        let mut p = [s.m, s.n, s.k, s.heads.max(1), s.group.max(1), s.has_bias, s.bias_off, s.bias_sh, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p[8..12].copy_from_slice(&s.x);
        p[12..16].copy_from_slice(&s.w);
        p[16..20].copy_from_slice(&s.o);
        p
    }

    /// Whether variant `g` of this product can read its operands a vec4 at a time
    /// (matmul_stage_vec4.wgsl): each operand's offsets and strides multiples of 4, and its
    /// contiguous dimension too (K for x [M, K] and w [N, K]; M for x [K, M], N for w [K, N]),
    /// so that every vec4 read lies wholly inside a row of the operand, or wholly past the product.
    pub fn vec4_fits(&self, g: Gemm) -> bool {
        let four = |v: &u32| v % 4 == 0;
        let x_run = if g.x_km { self.m } else { self.k };
        let w_run = if g.w_kn { self.n } else { self.k };
        self.x.iter().all(four) && self.w.iter().all(four) && four(&x_run) && four(&w_run)
    }
}

/// Output tiles of 128×128 a product must fill before the wide kernel takes it: below that the
/// 64×64 kernel's four times as many workgroups keep more of a large GPU busy.
const WIDE_MIN_TILES: usize = 128;

/// The padded output area the wide kernel may compute, relative to the 64×64 kernel's: a product
/// of many small matrices (attention over 20 positions: 900 of 20×20) would otherwise fill
/// 128×128 tiles 2% full.
const WIDE_MAX_PADDING: usize = 5; // in quarters: 5/4

/// Whether `batch` products of `[m, n]` go to the 128×128 kernel: enough tiles to fill a GPU, and
/// not much more padding than 64×64 tiles.
fn wide_pays(m: usize, n: usize, batch: usize) -> bool {
    let padded = |tile: usize| m.div_ceil(tile) * tile * n.div_ceil(tile) * tile;
    m.div_ceil(128) * n.div_ceil(128) * batch >= WIDE_MIN_TILES && 4 * padded(128) <= WIDE_MAX_PADDING * padded(64)
}

impl WgpuBackend {
    /// The tiled GEMM for `batch` products of `[m, n]` each, of variant `g`, and its tile's side.
    pub(super) fn gemm(&self, g: Gemm, m: usize, n: usize, batch: usize) -> (Kernel, usize) {
        if self.coop && self.gemm_tile.is_none() {
            return (Kernel::Matmul(Gemm { coop: true, wide: false, ..g }), 64);
        }
        let wide = match self.gemm_tile {
            Some(t) => t == 128,
            None => wide_pays(m, n, batch),
        };
        (Kernel::Matmul(Gemm { wide, ..g }), if wide { 128 } else { 64 })
    }

    /// Records one launch of the tiled GEMM `kern` (from `gemm`) over product `p`, with vec4 loads
    /// where `p` is aligned for them (not on cooperative matrices).
    pub(super) fn run_gemm(&self, kern: Kernel, out: Binding<'_>, inputs: &[Binding<'_>; 3], p: &MmParams, groups: [u32; 3]) -> Result<()> {
        let kern = match kern {
            Kernel::Matmul(g) if !g.coop && self.vec4_loads && p.vec4_fits(g) => Kernel::Matmul(Gemm { vec4: true, ..g }),
            k => k,
        };
        self.run(kern, out, inputs, None, &p.words(), groups)
    }

    pub(super) fn op_matmul(&self, x: &GpuTensor, w: &GpuTensor, bias: Option<&GpuTensor>) -> Result<GpuTensor> {
        const OP: &str = "matmul";
        let (m, k) = x.rows_cols();
        if x.shape().is_empty() {
            return Err(shape_err(OP, "x must have at least one dimension"));
        }
        let ws = w.shape();
        if ws.len() != 2 || ws[1] != k {
            return Err(shape_err(OP, format!("x {:?} needs w [N, {k}], got w {ws:?}", x.shape())));
        }
        let n = ws[0];
        if let Some(b) = bias {
            if b.numel() != n || b.shape().len() != 1 {
                return Err(shape_err(OP, format!("bias {:?} must be [{n}] for w {ws:?}", b.shape())));
            }
        }
        let limit = self.limit();
        let xb = x.single(OP, "x", limit)?;
        let bb = match bias {
            Some(b) => b.single(OP, "bias", limit)?,
            None => Binding::whole(&self.dummy, 16),
        };
        let mut oshape = x.shape().to_vec();
        *oshape.last_mut().expect("non-empty") = n;
        let out = self.output(OP, oshape)?;
        let ob = out.single(OP, "out", limit)?;
        u32p(OP, m * k)?;
        u32p(OP, n * k)?;

        let max_dim = self.ctx.limits.max_compute_workgroups_per_dimension.max(1) as usize;
        for c in w.chunks() {
            let wb = Binding::whole(&c.buf.buf, c.buf.bytes);
            let inputs = [xb, wb, bb];
            let base = MmParams {
                k: k as u32,
                has_bias: bias.is_some() as u32,
                x: [0, k as u32, 0, 0],
                w: [0, k as u32, 0, 0],
                o: [0, n as u32, 0, 0],
                ..Default::default()
            };
            if m <= SMALL_M {
                let p = MmParams { m: m as u32, n: c.rows as u32, bias_off: c.row0 as u32, o: [c.row0 as u32, n as u32, 0, 0], ..base };
                let groups = self.ctx.grid(c.rows.div_ceil(8) as u64)?;
                self.run(Kernel::MatmulSmallM, ob, &inputs, None, &p.words(), groups)?;
                continue;
            }
            // Tiled: split M and N into blocks of at most max_dim tiles each.
            let (kern, tile) = self.gemm(Gemm::default(), m, c.rows, 1);
            let span = max_dim * tile;
            for m0 in (0..m).step_by(span) {
                let mm = span.min(m - m0);
                for n0 in (0..c.rows).step_by(span) {
                    let nn = span.min(c.rows - n0);
                    let col = c.row0 + n0;
                    let p = MmParams {
                        m: mm as u32,
                        n: nn as u32,
                        bias_off: col as u32,
                        x: [(m0 * k) as u32, k as u32, 0, 0],
                        w: [(n0 * k) as u32, k as u32, 0, 0],
                        o: [(m0 * n + col) as u32, n as u32, 0, 0],
                        ..base
                    };
                    let groups = [nn.div_ceil(tile) as u32, mm.div_ceil(tile) as u32, 1];
                    self.run_gemm(kern, ob, &inputs, &p, groups)?;
                }
            }
        }
        Ok(out)
    }

    /// n products over blocks of rows or columns (`Backend::matmul_blocks`): the tiled GEMM with
    /// one workgroup layer per block (z = the block), each operand's block at its own offset.
    pub(super) fn op_matmul_blocks(&self, x: &GpuTensor, w: &GpuTensor, bias: Option<&GpuTensor>, p: &BlockProduct)
        -> Result<GpuTensor> {
        const OP: &str = "matmul_blocks";
        let (xv, wv, ov, shape, bias_kind) = block_views(OP, p, x.shape(), w.shape(), bias.map(GpuTensor::shape))?;
        let out = self.output(OP, shape)?;
        if out.numel() == 0 {
            return Ok(out);
        }
        if p.k == 0 && bias.is_none() {
            self.zero_fill(OP, &out)?; // empty sums
            return Ok(out);
        }
        let limit = self.limit();
        let (xb, wb, ob) = (x.single(OP, "x", limit)?, w.single(OP, "w", limit)?, out.single(OP, "out", limit)?);
        let bb = match bias {
            Some(b) => b.single(OP, "bias", limit)?,
            None => Binding::whole(&self.dummy, 16),
        };
        let u = |v: usize| u32p(OP, v);
        u(x.numel())?;
        u(w.numel())?;
        u(out.numel())?;
        let max_dim = self.ctx.limits.max_compute_workgroups_per_dimension.max(1) as usize;
        if p.n > max_dim {
            return Err(shape_err(OP, format!("{} blocks, over this adapter's {max_dim} workgroups a dimension", p.n)));
        }
        let (kern, tile) = self.gemm(Gemm { w_kn: p.w_kn, ..Gemm::default() }, p.m, p.cols, p.n);
        let span = max_dim * tile;
        // The bias's offset per block: a block's own [cols], or the one every block shares.
        let bias_sh = if bias_kind == BiasBlocks::PerBlock { p.cols } else { 0 };
        for m0 in (0..p.m).step_by(span) {
            let mm = span.min(p.m - m0);
            for n0 in (0..p.cols).step_by(span) {
                let nn = span.min(p.cols - n0);
                // Rows m0.. and columns n0.. of every block: w's columns n0.. are its rows where
                // it is [cols, k].
                let w_at = if p.w_kn { n0 } else { n0 * wv.row };
                let q = MmParams {
                    m: u(mm)?,
                    n: u(nn)?,
                    k: u(p.k)?,
                    heads: u(p.n)?,
                    group: 1,
                    has_bias: bias.is_some() as u32,
                    bias_off: u(n0)?,
                    bias_sh: u(bias_sh)?,
                    x: [u(xv.off + m0 * xv.row)?, u(xv.row)?, 0, u(xv.stride)?],
                    w: [u(wv.off + w_at)?, u(wv.row)?, 0, u(wv.stride)?],
                    o: [u(ov.off + m0 * ov.row + n0)?, u(ov.row)?, 0, u(ov.stride)?],
                };
                let groups = [nn.div_ceil(tile) as u32, mm.div_ceil(tile) as u32, p.n as u32];
                self.run_gemm(kern, ob, &[xb, wb, bb], &q, groups)?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::wide_pays;

    #[test]
    fn the_wide_kernel_takes_large_products_only() {
        assert!(wide_pays(2000, 1536, 1)); // 16 × 12 tiles, no extra padding
        assert!(!wide_pays(200, 200, 1)); // 4 tiles: too few to fill a GPU
        assert!(!wide_pays(20, 20, 900)); // attention at 20 positions: 900 tiles 2% full
        assert!(wide_pays(256, 256, 288)); // attention at 256 positions, 32 prompts × 9 heads
        assert!(!wide_pays(100, 64, 900)); // 128 × 128 tiles of which 64 × 128 would do
    }
}
