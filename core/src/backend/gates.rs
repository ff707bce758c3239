//! `Gates`: the gates `gated_sum` and its backward read, as a view into a larger tensor, so that the
//! edge forward uploads a layer's gates once and both passes read them where they lie (a gate
//! block per group and per pass would be an upload each, a dispatch each on a GPU).

use crate::tensor::rows_cols;
use crate::{Error, Result};

/// The view `Z [rows, K]` of `table` (read flat) whose element (i, j) is
/// `table[offset + i·stride + j]`. `K = Σ_g k_g`: the groups' gates side by side, group g's
/// `[rows, k_g]` from column `Σ_{g' < g} k_g'`.
pub struct Gates<'a, T> {
    pub table: &'a T,
    pub offset: usize,
    pub stride: usize,
    pub rows: usize,
}

impl<T> Clone for Gates<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Gates<'_, T> {}

/// The shapes `gated_sum` (and its backward) work on, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GatedShapes {
    /// Readers (the view's rows).
    pub n: usize,
    /// Columns of every stack.
    pub c: usize,
    /// Rows of each stack, and where its gates start among the view's columns.
    pub ks: Vec<usize>,
    pub starts: Vec<usize>,
}

impl GatedShapes {
    /// The view's width, `K = Σ_g k_g`.
    pub fn width(&self) -> usize {
        self.ks.iter().sum()
    }
}

/// Checks that `gated_sum`'s `base` of `len` elements repeats evenly along a row of `c`.
pub(crate) fn check_base(op: &str, len: usize, c: usize) -> Result<()> {
    if len == 0 || !c.is_multiple_of(len) {
        return Err(Error::Backend(format!("{op}: a base of {len} elements does not repeat evenly along rows of {c}")));
    }
    Ok(())
}

/// Checks a view of a table of `table_len` elements against the stacks (each viewed as
/// `[k_g, C]`, `tensor::rows_cols`): the stacks share C, the view's rows do not overlap
/// (`K ≤ stride` for more than one row) and lie inside the table. An `Error::Backend` naming `op`.
pub(crate) fn gated_shapes(op: &str, table_len: usize, offset: usize, stride: usize, rows: usize, stacks: &[&[usize]])
    -> Result<GatedShapes> {
    let err = |m: String| Err(Error::Backend(format!("{op}: {m}")));
    let Some(first) = stacks.first() else {
        return err("no stacks".into());
    };
    let c = rows_cols(first).1;
    let mut ks = Vec::with_capacity(stacks.len());
    for (g, s) in stacks.iter().enumerate() {
        let (k, sc) = rows_cols(s);
        if sc != c {
            return err(format!("group {g}: a stack {s:?} of {sc} columns where the first has {c}"));
        }
        ks.push(k);
    }
    let starts: Vec<usize> = ks.iter().scan(0, |a, &k| {
        let s = *a;
        *a += k;
        Some(s)
    }).collect();
    let shapes = GatedShapes { n: rows, c, ks, starts };
    let width = shapes.width();
    if rows > 1 && width > stride {
        return err(format!("gates of {width} columns a row at a stride of {stride}: the rows would overlap"));
    }
    if rows > 0 && width > 0 {
        let end = (rows - 1).checked_mul(stride).and_then(|e| e.checked_add(offset + width));
        if end.is_none_or(|e| e > table_len) {
            return err(format!(
                "gates [{rows}, {width}] from element {offset} at a stride of {stride} run past a table of {table_len}"
            ));
        }
    }
    Ok(shapes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_checked() {
        let s1 = [3usize, 10];
        let s2 = [2usize, 10];
        let got = gated_shapes("t", 20, 2, 6, 3, &[&s1, &s2]).unwrap();
        assert_eq!(got, GatedShapes { n: 3, c: 10, ks: vec![3, 2], starts: vec![0, 3] });
        // From element 3 the last row ends at 3 + 2·6 + 5 = 20, the table's end; from 4 it runs past.
        assert!(gated_shapes("t", 20, 3, 6, 3, &[&s1, &s2]).is_ok());
        assert!(gated_shapes("t", 20, 4, 6, 3, &[&s1, &s2]).is_err());
        let e = gated_shapes("t", 18, 2, 6, 3, &[&s1, &s2]).unwrap_err().to_string();
        assert!(e.contains("run past a table of 18"), "{e}");
        let e = gated_shapes("t", 100, 0, 4, 3, &[&s1, &s2]).unwrap_err().to_string();
        assert!(e.contains("overlap"), "{e}");
        let e = gated_shapes("t", 100, 0, 6, 3, &[&s1, &[2, 9]]).unwrap_err().to_string();
        assert!(e.contains("group 1"), "{e}");
        assert!(gated_shapes("t", 100, 0, 6, 3, &[]).is_err());
        // One row may be as wide as it likes within the table; no rows read nothing.
        assert!(gated_shapes("t", 5, 0, 1, 1, &[&s1, &s2]).is_ok());
        assert!(gated_shapes("t", 0, 0, 0, 0, &[&s1]).is_ok());
        assert!(check_base("t", 5, 10).is_ok() && check_base("t", 10, 10).is_ok());
        assert!(check_base("t", 3, 10).is_err() && check_base("t", 0, 10).is_err() && check_base("t", 20, 10).is_err());
    }
}
