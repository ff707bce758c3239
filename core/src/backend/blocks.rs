//! `matmul_blocks`' shapes: n products side by side, each operand's blocks stacked as rows of one
//! tensor or set side by side as its columns, and the checks both backends run on them.

use crate::{Error, Result};

/// Where an operand's n blocks of `[r, c]` lie in its tensor: block b is rows `b·r..` of
/// `[n·r, c]` (`Rows`) or columns `b·c..` of `[r, n·c]` (`Cols`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocks {
    Rows,
    Cols,
}

/// The shape of `matmul_blocks`: for b < n, `out_b [m, cols] = x_b [m, k] · w_bᵀ` with `w_b`
/// `[cols, k]` (a layer's heads' projections from their own inputs, or to their own outputs), or
/// `x_b · w_b` with `w_b [k, cols]` where `w_kn` (the products' input gradients), plus `bias`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockProduct {
    pub n: usize,
    pub m: usize,
    pub k: usize,
    pub cols: usize,
    pub x: Blocks,
    /// x's first block: x holds at least `x_first + n` blocks and the product reads `x_first..`
    /// (the query heads' inputs, then the keys', in one stacked tensor of the readers' inputs).
    pub x_first: usize,
    pub w: Blocks,
    pub w_kn: bool,
    pub out: Blocks,
}

/// Where one operand's blocks are, in elements: block b's element (i, j) is at
/// `off + b·stride + i·row + j`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockView {
    pub off: usize,
    pub stride: usize,
    pub row: usize,
}

/// A bias: none, one `[cols]` for every block, or a `[n·cols]` of one per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasBlocks {
    None,
    Shared,
    PerBlock,
}

/// The operands' views and the output's shape, after checking the tensors' shapes against `p`:
/// x and w 2-D (x holding at least the blocks read, w exactly n), a bias only without `w_kn`.
pub fn block_views(op: &str, p: &BlockProduct, x: &[usize], w: &[usize], bias: Option<&[usize]>)
    -> Result<(BlockView, BlockView, BlockView, Vec<usize>, BiasBlocks)> {
    let err = |m: String| Error::Backend(format!("{op}: {m}"));
    let two = |name: &str, s: &[usize]| -> Result<(usize, usize)> {
        match s {
            [r, c] => Ok((*r, *c)),
            _ => Err(err(format!("{name} {s:?} must be a matrix"))),
        }
    };
    // A tensor of `[rows, cols]` read as blocks of `[r, c]` from block `first` on.
    let view = |name: &str, s: &[usize], lay: Blocks, r: usize, c: usize, first: usize, exact: bool| -> Result<BlockView> {
        let (rows, cols) = two(name, s)?;
        let blocks = first + p.n;
        let fits = match lay {
            Blocks::Rows => cols == c && if exact { rows == blocks * r } else { rows >= blocks * r },
            Blocks::Cols => rows == r && if exact { cols == blocks * c } else { cols >= blocks * c },
        };
        if !fits {
            let want = match lay {
                Blocks::Rows => format!("[{}{} · {r}, {c}]", if exact { "" } else { "at least " }, blocks),
                Blocks::Cols => format!("[{r}, {}{} · {c}]", if exact { "" } else { "at least " }, blocks),
            };
            return Err(err(format!("{name} {s:?} does not hold {} blocks of [{r}, {c}] as {lay:?}: it must be {want}", p.n)));
        }
        Ok(match lay {
            Blocks::Rows => BlockView { off: first * r * c, stride: r * c, row: c },
            Blocks::Cols => BlockView { off: first * c, stride: c, row: cols },
        })
    };
    let xv = view("x", x, p.x, p.m, p.k, p.x_first, false)?;
    let (wr, wc) = if p.w_kn { (p.k, p.cols) } else { (p.cols, p.k) };
    let wv = view("w", w, p.w, wr, wc, 0, true)?;
    let (out_shape, ov) = match p.out {
        Blocks::Rows => (vec![p.n * p.m, p.cols], BlockView { off: 0, stride: p.m * p.cols, row: p.cols }),
        Blocks::Cols => (vec![p.m, p.n * p.cols], BlockView { off: 0, stride: p.cols, row: p.n * p.cols }),
    };
    let bias = match bias {
        None => BiasBlocks::None,
        Some(_) if p.w_kn => return Err(err("a bias on the input gradient's products (w_kn)".into())),
        Some(b) if b.iter().product::<usize>() == p.cols && b.len() == 1 => BiasBlocks::Shared,
        Some(b) if b.iter().product::<usize>() == p.n * p.cols && b.len() == 1 => BiasBlocks::PerBlock,
        Some(b) => return Err(err(format!("bias {b:?} must be [{}] (shared) or [{}] (one per block)", p.cols, p.n * p.cols))),
    };
    Ok((xv, wv, ov, out_shape, bias))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(x: Blocks, w: Blocks, out: Blocks, w_kn: bool) -> BlockProduct {
        BlockProduct { n: 3, m: 5, k: 4, cols: 2, x, x_first: 1, w, w_kn, out }
    }

    #[test]
    fn views_of_rows_and_columns() {
        let (x, w, o, shape, b) = block_views("t", &p(Blocks::Rows, Blocks::Cols, Blocks::Cols, false), &[25, 4], &[2, 12], Some(&[6])).unwrap();
        assert_eq!(x, BlockView { off: 20, stride: 20, row: 4 });
        assert_eq!(w, BlockView { off: 0, stride: 4, row: 12 });
        assert_eq!((o, shape, b), (BlockView { off: 0, stride: 2, row: 6 }, vec![5, 6], BiasBlocks::PerBlock));
        let (x, w, o, shape, b) = block_views("t", &p(Blocks::Cols, Blocks::Rows, Blocks::Rows, true), &[5, 17], &[12, 2], None).unwrap();
        assert_eq!(x, BlockView { off: 4, stride: 4, row: 17 });
        assert_eq!(w, BlockView { off: 0, stride: 8, row: 2 });
        assert_eq!((o, shape, b), (BlockView { off: 0, stride: 10, row: 2 }, vec![15, 2], BiasBlocks::None));
    }

    #[test]
    fn shapes_that_do_not_hold_the_blocks_are_refused() {
        let rows = p(Blocks::Rows, Blocks::Rows, Blocks::Rows, false);
        for (x, w, bias, says) in [
            (vec![19, 4], vec![6, 4], None, "x [19, 4]"),
            (vec![20, 3], vec![6, 4], None, "x [20, 3]"),
            (vec![20, 4], vec![8, 4], None, "w [8, 4]"),
            (vec![20, 4, 1], vec![6, 4], None, "must be a matrix"),
            (vec![20, 4], vec![6, 4], Some(vec![5]), "bias [5]"),
        ] {
            let e = block_views("op", &rows, &x, &w, bias.as_deref()).unwrap_err().to_string();
            assert!(e.contains("op:") && e.contains(says), "{e}");
        }
        let kn = BlockProduct { w_kn: true, ..rows };
        let e = block_views("op", &kn, &[20, 4], &[12, 2], Some(&[2])).unwrap_err().to_string();
        assert!(e.contains("bias"), "{e}");
    }
}
