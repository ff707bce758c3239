//! `--precision`: what the inputs of every matrix product are rounded to before their products are
//! summed in f32. `Mixed` (f16) and `MixedBf16` give the numerics of tensor-core GEMMs (f16 or bf16
//! inputs, f32 accumulation): `matmul`, `matmul_backward` and the products inside attention (q·k,
//! p·v and their backward products, the softmax's gradient included) round each input element as
//! they read it. Everything else — norms, activations, softmax, the residual stream, gated sums,
//! the loss — stays f32, as in a mixed-precision run on a GPU.
//!
//! Both backends round the same elements the same way (round to nearest, ties to even; past the
//! f16 range to ±∞, below it to f16's subnormals; tested equal to the `half` crate's conversions
//! for every finite f32 class), so a mixed run's decisions can be checked on the
//! CPU as on a GPU. Neither is faster for it yet: the speed of f16 inputs needs the GPU's matrix
//! units (cooperative matrices), which the plain WGSL kernels do not use.

/// f32 to the nearest f16 (ties to even) and back, with integer operations the compiler
/// vectorises: the same steps as shaders/precision.wgsl's `rnd`. Past 65504 (after rounding) ±∞;
/// below 2⁻¹⁴ a multiple of 2⁻²⁴, f16's subnormals.
#[inline]
fn to_f16(x: f32) -> f32 {
    let b = x.to_bits();
    let r = f32::from_bits(b.wrapping_add(0xfff + ((b >> 13) & 1)) & 0xffff_e000);
    let normal = if r.abs() > 65504.0 { f32::from_bits((b & 0x8000_0000) | 0x7f80_0000) } else { r };
    // x·2²⁴ < 2¹⁰ rounded to an integer, ties to even, by the add-and-subtract of 1.5·2²³ (f32
    // sums round to nearest even); the sign kept for a result of 0, as f16's −0.
    let tiny = ((x * 16777216.0 + 12582912.0) - 12582912.0).copysign(x) * 5.9604645e-08;
    if x.abs() < 1.0 / 16384.0 {
        tiny
    } else {
        normal
    }
}

/// f32 to the nearest bf16 (ties to even) and back: shaders/precision.wgsl's `rnd` for bf16.
#[inline]
fn to_bf16(x: f32) -> f32 {
    let b = x.to_bits();
    f32::from_bits(b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 inputs (the default).
    #[default]
    F32,
    /// Inputs rounded to f16, products summed in f32.
    Mixed,
    /// Inputs rounded to bf16, products summed in f32.
    MixedBf16,
}

impl Precision {
    /// `x` as the matrix units would read it.
    #[inline]
    pub fn round(self, x: f32) -> f32 {
        match self {
            Precision::F32 => x,
            Precision::Mixed => to_f16(x),
            Precision::MixedBf16 => to_bf16(x),
        }
    }

    /// Every element of `xs` rounded (a copy).
    pub fn round_all(self, xs: &[f32]) -> Vec<f32> {
        match self {
            Precision::F32 => xs.to_vec(),
            Precision::Mixed => xs.iter().map(|&x| to_f16(x)).collect(),
            Precision::MixedBf16 => xs.iter().map(|&x| to_bf16(x)).collect(),
        }
    }

    /// The name `--precision` takes and reports give: `f32`, `mixed`, `mixed-bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Mixed => "mixed",
            Precision::MixedBf16 => "mixed-bf16",
        }
    }

    /// What it means, for `describe()`: empty for f32.
    pub fn note(self) -> &'static str {
        match self {
            Precision::F32 => "",
            Precision::Mixed => ", mixed precision (f16 matmul inputs, f32 sums)",
            Precision::MixedBf16 => ", mixed precision (bf16 matmul inputs, f32 sums)",
        }
    }

    /// The shaders' `INPUTS` pipeline constant (shaders/precision.wgsl).
    pub fn shader_code(self) -> u32 {
        match self {
            Precision::F32 => 0,
            Precision::Mixed => 1,
            Precision::MixedBf16 => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Precision;
    use half::{bf16, f16};

    /// The integer rounding against `half` on random bit patterns of every exponent (NaNs aside:
    /// any NaN is as good as another) and the values around f16's boundaries.
    #[test]
    fn rounding_equals_the_half_crates() {
        let mut s = 0x9e3779b97f4a7c15u64;
        let mut xs: Vec<f32> = (0..2_000_000)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                f32::from_bits(s as u32)
            })
            .collect();
        for e in [-25i32, -24, -15, -14, -13, 15, 16] {
            for k in -40..40 {
                xs.push(2f32.powi(e) * (1.0 + k as f32 / 1024.0));
                xs.push(-(2f32.powi(e) * (1.0 + k as f32 / 2048.0)));
            }
        }
        xs.extend([65504.0, 65519.99, 65520.0, 65535.0, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, 0.0, -0.0]);
        for x in xs.into_iter().filter(|x| !x.is_nan()) {
            let (h, b) = (f16::from_f32(x).to_f32(), bf16::from_f32(x).to_f32());
            assert_eq!(Precision::Mixed.round(x).to_bits(), h.to_bits(), "f16 of {x:e} ({:#x})", x.to_bits());
            assert_eq!(Precision::MixedBf16.round(x).to_bits(), b.to_bits(), "bf16 of {x:e} ({:#x})", x.to_bits());
        }
    }

    #[test]
    fn rounding_is_to_nearest_even_with_the_formats_ranges() {
        let m = Precision::Mixed;
        assert_eq!(m.round(1.0 + 1.0 / 4096.0), 1.0); // below half an f16 ulp (2⁻¹⁰)
        assert_eq!(m.round(1.0 + 3.0 / 2048.0), 1.0 + 2.0 / 1024.0); // tie → even
        assert_eq!(m.round(70000.0), f32::INFINITY); // past f16's 65504
        assert_eq!(m.round(-65504.0), -65504.0);
        assert_eq!(m.round(1e-8), 0.0); // under half the smallest subnormal (2⁻²⁴)
        assert_eq!(m.round(3.0 * 2f32.powi(-24)), 3.0 * 2f32.powi(-24)); // a subnormal, exact
        let b = Precision::MixedBf16;
        assert_eq!(b.round(1.0 + 1.0 / 256.0), 1.0); // tie → even at bf16's 2⁻⁷ ulp
        let r = b.round(1e30); // bf16 keeps f32's range
        assert!(r.is_finite() && (r / 1e30 - 1.0).abs() < 1.0 / 256.0);
        assert_eq!(Precision::F32.round(1.0 + f32::EPSILON), 1.0 + f32::EPSILON);
    }
}
