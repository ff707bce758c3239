//! A plain f64 edge forward of one prompt, written from the definitions (no backend, no batching,
//! no stacking): each reader's input is Σ_w z·h_w + (1 − z)·a_w over the writers it reads, each
//! query head, key and value input normalised and projected on its own. The reference that the
//! edge gates' gradients are checked against by finite differences.

use carve_core::mask::{EdgeLayout, Reader};
use carve_core::model::{Arch, ModelConfig, ModelWeights};
use carve_core::HostTensor;

use crate::reference_model::{gelu_new, linear, mat, norm, rope, vecf, Mat};

/// Rows `[r0, r1)` of a matrix.
fn rows_of(m: &Mat, r0: usize, r1: usize) -> Mat {
    Mat { rows: r1 - r0, cols: m.cols, d: m.d[r0 * m.cols..r1 * m.cols].to_vec() }
}

/// Last-position logits of one prompt with gate `gates[i]` on edge i of `lay`, and per writer an
/// ablation row (None: zero).
#[allow(clippy::needless_range_loop)] // indices as the formulas write them
pub fn edge_last_logits(cfg: &ModelConfig, w: &ModelWeights<HostTensor>, lay: &EdgeLayout, ids: &[u32], gates: &[f64],
    values: Option<&[Vec<f64>]>) -> Vec<f64> {
    let t = ids.len();
    let hd = cfg.head_dim;
    let wte = mat(&w.wte);
    // h[w][pos]: every writer's output, in writer order.
    let mut h: Vec<Vec<Vec<f64>>> = vec![ids.iter().map(|&i| wte.d[i as usize * wte.cols..(i as usize + 1) * wte.cols].to_vec()).collect()];
    if let Some(wpe) = &w.wpe {
        let wpe = mat(wpe);
        h.push((0..t).map(|p| wpe.d[p * wpe.cols..(p + 1) * wpe.cols].to_vec()).collect());
    }
    let input = |h: &Vec<Vec<Vec<f64>>>, r: usize| -> Vec<Vec<f64>> {
        (0..t)
            .map(|p| {
                let mut x = vec![0.0; wte.cols];
                for (wi, hw) in h.iter().enumerate().take(lay.reads[r]) {
                    let z = gates[lay.first[r] + wi];
                    for (j, xv) in x.iter_mut().enumerate() {
                        *xv += z * hw[p][j] + (1.0 - z) * values.map_or(0.0, |v| v[wi][j]);
                    }
                }
                x
            })
            .collect()
    };
    let mut r = 0;
    for (l, lw) in w.layers.iter().enumerate() {
        let (nq, nkv) = (lw.n_heads, lw.n_kv_heads);
        if nq > 0 {
            let ln1 = mat(&lw.ln1_w).d;
            let b1 = vecf(&lw.ln1_b);
            let normed = |x: Vec<Vec<f64>>| -> Vec<Vec<f64>> { x.iter().map(|v| norm(cfg, v, &ln1, b1.as_ref())).collect() };
            let (wq, wk, wv, wo) = (mat(&lw.wq), mat(&lw.wk), mat(&lw.wv), mat(&lw.wo));
            let (bq, bk, bv) = (vecf(&lw.bq), vecf(&lw.bk), vecf(&lw.bv));
            let proj = |x: &[Vec<f64>], m: &Mat, b: &Option<Vec<f64>>, i: usize, roped: bool| -> Vec<Vec<f64>> {
                let b = b.as_ref().map(|b| b[i * hd..(i + 1) * hd].to_vec());
                let mut y = linear(x, &rows_of(m, i * hd, (i + 1) * hd), b.as_ref());
                if roped && cfg.arch == Arch::Llama {
                    for (p, v) in y.iter_mut().enumerate() {
                        rope(cfg, v, p, 1);
                    }
                }
                y
            };
            let ks: Vec<Vec<Vec<f64>>> = (0..nkv).map(|g| proj(&normed(input(&h, r + nq + g)), &wk, &bk, g, true)).collect();
            let vs: Vec<Vec<Vec<f64>>> = (0..nkv).map(|g| proj(&normed(input(&h, r + nq + nkv + g)), &wv, &bv, g, false)).collect();
            let bo = vecf(&lw.bo);
            let mut outs = Vec::with_capacity(nq);
            for hq in 0..nq {
                let q = proj(&normed(input(&h, r + hq)), &wq, &bq, hq, true);
                let g = hq / (nq / nkv.max(1)).max(1);
                let mut o = Vec::with_capacity(t);
                for i in 0..t {
                    let s: Vec<f64> =
                        (0..=i).map(|j| (0..hd).map(|e| q[i][e] * ks[g][j][e]).sum::<f64>() / (hd as f64).sqrt()).collect();
                    let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let ex: Vec<f64> = s.iter().map(|v| (v - mx).exp()).collect();
                    let sum: f64 = ex.iter().sum();
                    let z: Vec<f64> = (0..hd).map(|e| (0..=i).map(|j| ex[j] / sum * vs[g][j][e]).sum()).collect();
                    let row: Vec<f64> = (0..wo.rows)
                        .map(|n| {
                            (0..hd).map(|e| wo.d[n * wo.cols + hq * hd + e] * z[e]).sum::<f64>()
                                + bo.as_ref().map_or(0.0, |b| b[n] / nq as f64)
                        })
                        .collect();
                    o.push(row);
                }
                outs.push(o);
            }
            h.extend(outs);
            r += nq + 2 * nkv;
        }
        if lay.readers.get(r) == Some(&Reader::Mlp { layer: l }) {
            let ln2 = mat(&lw.ln2_w).d;
            let b2 = vecf(&lw.ln2_b);
            let h2: Vec<Vec<f64>> = input(&h, r).iter().map(|v| norm(cfg, v, &ln2, b2.as_ref())).collect();
            let up = linear(&h2, &mat(&lw.w_up), vecf(&lw.b_up).as_ref());
            let act: Vec<Vec<f64>> = match &lw.w_gate {
                Some(wg) => {
                    let gate = linear(&h2, &mat(wg), None);
                    gate.iter().zip(&up).map(|(g, u)| g.iter().zip(u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect()).collect()
                }
                None => up.iter().map(|row| row.iter().map(|&v| gelu_new(v)).collect()).collect(),
            };
            h.push(linear(&act, &mat(&lw.w_down), vecf(&lw.b_down).as_ref()));
            r += 1;
        }
    }
    assert_eq!(lay.readers[r], Reader::Logits);
    let x = input(&h, r);
    let hf = norm(cfg, &x[t - 1], &mat(&w.ln_f_w).d, vecf(&w.ln_f_b).as_ref());
    let un = mat(w.lm_head.as_ref().unwrap_or(&w.wte));
    (0..un.rows).map(|n| hf.iter().zip(&un.d[n * un.cols..(n + 1) * un.cols]).map(|(a, b)| a * b).sum()).collect()
}
