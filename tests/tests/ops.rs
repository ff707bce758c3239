//! Every backend op against a plain f64 reference written here, on fresh random inputs each run
//! (the seed is printed; set CARVE_SEED to replay one), with outputs poisoned (NaN) so an element
//! an op forgets to write fails. Each check runs on wgpu (software Vulkan in CI) and on the CPU
//! backend. Tolerances are stated per op as max |got − ref| ≤ tol · max(1, max|ref|) unless noted.

use std::time::Instant;

use carve_core::backend::wgpu::{list_adapters, WgpuBackend, WgpuOptions};
use carve_core::backend::{AttnShape, Backend, Gates, RowMap};
use carve_core::{Error, HostTensor};
use carve_tests::op_check::*;
use rand::rngs::StdRng;
use rand::Rng;

// ---------------------------------------------------------------- f64 references

fn r_matmul(x: &[f64], w: &[f64], b: Option<&[f64]>, m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut o = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum();
            o[i * n + j] = s + b.map_or(0.0, |b| b[j]);
        }
    }
    o
}

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

fn r_gelu(v: f64) -> f64 {
    0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
}

fn r_rope(x: &[f64], seq: usize, heads: usize, hd: usize, theta: f64) -> Vec<f64> {
    let mut o = x.to_vec();
    let half = hd / 2;
    for (r, row) in o.chunks_mut(heads * hd).enumerate() {
        let pos = (r % seq) as f64;
        for h in 0..heads {
            for i in 0..half {
                let a = pos * theta.powf(-2.0 * i as f64 / hd as f64);
                let (x1, x2) = (x[r * heads * hd + h * hd + i], x[r * heads * hd + h * hd + i + half]);
                row[h * hd + i] = x1 * a.cos() - x2 * a.sin();
                row[h * hd + i + half] = x2 * a.cos() + x1 * a.sin();
            }
        }
    }
    o
}

fn r_scores(q: &[f64], k: &[f64], s: &AttnShape) -> Vec<f64> {
    let (t, h, kvh, dd) = (s.seq, s.n_heads, s.n_kv_heads, s.head_dim);
    let mut o = vec![0.0; s.batch * h * t * t];
    for b in 0..s.batch {
        for hh in 0..h {
            let kh = hh / (h / kvh);
            for i in 0..t {
                let dot = |j: usize| -> f64 {
                    (0..dd).map(|e| q[(b * t + i) * h * dd + hh * dd + e] * k[(b * t + j) * kvh * dd + kh * dd + e]).sum::<f64>()
                        * s.scale as f64
                };
                let sc: Vec<f64> = (0..=i).map(dot).collect();
                let mx = sc.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = sc.iter().map(|v| (v - mx).exp()).sum();
                let row = ((b * h + hh) * t + i) * t;
                for (j, v) in sc.iter().enumerate() {
                    o[row + j] = (v - mx).exp() / z;
                }
            }
        }
    }
    o
}

fn r_apply(p: &[f64], v: &[f64], s: &AttnShape) -> Vec<f64> {
    let (t, h, kvh, dd) = (s.seq, s.n_heads, s.n_kv_heads, s.head_dim);
    let mut o = vec![0.0; s.batch * t * h * dd];
    for b in 0..s.batch {
        for hh in 0..h {
            let kh = hh / (h / kvh);
            for i in 0..t {
                for e in 0..dd {
                    o[(b * t + i) * h * dd + hh * dd + e] =
                        (0..t).map(|j| p[((b * h + hh) * t + i) * t + j] * v[(b * t + j) * kvh * dd + kh * dd + e]).sum();
                }
            }
        }
    }
    o
}

fn r_log_softmax(x: &[f64], cols: usize) -> Vec<f64> {
    x.chunks(cols)
        .flat_map(|row| {
            let mx = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = mx + row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            row.iter().map(move |v| v - lse)
        })
        .collect()
}

// ---------------------------------------------------------------- checks, generic over backends

/// `w` uploaded as a tensor, or as a weight (`upload_weight`: the CPU reads its transpose).
fn up_w<B: Backend>(b: &B, t: &HostTensor, weight: bool) -> B::Tensor {
    if weight { b.upload_weight(t).unwrap() } else { up(b, t) }
}

fn t_matmul<B: Backend>(b: &B, r: &mut StdRng) {
    for (m, k, n, bias) in [(37, 83, 129, true), (1, 83, 129, false), (5, 300, 70, true), (8, 100, 33, true), (64, 64, 64, false), (300, 577, 1000, true)] {
        for weight in [false, true] {
            let (x, w, bb) = (rand_t(r, &[m, k], 1.0), rand_t(r, &[n, k], 1.0), rand_t(r, &[n], 1.0));
            let t0 = Instant::now();
            let out = b.matmul(&up(b, &x), &up_w(b, &w, weight), bias.then(|| up(b, &bb)).as_ref()).unwrap();
            let got = get(b, &out);
            println!("  matmul {m}x{k}x{n} (weight: {weight}): {:?}", t0.elapsed());
            let want = r_matmul(&d(&x), &d(&w), bias.then(|| d(&bb)).as_deref(), m, k, n);
            close(&format!("matmul {m}x{k}x{n} (weight: {weight})"), &got, &[m, n], &want, 1e-5);
        }
    }
}

/// matmul_blocks against an f64 product per block: every layout of x, w and out, x read from a
/// later block on, w as [cols, k] (with a bias shared or per block) and as [k, cols], w uploaded
/// as a tensor and as a weight (the CPU reads its transpose), sizes that fill 128×128 tiles and
/// ragged ones; shapes that do not hold the blocks are refused.
fn t_matmul_blocks<B: Backend>(b: &B, r: &mut StdRng) {
    use carve_core::backend::{BlockProduct, Blocks};
    // Element (i, j) of block blk of a [rows, cols]-blocked operand laid out as `lay` in a tensor
    // of `n` blocks.
    let at = |lay: Blocks, n: usize, rows: usize, cols: usize, blk: usize, i: usize, j: usize| match lay {
        Blocks::Rows => (blk * rows + i) * cols + j,
        Blocks::Cols => i * n * cols + blk * cols + j,
    };
    let lays = [Blocks::Rows, Blocks::Cols];
    let mut cases = Vec::new();
    for &x in &lays {
        for &w in &lays {
            for &out in &lays {
                for w_kn in [false, true] {
                    cases.push((3, 37, 29, 19, x, w, out, w_kn, 1));
                }
            }
        }
    }
    cases.push((2, 300, 64, 200, Blocks::Rows, Blocks::Rows, Blocks::Cols, false, 0));
    cases.push((9, 150, 70, 64, Blocks::Cols, Blocks::Cols, Blocks::Rows, false, 0));
    cases.push((4, 260, 64, 96, Blocks::Rows, Blocks::Cols, Blocks::Cols, true, 2));
    cases.push((1, 5, 8, 3, Blocks::Rows, Blocks::Rows, Blocks::Rows, false, 0));
    // Every case with w uploaded as a tensor, then as a weight.
    for (i, &(n, m, k, cols, xl, wl, ol, w_kn, first)) in cases.iter().chain(&cases).enumerate() {
        let weight = i >= cases.len();
        let p = BlockProduct { n, m, k, cols, x: xl, x_first: first, w: wl, w_kn, out: ol };
        let xn = first + n;
        let x = rand_t(r, &match xl { Blocks::Rows => [xn * m, k], Blocks::Cols => [m, xn * k] }, 1.0);
        let (wr, wc) = if w_kn { (k, cols) } else { (cols, k) };
        let w = rand_t(r, &match wl { Blocks::Rows => [n * wr, wc], Blocks::Cols => [wr, n * wc] }, 1.0);
        // A bias per block, shared, or none; never with w_kn.
        let bias = match (w_kn, i % 3) {
            (true, _) | (_, 2) => None,
            (_, 0) => Some(rand_t(r, &[n * cols], 1.0)),
            _ => Some(rand_t(r, &[cols], 1.0)),
        };
        let got = get(b, &b.matmul_blocks(&up(b, &x), &up_w(b, &w, weight), bias.as_ref().map(|t| up(b, t)).as_ref(), &p).unwrap());
        let (dx, dw) = (d(&x), d(&w));
        let shape = match ol { Blocks::Rows => vec![n * m, cols], Blocks::Cols => vec![m, n * cols] };
        let mut want = vec![f64::NAN; n * m * cols];
        for blk in 0..n {
            for ii in 0..m {
                for j in 0..cols {
                    let mut s = match &bias {
                        Some(bt) if bt.data.len() == cols => bt.data[j] as f64,
                        Some(bt) => bt.data[blk * cols + j] as f64,
                        None => 0.0,
                    };
                    for kk in 0..k {
                        let wv = if w_kn { dw[at(wl, n, k, cols, blk, kk, j)] } else { dw[at(wl, n, cols, k, blk, j, kk)] };
                        s += dx[at(xl, xn, m, k, first + blk, ii, kk)] * wv;
                    }
                    want[at(ol, n, m, cols, blk, ii, j)] = s;
                }
            }
        }
        close(&format!("matmul_blocks {p:?} (weight: {weight})"), &got, &shape, &want, 1e-5);
    }
    let p = BlockProduct { n: 2, m: 4, k: 3, cols: 5, x: Blocks::Rows, x_first: 0, w: Blocks::Rows, w_kn: false, out: Blocks::Rows };
    match b.matmul_blocks(&up(b, &rand_t(r, &[7, 3], 1.0)), &up(b, &rand_t(r, &[10, 3], 1.0)), None, &p) {
        Err(Error::Backend(m)) => assert!(m.contains("matmul_blocks") && m.contains("x [7, 3]"), "{m}"),
        other => panic!("x short of a block: {:?}", other.map(|_| ())),
    }
}

fn t_add<B: Backend>(b: &B, r: &mut StdRng) {
    // 2^24 + 301 elements: more than 65535 workgroups of 256, so the grid folds into 2-D.
    for shape in [vec![37, 129], vec![(1 << 24) + 301]] {
        let (x, y) = (rand_t(r, &shape, 1.0), rand_t(r, &shape, 1.0));
        let got = get(b, &b.add(&up(b, &x), &up(b, &y)).unwrap());
        let want: Vec<f64> = x.data.iter().zip(&y.data).map(|(a, c)| *a as f64 + *c as f64).collect();
        close("add", &got, &shape, &want, 1e-6);
    }
}

/// Tolerance 5e-5: plain sequential f32 row sums (as PyTorch on CPU) over ~800 values reach 1e-5.
fn t_norms<B: Backend>(b: &B, r: &mut StdRng) {
    // 70000 rows: one workgroup per row, over the 65535 limit of one grid dimension.
    for (rows, cols) in [(37, 771), (3, 64), (70000, 3)] {
        let x = rand_t(r, &[rows, cols], 3.0);
        let (w, bb) = (rand_t(r, &[cols], 1.0), rand_t(r, &[cols], 1.0));
        let got = get(b, &b.layer_norm(&up(b, &x), &up(b, &w), &up(b, &bb), 1e-5).unwrap());
        close("layer_norm", &got, &[rows, cols], &r_norm(&d(&x), &d(&w), Some(&d(&bb)), cols, 1e-5), 5e-5);
        let got = get(b, &b.rms_norm(&up(b, &x), &up(b, &w), 1e-6).unwrap());
        close("rms_norm", &got, &[rows, cols], &r_norm(&d(&x), &d(&w), None, cols, 1e-6), 5e-5);
    }
}

fn t_activations<B: Backend>(b: &B, r: &mut StdRng) {
    let mut x = rand_t(r, &[37, 129], 8.0);
    x.data[..6].copy_from_slice(&[-100.0, -20.0, 0.0, 20.0, 100.0, 1e-3]); // tails must not NaN
    let got = get(b, &b.gelu_new(&up(b, &x)).unwrap());
    close("gelu_new", &got, &[37, 129], &d(&x).into_iter().map(r_gelu).collect::<Vec<_>>(), 1e-5);
    let g = x.clone();
    let u = rand_t(r, &[37, 129], 2.0);
    let got = get(b, &b.silu_mul(&up(b, &g), &up(b, &u)).unwrap());
    let want: Vec<f64> = d(&g).iter().zip(d(&u)).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
    close("silu_mul", &got, &[37, 129], &want, 1e-5);
}

fn t_rope<B: Backend>(b: &B, r: &mut StdRng) {
    // Long sequences: f32 angle arithmetic (HF's own) drifts ~1e-4 at position 1000; tolerance widens.
    for (batch, seq, heads, hd, tol) in [(2, 37, 3, 64, 1e-5), (1, 5, 2, 6, 1e-5), (1, 1000, 1, 16, 3e-4)] {
        let x = rand_t(r, &[batch * seq, heads * hd], 1.0);
        let got = get(b, &b.rope(&up(b, &x), seq, heads, hd, 10000.0).unwrap());
        close(&format!("rope seq {seq}"), &got, &x.shape, &r_rope(&d(&x), seq, heads, hd, 10000.0), tol);
    }
}

/// Attention of `batch` prompts of `seq` positions, heads of `head_dim` scaled by 1/√head_dim.
fn attn(batch: usize, seq: usize, n_heads: usize, n_kv_heads: usize, head_dim: usize) -> AttnShape {
    AttnShape { batch, seq, n_heads, n_kv_heads, head_dim, scale: 1.0 / (head_dim as f32).sqrt() }
}

fn attn_shapes() -> [AttnShape; 4] {
    [attn(2, 37, 4, 2, 16), attn(1, 70, 3, 3, 64), attn(1, 1, 2, 1, 8), attn(1, 21, 2, 1, 80)]
}

fn t_attention<B: Backend>(b: &B, r: &mut StdRng) {
    for s in attn_shapes() {
        let (bt, t) = (s.batch * s.seq, s.seq);
        let q = rand_t(r, &[bt, s.n_heads * s.head_dim], 2.0);
        let k = rand_t(r, &[bt, s.n_kv_heads * s.head_dim], 2.0);
        let v = rand_t(r, &[bt, s.n_kv_heads * s.head_dim], 1.0);
        let probs = b.attn_scores(&up(b, &q), &up(b, &k), s).unwrap();
        let got = get(b, &probs);
        let want = r_scores(&d(&q), &d(&k), &s);
        close(&format!("attn_scores {s:?}"), &got, &[s.batch * s.n_heads * t, t], &want, 1e-5);
        for (i, row) in got.data.chunks(t).enumerate() {
            assert!(row[i % t + 1..].iter().all(|&p| p == 0.0), "attn_scores: row {i} not exactly 0 above the diagonal");
        }
        let got = get(b, &b.attn_apply(&probs, &up(b, &v), s).unwrap());
        close(&format!("attn_apply {s:?}"), &got, &[bt, s.n_heads * s.head_dim], &r_apply(&want, &d(&v), &s), 1e-5);
    }
}

/// `attention` (fused on wgpu) against the f64 reference of `attn_apply(attn_scores)`: query rows
/// across several 64-row workgroups and key tiles that end mid-tile, grouped-query heads, head
/// widths from 8 to the fused kernel's 128 and past it or not a multiple of 4 (130, 6: the two
/// ops), one position, and
/// large scores (q scaled by 8: the running max must keep exp finite).
fn t_attention_fused<B: Backend>(b: &B, r: &mut StdRng) {
    let s = attn;
    let cases = [
        (s(2, 150, 6, 2, 24), 2.0),
        (s(3, 17, 4, 4, 8), 2.0),
        (s(1, 70, 3, 3, 64), 2.0),
        (s(1, 65, 2, 1, 128), 1.0),
        (s(2, 33, 2, 2, 130), 1.0),
        (s(2, 20, 2, 1, 6), 1.0),
        (s(4, 1, 2, 1, 16), 2.0),
        (s(1, 80, 2, 1, 16), 16.0),
    ];
    for (s, qs) in cases {
        let bt = s.batch * s.seq;
        let q = rand_t(r, &[bt, s.n_heads * s.head_dim], qs);
        let k = rand_t(r, &[bt, s.n_kv_heads * s.head_dim], 2.0);
        let v = rand_t(r, &[bt, s.n_kv_heads * s.head_dim], 1.0);
        let got = get(b, &b.attention(&up(b, &q), &up(b, &k), &up(b, &v), s).unwrap());
        let want = r_apply(&r_scores(&d(&q), &d(&k), &s), &d(&v), &s);
        close(&format!("attention {s:?}"), &got, &[bt, s.n_heads * s.head_dim], &want, 1e-5);
    }
}

fn t_mix<B: Backend>(b: &B, r: &mut StdRng) {
    let (batch, seq, c) = (2, 37, 129);
    let rows = batch * seq;
    let x = rand_t(r, &[rows, c], 1.0);
    // (mask rows, mask div, abl rows, abl div): shared, per position, per prompt, per row.
    for (mr, md, ar, ad) in [(1, 1, seq, 1), (seq, 1, batch, seq), (rows, 1, rows, 1), (1, 1, 1, 1)] {
        let mut mask = rand_t(r, &[mr, c], 1.0);
        mask.data.iter_mut().for_each(|v| *v = v.abs());
        let abl = rand_t(r, &[ar, c], 1.0);
        let got = get(b, &b.mix(&up(b, &x), &up(b, &mask), RowMap { div: md }, &up(b, &abl), RowMap { div: ad }).unwrap());
        let want: Vec<f64> = (0..rows * c)
            .map(|i| {
                let (row, col) = (i / c, i % c);
                let m = mask.data[((row / md) % mr) * c + col] as f64;
                m * x.data[i] as f64 + (1.0 - m) * abl.data[((row / ad) % ar) * c + col] as f64
            })
            .collect();
        close("mix", &got, &[rows, c], &want, 1e-6);
    }
}

fn t_log_softmax<B: Backend>(b: &B, r: &mut StdRng) {
    for (rows, cols, scale) in [(37, 1000, 10.0), (3, 50257, 20.0), (70000, 2, 5.0)] {
        let x = rand_t(r, &[rows, cols], scale);
        let got = get(b, &b.log_softmax(&up(b, &x)).unwrap());
        close("log_softmax", &got, &[rows, cols], &r_log_softmax(&d(&x), cols), 1e-6);
    }
}

fn t_gather<B: Backend>(b: &B, r: &mut StdRng) {
    let table = rand_t(r, &[100, 77], 1.0);
    let ids: Vec<u32> = (0..45).map(|_| r.random_range(0..100)).chain([0, 99, 99]).collect();
    let got = get(b, &b.gather_rows(&up(b, &table), &ids).unwrap());
    let want: Vec<f64> = ids.iter().flat_map(|&i| d(&table)[i as usize * 77..(i as usize + 1) * 77].to_vec()).collect();
    close("gather_rows", &got, &[ids.len(), 77], &want, 0.0);
    let none = get(b, &b.gather_rows(&up(b, &table), &[]).unwrap());
    assert_eq!((none.shape.as_slice(), none.data.len()), (&[0, 77][..], 0), "gather of no ids");
}

/// concat: parts stacked as rows (an empty part among them), one part reshaped, a part made by an
/// op earlier in the same encoder; a wrong element count is refused. Exact.
fn t_concat<B: Backend>(b: &B, r: &mut StdRng) {
    let parts: Vec<HostTensor> = (0..3).map(|_| rand_t(r, &[4, 5], 1.0)).collect();
    let empty = HostTensor::zeros(vec![0, 5]);
    let ups: Vec<B::Tensor> = parts.iter().map(|p| up(b, p)).collect();
    let e = up(b, &empty);
    let sum = b.add(&ups[0], &ups[1]).unwrap();
    let got = get(b, &b.concat(&[&ups[0], &e, &ups[1], &ups[2], &sum], vec![4, 20]).unwrap());
    let mut want: Vec<f64> = parts.iter().flat_map(d).collect();
    want.extend(parts[0].data.iter().zip(&parts[1].data).map(|(x, y)| (x + y) as f64));
    close("concat as rows", &got, &[4, 20], &want, 0.0);
    let got = get(b, &b.concat(&[&ups[2]], vec![2, 10]).unwrap());
    close("concat as a reshape", &got, &[2, 10], &d(&parts[2]), 0.0);
    match b.concat(&[&ups[0], &ups[1]], vec![3, 10]) {
        Err(Error::Backend(m)) => assert!(m.contains("concat"), "{m}"),
        other => panic!("a wrong element count: {:?}", other.map(|_| ())),
    }
}

/// reshape: a tensor only it holds (an op's output), one still held elsewhere (which keeps its
/// shape and data), each used by an op afterwards; a wrong element count is refused. Exact.
fn t_reshape<B: Backend>(b: &B, r: &mut StdRng) {
    let (x, y) = (rand_t(r, &[4, 6], 1.0), rand_t(r, &[4, 6], 1.0));
    let (ux, uy) = (up(b, &x), up(b, &y));
    let sum: Vec<f64> = x.data.iter().zip(&y.data).map(|(a, c)| (a + c) as f64).collect();
    let own = b.reshape(b.add(&ux, &uy).unwrap(), vec![3, 8]).unwrap();
    close("reshape of an op's output", &get(b, &own), &[3, 8], &sum, 0.0);
    let twice = b.add(&own, &own).unwrap();
    close("an op on it", &get(b, &twice), &[3, 8], &sum.iter().map(|v| 2.0 * v).collect::<Vec<_>>(), 0.0);
    // As a matmul's weight (whose rows the wgpu backend reads from the tensor's chunks): [8, 3].
    let w = b.reshape(b.add(&ux, &uy).unwrap(), vec![8, 3]).unwrap();
    let v = rand_t(r, &[2, 3], 1.0);
    let (dv, s3) = (d(&v), &sum);
    let want: Vec<f64> = (0..16).map(|e| (0..3).map(|k| dv[e / 8 * 3 + k] * s3[e % 8 * 3 + k]).sum::<f64>()).collect();
    close("a reshaped weight", &get(b, &b.matmul(&up(b, &v), &w, None).unwrap()), &[2, 8], &want, 1e-5);
    let held = b.reshape(ux.clone(), vec![24]).unwrap();
    close("reshape of a tensor held elsewhere", &get(b, &held), &[24], &d(&x), 0.0);
    close("the other holder", &get(b, &ux), &[4, 6], &d(&x), 0.0);
    let flat_sum = b.add(&held, &b.reshape(uy.clone(), vec![24]).unwrap()).unwrap();
    close("an op on two reshaped", &get(b, &flat_sum), &[24], &sum, 0.0);
    match b.reshape(ux, vec![5, 5]) {
        Err(Error::Backend(m)) => assert!(m.contains("reshape") && m.contains("24"), "{m}"),
        other => panic!("a wrong element count: {:?}", other.map(|_| ())),
    }
}

/// The groups' gate blocks (`[n, k_g]`) side by side in a larger table, NaN around them so that a
/// read outside the view shows: rows K + 3 apart from element 2·(K + 3) + 1. Returns the table,
/// the view's offset and stride, and where each group's columns start.
fn gate_table(blocks: &[HostTensor], n: usize) -> (HostTensor, usize, usize, Vec<usize>) {
    let ks: Vec<usize> = blocks.iter().map(|z| z.shape[1]).collect();
    let width: usize = ks.iter().sum();
    let stride = width + 3;
    let offset = 2 * stride + 1;
    let mut t = vec![f32::NAN; offset + n * stride + 5];
    let mut starts = Vec::new();
    let mut at = 0;
    for (z, &k) in blocks.iter().zip(&ks) {
        starts.push(at);
        for i in 0..n {
            t[offset + i * stride + at..offset + i * stride + at + k].copy_from_slice(&z.data[i * k..(i + 1) * k]);
        }
        at += k;
    }
    let len = t.len();
    (HostTensor::new(vec![len], t), offset, stride, starts)
}

/// Columns `at..at + k` of an `[n, width]` tensor's data.
fn cols_of(t: &HostTensor, at: usize, k: usize) -> HostTensor {
    let (n, width) = (t.shape[0], t.shape[1]);
    HostTensor::new(vec![n, k], (0..n).flat_map(|i| t.data[i * width + at..i * width + at + k].iter().copied()).collect())
}

/// gated_sum and its backward (the edge forward's mixing): groups of 3, 1 and 5 rows over 2,500
/// columns (blocks of columns and a remainder), gates with exact zeros among them, against f64
/// references: out = Σ_g z_g·s_g, dz_g = dy·s_gᵀ, ds_g = acc_g + z_gᵀ·dy (one group with a
/// gradient so far), the gates read where they lie in a larger table (`gate_table`), with and
/// without a base repeated along the rows. Views that overlap or run past their table, stacks of
/// other widths and a base that does not divide a row are refused.
fn t_gated_sum<B: Backend>(b: &B, r: &mut StdRng) {
    let (n, c, ks) = (4, 2500, [3usize, 1, 5]);
    let stacks: Vec<HostTensor> = ks.iter().map(|&k| rand_t(r, &[k, c], 1.0)).collect();
    let gates: Vec<HostTensor> = ks
        .iter()
        .map(|&k| {
            let mut z = rand_t(r, &[n, k], 1.0);
            z.data.iter_mut().step_by(3).for_each(|v| *v = 0.0);
            z
        })
        .collect();
    let (sd, zd): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (stacks.iter().map(d).collect(), gates.iter().map(d).collect());
    let mut want = vec![0.0f64; n * c];
    for (g, &k) in ks.iter().enumerate() {
        for i in 0..n {
            for j in 0..k {
                for col in 0..c {
                    want[i * c + col] += zd[g][i * k + j] * sd[g][j * c + col];
                }
            }
        }
    }
    let su: Vec<B::Tensor> = stacks.iter().map(|t| up(b, t)).collect();
    let s_refs: Vec<&B::Tensor> = su.iter().collect();
    let (table, offset, stride, starts) = gate_table(&gates, n);
    let tu = up(b, &table);
    let z = Gates { table: &tu, offset, stride, rows: n };
    close("gated_sum", &get(b, &b.gated_sum(z, &s_refs, None).unwrap()), &[n, c], &want, 1e-5);
    // With a base of 500 repeated along each row of 2,500.
    let base = rand_t(r, &[1, 500], 1.0);
    let want_base: Vec<f64> = want.iter().enumerate().map(|(e, &v)| v + base.data[(e % c) % 500] as f64).collect();
    let bu = up(b, &base);
    close("gated_sum with a base", &get(b, &b.gated_sum(z, &s_refs, Some(&bu)).unwrap()), &[n, c], &want_base, 1e-5);
    // 16 readers with mostly-zero gates, some exactly 1 (a standalone edge model's): the CPU's
    // sparse path.
    let ns = 16;
    let sparse: Vec<HostTensor> = ks
        .iter()
        .map(|&k| {
            let z = rand_t(r, &[ns, k], 1.0);
            let data = z.data.iter().enumerate().map(|(i, &v)| match i % 13 {
                0 => 1.0,
                6 => v,
                _ => 0.0,
            });
            HostTensor::new(z.shape.clone(), data.collect())
        })
        .collect();
    let mut want_sparse = vec![0.0f64; ns * c];
    for (g, &k) in ks.iter().enumerate() {
        for i in 0..ns {
            for j in 0..k {
                let zij = sparse[g].data[i * k + j] as f64;
                for col in 0..c {
                    want_sparse[i * c + col] += zij * sd[g][j * c + col];
                }
            }
        }
    }
    let (st, so, ss, _) = gate_table(&sparse, ns);
    let stu = up(b, &st);
    let zs = Gates { table: &stu, offset: so, stride: ss, rows: ns };
    close("gated_sum (sparse gates)", &get(b, &b.gated_sum(zs, &s_refs, None).unwrap()), &[ns, c], &want_sparse, 1e-5);
    let row = rand_t(r, &[c], 1.0);
    let want_row: Vec<f64> = want_sparse.iter().enumerate().map(|(e, &v)| v + row.data[e % c] as f64).collect();
    let ru = up(b, &row);
    close("gated_sum (sparse gates) with a row", &get(b, &b.gated_sum(zs, &s_refs, Some(&ru)).unwrap()), &[ns, c], &want_row, 1e-5);

    let dy = rand_t(r, &[n, c], 1.0);
    let dyd = d(&dy);
    // Group 1's gradient so far is added to (the others start from 0).
    let prior = rand_t(r, &[ks[1], c], 1.0);
    let acc = vec![None, Some(up(b, &prior)), None];
    let (dz, ds) = b.gated_sum_backward(z, &s_refs, &up(b, &dy), acc, false).unwrap();
    let dz = get(b, &dz);
    assert_eq!(dz.shape, [n, ks.iter().sum::<usize>()]);
    for (g, &k) in ks.iter().enumerate() {
        let want_dz: Vec<f64> = (0..n).flat_map(|i| (0..k).map(move |j| (i, j))).map(|(i, j)| dot(&dyd[i * c..(i + 1) * c], &sd[g][j * c..(j + 1) * c])).collect();
        close(&format!("gated_sum_backward dgates {g}"), &cols_of(&dz, starts[g], k), &[n, k], &want_dz, 1e-5);
        let base = |j: usize, col: usize| if g == 1 { prior.data[j * c + col] as f64 } else { 0.0 };
        let want_ds: Vec<f64> = (0..k)
            .flat_map(|j| (0..c).map(move |col| (j, col)))
            .map(|(j, col)| base(j, col) + (0..n).map(|i| zd[g][i * k + j] * dyd[i * c + col]).sum::<f64>())
            .collect();
        close(&format!("gated_sum_backward dstacks {g}"), &get(b, &ds[g]), &[k, c], &want_ds, 1e-5);
    }
    // Sampled gates (exactly 0 or 1 where clamped, a row of all 0): dstacks everywhere and dgates
    // where a gate is strictly inside (0, 1) as without `sampled`.
    let samples: Vec<HostTensor> = gates
        .iter()
        .enumerate()
        .map(|(g, z)| {
            let k = z.shape[1];
            let data = z.data.iter().enumerate().map(|(e, &v)| match (g == 2 && e % k == 1, e % 3) {
                (true, _) | (_, 0) => 0.0,
                (_, 1) => 1.0,
                _ => v.abs().min(0.9) + 0.05,
            });
            HostTensor::new(z.shape.clone(), data.collect())
        })
        .collect();
    let (pt, po, ps, _) = gate_table(&samples, n);
    let ptu = up(b, &pt);
    let acc = vec![None, Some(up(b, &prior)), None];
    let (dz, ds) = b.gated_sum_backward(Gates { table: &ptu, offset: po, stride: ps, rows: n }, &s_refs, &up(b, &dy), acc, true).unwrap();
    let dz = get(b, &dz);
    for (g, &k) in ks.iter().enumerate() {
        let zs: Vec<f64> = samples[g].data.iter().map(|&v| v as f64).collect();
        let got = cols_of(&dz, starts[g], k);
        for i in 0..n {
            for j in 0..k {
                let z = zs[i * k + j];
                if z > 0.0 && z < 1.0 {
                    let want = dot(&dyd[i * c..(i + 1) * c], &sd[g][j * c..(j + 1) * c]);
                    let e = (got.data[i * k + j] as f64 - want).abs();
                    assert!(e <= 1e-4 * want.abs().max(1.0), "sampled dgates {g} [{i}, {j}]: {} vs {want}", got.data[i * k + j]);
                }
            }
        }
        let base = |j: usize, col: usize| if g == 1 { prior.data[j * c + col] as f64 } else { 0.0 };
        let want_ds: Vec<f64> = (0..k)
            .flat_map(|j| (0..c).map(move |col| (j, col)))
            .map(|(j, col)| base(j, col) + (0..n).map(|i| zs[i * k + j] * dyd[i * c + col]).sum::<f64>())
            .collect();
        close(&format!("sampled gated_sum_backward dstacks {g}"), &get(b, &ds[g]), &[k, c], &want_ds, 1e-5);
    }
    let refused = |r: carve_core::Result<B::Tensor>, what: &str, says: &str| match r {
        Err(Error::Backend(m)) => assert!(m.contains("gated_sum") && m.contains(says), "{what}: {m}"),
        other => panic!("{what}: {:?}", other.map(|_| ())),
    };
    refused(b.gated_sum(Gates { offset: offset + 9, ..z }, &s_refs, None), "a view past its table", "run past");
    refused(b.gated_sum(Gates { stride: 8, ..z }, &s_refs, None), "rows that overlap", "overlap");
    let uneven = up(b, &rand_t(r, &[1, 300], 1.0));
    refused(b.gated_sum(z, &s_refs, Some(&uneven)), "a base that does not divide a row", "repeat evenly");
    let narrow = up(b, &rand_t(r, &[2, c - 1], 1.0));
    refused(b.gated_sum(z, &[s_refs[0], &narrow, s_refs[2]], None), "a stack of another width", "group 1");
}

/// gated_sum and its backward at the sizes the GPU kernels split: 20 readers (blocks of 16), groups
/// of 18, 0 and 7 rows (gate tiles of 4, an empty group), 9,001 columns (several chunks of the
/// gates' gradient and a remainder), a gradient so far on the first group; against f64, 1e-5.
fn t_gated_sum_wide<B: Backend>(b: &B, r: &mut StdRng) {
    let (n, c, ks) = (20, 9001, [18usize, 0, 7]);
    let stacks: Vec<HostTensor> = ks.iter().map(|&k| rand_t(r, &[k, c], 1.0)).collect();
    let gates: Vec<HostTensor> = ks.iter().map(|&k| rand_t(r, &[n, k], 1.0)).collect();
    let (sd, zd): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (stacks.iter().map(d).collect(), gates.iter().map(d).collect());
    let mut want = vec![0.0f64; n * c];
    for (g, &k) in ks.iter().enumerate() {
        for i in 0..n {
            for j in 0..k {
                let zij = zd[g][i * k + j];
                want[i * c..(i + 1) * c].iter_mut().zip(&sd[g][j * c..(j + 1) * c]).for_each(|(w, s)| *w += zij * s);
            }
        }
    }
    let su: Vec<B::Tensor> = stacks.iter().map(|t| up(b, t)).collect();
    let s_refs: Vec<&B::Tensor> = su.iter().collect();
    let (table, offset, stride, starts) = gate_table(&gates, n);
    let tu = up(b, &table);
    let z = Gates { table: &tu, offset, stride, rows: n };
    close("wide gated_sum", &get(b, &b.gated_sum(z, &s_refs, None).unwrap()), &[n, c], &want, 1e-5);
    // A base of one element, on every entry.
    let one = rand_t(r, &[1], 1.0);
    let want_one: Vec<f64> = want.iter().map(|&v| v + one.data[0] as f64).collect();
    close("wide gated_sum with a base", &get(b, &b.gated_sum(z, &s_refs, Some(&up(b, &one))).unwrap()), &[n, c], &want_one, 1e-5);
    // Only an empty group: the base alone.
    let empty = &s_refs[1..2];
    let alone = b.gated_sum(Gates { offset: offset + starts[1], ..z }, empty, Some(&up(b, &one))).unwrap();
    close("gated_sum of an empty group with a base", &get(b, &alone), &[n, c], &vec![one.data[0] as f64; n * c], 0.0);
    let dy = rand_t(r, &[n, c], 1.0);
    let dyd = d(&dy);
    let prior = rand_t(r, &[ks[0], c], 1.0);
    let acc = vec![Some(up(b, &prior)), None, None];
    let (dz, ds) = b.gated_sum_backward(z, &s_refs, &up(b, &dy), acc, false).unwrap();
    let dz = get(b, &dz);
    for (g, &k) in ks.iter().enumerate() {
        let want_dz: Vec<f64> = (0..n).flat_map(|i| (0..k).map(move |j| (i, j))).map(|(i, j)| dot(&dyd[i * c..(i + 1) * c], &sd[g][j * c..(j + 1) * c])).collect();
        close(&format!("wide gated_sum_backward dgates {g}"), &cols_of(&dz, starts[g], k), &[n, k], &want_dz, 1e-5);
        let base = |j: usize, col: usize| if g == 0 { prior.data[j * c + col] as f64 } else { 0.0 };
        let want_ds: Vec<f64> = (0..k)
            .flat_map(|j| (0..c).map(move |col| (j, col)))
            .map(|(j, col)| base(j, col) + (0..n).map(|i| zd[g][i * k + j] * dyd[i * c + col]).sum::<f64>())
            .collect();
        close(&format!("wide gated_sum_backward dstacks {g}"), &get(b, &ds[g]), &[k, c], &want_ds, 1e-5);
    }
    let bad = b.gated_sum_backward(z, &s_refs, &up(b, &rand_t(r, &[n, c - 1], 1.0)), vec![None, None, None], false);
    assert!(bad.is_err(), "dy of the wrong width");
}

/// A chain of ops, read once: pooled buffers get reused inside one pending encoder.
fn t_chain<B: Backend>(b: &B, r: &mut StdRng) {
    let (m, k) = (19, 70);
    let x = rand_t(r, &[m, k], 1.0);
    let w = rand_t(r, &[k, k], 0.2);
    let (wd, mut want) = (d(&w), d(&x));
    let wt = up(b, &w);
    let mut h = up(b, &x);
    for _ in 0..8 {
        let y = b.gelu_new(&b.matmul(&h, &wt, None).unwrap()).unwrap();
        h = b.add(&h, &y).unwrap();
        let y: Vec<f64> = r_matmul(&want, &wd, None, m, k, k).into_iter().map(r_gelu).collect();
        want = want.iter().zip(y).map(|(a, c)| a + c).collect();
    }
    close("chain", &get(b, &h), &[m, k], &want, 1e-5);
}

/// Bad shapes: an `Error::Backend` naming the op, never a panic.
fn t_errors<B: Backend>(b: &B, _r: &mut StdRng) {
    let t = |s: &[usize]| up(b, &HostTensor::zeros(s.to_vec()));
    let s = attn_shapes()[0];
    let cases: Vec<(&str, carve_core::Result<B::Tensor>)> = vec![
        ("matmul", b.matmul(&t(&[3, 4]), &t(&[5, 6]), None)),
        ("matmul", b.matmul(&t(&[3, 4]), &t(&[5, 4]), Some(&t(&[4])))),
        ("add", b.add(&t(&[3, 4]), &t(&[4, 3]))),
        ("layer_norm", b.layer_norm(&t(&[3, 4]), &t(&[5]), &t(&[4]), 1e-5)),
        ("rope", b.rope(&t(&[4, 6]), 2, 2, 3, 1e4)),
        ("attn_scores", b.attn_scores(&t(&[3, 4]), &t(&[3, 4]), s)),
        ("attention", b.attention(&t(&[74, 64]), &t(&[74, 32]), &t(&[74, 16]), s)),
        ("gather_rows", b.gather_rows(&t(&[4, 2]), &[4])),
    ];
    for (op, res) in cases {
        match res {
            Err(Error::Backend(msg)) => assert!(msg.contains(op), "{op}: message {msg:?} does not name the op"),
            Err(e) => panic!("{op}: wrong error kind {e:?}"),
            Ok(_) => panic!("{op}: bad shapes accepted"),
        }
    }
}

carve_tests::on_backends!(t_matmul, t_matmul_blocks, t_add, t_norms, t_activations, t_rope, t_attention, t_attention_fused, t_mix, t_log_softmax, t_gather, t_concat, t_reshape, t_gated_sum, t_gated_sum_wide, t_chain, t_errors);

// ---------------------------------------------------------------- wgpu only

/// A binding limit of 8 KiB splits the weights into row-chunks: upload/read, gather_rows and
/// matmul (both kernels) must match the unsplit results; any other op must refuse clearly.
#[test]
fn wgpu_split_weights() {
    let mut r = rng("wgpu_split_weights");
    let small = new_wgpu(WgpuOptions { max_binding_bytes: Some(8192), ..WgpuOptions::default() });
    small.set_poison(true);
    assert_eq!(small.max_tensor_bytes(), 8192);
    let table = rand_t(&mut r, &[1000, 20], 1.0);
    let st = up(&small, &table);
    assert!(st.chunk_count() >= 10, "{st:?} was not split");
    assert_eq!(get(&small, &st), table, "split upload/read round trip");
    let ids: Vec<u32> = (0..100).map(|_| r.random_range(0..1000)).collect();
    let want = get(gpu(), &gpu().gather_rows(&up(gpu(), &table), &ids).unwrap());
    assert_eq!(get(&small, &small.gather_rows(&st, &ids).unwrap()), want, "split gather");

    for (m, k, n) in [(2, 40, 1000), (9, 40, 227)] {
        let (x, w, bias) = (rand_t(&mut r, &[m, k], 1.0), rand_t(&mut r, &[n, k], 1.0), rand_t(&mut r, &[n], 1.0));
        let sw = up(&small, &w);
        assert!(sw.chunk_count() > 1);
        let got = get(&small, &small.matmul(&up(&small, &x), &sw, Some(&up(&small, &bias))).unwrap());
        let whole = get(gpu(), &gpu().matmul(&up(gpu(), &x), &up(gpu(), &w), Some(&up(gpu(), &bias))).unwrap());
        close(&format!("split matmul {m}x{k}x{n}"), &got, &[m, n], &d(&whole), 1e-6);
        close("split matmul vs f64", &got, &[m, n], &r_matmul(&d(&x), &d(&w), Some(&d(&bias)), m, k, n), 1e-5);
    }
    match small.add(&st, &st) {
        Err(Error::Backend(msg)) => assert!(msg.contains("add") && msg.contains("80000") && msg.contains("8192"), "{msg}"),
        other => panic!("add of a split tensor: {other:?}"),
    }
    assert!(matches!(small.matmul(&up(&small, &rand_t(&mut r, &[3, 20], 1.0)), &st, None), Err(Error::Backend(_))));
}

/// Small uploads (masks, ablation values, gates) are staged for the coming submit and copied by a
/// recorded kernel into a pooled buffer. Checked: values arrive bit for bit (NaN payloads, −0,
/// subnormals, ±∞), also past the staging size and for an empty tensor; an upload into the buffer of
/// a tensor that a pending op still reads lands after that op; and a loop of uploads and ops
/// creates no device buffers once the pool holds them.
#[test]
fn wgpu_small_uploads() {
    let mut r = rng("wgpu_small_uploads");
    let b = new_wgpu(WgpuOptions::default());
    b.set_poison(true);
    let odd = [f32::from_bits(0x7fc0_1234), -0.0, f32::from_bits(1), f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE / 3.0];
    for n in [1, 6, 255, 257, 16 * 1024, 16 * 1024 + 1, 70_000] {
        let mut t = rand_t(&mut r, &[n], 1.0);
        for (v, o) in t.data.iter_mut().zip(odd) {
            *v = o;
        }
        let back = get(&b, &up(&b, &t));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.data), bits(&t.data), "upload of {n} values, bit for bit");
        assert_eq!(back.shape, vec![n]);
    }
    assert_eq!(get(&b, &up(&b, &HostTensor::zeros(vec![0, 5]))).shape, vec![0, 5], "empty upload");

    // y = x + x is recorded; x is dropped, so its buffer returns to the pool while the add still
    // has to read it, and the next upload of the same size is given that buffer: with the pool
    // emptied first it is the only free buffer of its size (the upload creates none).
    let (x, z) = (rand_t(&mut r, &[16, 32], 1.0), rand_t(&mut r, &[16, 32], 1.0));
    b.trim_pool();
    let xt = up(&b, &x);
    let y = b.add(&xt, &xt).unwrap();
    drop(xt);
    let created = b.buffers_created();
    let zt = up(&b, &z);
    assert_eq!(b.buffers_created(), created, "the upload of z was not given x's buffer: the test sets up nothing");
    let want: Vec<f32> = x.data.iter().map(|v| v + v).collect();
    assert_eq!(get(&b, &y).data, want, "the add read x, not the upload that reused its buffer");
    assert_eq!(get(&b, &zt).data, z.data);

    let step = |i: usize| {
        let m = up(&b, &HostTensor::new(vec![1, 32], vec![0.25 * i as f32; 32]));
        let a = up(&b, &HostTensor::zeros(vec![1, 32]));
        let out = b.mix(&up(&b, &x), &m, RowMap::SHARED, &a, RowMap::SHARED).unwrap();
        get(&b, &out)
    };
    step(0);
    let before = b.buffers_created().expect("wgpu counts its buffers");
    for i in 1..6 {
        let got = step(i);
        let want: Vec<f32> = x.data.iter().map(|v| v * 0.25 * i as f32).collect();
        assert_eq!(got.data, want, "mix with the uploaded mask, step {i}");
    }
    assert_eq!(b.buffers_created(), Some(before), "a steady loop of small uploads created buffers");
}

/// Bind groups are cached by what they bind, the params at a dynamic offset. Checked: a kernel
/// recorded again in the same submit on the same buffers (its output's buffer handed back by the
/// pool) with other params reads its own params, and reuses the one bind group; a loop of ops
/// creates no bind group after its first round; trimming the pool starts the cache over.
#[test]
fn wgpu_bind_groups_are_reused() {
    let mut r = rng("wgpu_bind_groups_are_reused");
    let b = new_wgpu(WgpuOptions::default());
    let (x, w) = (rand_t(&mut r, &[5, 24], 1.0), rand_t(&mut r, &[24], 1.0));
    let (xt, wt) = (up(&b, &x), up(&b, &w));
    let rms = |eps: f64| -> Vec<f64> {
        let mut out = Vec::new();
        for row in x.data.chunks(24) {
            let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / 24.0;
            out.extend(row.iter().zip(&w.data).map(|(&v, &g)| v as f64 / (ms + eps).sqrt() * g as f64));
        }
        out
    };
    get(&b, &b.rms_norm(&xt, &wt, 1.0).unwrap()); // the first bind group for these buffers
    for epss in [[1e-5f32, 0.5, 4.0, 100.0], [100.0, 4.0, 0.5, 1e-5]] {
        let before = b.bind_groups_created().expect("wgpu counts its bind groups");
        let mut y = None;
        for eps in epss {
            drop(y.take()); // its buffer goes back to the pool, and the next launch writes it
            y = Some(b.rms_norm(&xt, &wt, eps).unwrap());
        }
        let got = get(&b, &y.unwrap());
        let want = rms(epss[3] as f64);
        let err = got.data.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
        assert!(err < 1e-5, "the last of 4 launches on one bind group read the wrong eps: error {err:.2e}");
        assert_eq!(b.bind_groups_created(), Some(before), "launches on the same buffers created bind groups");
    }

    let step = |i: usize| {
        let m = up(&b, &HostTensor::new(vec![1, 24], vec![0.25 * i as f32; 24]));
        let y = b.rms_norm(&b.add(&xt, &xt).unwrap(), &wt, 0.5).unwrap();
        get(&b, &b.mix(&y, &m, RowMap::SHARED, &xt, RowMap::SHARED).unwrap())
    };
    let first = step(1);
    let before = b.bind_groups_created().expect("wgpu counts its bind groups");
    for _ in 0..4 {
        assert_eq!(step(1).data, first.data, "the same step gave another result");
    }
    assert_eq!(b.bind_groups_created(), Some(before), "a steady loop created bind groups");
    b.trim_pool();
    assert_eq!(step(1).data, first.data, "the step after trimming the pool");
    assert!(b.bind_groups_created() > Some(before), "trimming the pool kept the cached bind groups (and their buffers)");
}

/// The bind group cache is bounded: once it holds 16,384 bind groups it starts over, so a binding
/// seen before that is created again, where without the reset it is taken from the cache.
#[test]
fn wgpu_bind_group_cache_is_bounded() {
    let b = new_wgpu(WgpuOptions::default());
    let x = up(&b, &HostTensor::new(vec![1, 4], vec![1.0; 4]));
    // The probe's output is the only buffer of its size class, so each probe gets the same one;
    // each probe follows a read, so its params are staged at the arena's start.
    let x2 = up(&b, &HostTensor::new(vec![1, 600], vec![0.5; 600]));
    let probe = || get(&b, &b.add(&x2, &x2).unwrap()).data[0];
    let created = || b.bind_groups_created().expect("wgpu counts its bind groups");
    assert_eq!(probe(), 1.0);
    let before = created();
    assert_eq!(probe(), 1.0);
    assert_eq!(created(), before, "the same binding again was not taken from the cache");
    // 16,384 bindings that never repeat (each output is kept, so each is a new buffer).
    let kept: Vec<_> = (0..16_384).map(|_| b.add(&x, &x).unwrap()).collect();
    assert_eq!(get(&b, &kept[16_383]).data, vec![2.0; 4]);
    assert_eq!(created(), before + 16_384);
    assert_eq!(probe(), 1.0);
    assert_eq!(created(), before + 16_385, "the cache did not start over after 16,384 bind groups");
}

#[test]
fn wgpu_read_after_device_loss_is_an_error() {
    let b = new_wgpu(WgpuOptions::default());
    let t = up(&b, &HostTensor::new(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
    assert_eq!(get(&b, &t).data, vec![1.0, 2.0, 3.0, 4.0]);
    b.simulate_device_loss();
    let res = pollster::block_on(b.read(&t));
    assert!(matches!(res, Err(Error::Backend(_))), "read on a lost device: {res:?}");
}

/// Kernel timing (`WgpuOptions::profile`, `carve bench ops --backend gpu`): the results are those
/// of the unprofiled backend bit for bit, every dispatch is counted once under its kernel's name
/// (also past one query set's 2,048 dispatches in a submit), and a backend made without it says so.
#[test]
fn wgpu_kernel_timestamps() {
    let mut r = rng("wgpu_kernel_timestamps");
    // Submits only at reads, at first: the long chain below then fills two query sets.
    let prof = new_wgpu(WgpuOptions { profile: true, submit_every: 0, ..WgpuOptions::default() });
    assert!(prof.profiling() && !gpu().profiling());
    // K = 40: the product reads its operands a vec4 at a time (`matmul_vec4`).
    let (x, w, bias) = (rand_t(&mut r, &[33, 40], 1.0), rand_t(&mut r, &[50, 40], 1.0), rand_t(&mut r, &[50], 1.0));
    let chain = |b: &WgpuBackend| {
        let y = b.matmul(&up(b, &x), &up(b, &w), Some(&up(b, &bias))).unwrap();
        let y = b.gelu_new(&b.add(&y, &y).unwrap()).unwrap();
        let n = b.pending_dispatches();
        (get(b, &y), n)
    };
    prof.take_kernel_times().unwrap(); // nothing yet, or the uploads' nothing
    let ((want, _), (got, n)) = (chain(gpu()), chain(&prof));
    assert_eq!(got, want, "a profiled run computes the same values");
    let times = prof.take_kernel_times().unwrap();
    let calls: u64 = times.values().map(|t| t.calls).sum();
    assert_eq!(calls as usize, n, "every dispatch timed once: {times:?}");
    for k in ["matmul_vec4", "add", "gelu"] {
        assert_eq!(times.get(k).map(|t| t.calls), Some(1), "{k} in {times:?}");
    }
    assert!(times.values().map(|t| t.time).sum::<std::time::Duration>() > std::time::Duration::ZERO, "{times:?}");
    assert!(prof.take_kernel_times().unwrap().is_empty(), "a second take starts afresh");

    // 2,101 dispatches in one submit (the small upload is one): two query sets. Then the same
    // chain submitted every 300 dispatches: 8 submits, each resolving its own timestamps.
    for every in [0, 300] {
        assert!(prof.set_submit_every(every));
        let submits = prof.submits();
        let one = up(&prof, &HostTensor::new(vec![4, 8], vec![1.0; 32]));
        let mut y = prof.add(&one, &one).unwrap();
        for _ in 1..2100 {
            y = prof.add(&y, &one).unwrap();
        }
        assert_eq!(get(&prof, &y).data, vec![2101.0; 32]);
        assert_eq!(prof.submits() - submits, if every == 0 { 1 } else { 8 });
        let spans = prof.take_kernel_spans().unwrap();
        assert_eq!(spans.len(), 2101);
        assert_eq!(spans[0].kernel, "upload");
        assert!(spans[1..].iter().all(|s| s.kernel == "add"), "{:?}", &spans[..3]);
        // Each add reads the one before: on llvmpipe they run one after another, each taking
        // time, so the spans of both sets (and of every submit) come back in order and non-empty.
        for (i, s) in spans.iter().enumerate() {
            assert!(s.end_ns > s.start_ns, "submit every {every}, dispatch {i}: {s:?}");
            if i > 0 {
                assert!(s.start_ns >= spans[i - 1].end_ns, "submit every {every}: dispatch {i} starts before {} ends: {s:?} {:?}", i - 1, spans[i - 1]);
            }
        }
    }

    match gpu().take_kernel_times() {
        Err(Error::Backend(msg)) => assert!(msg.contains("profile"), "{msg}"),
        other => panic!("kernel times of an unprofiled backend: {other:?}"),
    }
}

#[test]
fn wgpu_describe_and_adapters() {
    let b = gpu();
    assert!(b.describe().starts_with("wgpu "), "{}", b.describe());
    let all = list_adapters();
    assert!(!all.is_empty());
    for a in &all {
        println!("adapter: {} {:?} {:?} software={}", a.name, a.backend, a.device_type, carve_core::backend::wgpu::is_software(a));
    }
}

/// The real case behind row-chunking: GPT-2's tied embedding / LM head, [50257, 768] f32 = 154 MB,
/// over llvmpipe's 128 MiB binding limit (on adapters that bind more it is simply not split).
#[test]
fn wgpu_gpt2_sized_embedding() {
    let mut r = rng("wgpu_gpt2_sized_embedding");
    let b = gpu();
    b.set_poison(true);
    let (v, e) = (50257, 768);
    let table = rand_t(&mut r, &[v, e], 0.1);
    let t0 = Instant::now();
    let wt = up(b, &table);
    println!("upload 154 MB in {} chunk(s): {:?} (limit {} bytes)", wt.chunk_count(), t0.elapsed(), b.max_tensor_bytes());
    let ids = [0u32, 50256, 25000, 7];
    let h = b.gather_rows(&wt, &ids).unwrap();
    let got = get(b, &h);
    let want: Vec<f64> = ids.iter().flat_map(|&i| d(&table)[i as usize * e..(i as usize + 1) * e].to_vec()).collect();
    close("gather from the 154 MB table", &got, &[4, e], &want, 0.0);
    let t0 = Instant::now();
    let logits = get(b, &b.matmul(&h, &wt, None).unwrap());
    println!("logits [4, {v}]: {:?}", t0.elapsed());
    close("logits", &logits, &[4, v], &r_matmul(&d(&got), &d(&table), None, 4, e, v), 1e-5);
}

/// Throughput, not correctness: `cargo test -p carve-tests --test ops -- --ignored --nocapture bench`.
#[test]
#[ignore]
fn wgpu_matmul_bench() {
    let mut r = rng("bench");
    let b = gpu();
    for (m, k, n, reps) in [(512, 768, 768, 5), (1, 768, 50257, 5), (8, 768, 3072, 20)] {
        let (x, w) = (up(b, &rand_t(&mut r, &[m, k], 1.0)), up(b, &rand_t(&mut r, &[n, k], 1.0)));
        get(b, &b.matmul(&x, &w, None).unwrap()); // warm: pipeline build
        let t0 = Instant::now();
        let outs: Vec<_> = (0..reps).map(|_| b.matmul(&x, &w, None).unwrap()).collect();
        get(b, &outs[reps - 1]);
        let s = t0.elapsed().as_secs_f64() / reps as f64;
        println!("matmul {m}x{k}x{n}: {:.2} ms, {:.2} GFLOP/s", s * 1e3, 2.0 * (m * k * n) as f64 / s / 1e9);
    }
}

/// The tiled GEMMs' vec4 loads against their f32 loads, on 64×64 and 128×128 tiles: for every
/// layout they read (x [M, K] or [K, M], w [N, K] or [K, N]) and every use (matmul with a bias,
/// matmul_backward, matmul_blocks, attention's products forward and backward, causal tiles
/// skipped, products accumulated), the outputs are bit for bit the same (the tiles hold the same values, summed in the same order),
/// and the profile shows which kernel ran: vec4 where the product is aligned for it, the f32 loads
/// where it is not (K = 66, 37 positions).
#[test]
fn wgpu_vec4_loads_match_f32_loads() {
    for tile in [64, 128] {
        vec4_loads_match_f32_loads(tile);
    }
}

fn vec4_loads_match_f32_loads(tile: usize) {
    let mut r = rng(&format!("wgpu_vec4_loads_match_f32_loads/{tile}"));
    let new = |vec4_loads| new_wgpu(WgpuOptions { gemm_tile: Some(tile), profile: true, vec4_loads, ..WgpuOptions::default() });
    let (v4, f1) = (new(true), new(false));
    // The kernels' names in the profile: with f32 loads, and with vec4 loads.
    let plain = if tile == 64 { "matmul" } else { "matmul_128" };
    let quad = format!("{plain}_vec4");
    // Runs `f` on both backends: identical outputs, and the kernels each ran.
    let both = |what: &str, f: &dyn Fn(&WgpuBackend) -> Vec<HostTensor>| -> (Vec<String>, Vec<String>) {
        let names = |b: &WgpuBackend| {
            b.take_kernel_times().unwrap();
            let out = f(b);
            (out, b.take_kernel_times().unwrap().into_keys().filter(|k| k.starts_with("matmul")).collect::<Vec<_>>())
        };
        let ((a, ka), (c, kc)) = (names(&v4), names(&f1));
        assert_eq!(a.len(), c.len());
        for (i, (a, c)) in a.iter().zip(&c).enumerate() {
            assert_eq!(a.shape, c.shape, "{what}, output {i}");
            assert!(a.data.iter().zip(&c.data).all(|(p, q)| p.to_bits() == q.to_bits()), "{what}, output {i}: vec4 and f32 loads differ");
        }
        assert!(kc.iter().all(|k| !k.contains("vec4") && (k == plain || k.starts_with(&format!("{plain} ")))), "{what}: f32 loads ran {kc:?}");
        (ka, kc)
    };
    let vec4_ran = |what: &str, k: &[String], flags: &[&str]| {
        for f in flags {
            assert!(k.iter().any(|n| n.starts_with(&quad) && n.contains(f)), "{what}: no {quad} with `{f}` in {k:?}");
        }
    };

    // matmul and its backward: aligned (K = 64, N = 136) and not (K = 66).
    for (m, k, n) in [(130, 64, 136), (130, 66, 136)] {
        let (x, w, bias, dy) = (rand_t(&mut r, &[m, k], 1.0), rand_t(&mut r, &[n, k], 1.0), rand_t(&mut r, &[n], 1.0), rand_t(&mut r, &[m, n], 1.0));
        let what = format!("matmul {m}×{k}×{n}");
        let (ka, _) = both(&what, &|b| {
            let y = b.matmul(&up(b, &x), &up(b, &w), Some(&up(b, &bias))).unwrap();
            let dx = b.matmul_backward(&up(b, &dy), &up(b, &w)).unwrap();
            vec![get(b, &y), get(b, &dx)]
        });
        if k % 4 == 0 {
            vec4_ran(&what, &ka, &["", "w [K,N]"]);
        } else {
            // Both read rows of 66 (x [M, K] forward, w [K, N] backward): f32 loads.
            assert!(ka.iter().any(|n| n == plain), "{what}: {ka:?}");
        }
    }

    // matmul_blocks, w as [cols, k] and as [k, cols].
    use carve_core::backend::{BlockProduct, Blocks};
    for w_kn in [false, true] {
        let p = BlockProduct { n: 3, m: 140, k: 32, cols: 132, x: Blocks::Rows, x_first: 1, w: Blocks::Cols, w_kn, out: Blocks::Cols };
        let x = rand_t(&mut r, &[4 * 140, 32], 1.0);
        let w = if w_kn { rand_t(&mut r, &[32, 3 * 132], 1.0) } else { rand_t(&mut r, &[132, 3 * 32], 1.0) };
        let (ka, _) = both("matmul_blocks", &|b| vec![get(b, &b.matmul_blocks(&up(b, &x), &up(b, &w), None, &p).unwrap())]);
        vec4_ran("matmul_blocks", &ka, &[if w_kn { "w [K,N]" } else { "" }]);
    }

    // Attention forward and backward: 132 positions (every product aligned), 37 (none of the
    // position-long rows aligned), grouped-query heads.
    for seq in [132, 37] {
        let s = attn(2, seq, 4, 2, 16);
        let bt = s.batch * seq;
        let (q, k, v) = (rand_t(&mut r, &[bt, 64], 1.0), rand_t(&mut r, &[bt, 32], 1.0), rand_t(&mut r, &[bt, 32], 1.0));
        let dout = rand_t(&mut r, &[bt, 64], 1.0);
        let what = format!("attention at {seq} positions");
        let (ka, _) = both(&what, &|b| {
            let (q, k, v, dout) = (up(b, &q), up(b, &k), up(b, &v), up(b, &dout));
            let p = b.attn_scores(&q, &k, s).unwrap();
            let y = b.attn_apply(&p, &v, s).unwrap();
            let (dp, dv) = b.attn_apply_backward(&p, &v, &dout, s).unwrap();
            let (dq, dk) = b.attn_scores_backward(&q, &k, &p, &dp, s).unwrap();
            [p, y, dp, dv, dq, dk].iter().map(|t| get(b, t)).collect()
        });
        if seq % 4 == 0 {
            vec4_ran(&what, &ka, &["causal", "w [K,N]", "x [K,M], +="]);
        } else {
            // q·kᵀ reads rows of the head width (16): vec4; p·v reads rows of 37 probabilities.
            assert!(ka.iter().any(|n| n.starts_with(&format!("{plain} "))), "{what}: {ka:?}");
        }
    }
}
