//! What lets the compiler vectorize the CPU backend's elementwise and row loops: `exp` and `tanh`
//! without a library call (a call per element keeps a loop scalar), sums and dot products over
//! lanes (a plain f32 sum adds in order and stays scalar), and `simd`, which runs a loop compiled
//! for AVX2 and FMA where the CPU has them (256-bit registers; the build's baseline is SSE2's 128).
//! `dot` is the inner product where a GEMM does not pay (one row against one row: attention
//! scores, the gates' gradients).

/// eˣ in f32, within 1 ulp of the exact value over the whole range (checked against f64 in the
/// tests): x = n·ln 2 + r with |r| ≤ ln 2 / 2, eʳ by Cephes' degree-6 polynomial, then 2ⁿ applied
/// as two exponent-field factors so that results down to the subnormals and up to the overflow
/// round once. exp(−∞) = 0, exp(+∞) = +∞ (so does every x past ln f32::MAX), NaN stays NaN.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two: n·LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding it rounds to the nearest integer, which lands in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // Past these every result is 0 or +∞; the clamp keeps the exponent arithmetic in range.
    let xc = if x < -104.0 {
        -104.0
    } else if x > 88.75 {
        88.75
    } else {
        x
    };
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 0.166_666_65) * r
        + 0.500_000_01;
    let er = p * r * r + r + 1.0;
    let ni = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let (n1, n2) = (ni >> 1, ni - (ni >> 1));
    let s1 = f32::from_bits(((n1 + 127) << 23) as u32);
    let s2 = f32::from_bits(((n2 + 127) << 23) as u32);
    let y = er * s1 * s2;
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// tanh y = 1 − 2 / (e²ʸ + 1), through `exp`: within 2e-7 of the exact value (absolute), ±1 at
/// ±∞, NaN for NaN.
#[inline(always)]
pub(super) fn tanh(y: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * y) + 1.0)
}

/// Σ x over 16 lanes, then the rest (vectorizes; a plain f32 sum must add in order and does not).
#[inline(always)]
pub(super) fn sum(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let c = x.chunks_exact(16);
    let tail: f32 = c.remainder().iter().sum();
    for v in c {
        for l in 0..16 {
            lanes[l] += v[l];
        }
    }
    hsum(lanes) + tail
}

/// The sum of a block of lanes, halving it pair by pair (lane i + lane i + N/2, ...) so that each
/// step is one vector add; adding the lanes in order would be N − 1 dependent scalar adds, which
/// for a row of 64 costs more than its products.
#[inline(always)]
pub(super) fn hsum<const N: usize>(mut lanes: [f32; N]) -> f32 {
    let mut n = N;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            lanes[i] += lanes[i + n];
        }
    }
    lanes[0]
}

/// Σ a_i·b_i·c_i over 16 lanes, then the rest.
#[inline(always)]
pub(super) fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let (ca, cb, cc) = (a.chunks_exact(16), b.chunks_exact(16), c.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).zip(cc.remainder()).map(|((x, y), z)| x * y * z).sum();
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for l in 0..16 {
            lanes[l] += x[l] * y[l] * z[l];
        }
    }
    hsum(lanes) + tail
}

/// Σ a_i·b_i over 16 lanes (which the compiler keeps in vector registers), then the rest; on an
/// x86-64 CPU with AVX2 and FMA, the same sum with fused multiply-adds in 256-bit registers.
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has both features, checked just above.
        return unsafe { dot_avx2(a, b) };
    }
    dot_lanes(a, b)
}

/// `dot_lanes` with `mul_add`, one instruction here (and a slow library call where FMA is off).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 32];
    let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..32 {
            lanes[l] = x[l].mul_add(y[l], lanes[l]);
        }
    }
    hsum(lanes) + tail
}

fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            lanes[l] += x[l] * y[l];
        }
    }
    hsum(lanes) + tail
}

/// Runs `f`, compiled for AVX2 and FMA on an x86-64 CPU that has them: the loops inlined into it
/// then use 256-bit registers. Call it inside each parallel task, around the loop.
#[inline(always)]
pub(super) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has both features, checked just above.
        return unsafe { simd_avx2(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn simd_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f32 in [−104, 89] at a stride of 61 bit patterns (about 35 million values), against
    /// f64's exp rounded to f32: at most 1 ulp apart where the result is normal, and at most one
    /// step of the smallest subnormal below that.
    #[test]
    fn exp_is_within_one_ulp() {
        let ulp = |v: f32| f32::from_bits(v.to_bits() + 1) - v;
        let mut worst = 0.0f64;
        for bits in (0u32..0x8000_0000).step_by(61).flat_map(|b| [b, b | 0x8000_0000]) {
            let x = f32::from_bits(bits);
            if !(-104.0..=89.0).contains(&x) {
                continue;
            }
            let want = (x as f64).exp() as f32;
            let got = exp(x);
            if want.is_infinite() {
                assert_eq!(got, f32::INFINITY, "exp({x})");
            } else if want >= f32::MIN_POSITIVE {
                let e = (got - want).abs() / ulp(want);
                worst = worst.max(e as f64);
                assert!(e <= 1.0, "exp({x}) = {got}, want {want}: {e} ulp");
            } else {
                assert!((got - want).abs() <= f32::from_bits(1), "exp({x}) = {got:e}, want {want:e}");
            }
        }
        assert!(worst > 0.0, "no value compared");
    }

    #[test]
    fn exp_and_tanh_at_the_edges() {
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1e30), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(88.73), f32::INFINITY);
        assert_eq!(exp(1e30), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
        let big = (88.72f32 as f64).exp();
        assert!((exp(88.72) as f64 - big).abs() <= 1.2e-7 * big, "exp(88.72) = {}", exp(88.72));
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert!(tanh(f32::NAN).is_nan());
        for i in -4000..=4000 {
            let y = i as f32 / 500.0;
            assert!((tanh(y) as f64 - (y as f64).tanh()).abs() <= 2e-7, "tanh({y})");
        }
    }

    #[test]
    fn sums_add_every_element() {
        for n in [0usize, 1, 15, 16, 17, 100, 1000] {
            let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 2.5).collect();
            let y: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.25 - 0.5).collect();
            let z: Vec<f32> = (0..n).map(|i| (i % 3) as f32 + 0.5).collect();
            let want: f64 = x.iter().map(|&v| v as f64).sum();
            assert!((sum(&x) as f64 - want).abs() <= 1e-4, "sum, n {n}");
            let want: f64 = (0..n).map(|i| x[i] as f64 * y[i] as f64 * z[i] as f64).sum();
            assert!((dot3(&x, &y, &z) as f64 - want).abs() <= 1e-4, "dot3, n {n}");
        }
    }

    /// The same values through `simd` (AVX2 where the CPU has it) and without.
    #[test]
    fn simd_gives_the_same_values() {
        let x: Vec<f32> = (0..4099).map(|i| (i as f32 - 2000.0) / 37.0).collect();
        let plain: Vec<f32> = x.iter().map(|&v| exp(v) * tanh(v)).collect();
        let fast = simd(|| x.iter().map(|&v| exp(v) * tanh(v)).collect::<Vec<f32>>());
        assert_eq!(plain, fast);
    }
}
