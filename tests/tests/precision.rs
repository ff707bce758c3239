//! `--precision mixed` / `mixed-bf16` on both backends: a mixed backend's matrix products equal
//! the f32 backend's on inputs rounded on the host (`Precision::round`, the `half` crate's
//! conversions), bit for bit where the rounding is only of inputs; products that also round an
//! intermediate (the fused attention's probabilities, the softmax gradient) within the format's
//! precision of the f32 result, and measurably apart from it. Seeds print and replay with
//! CARVE_SEED, as in ops.rs.

use carve_core::backend::cpu::CpuBackend;
use carve_core::backend::wgpu::{WgpuBackend, WgpuOptions};
use carve_core::backend::{AttnShape, Backend, Precision};
use carve_core::HostTensor;
use carve_tests::op_check::*;
use rand::rngs::StdRng;
use rand::Rng;

const MIXED: [Precision; 2] = [Precision::Mixed, Precision::MixedBf16];

fn rounded(p: Precision, t: &HostTensor) -> HostTensor {
    HostTensor::new(t.shape.clone(), p.round_all(&t.data))
}

fn same(what: &str, got: &HostTensor, want: &HostTensor) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let differ = |a: f32, b: f32| a != b && !(a.is_nan() && b.is_nan()); // +0 and −0 alike
    if let Some(i) = (0..got.data.len()).find(|&i| differ(got.data[i], want.data[i])) {
        panic!("{what}: element {i} is {} where the f32 op on rounded inputs gives {}", got.data[i], want.data[i]);
    }
}

/// max |a − b| / max(1, max |b|).
fn rel(a: &HostTensor, b: &HostTensor) -> f64 {
    let scale = b.data.iter().fold(1.0f64, |m, v| m.max(v.abs() as f64));
    a.data.iter().zip(&b.data).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max) / scale
}

/// Values at the formats' edges: halfway cases, f16's subnormals and its overflow, and random
/// values over many magnitudes. (No f32 subnormals: GPUs may flush them.)
fn edge_values(r: &mut StdRng, n: usize) -> Vec<f32> {
    let mut v = vec![
        1.0 + 3.0 / 2048.0, 1.0 + 1.0 / 2048.0, -(1.0 + 3.0 / 2048.0), 1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0,
        65504.0, 65519.0, 65520.0, -70000.0, 1e-8, 3e-8, 2.5 * 2f32.powi(-24), 6.0e-5, 6.2e-5, 0.0, -0.0, 3.0e38,
        0.1, -2.7182817,
    ];
    while v.len() < n {
        let e = r.random_range(-30..20);
        v.push(r.random_range(-1.0f32..1.0) * 2f32.powi(e));
    }
    v.truncate(n);
    v
}

/// The products read each input as `Precision::round` makes it: x [M, 1] times w [1, 1] = 1 is x
/// rounded, w [N, 1] times x = 1 is w rounded, through the tiled GEMM (M = 300) and the few-rows
/// kernel (M = 5); attention over one position returns v rounded.
fn t_inputs_round_like_the_host<B: Backend>(b: &B, p: Precision, r: &mut StdRng) {
    for m in [300, 5] {
        let x = HostTensor::new(vec![m, 1], edge_values(r, m));
        let one = HostTensor::new(vec![1, 1], vec![1.0]);
        let got = get(b, &b.matmul(&up(b, &x), &up(b, &one), None).unwrap());
        same(&format!("{p:?} matmul x [{m}, 1]"), &got, &rounded(p, &x));
        let w = HostTensor::new(vec![m, 1], edge_values(r, m));
        let got = get(b, &b.matmul(&up(b, &one), &up(b, &w), None).unwrap());
        same(&format!("{p:?} matmul w [{m}, 1]"), &got, &HostTensor::new(vec![1, m], p.round_all(&w.data)));
    }
    let s = AttnShape { batch: 3, seq: 1, n_heads: 2, n_kv_heads: 1, head_dim: 8, scale: 0.5 };
    let q = rand_t(r, &[3, 16], 1.0);
    let k = rand_t(r, &[3, 8], 1.0);
    let v = HostTensor::new(vec![3, 8], edge_values(r, 24).iter().map(|x| x.clamp(-6e4, 6e4)).collect());
    let got = get(b, &b.attention(&up(b, &q), &up(b, &k), &up(b, &v), s).unwrap());
    let want: Vec<f32> = (0..3).flat_map(|i| [&v.data[i * 8..i * 8 + 8], &v.data[i * 8..i * 8 + 8]].concat()).collect();
    same(&format!("{p:?} attention over one position"), &got, &HostTensor::new(vec![3, 16], p.round_all(&want)));
}

/// `mixed` on X ≡ `plain` (f32) on X rounded, exactly (±0 alike): matmul (tiled and few rows, with bias:
/// the bias is not a product input), matmul_backward, attn_scores, attn_apply, attn_apply_backward.
fn t_products_equal_f32_on_rounded_inputs<B: Backend>(mixed: &B, plain: &B, p: Precision, r: &mut StdRng) {
    let up2 = |t: &HostTensor| (up(mixed, t), up(plain, &rounded(p, t)));
    for (m, k, n) in [(37, 83, 129), (5, 300, 70), (300, 577, 260)] {
        let (x, w, bias) = (rand_t(r, &[m, k], 3.0), rand_t(r, &[n, k], 1.0), rand_t(r, &[n], 1.0));
        let ((xm, xp), (wm, wp)) = (up2(&x), up2(&w));
        let got = get(mixed, &mixed.matmul(&xm, &wm, Some(&up(mixed, &bias))).unwrap());
        let want = get(plain, &plain.matmul(&xp, &wp, Some(&up(plain, &bias))).unwrap());
        same(&format!("{p:?} matmul {m}x{k}x{n}"), &got, &want);
        let f32_out = get(plain, &plain.matmul(&up(plain, &x), &up(plain, &w), Some(&up(plain, &bias))).unwrap());
        let e = rel(&got, &f32_out);
        assert!(e > 1e-6, "{p:?} matmul {m}x{k}x{n}: the mixed product equals the f32 one (rel. {e:e}): nothing was rounded");
        let dy = rand_t(r, &[m, n], 1.0);
        let (dym, dyp) = up2(&dy);
        let got = get(mixed, &mixed.matmul_backward(&dym, &wm).unwrap());
        same(&format!("{p:?} matmul_backward {m}x{k}x{n}"), &got, &get(plain, &plain.matmul_backward(&dyp, &wp).unwrap()));
        // w as a weight on both (the CPU's products then read a transpose it rounded once).
        let (ww, wwp) = (mixed.upload_weight(&w).unwrap(), plain.upload_weight(&rounded(p, &w)).unwrap());
        let got = get(mixed, &mixed.matmul(&xm, &ww, Some(&up(mixed, &bias))).unwrap());
        same(&format!("{p:?} matmul {m}x{k}x{n}, w a weight"), &got, &get(plain, &plain.matmul(&xp, &wwp, Some(&up(plain, &bias))).unwrap()));
        let got = get(mixed, &mixed.matmul_backward(&dym, &ww).unwrap());
        same(&format!("{p:?} matmul_backward {m}x{k}x{n}, w a weight"), &got, &get(plain, &plain.matmul_backward(&dyp, &wwp).unwrap()));
    }
    for s in [AttnShape { batch: 2, seq: 37, n_heads: 4, n_kv_heads: 2, head_dim: 16, scale: 0.25 },
        AttnShape { batch: 1, seq: 70, n_heads: 3, n_kv_heads: 3, head_dim: 64, scale: 0.125 }] {
        let bt = s.batch * s.seq;
        let q = rand_t(r, &[bt, s.n_heads * s.head_dim], 2.0);
        let k = rand_t(r, &[bt, s.n_kv_heads * s.head_dim], 2.0);
        let v = rand_t(r, &[bt, s.n_kv_heads * s.head_dim], 1.0);
        let ((qm, qp), (km, kp), (vm, vp)) = (up2(&q), up2(&k), up2(&v));
        let pm = mixed.attn_scores(&qm, &km, s).unwrap();
        let pp = plain.attn_scores(&qp, &kp, s).unwrap();
        let probs = get(mixed, &pm);
        same(&format!("{p:?} attn_scores {s:?}"), &probs, &get(plain, &pp));
        let (prm, prp) = up2(&probs);
        let got = get(mixed, &mixed.attn_apply(&prm, &vm, s).unwrap());
        same(&format!("{p:?} attn_apply {s:?}"), &got, &get(plain, &plain.attn_apply(&prp, &vp, s).unwrap()));
        let dout = rand_t(r, &[bt, s.n_heads * s.head_dim], 1.0);
        let (dom, dop) = up2(&dout);
        let (gm, gv) = mixed.attn_apply_backward(&prm, &vm, &dom, s).unwrap();
        let (wp_, wv) = plain.attn_apply_backward(&prp, &vp, &dop, s).unwrap();
        same(&format!("{p:?} attn_apply_backward dprobs {s:?}"), &get(mixed, &gm), &get(plain, &wp_));
        same(&format!("{p:?} attn_apply_backward dv {s:?}"), &get(mixed, &gv), &get(plain, &wv));
    }
}

/// Products that also round an intermediate: the fused attention (its probabilities) and
/// attn_scores_backward (the softmax's gradient) against the f32 op on rounded inputs: within the
/// format's relative precision (2⁻¹¹ for f16, 2⁻⁸ for bf16, times a few), and not equal to the
/// f32 op on the raw inputs.
fn t_intermediates_round<B: Backend>(mixed: &B, plain: &B, p: Precision, r: &mut StdRng) {
    let tol = match p {
        Precision::MixedBf16 => 4.0 / 256.0,
        _ => 4.0 / 2048.0,
    };
    let s = AttnShape { batch: 2, seq: 40, n_heads: 4, n_kv_heads: 2, head_dim: 16, scale: 0.25 };
    let bt = s.batch * s.seq;
    let q = rand_t(r, &[bt, 64], 2.0);
    let k = rand_t(r, &[bt, 32], 2.0);
    let v = rand_t(r, &[bt, 32], 1.0);
    let got = get(mixed, &mixed.attention(&up(mixed, &q), &up(mixed, &k), &up(mixed, &v), s).unwrap());
    let (qr, kr, vr) = (rounded(p, &q), rounded(p, &k), rounded(p, &v));
    let want = get(plain, &plain.attention(&up(plain, &qr), &up(plain, &kr), &up(plain, &vr), s).unwrap());
    let raw = get(plain, &plain.attention(&up(plain, &q), &up(plain, &k), &up(plain, &v), s).unwrap());
    let e = rel(&got, &want);
    assert!(e <= tol, "{p:?} attention: {e:e} from the f32 attention on rounded inputs (tolerance {tol:e})");
    assert!(rel(&got, &raw) > 1e-6, "{p:?} attention equals the f32 attention: nothing was rounded");

    let probs = get(plain, &plain.attn_scores(&up(plain, &qr), &up(plain, &kr), s).unwrap());
    let dp = rand_t(r, &probs.shape, 1.0);
    let (dq, dk) = mixed.attn_scores_backward(&up(mixed, &q), &up(mixed, &k), &up(mixed, &probs), &up(mixed, &dp), s).unwrap();
    let (wq, wk) = plain.attn_scores_backward(&up(plain, &qr), &up(plain, &kr), &up(plain, &probs), &up(plain, &dp), s).unwrap();
    let (fq, _) = plain.attn_scores_backward(&up(plain, &q), &up(plain, &k), &up(plain, &probs), &up(plain, &dp), s).unwrap();
    for (what, g, w) in [("dq", &dq, &wq), ("dk", &dk, &wk)] {
        let e = rel(&get(mixed, g), &get(plain, w));
        assert!(e <= tol, "{p:?} attn_scores_backward {what}: {e:e} from the f32 op on rounded inputs (tolerance {tol:e})");
    }
    assert!(rel(&get(mixed, &dq), &get(plain, &fq)) > 1e-6, "{p:?} attn_scores_backward: nothing was rounded");
}

/// The fused attention rounds each probability as p·v reads it: at two positions with v₀ = e₀ and
/// v₁ = 0, out₁[0] = round(p₀) / (p₀ + 1), p₀ = exp(s₀ − s₁), s₁ = 0 the larger score. (Its
/// probabilities are the running softmax's, exp(s − max), not yet divided by their sum: the
/// two-op path's are, so this check is the fused kernel's alone.)
fn t_fused_rounds_probabilities(b: &WgpuBackend, p: Precision) {
    let s = AttnShape { batch: 1, seq: 2, n_heads: 1, n_kv_heads: 1, head_dim: 4, scale: 0.5 };
    for k0 in [-0.2f32, -1.3, -3.7] {
        let q = HostTensor::new(vec![2, 4], vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
        let k = HostTensor::new(vec![2, 4], vec![k0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let v = HostTensor::new(vec![2, 4], vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let got = get(b, &b.attention(&up(b, &q), &up(b, &k), &up(b, &v), s).unwrap()).data[4] as f64;
        let p0 = ((0.5 * p.round(k0)) as f64).exp();
        let want = p.round(p0 as f32) as f64 / (p0 + 1.0);
        let unrounded = p0 / (p0 + 1.0);
        assert!((want - unrounded).abs() > 1e-5, "k0 {k0}: a case where rounding shows");
        assert!((got - want).abs() <= 1e-6, "{p:?} fused attention, k0 {k0}: {got} where rounding p₀ gives {want} (unrounded {unrounded})");
    }
}

fn wgpu_with(precision: Precision, gemm_tile: Option<usize>) -> WgpuBackend {
    let b = new_wgpu(WgpuOptions { precision, gemm_tile, ..WgpuOptions::default() });
    b.set_poison(true);
    b
}

#[test]
fn cpu_mixed_precision() {
    let plain = CpuBackend::new();
    plain.set_poison(true);
    for p in MIXED {
        let b = CpuBackend::with_precision(p);
        b.set_poison(true);
        assert_eq!(b.precision(), p);
        assert!(b.describe().contains("mixed precision"), "{}", b.describe());
        let r = &mut rng(&format!("cpu {p:?}"));
        t_inputs_round_like_the_host(&b, p, r);
        t_products_equal_f32_on_rounded_inputs(&b, &plain, p, r);
        t_intermediates_round(&b, &plain, p, r);
    }
}

/// Every GEMM on 64×64 tiles, then on 128×128 tiles (each against the f32 backend of its tile).
#[test]
fn wgpu_mixed_precision() {
    for tile in [64, 128] {
        let plain = wgpu_with(Precision::F32, Some(tile));
        for p in MIXED {
            let b = wgpu_with(p, Some(tile));
            assert_eq!(b.precision(), p);
            assert!(b.describe().contains("mixed precision"), "{}", b.describe());
            let r = &mut rng(&format!("wgpu {p:?} tile {tile}"));
            t_inputs_round_like_the_host(&b, p, r);
            t_products_equal_f32_on_rounded_inputs(&b, &plain, p, r);
            t_intermediates_round(&b, &plain, p, r);
            t_fused_rounds_probabilities(&b, p);
        }
    }
}

/// Where the cooperative-matrix GEMM cannot run (any adapter here), mixed precision says so and
/// runs on the plain kernels; where its check fails (forced here on an adapter without the
/// feature, so the kernel cannot even compile), it is not used and the products still come out
/// right. The kernel itself is validated and compiled to SPIR-V by a unit test in core.
#[test]
fn wgpu_cooperative_matrices_fall_back_to_the_plain_kernels() {
    let plain = wgpu_with(Precision::Mixed, Some(64));
    let b = wgpu_with(Precision::Mixed, None);
    assert!(b.describe().contains("plain kernels"), "{}", b.describe());
    assert!(!b.uses_cooperative_matrices());
    let forced = new_wgpu(WgpuOptions { precision: Precision::Mixed, check_cooperative_matrices_anyway: true, ..WgpuOptions::default() });
    assert!(!forced.uses_cooperative_matrices());
    assert!(forced.describe().contains("failed its check"), "{}", forced.describe());
    let r = &mut rng("cooperative fallback");
    let (x, w) = (rand_t(r, &[130, 70], 1.0), rand_t(r, &[90, 70], 1.0));
    for be in [&b, &forced] {
        let got = get(be, &be.matmul(&up(be, &x), &up(be, &w), None).unwrap());
        same("mixed matmul after the fallback", &got, &get(&plain, &plain.matmul(&up(&plain, &x), &up(&plain, &w), None).unwrap()));
    }
    // The check itself, both sides on the plain kernel (the tile fixed): its products run and agree.
    let mut plain64 = new_wgpu(WgpuOptions { precision: Precision::Mixed, gemm_tile: Some(64), ..WgpuOptions::default() });
    assert_eq!(pollster::block_on(plain64.run_cooperative_matrix_check()), Ok(()));
    // f32 says nothing of them.
    assert!(!gpu().describe().contains("kernels"), "{}", gpu().describe());
}
