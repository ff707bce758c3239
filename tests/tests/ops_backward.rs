//! Every backward op against central finite differences of a plain f64 reference forward written
//! here. For a random upstream gradient `dy` and the scalar `L = Σ dy·forward(x)`, the analytic f64
//! gradient of L is first checked against `(L(x + ε·e_i) − L(x − ε·e_i)) / 2ε` (ε = 1e-5) at up to
//! `FD_COORDS` coordinates of each input (all of them when there are fewer), to within
//! `FD_TOL · max(1, max|grad|)`; then the op's output is compared to that analytic gradient on every
//! element. Inputs are fresh each run (the seed is printed; set CARVE_SEED to replay one), outputs
//! are poisoned (NaN) so an element an op forgets to write fails, and each check runs on wgpu
//! (software Vulkan in CI) and on the CPU backend. Tolerances are stated per op as
//! max |got − ref| ≤ tol · max(1, max|ref|).


use carve_core::backend::cpu::CpuBackend;
use carve_core::backend::wgpu::WgpuOptions;
use carve_core::backend::{AttnShape, Backend, RowMap};
use carve_core::{Error, HostTensor};
use carve_tests::op_check::*;
use rand::rngs::StdRng;
use rand::Rng;

// ---------------------------------------------------------------- finite differences

const EPS: f64 = 1e-5;
const FD_TOL: f64 = 1e-6;
const FD_COORDS: usize = 200;

/// Up to `FD_COORDS` distinct coordinates among those `keep` allows (all of them when fewer).
fn coords(r: &mut StdRng, n: usize, keep: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).filter(|&i| keep(i)).collect();
    while all.len() > FD_COORDS {
        let i = r.random_range(0..all.len());
        all.swap_remove(i);
    }
    all
}

/// Checks the analytic `grad` of `loss` at `x` against central differences at `at`.
fn fd_check(what: &str, x: &[f64], grad: &[f64], at: &[usize], loss: impl Fn(&[f64]) -> f64) {
    assert_eq!(x.len(), grad.len(), "{what}: gradient length");
    assert!(!at.is_empty() || x.is_empty(), "{what}: no coordinates to check");
    let scale = grad.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let mut xp = x.to_vec();
    for &i in at {
        xp[i] = x[i] + EPS;
        let lp = loss(&xp);
        xp[i] = x[i] - EPS;
        let lm = loss(&xp);
        xp[i] = x[i];
        let fd = (lp - lm) / (2.0 * EPS);
        assert!(
            (fd - grad[i]).abs() <= FD_TOL * scale,
            "{what}: finite difference {fd} vs analytic {} at {i} (scale {scale})",
            grad[i]
        );
    }
}

/// `fd_check` at sampled coordinates of all of `x`.
fn fd_all(what: &str, r: &mut StdRng, x: &[f64], grad: &[f64], loss: impl Fn(&[f64]) -> f64) {
    let at = coords(r, x.len(), |_| true);
    fd_check(what, x, grad, &at, loss);
}

// ---------------------------------------------------------------- f64 reference forwards

fn r_matmul(x: &[f64], w: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut o = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            o[i * n + j] = dot(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
        }
    }
    o
}

/// LayerNorm (with bias) or RMSNorm (without), row-wise.
fn r_norm(x: &[f64], w: &[f64], b: Option<&[f64]>, cols: usize, eps: f64) -> Vec<f64> {
    let mut o = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let n = cols as f64;
        let (mean, ms) = match b {
            Some(_) => {
                let mean = row.iter().sum::<f64>() / n;
                (mean, row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n)
            }
            None => (0.0, row.iter().map(|v| v * v).sum::<f64>() / n),
        };
        let inv = 1.0 / (ms + eps).sqrt();
        o.extend(row.iter().enumerate().map(|(c, v)| (v - mean) * inv * w[c] + b.map_or(0.0, |b| b[c])));
    }
    o
}

const GELU_C: f64 = 0.797_884_560_802_865_4; // sqrt(2/π)

fn r_gelu(v: f64) -> f64 {
    0.5 * v * (1.0 + (GELU_C * (v + 0.044715 * v.powi(3))).tanh())
}

fn r_silu(g: f64) -> f64 {
    g / (1.0 + (-g).exp())
}

/// Rope, each pair turned by `sign ·` its angle.
fn r_rope(x: &[f64], seq: usize, heads: usize, hd: usize, theta: f64, sign: f64) -> Vec<f64> {
    let mut o = x.to_vec();
    let half = hd / 2;
    for (r, row) in o.chunks_mut(heads * hd).enumerate() {
        let pos = (r % seq) as f64;
        for h in 0..heads {
            for i in 0..half {
                let a = sign * pos * theta.powf(-2.0 * i as f64 / hd as f64);
                let (x1, x2) = (x[r * heads * hd + h * hd + i], x[r * heads * hd + h * hd + i + half]);
                row[h * hd + i] = x1 * a.cos() - x2 * a.sin();
                row[h * hd + i + half] = x2 * a.cos() + x1 * a.sin();
            }
        }
    }
    o
}

/// Index of element `e` of head `h` at row `b·T + i` of a `[B·T, heads·D]` tensor.
fn at(s: &AttnShape, heads: usize, b: usize, i: usize, h: usize, e: usize) -> usize {
    ((b * s.seq + i) * heads + h) * s.head_dim + e
}

/// Row `(b·H + h)·T + i` of the `[B·H·T, T]` probabilities, as a start index.
fn prow(s: &AttnShape, b: usize, h: usize, i: usize) -> usize {
    ((b * s.n_heads + h) * s.seq + i) * s.seq
}

fn r_scores(q: &[f64], k: &[f64], s: &AttnShape) -> Vec<f64> {
    let (t, g) = (s.seq, s.n_heads / s.n_kv_heads);
    let mut o = vec![0.0; s.batch * s.n_heads * t * t];
    for b in 0..s.batch {
        for h in 0..s.n_heads {
            for i in 0..t {
                let sc: Vec<f64> = (0..=i)
                    .map(|j| {
                        (0..s.head_dim).map(|e| q[at(s, s.n_heads, b, i, h, e)] * k[at(s, s.n_kv_heads, b, j, h / g, e)]).sum::<f64>()
                            * s.scale as f64
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = sc.iter().map(|v| (v - mx).exp()).sum();
                for (j, v) in sc.iter().enumerate() {
                    o[prow(s, b, h, i) + j] = (v - mx).exp() / z;
                }
            }
        }
    }
    o
}

/// `attn_apply` over every column of `p` (the upper triangle too, so finite differences there see
/// what a nonzero probability would do; the op's contract sets those gradients to 0).
fn r_apply(p: &[f64], v: &[f64], s: &AttnShape) -> Vec<f64> {
    let (t, g) = (s.seq, s.n_heads / s.n_kv_heads);
    let mut o = vec![0.0; s.batch * t * s.n_heads * s.head_dim];
    for b in 0..s.batch {
        for h in 0..s.n_heads {
            for i in 0..t {
                for e in 0..s.head_dim {
                    o[at(s, s.n_heads, b, i, h, e)] =
                        (0..t).map(|j| p[prow(s, b, h, i) + j] * v[at(s, s.n_kv_heads, b, j, h / g, e)]).sum();
                }
            }
        }
    }
    o
}

#[allow(clippy::too_many_arguments)]
fn r_mix(x: &[f64], mask: &[f64], md: usize, mr: usize, abl: &[f64], ad: usize, ar: usize, c: usize) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let (row, col) = (i / c, i % c);
            let m = mask[((row / md) % mr) * c + col];
            m * x[i] + (1.0 - m) * abl[((row / ad) % ar) * c + col]
        })
        .collect()
}

fn r_gather(table: &[f64], ids: &[u32], c: usize) -> Vec<f64> {
    ids.iter().flat_map(|&i| table[i as usize * c..(i as usize + 1) * c].to_vec()).collect()
}

// ---------------------------------------------------------------- checks, generic over backends

/// dx = dy·w. Tolerance 1e-5 (f32 sums over N ≤ 300).
fn t_matmul_backward<B: Backend>(b: &B, r: &mut StdRng) {
    for (m, k, n) in [(37, 53, 29), (1, 17, 300), (67, 70, 3), (5, 1, 65), (3, 130, 1)] {
        let (x, w, dy) = (rand_t(r, &[m, k], 1.0), rand_t(r, &[n, k], 1.0), rand_t(r, &[m, n], 1.0));
        let (xd, wd, dyd) = (d(&x), d(&w), d(&dy));
        let want = r_matmul(&dyd, &transpose(&wd, n, k), m, n, k);
        fd_all(&format!("matmul {m}x{k}x{n} dx"), r, &xd, &want, |x| dot(&dyd, &r_matmul(x, &wd, m, k, n)));
        let got = get(b, &b.matmul_backward(&up(b, &dy), &up(b, &w)).unwrap());
        close(&format!("matmul_backward {m}x{k}x{n}"), &got, &[m, k], &want, 1e-5);
        // A weight (the CPU keeps its transpose for the forward) gives the same gradient.
        let got = get(b, &b.matmul_backward(&up(b, &dy), &b.upload_weight(&w).unwrap()).unwrap());
        close(&format!("matmul_backward {m}x{k}x{n} (weight)"), &got, &[m, k], &want, 1e-5);
    }
    // A leading batch dimension is kept: dy [2, 3, N] → dx [2, 3, K].
    let (w, dy) = (rand_t(r, &[29, 11], 1.0), rand_t(r, &[2, 3, 29], 1.0));
    let got = get(b, &b.matmul_backward(&up(b, &dy), &up(b, &w)).unwrap());
    close("matmul_backward [2, 3, N]", &got, &[2, 3, 11], &r_matmul(&d(&dy), &transpose(&d(&w), 29, 11), 6, 29, 11), 1e-5);
}

fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..rows * cols).map(|i| a[(i % rows) * cols + i / rows]).collect()
}

/// The analytic norm gradients (the ops' documented formulas, in f64).
fn r_norm_backward(x: &[f64], w: &[f64], dy: &[f64], cols: usize, eps: f64, rms: bool) -> Vec<f64> {
    let n = cols as f64;
    let mut o = Vec::with_capacity(x.len());
    for (xr, dr) in x.chunks(cols).zip(dy.chunks(cols)) {
        let g: Vec<f64> = dr.iter().zip(w).map(|(a, b)| a * b).collect();
        if rms {
            let r = 1.0 / (xr.iter().map(|v| v * v).sum::<f64>() / n + eps).sqrt();
            let mgx = dot(&g, xr) / n;
            o.extend((0..cols).map(|j| r * g[j] - xr[j] * r.powi(3) * mgx));
        } else {
            let mean = xr.iter().sum::<f64>() / n;
            let r = 1.0 / (xr.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n + eps).sqrt();
            let xh: Vec<f64> = xr.iter().map(|v| (v - mean) * r).collect();
            let (mg, mgx) = (g.iter().sum::<f64>() / n, dot(&g, &xh) / n);
            o.extend((0..cols).map(|j| r * (g[j] - mg - xh[j] * mgx)));
        }
    }
    o
}

/// A `[rows, cols]` tensor in ±scale whose rows have standard deviation at least `scale / 2`
/// (resampled until they do): the norms' gradients lose about (max|x| / σ)² f32 ulps, so a nearly
/// constant row is ill-conditioned in any f32 implementation, and 70000 random rows of 3 hold some.
fn spread_rows(r: &mut StdRng, rows: usize, cols: usize, scale: f32) -> HostTensor {
    let mut data = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        loop {
            let row: Vec<f32> = (0..cols).map(|_| r.random_range(-scale..scale)).collect();
            let mean = row.iter().sum::<f32>() / cols as f32;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / cols as f32;
            if var.sqrt() >= scale / 2.0 {
                data.extend(row);
                break;
            }
        }
    }
    HostTensor::new(vec![rows, cols], data)
}

/// Tolerance 5e-5: f32 row sums, as the forwards.
fn t_norms_backward<B: Backend>(b: &B, r: &mut StdRng) {
    // 70000 rows of 3: more row-workgroups than one grid dimension holds (compared to the analytic
    // gradient only; the smaller cases check that against finite differences).
    for (rows, cols, fd) in [(7, 53, true), (3, 3, true), (37, 130, true), (1, 1000, true), (70000, 3, false)] {
        let (x, w, bias, dy) = (spread_rows(r, rows, cols, 3.0), rand_t(r, &[cols], 1.0), rand_t(r, &[cols], 1.0), rand_t(r, &[rows, cols], 1.0));
        let (xd, wd, bd, dyd) = (d(&x), d(&w), d(&bias), d(&dy));
        for (rms, eps) in [(false, 1e-5f32), (true, 1e-6)] {
            let name = if rms { "rms_norm_backward" } else { "layer_norm_backward" };
            let want = r_norm_backward(&xd, &wd, &dyd, cols, eps as f64, rms);
            if fd {
                let bias = (!rms).then_some(bd.as_slice());
                fd_all(&format!("{name} {rows}x{cols}"), r, &xd, &want, |x| dot(&dyd, &r_norm(x, &wd, bias, cols, eps as f64)));
            }
            let (xt, wt, dyt) = (up(b, &x), up(b, &w), up(b, &dy));
            let got = if rms { b.rms_norm_backward(&xt, &wt, &dyt, eps) } else { b.layer_norm_backward(&xt, &wt, &dyt, eps) };
            close(&format!("{name} {rows}x{cols}"), &get(b, &got.unwrap()), &[rows, cols], &want, 5e-5);
        }
    }
}

/// gelu_new and silu_mul, tails included (they must not NaN). Tolerance 1e-5.
fn t_activations_backward<B: Backend>(b: &B, r: &mut StdRng) {
    let (rows, cols) = (37, 29);
    let mut x = rand_t(r, &[rows, cols], 8.0);
    x.data[..7].copy_from_slice(&[-100.0, -20.0, 0.0, 20.0, 100.0, 1e-3, -1e-3]);
    let dy = rand_t(r, &[rows, cols], 1.0);
    let (xd, dyd) = (d(&x), d(&dy));
    let gelu_grad = |v: f64| {
        let t = (GELU_C * (v + 0.044715 * v.powi(3))).tanh();
        0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * 0.044715 * v * v)
    };
    let want: Vec<f64> = xd.iter().zip(&dyd).map(|(&v, g)| g * gelu_grad(v)).collect();
    fd_all("gelu_new dx", r, &xd, &want, |x| x.iter().zip(&dyd).map(|(&v, g)| g * r_gelu(v)).sum());
    let got = get(b, &b.gelu_new_backward(&up(b, &x), &up(b, &dy)).unwrap());
    close("gelu_new_backward", &got, &[rows, cols], &want, 1e-5);

    let u = rand_t(r, &[rows, cols], 2.0);
    let ud = d(&u);
    let sig = |g: f64| 1.0 / (1.0 + (-g).exp());
    let want_g: Vec<f64> = (0..xd.len()).map(|i| dyd[i] * ud[i] * sig(xd[i]) * (1.0 + xd[i] * (1.0 - sig(xd[i])))).collect();
    let want_u: Vec<f64> = (0..xd.len()).map(|i| dyd[i] * r_silu(xd[i])).collect();
    let loss = |g: &[f64], u: &[f64]| -> f64 { (0..g.len()).map(|i| dyd[i] * r_silu(g[i]) * u[i]).sum() };
    fd_all("silu_mul dgate", r, &xd, &want_g, |g| loss(g, &ud));
    fd_all("silu_mul dup", r, &ud, &want_u, |u| loss(&xd, u));
    let (dg, du) = b.silu_mul_backward(&up(b, &x), &up(b, &u), &up(b, &dy)).unwrap();
    close("silu_mul_backward dgate", &get(b, &dg), &[rows, cols], &want_g, 1e-5);
    close("silu_mul_backward dup", &get(b, &du), &[rows, cols], &want_u, 1e-5);
}

/// The inverse rotation, at several thetas. Tolerance 1e-5.
fn t_rope_backward<B: Backend>(b: &B, r: &mut StdRng) {
    for (batch, seq, heads, hd, theta) in
        [(2, 7, 3, 6, 10000.0), (1, 9, 2, 10, 500000.0), (3, 1, 1, 2, 100.0), (1, 5, 4, 16, 1.0), (2, 4, 1, 4, 10.0)]
    {
        let (x, dy) = (rand_t(r, &[batch * seq, heads * hd], 1.0), rand_t(r, &[batch * seq, heads * hd], 1.0));
        let (xd, dyd) = (d(&x), d(&dy));
        let want = r_rope(&dyd, seq, heads, hd, theta, -1.0);
        let what = format!("rope_backward seq {seq} heads {heads} head_dim {hd} theta {theta}");
        fd_all(&what, r, &xd, &want, |x| dot(&dyd, &r_rope(x, seq, heads, hd, theta, 1.0)));
        let got = get(b, &b.rope_backward(&up(b, &dy), seq, heads, hd, theta as f32).unwrap());
        close(&what, &got, &x.shape, &want, 1e-5);
    }
}

fn attn_shape(batch: usize, seq: usize, n_heads: usize, n_kv_heads: usize, head_dim: usize) -> AttnShape {
    AttnShape { batch, seq, n_heads, n_kv_heads, head_dim, scale: 1.0 / (head_dim as f32).sqrt() }
}

/// GQA with 6 query heads on 2, 3 and 6 kv heads (and 2 on 1), random lengths 1..9, odd and
/// even head sizes; one sequence of 70, longer than a 64-wide product tile.
fn attn_shapes(r: &mut StdRng) -> Vec<AttnShape> {
    let mut seq = || r.random_range(1..=9usize);
    vec![
        attn_shape(2, seq(), 6, 2, 6),
        attn_shape(1, seq(), 6, 3, 10),
        attn_shape(2, seq(), 6, 6, 4),
        attn_shape(1, 9, 6, 2, 2),
        attn_shape(3, 1, 2, 1, 8),
        attn_shape(1, 70, 2, 1, 4),
        // Heads wider than the CPU's 64-column sums, and more positions than a 16-column tile.
        attn_shape(1, 19, 4, 2, 72),
    ]
}

/// The analytic softmax-and-product gradient: (dq, dk).
fn r_scores_backward(q: &[f64], k: &[f64], p: &[f64], dp: &[f64], s: &AttnShape) -> (Vec<f64>, Vec<f64>) {
    let (t, g) = (s.seq, s.n_heads / s.n_kv_heads);
    let (mut dq, mut dk) = (vec![0.0; q.len()], vec![0.0; k.len()]);
    for b in 0..s.batch {
        for h in 0..s.n_heads {
            for i in 0..t {
                let row = prow(s, b, h, i);
                let pd: f64 = (0..=i).map(|j| p[row + j] * dp[row + j]).sum();
                for j in 0..=i {
                    let ds = p[row + j] * (dp[row + j] - pd) * s.scale as f64;
                    for e in 0..s.head_dim {
                        dq[at(s, s.n_heads, b, i, h, e)] += ds * k[at(s, s.n_kv_heads, b, j, h / g, e)];
                        dk[at(s, s.n_kv_heads, b, j, h / g, e)] += ds * q[at(s, s.n_heads, b, i, h, e)];
                    }
                }
            }
        }
    }
    (dq, dk)
}

/// Tolerance 1e-5 (f32 sums over at most 70 positions · 3 heads · 10 dims).
fn t_attn_scores_backward<B: Backend>(b: &B, r: &mut StdRng) {
    for s in attn_shapes(r) {
        let (bt, t) = (s.batch * s.seq, s.seq);
        let (qs, ks, ps) = ([bt, s.n_heads * s.head_dim], [bt, s.n_kv_heads * s.head_dim], [s.batch * s.n_heads * t, t]);
        let (q, k) = (rand_t(r, &qs, 2.0), rand_t(r, &ks, 2.0));
        // Every column of dprobs is random: the upper triangle must not matter (p is 0 there).
        let dp = rand_t(r, &ps, 1.0);
        let (qd, kd, dpd) = (d(&q), d(&k), d(&dp));
        let p = r_scores(&qd, &kd, &s);
        let (want_q, want_k) = r_scores_backward(&qd, &kd, &p, &dpd, &s);
        fd_all(&format!("attn_scores dq {s:?}"), r, &qd, &want_q, |q| dot(&dpd, &r_scores(q, &kd, &s)));
        fd_all(&format!("attn_scores dk {s:?}"), r, &kd, &want_k, |k| dot(&dpd, &r_scores(&qd, k, &s)));
        let (dq, dk) = b.attn_scores_backward(&up(b, &q), &up(b, &k), &up(b, &host(&ps, &p)), &up(b, &dp), s).unwrap();
        close(&format!("attn_scores_backward dq {s:?}"), &get(b, &dq), &qs, &want_q, 1e-5);
        close(&format!("attn_scores_backward dk {s:?}"), &get(b, &dk), &ks, &want_k, 1e-5);
    }
}

/// Tolerance 1e-5; the upper triangle of dprobs must be exactly 0.
fn t_attn_apply_backward<B: Backend>(b: &B, r: &mut StdRng) {
    for s in attn_shapes(r) {
        let (bt, t, g) = (s.batch * s.seq, s.seq, s.n_heads / s.n_kv_heads);
        let (os, vs, ps) = ([bt, s.n_heads * s.head_dim], [bt, s.n_kv_heads * s.head_dim], [s.batch * s.n_heads * t, t]);
        let p = r_scores(&d(&rand_t(r, &os, 2.0)), &d(&rand_t(r, &vs, 2.0)), &s);
        let (v, dout) = (rand_t(r, &vs, 1.0), rand_t(r, &os, 1.0));
        let (vd, dod) = (d(&v), d(&dout));
        let mut want_p = vec![0.0; p.len()];
        let mut want_v = vec![0.0; vd.len()];
        for bb in 0..s.batch {
            for h in 0..s.n_heads {
                for i in 0..t {
                    for j in 0..=i {
                        let row = prow(&s, bb, h, i);
                        for e in 0..s.head_dim {
                            let (o, vi) = (at(&s, s.n_heads, bb, i, h, e), at(&s, s.n_kv_heads, bb, j, h / g, e));
                            want_p[row + j] += dod[o] * vd[vi];
                            want_v[vi] += p[row + j] * dod[o];
                        }
                    }
                }
            }
        }
        // Finite differences of p on the causal part only: above the diagonal the gradient is 0 by
        // definition (those probabilities are structurally zero).
        let lower = coords(r, p.len(), |i| i % t <= (i / t) % t);
        fd_check(&format!("attn_apply dprobs {s:?}"), &p, &want_p, &lower, |p| dot(&dod, &r_apply(p, &vd, &s)));
        fd_all(&format!("attn_apply dv {s:?}"), r, &vd, &want_v, |v| dot(&dod, &r_apply(&p, v, &s)));
        let (dp, dv) = b.attn_apply_backward(&up(b, &host(&ps, &p)), &up(b, &v), &up(b, &dout), s).unwrap();
        let dp = get(b, &dp);
        close(&format!("attn_apply_backward dprobs {s:?}"), &dp, &ps, &want_p, 1e-5);
        for (row, vals) in dp.data.chunks(t).enumerate() {
            assert!(vals[row % t + 1..].iter().all(|&v| v == 0.0), "attn_apply_backward: dprobs row {row} not exactly 0 above the diagonal");
        }
        close(&format!("attn_apply_backward dv {s:?}"), &get(b, &dv), &vs, &want_v, 1e-5);
    }
}

/// Mask and ablation rows shared, per position, per group of rows, per prompt, per row, and
/// wrapping. dx tolerance 1e-6; dmask 1e-5 (sums over up to 150 rows).
fn t_mix_backward<B: Backend>(b: &B, r: &mut StdRng) {
    // 70 columns: more than one block of the CPU's mask gradient (32 columns), and a ragged one.
    for (c, batch, seq) in [(29, 2usize, 7usize), (29, 3, 50), (70, 3, 50)] {
        let rows = batch * seq;
        // (mask rows, mask div, abl rows, abl div)
        let cases = [
            (1, 1, 1, 1),
            (seq, 1, 1, 1),
            (1, 1, seq, 1),
            (rows.div_ceil(2), 2, batch, seq),
            (batch, seq, seq, 1),
            (rows, 1, rows, 1),
            (5, 1, 3, 4),
        ];
        for (mr, md, ar, ad) in cases {
            let x = rand_t(r, &[rows, c], 1.0);
            let mask = rand_t(r, &[mr, c], 1.0);
            let abl = rand_t(r, &[ar, c], 1.0);
            let dy = rand_t(r, &[rows, c], 1.0);
            let (xd, mkd, abd, dyd) = (d(&x), d(&mask), d(&abl), d(&dy));
            let mut want_x = vec![0.0; xd.len()];
            let mut want_m = vec![0.0; mkd.len()];
            for i in 0..xd.len() {
                let (row, col) = (i / c, i % c);
                let (mi, ai) = (((row / md) % mr) * c + col, ((row / ad) % ar) * c + col);
                want_x[i] = mkd[mi] * dyd[i];
                want_m[mi] += dyd[i] * (xd[i] - abd[ai]);
            }
            let what = format!("mix_backward {rows} rows, mask rows {mr} div {md}, abl rows {ar} div {ad}");
            let what = format!("{what}, {c} columns");
            if c < 32 {
                fd_all(&format!("{what} dx"), r, &xd, &want_x, |x| dot(&dyd, &r_mix(x, &mkd, md, mr, &abd, ad, ar, c)));
                fd_all(&format!("{what} dmask"), r, &mkd, &want_m, |m| dot(&dyd, &r_mix(&xd, m, md, mr, &abd, ad, ar, c)));
            }
            let (dx, dm) = b
                .mix_backward(&up(b, &x), &up(b, &mask), RowMap { div: md }, &up(b, &abl), RowMap { div: ad }, &up(b, &dy))
                .unwrap();
            close(&format!("{what} dx"), &get(b, &dx), &[rows, c], &want_x, 1e-6);
            close(&format!("{what} dmask"), &get(b, &dm), &[mr, c], &want_m, 1e-5);
        }
    }
}

/// gather_rows' gradient, with repeated ids and rows that no id names (exactly 0). Tolerance 1e-6.
fn t_scatter_rows<B: Backend>(b: &B, r: &mut StdRng) {
    let (rows, c) = (23, 29);
    let ids: Vec<u32> = (0..40).map(|_| r.random_range(0..rows as u32)).chain([0, 22, 22, 5, 5, 5]).collect();
    let table = rand_t(r, &[rows, c], 1.0);
    let src = rand_t(r, &[ids.len(), c], 1.0);
    let sd = d(&src);
    let mut want = vec![0.0; rows * c];
    for (i, &id) in ids.iter().enumerate() {
        for j in 0..c {
            want[id as usize * c + j] += sd[i * c + j];
        }
    }
    fd_all("scatter_rows", r, &d(&table), &want, |t| dot(&sd, &r_gather(t, &ids, c)));
    let got = get(b, &b.scatter_rows(&up(b, &src), &ids, rows).unwrap());
    close("scatter_rows", &got, &[rows, c], &want, 1e-6);
    for row in (0..rows).filter(|row| !ids.contains(&(*row as u32))) {
        assert!(got.data[row * c..(row + 1) * c].iter().all(|&v| v == 0.0), "scatter_rows: row {row} has no id but is not 0");
    }
    let none = get(b, &b.scatter_rows(&up(b, &HostTensor::zeros(vec![0, c])), &[], rows).unwrap());
    assert_eq!(none.shape, [rows, c], "scatter of no rows: shape");
    assert!(none.data.iter().all(|&v| v == 0.0), "scatter of no rows is not all 0");
}

/// The training loss at the last-position logits, per row: KL(P ‖ Q) with P = softmax(f),
/// Q = softmax(x), plus the hinge relu(margin − (x_a − x_w)) where a pair is given.
fn r_kl_hinge(x: &[f64], f: &[f64], pairs: &[Option<(u32, u32)>], margin: f64, v: usize) -> Vec<[f64; 4]> {
    let lse = |r: &[f64]| {
        let m = r.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        m + r.iter().map(|&v| (v - m).exp()).sum::<f64>().ln()
    };
    pairs
        .iter()
        .enumerate()
        .map(|(r, p)| {
            let (xr, fr) = (&x[r * v..(r + 1) * v], &f[r * v..(r + 1) * v]);
            let (lx, lf) = (lse(xr), lse(fr));
            let kl: f64 = (0..v).map(|j| (fr[j] - lf).exp() * ((fr[j] - lf) - (xr[j] - lx))).sum();
            let h = p.map_or(0.0, |(a, w)| (margin - (xr[a as usize] - xr[w as usize])).max(0.0));
            [kl.max(0.0), h, lx, lf]
        })
        .collect()
}

/// kl_hinge: the terms per row and the logit gradient of weight/B·Σ (KL + hinge), against the f64
/// reference and its finite differences, with rows whose hinge is active, inactive, absent, and
/// a pair whose answer is its wrong token; a short and a vocabulary-long row. Tolerance 2e-5.
fn t_kl_hinge<B: Backend>(b: &B, r: &mut StdRng) {
    for (rows, v) in [(6, 37), (3, 3001)] {
        let (x, f) = (rand_t(r, &[rows, v], 3.0), rand_t(r, &[rows, v], 3.0));
        let (mut xd, fd) = (d(&x), d(&f));
        let margin = 1.5;
        let mut pairs = Vec::new();
        for row in 0..rows {
            // Two distinct tokens, so the first two rows of four always have their pair.
            let a = r.random_range(0..v as u32);
            let w = (a + r.random_range(1..v as u32)) % v as u32;
            // Hinge active (diff 0.5), inactive (diff 2.5), no pair, then a pair of one token.
            let pair = match row % 4 {
                0 | 1 => {
                    xd[row * v + a as usize] = xd[row * v + w as usize] + if row % 4 == 0 { 0.5 } else { 2.5 };
                    Some((a, w))
                }
                3 => Some((a, a)),
                _ => None,
            };
            pairs.push(pair);
        }
        let x = host(&[rows, v], &xd);
        let xd = d(&x);
        let weight = 0.75;
        let loss = |xs: &[f64]| {
            r_kl_hinge(xs, &fd, &pairs, margin, v).iter().map(|t| t[0] + t[1]).sum::<f64>() * weight / rows as f64
        };
        let want_terms: Vec<f64> = r_kl_hinge(&xd, &fd, &pairs, margin, v).into_iter().flatten().collect();
        let mut grad = vec![0.0; rows * v];
        for row in 0..rows {
            let t = &want_terms[4 * row..4 * row + 4];
            for j in 0..v {
                let (q, p) = ((xd[row * v + j] - t[2]).exp(), (fd[row * v + j] - t[3]).exp());
                grad[row * v + j] = weight / rows as f64 * (q - p);
            }
            if let (Some((a, w)), true) = (pairs[row], t[1] > 0.0) {
                grad[row * v + a as usize] -= weight / rows as f64;
                grad[row * v + w as usize] += weight / rows as f64;
            }
        }
        fd_all("kl_hinge", r, &xd, &grad, loss);
        let (dl, terms) = b.kl_hinge(&up(b, &x), &up(b, &f), &pairs, margin as f32, weight as f32).unwrap();
        close("kl_hinge dlogits", &get(b, &dl), &[rows, v], &grad, 2e-5);
        close("kl_hinge terms", &get(b, &terms), &[rows, 4], &want_terms, 2e-5);
        assert!(want_terms[1] > 0.0 && want_terms[5] == 0.0, "the first row's hinge is active, the second's not");
    }
    // Identical logits: KL 0 and a zero gradient without a hinge.
    let x = rand_t(r, &[2, 50], 4.0);
    let (dl, terms) = b.kl_hinge(&up(b, &x), &up(b, &x), &[None, None], 1.0, 1.0).unwrap();
    close("kl_hinge of identical logits", &get(b, &dl), &[2, 50], &[0.0; 100], 1e-6);
    let t = get(b, &terms);
    assert!(t.data[0].abs() < 1e-5 && t.data[4].abs() < 1e-5, "KL of identical rows: {:?}", t.data);
}

/// Bad shapes and ids: an `Error::Backend` whose message names the op (or the problem), never a panic.
fn t_errors_backward<B: Backend>(b: &B, _r: &mut StdRng) {
    let t = |s: &[usize]| up(b, &HostTensor::zeros(s.to_vec()));
    let s = attn_shape(2, 3, 6, 2, 4);
    let (q, kv, p) = (t(&[6, 24]), t(&[6, 8]), t(&[36, 3]));
    let pair = |res: carve_core::Result<(B::Tensor, B::Tensor)>| res.map(|_| ());
    let one = |res: carve_core::Result<B::Tensor>| res.map(|_| ());
    let cases: Vec<(&str, carve_core::Result<()>)> = vec![
        ("matmul_backward", one(b.matmul_backward(&t(&[3, 4]), &t(&[5, 6])))),
        ("matmul_backward", one(b.matmul_backward(&t(&[3, 4]), &t(&[4])))),
        ("matmul_backward", one(b.matmul_backward(&t(&[]), &t(&[1, 4])))),
        ("matmul", one(b.matmul(&t(&[]), &t(&[4, 1]), None))),
        ("layer_norm_backward", one(b.layer_norm_backward(&t(&[3, 4]), &t(&[5]), &t(&[3, 4]), 1e-5))),
        ("layer_norm_backward", one(b.layer_norm_backward(&t(&[3, 4]), &t(&[4]), &t(&[4, 3]), 1e-5))),
        ("rms_norm_backward", one(b.rms_norm_backward(&t(&[3, 4]), &t(&[4]), &t(&[3, 5]), 1e-5))),
        ("gelu_new_backward", one(b.gelu_new_backward(&t(&[3, 4]), &t(&[4, 3])))),
        ("silu_mul_backward", pair(b.silu_mul_backward(&t(&[3, 4]), &t(&[3, 5]), &t(&[3, 4])))),
        ("silu_mul_backward", pair(b.silu_mul_backward(&t(&[3, 4]), &t(&[3, 4]), &t(&[2, 4])))),
        ("rope", one(b.rope_backward(&t(&[4, 6]), 2, 2, 3, 1e4))),
        ("rope", one(b.rope_backward(&t(&[4, 6]), 2, 2, 4, 1e4))),
        ("attn_scores_backward", pair(b.attn_scores_backward(&t(&[6, 20]), &kv, &p, &p, s))),
        ("attn_scores_backward", pair(b.attn_scores_backward(&q, &t(&[6, 24]), &p, &p, s))),
        ("attn_scores_backward", pair(b.attn_scores_backward(&q, &kv, &p, &t(&[36, 4]), s))),
        ("heads", pair(b.attn_scores_backward(&q, &kv, &p, &p, AttnShape { n_kv_heads: 4, ..s }))),
        ("attn_apply_backward", pair(b.attn_apply_backward(&p, &t(&[6, 9]), &q, s))),
        ("attn_apply_backward", pair(b.attn_apply_backward(&p, &kv, &t(&[5, 24]), s))),
        ("attn_apply_backward", pair(b.attn_apply_backward(&t(&[30, 3]), &kv, &q, s))),
        ("heads", pair(b.attn_apply_backward(&p, &kv, &q, AttnShape { n_kv_heads: 4, ..s }))),
        ("mix_backward", pair(b.mix_backward(&t(&[3, 4]), &t(&[1, 5]), RowMap::SHARED, &t(&[1, 4]), RowMap::SHARED, &t(&[3, 4])))),
        ("mix_backward", pair(b.mix_backward(&t(&[3, 4]), &t(&[1, 4]), RowMap::SHARED, &t(&[1, 3]), RowMap::SHARED, &t(&[3, 4])))),
        ("mix_backward", pair(b.mix_backward(&t(&[3, 4]), &t(&[0, 4]), RowMap::SHARED, &t(&[1, 4]), RowMap::SHARED, &t(&[3, 4])))),
        ("mix_backward", pair(b.mix_backward(&t(&[3, 4]), &t(&[1, 4]), RowMap::SHARED, &t(&[1, 4]), RowMap::SHARED, &t(&[4, 3])))),
        ("scatter_rows", one(b.scatter_rows(&t(&[3, 4]), &[0, 1], 5))),
        ("scatter_rows", one(b.scatter_rows(&t(&[3, 4]), &[0, 1, 5], 5))),
        ("kl_hinge", pair(b.kl_hinge(&t(&[3, 4]), &t(&[3, 5]), &[None; 3], 1.0, 1.0))),
        ("kl_hinge", pair(b.kl_hinge(&t(&[3, 4]), &t(&[3, 4]), &[None; 2], 1.0, 1.0))),
        ("vocabulary", pair(b.kl_hinge(&t(&[1, 4]), &t(&[1, 4]), &[Some((1, 4))], 1.0, 1.0))),
        ("no columns", pair(b.kl_hinge(&t(&[2, 0]), &t(&[2, 0]), &[None; 2], 1.0, 1.0))),
        ("kl_hinge", pair(b.kl_hinge(&t(&[12]), &t(&[12]), &[None], 1.0, 1.0))),
    ];
    for (i, (want, res)) in cases.into_iter().enumerate() {
        match res {
            Err(Error::Backend(msg)) => assert!(msg.contains(want), "case {i}: message {msg:?} does not name {want:?}"),
            Err(e) => panic!("case {i} ({want}): wrong error kind {e:?}"),
            Ok(()) => panic!("case {i} ({want}): bad input accepted"),
        }
    }
}

/// Backward ops chained and read once: every dispatch goes into one pending encoder, and pooled
/// buffers are reused within it. dx of rms_norm → matmul → gelu → mix, against the f64 chain.
fn t_chain_backward<B: Backend>(b: &B, r: &mut StdRng) {
    let (m, k, n) = (11, 19, 23);
    let (x, w, nw, dy) = (rand_t(r, &[m, k], 2.0), rand_t(r, &[n, k], 0.5), rand_t(r, &[k], 1.0), rand_t(r, &[m, n], 1.0));
    let (h, mask, abl) = (rand_t(r, &[m, n], 2.0), rand_t(r, &[1, n], 1.0), rand_t(r, &[1, n], 1.0));
    let (mut g, mut want) = (up(b, &dy), d(&dy));
    // mix: dx = m·dy.
    g = b.mix_backward(&up(b, &h), &up(b, &mask), RowMap::SHARED, &up(b, &abl), RowMap::SHARED, &g).unwrap().0;
    want = want.iter().enumerate().map(|(i, v)| v * mask.data[i % n] as f64).collect();
    // gelu at h.
    g = b.gelu_new_backward(&up(b, &h), &g).unwrap();
    let hd = d(&h);
    want = want
        .iter()
        .zip(&hd)
        .map(|(gv, &v)| {
            let t = (GELU_C * (v + 0.044715 * v.powi(3))).tanh();
            gv * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * 0.044715 * v * v))
        })
        .collect();
    // matmul, then rms_norm at x.
    g = b.matmul_backward(&g, &up(b, &w)).unwrap();
    want = r_matmul(&want, &transpose(&d(&w), n, k), m, n, k);
    g = b.rms_norm_backward(&up(b, &x), &up(b, &nw), &g, 1e-6).unwrap();
    want = r_norm_backward(&d(&x), &d(&nw), &want, k, 1e-6, true);
    close("backward chain", &get(b, &g), &[m, k], &want, 5e-5);
}

/// Empty shapes: no panic, and outputs that are sums over nothing are written as zeros (over the
/// poison).
fn t_empty_backward<B: Backend>(b: &B, r: &mut StdRng) {
    let t = |s: &[usize]| up(b, &HostTensor::zeros(s.to_vec()));
    let zeros = |what: &str, got: HostTensor, shape: &[usize]| {
        assert_eq!(got.shape, shape, "{what}: shape");
        assert!(got.data.iter().all(|&v| v == 0.0), "{what}: not all 0: {:?}", got.data);
    };
    zeros("matmul_backward with N = 0", get(b, &b.matmul_backward(&t(&[2, 0]), &t(&[0, 3])).unwrap()), &[2, 3]);
    zeros("matmul_backward with M = 0", get(b, &b.matmul_backward(&t(&[0, 4]), &t(&[4, 3])).unwrap()), &[0, 3]);
    zeros("layer_norm_backward of no rows", get(b, &b.layer_norm_backward(&t(&[0, 4]), &t(&[4]), &t(&[0, 4]), 1e-5).unwrap()), &[0, 4]);
    let (dx, dm) = b.mix_backward(&t(&[0, 3]), &t(&[2, 3]), RowMap::SHARED, &t(&[1, 3]), RowMap::SHARED, &t(&[0, 3])).unwrap();
    zeros("mix_backward dx of no rows", get(b, &dx), &[0, 3]);
    zeros("mix_backward dmask of no rows", get(b, &dm), &[2, 3]);
    zeros("scatter_rows of empty rows", get(b, &b.scatter_rows(&t(&[3, 0]), &[0, 1, 4], 5).unwrap()), &[5, 0]);
    // A div past the row count picks row 0 for every row.
    let (x, mask, abl, dy) = (rand_t(r, &[4, 3], 1.0), rand_t(r, &[2, 3], 1.0), rand_t(r, &[2, 3], 1.0), rand_t(r, &[4, 3], 1.0));
    let huge = RowMap { div: usize::MAX };
    let (_, dm) = b.mix_backward(&up(b, &x), &up(b, &mask), huge, &up(b, &abl), huge, &up(b, &dy)).unwrap();
    let want: Vec<f64> = (0..6)
        .map(|i| if i < 3 { (0..4).map(|r| dy.data[r * 3 + i] as f64 * (x.data[r * 3 + i] - abl.data[i]) as f64).sum() } else { 0.0 })
        .collect();
    close("mix_backward dmask, div past the rows", &get(b, &dm), &[2, 3], &want, 1e-6);
}

carve_tests::on_backends!(
    t_matmul_backward,
    t_norms_backward,
    t_activations_backward,
    t_rope_backward,
    t_attn_scores_backward,
    t_attn_apply_backward,
    t_mix_backward,
    t_scatter_rows,
    t_kl_hinge,
    t_errors_backward,
    t_chain_backward,
    t_empty_backward,
);

// ---------------------------------------------------------------- wgpu only

/// A binding limit of 8 KiB splits `w` into row-chunks (as the embedding / LM head on adapters
/// that bind less than it): dx = dy·w must sum over every chunk, on both matmul kernels' sizes.
/// Other backward ops refuse a split tensor with a clear error. Tolerance 1e-5.
#[test]
fn wgpu_split_weights_backward() {
    let mut r = rng("wgpu_split_weights_backward");
    let small = new_wgpu(WgpuOptions { max_binding_bytes: Some(8192), ..WgpuOptions::default() });
    small.set_poison(true);
    for (m, k, n) in [(2, 20, 1000), (9, 20, 227), (20, 100, 100)] {
        let (w, dy) = (rand_t(&mut r, &[n, k], 1.0), rand_t(&mut r, &[m, n], 1.0));
        let sw = up(&small, &w);
        assert!(sw.chunk_count() > 1, "{sw:?} was not split");
        let got = get(&small, &small.matmul_backward(&up(&small, &dy), &sw).unwrap());
        close(&format!("split matmul_backward {m}x{k}x{n}"), &got, &[m, k], &r_matmul(&d(&dy), &transpose(&d(&w), n, k), m, n, k), 1e-5);
    }
    let big = up(&small, &rand_t(&mut r, &[1000, 20], 1.0));
    match small.rms_norm_backward(&big, &up(&small, &HostTensor::zeros(vec![20])), &big, 1e-6) {
        Err(Error::Backend(msg)) => assert!(msg.contains("rms_norm_backward") && msg.contains("8192"), "{msg}"),
        Err(e) => panic!("rms_norm_backward of a split tensor: wrong error {e:?}"),
        Ok(_) => panic!("rms_norm_backward of a split tensor accepted"),
    }
    // dy too big for one binding is refused, not split.
    match small.matmul_backward(&big, &up(&small, &rand_t(&mut r, &[20, 3], 1.0))) {
        Err(Error::Backend(msg)) => assert!(msg.contains("matmul_backward"), "{msg}"),
        Err(e) => panic!("matmul_backward with a split dy: wrong error {e:?}"),
        Ok(_) => panic!("matmul_backward with a split dy accepted"),
    }
}

/// `read_many` returns what reading each tensor alone returns, in order, with empty and split
/// tensors among them, on both backends.
#[test]
fn read_many_equals_reads_one_by_one() {
    let mut r = rng("read_many");
    let small = new_wgpu(WgpuOptions { max_binding_bytes: Some(8192), ..WgpuOptions::default() });
    let ts = [rand_t(&mut r, &[3, 5], 1.0), HostTensor::zeros(vec![0, 4]), rand_t(&mut r, &[1000, 20], 1.0), rand_t(&mut r, &[7, 2], 1.0)];
    fn check<B: Backend>(b: &B, ts: &[HostTensor]) {
        let dev: Vec<B::Tensor> = ts.iter().map(|t| up(b, t)).collect();
        let refs: Vec<&B::Tensor> = dev.iter().collect();
        let many = pollster::block_on(b.read_many(&refs)).unwrap();
        assert_eq!(many.len(), ts.len());
        for ((m, t), d) in many.iter().zip(ts).zip(&dev) {
            assert_eq!(m, t, "read_many differs from what was uploaded");
            assert_eq!(m, &get(b, d), "read_many differs from read");
        }
    }
    assert!(up(&small, &ts[2]).chunk_count() > 1, "the big tensor should be split");
    check(&small, &ts);
    check(gpu(), &ts);
    check(&CpuBackend::new(), &ts);
}
