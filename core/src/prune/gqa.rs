//! Which KV heads a pruned layer keeps, so that the standard grouping still holds.
//!
//! Attention maps query head i to KV head `i / (n_heads / n_kv_heads)`: groups of equal size.
//! Pruning can leave KV heads with different numbers of query heads (e.g. 2 and 1), which no
//! equal grouping fits. The simplest correct layout: with `c_k` kept query heads on source KV head
//! k, take the group size g = gcd of the `c_k` and keep KV head k `c_k / g` times (its K and V rows
//! duplicated). Query heads stay in source order, which already lists them by KV head, so query
//! head i lands on a copy of its own KV head. A KV head whose query heads are all gone is dropped.
//! Duplicates cost a little K/V compute, never correctness; with even pruning there are none.

use crate::{Error, Result};

/// Source KV head of each KV head of the pruned layer, for the kept query heads `keep` (ascending)
/// of a layer with `n_heads` query and `n_kv` KV heads.
pub fn regroup(keep: &[usize], n_heads: usize, n_kv: usize) -> Result<Vec<usize>> {
    if keep.is_empty() {
        return Ok(Vec::new());
    }
    if n_kv == 0 || !n_heads.is_multiple_of(n_kv) {
        return Err(Error::Unsupported(format!("{n_heads} query heads on {n_kv} KV heads")));
    }
    let group = n_heads / n_kv;
    let mut counts = vec![0usize; n_kv];
    for &h in keep {
        counts[h / group] += 1;
    }
    let g = counts.iter().filter(|&&c| c > 0).fold(0, |a, &c| gcd(a, c));
    Ok((0..n_kv).flat_map(|k| std::iter::repeat_n(k, counts[k] / g)).collect())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::regroup;

    /// Every kept query head i must read a copy of its source KV head under the equal grouping.
    fn check(keep: &[usize], n_heads: usize, n_kv: usize) -> Vec<usize> {
        let kv = regroup(keep, n_heads, n_kv).unwrap();
        assert!(keep.len().is_multiple_of(kv.len()));
        let g = keep.len() / kv.len();
        for (i, &h) in keep.iter().enumerate() {
            assert_eq!(kv[i / g], h / (n_heads / n_kv), "query head {h} of {keep:?}");
        }
        kv
    }

    #[test]
    fn groups() {
        assert_eq!(check(&[0, 1, 2, 3], 4, 2), vec![0, 1]);
        assert_eq!(check(&[0, 1, 3], 4, 2), vec![0, 0, 1]);
        assert_eq!(check(&[2, 3], 4, 2), vec![1]);
        assert_eq!(check(&[0, 1, 2, 6, 7, 8], 9, 3), vec![0, 2]);
        assert_eq!(check(&[0, 4, 5, 6, 7], 9, 3), vec![0, 1, 1, 2, 2]);
        assert_eq!(check(&[1, 3], 4, 4), vec![1, 3]);
        assert!(regroup(&[], 4, 2).unwrap().is_empty());
    }
}
