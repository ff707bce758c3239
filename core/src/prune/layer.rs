//! One layer's blocks after pruning: the kept heads' and neurons' weight slices, and the constant
//! that each removed component leaves behind (its ablation value through its output weights).
//!
//! With binary masks the masked forward computes, for the attention block,
//! `W_O·mix(z) + b_O = Σ_kept W_O,h·z_h + (b_O + Σ_removed W_O,h·a_h)`: the removed heads' part is
//! a constant vector, the same at every position when the ablation value is. The MLP block alike
//! with W_down and the neurons; a removed block is its own ablation value.

use super::gqa::regroup;
use crate::circuit::{AblationValues, Masks};
use crate::model::LayerWeights;
use crate::{Error, HostTensor, Result};

/// Attention after pruning: kept heads (maybe none) and the bias the removed ones fold into.
pub(super) struct AttnPart {
    /// Source indices of the kept query heads, in order.
    pub heads: Vec<usize>,
    /// Source KV head of each kept KV head (duplicates allowed, see `gqa`).
    pub kv_heads: Vec<usize>,
    pub wq: HostTensor,
    pub bq: Option<HostTensor>,
    pub wk: HostTensor,
    pub bk: Option<HostTensor>,
    pub wv: HostTensor,
    pub bv: Option<HostTensor>,
    pub wo: HostTensor,
    /// `b_O + Σ_removed W_O,h·a_h` (f64 while summing); for no kept heads, the block's constant.
    pub bias: Option<Vec<f64>>,
}

pub(super) struct MlpPart {
    pub neurons: Vec<usize>,
    pub w_gate: Option<HostTensor>,
    pub w_up: HostTensor,
    pub b_up: Option<HostTensor>,
    pub w_down: HostTensor,
    pub bias: Option<Vec<f64>>,
}

/// A site's ablation value for layer `l`, which must be position-independent (one row); None is 0.
fn value<'a>(v: Option<&'a AblationValues>, site: &'static str, l: usize) -> Result<Option<&'a [f32]>> {
    let Some(v) = v else { return Ok(None) };
    let t = match site {
        "z" => &v.z,
        "hidden" => &v.hidden,
        "attn_out" => &v.attn_out,
        _ => &v.mlp_out,
    };
    match t.get(l).and_then(Option::as_ref) {
        None => Ok(None),
        Some(t) if t.rows_cols().0 == 1 => Ok(Some(&t.data)),
        Some(t) => Err(Error::Input(format!(
            "layer {l}: the {site} ablation values have {} rows (per position or per prompt); only \
             position-independent values (zero or a plain mean) fold into a model that runs at any length",
            t.rows_cols().0
        ))),
    }
}

/// `bias += W[:, cols]·a[cols]` over the given columns, in f64.
fn fold_cols(bias: &mut [f64], w: &HostTensor, cols: impl Iterator<Item = usize> + Clone, a: &[f32]) {
    let k = w.shape[1];
    for (r, b) in bias.iter_mut().enumerate() {
        let row = &w.data[r * k..(r + 1) * k];
        *b += cols.clone().map(|c| row[c] as f64 * a[c] as f64).sum::<f64>();
    }
}

fn to_f64(b: Option<&HostTensor>, n: usize) -> Vec<f64> {
    b.map_or(vec![0.0; n], |b| b.data.iter().map(|&x| x as f64).collect())
}

/// Rows `idx` of `[rows, c]` (also works on a vector).
pub(super) fn take_rows(t: &HostTensor, idx: &[usize]) -> HostTensor {
    let c: usize = t.shape[1..].iter().product();
    let data = idx.iter().flat_map(|&r| t.data[r * c..(r + 1) * c].iter().copied()).collect();
    let mut shape = t.shape.clone();
    shape[0] = idx.len();
    HostTensor::new(shape, data)
}

/// Columns `idx` of `[r, c]`.
fn take_cols(t: &HostTensor, idx: &[usize]) -> HostTensor {
    let c = t.shape[1];
    let data = (0..t.shape[0]).flat_map(|r| idx.iter().map(move |&j| t.data[r * c + j])).collect();
    HostTensor::new(vec![t.shape[0], idx.len()], data)
}

/// Column indices of whole heads: `h·hd .. (h+1)·hd` for each h.
fn head_cols(heads: &[usize], hd: usize) -> Vec<usize> {
    heads.iter().flat_map(|&h| h * hd..(h + 1) * hd).collect()
}

pub(super) fn attention(lw: &LayerWeights<HostTensor>, m: &Masks, v: Option<&AblationValues>, l: usize, hd: usize, d: usize)
    -> Result<AttnPart> {
    let block_off = m.attn_block(l) == 0.0;
    let keep: Vec<usize> = if block_off { vec![] } else { (0..lw.n_heads).filter(|&h| m.heads[l][h] == 1.0).collect() };
    let mut bias = if block_off {
        value(v, "attn_out", l)?.map(|a| a.iter().map(|&x| x as f64).collect())
    } else {
        let removed: Vec<usize> = (0..lw.n_heads).filter(|h| !keep.contains(h)).collect();
        let mut b = lw.bo.as_ref().map(|b| to_f64(Some(b), d));
        // Values are looked up only where something was removed: there they must fold.
        if let Some(a) = if removed.is_empty() { None } else { value(v, "z", l)? } {
            let b = b.get_or_insert_with(|| vec![0.0; d]);
            fold_cols(b, &lw.wo, head_cols(&removed, hd).into_iter(), a);
        }
        b
    };
    if bias.as_ref().is_some_and(|b| b.iter().all(|&x| x == 0.0)) && lw.bo.is_none() {
        bias = None; // a zero-ablated Llama layer gains no bias
    }
    let kv_heads = regroup(&keep, lw.n_heads, lw.n_kv_heads)?;
    let rows = |w: &HostTensor, heads: &[usize]| take_rows(w, &head_cols(heads, hd));
    let opt_rows = |b: &Option<HostTensor>, heads: &[usize]| b.as_ref().map(|b| rows(b, heads));
    Ok(AttnPart {
        wq: rows(&lw.wq, &keep),
        bq: opt_rows(&lw.bq, &keep),
        wk: rows(&lw.wk, &kv_heads),
        bk: opt_rows(&lw.bk, &kv_heads),
        wv: rows(&lw.wv, &kv_heads),
        bv: opt_rows(&lw.bv, &kv_heads),
        wo: take_cols(&lw.wo, &head_cols(&keep, hd)),
        heads: keep,
        kv_heads,
        bias,
    })
}

pub(super) fn mlp(lw: &LayerWeights<HostTensor>, m: &Masks, v: Option<&AblationValues>, l: usize, d: usize) -> Result<MlpPart> {
    let d_ff = lw.w_up.shape[0];
    let block_off = m.mlp_block(l) == 0.0;
    let keep: Vec<usize> = if block_off { vec![] } else { (0..d_ff).filter(|&n| m.neurons[l][n] == 1.0).collect() };
    let mut bias = if block_off {
        value(v, "mlp_out", l)?.map(|a| a.iter().map(|&x| x as f64).collect())
    } else {
        let mut b = lw.b_down.as_ref().map(|b| to_f64(Some(b), d));
        let removed: Vec<usize> = (0..d_ff).filter(|n| !keep.contains(n)).collect();
        if let Some(a) = if removed.is_empty() { None } else { value(v, "hidden", l)? } {
            let b = b.get_or_insert_with(|| vec![0.0; d]);
            fold_cols(b, &lw.w_down, removed.into_iter(), a);
        }
        b
    };
    if bias.as_ref().is_some_and(|b| b.iter().all(|&x| x == 0.0)) && lw.b_down.is_none() {
        bias = None;
    }
    Ok(MlpPart {
        w_gate: lw.w_gate.as_ref().map(|w| take_rows(w, &keep)),
        w_up: take_rows(&lw.w_up, &keep),
        b_up: lw.b_up.as_ref().map(|b| take_rows(b, &keep)),
        w_down: take_cols(&lw.w_down, &keep),
        neurons: keep,
        bias,
    })
}
