//! `--precision`: what the inputs of every matrix product are rounded to before their products are
//! summed in f32. `Mixed` (f16) and `MixedBf16` give the numerics of tensor-core GEMMs (f16 or bf16
//! inputs, f32 accumulation): `matmul`, `matmul_backward` and the products inside attention (q·k,
//! p·v and their backward products, the softmax's gradient included) round each input element as
//! they read it. Everything else — norms, activations, softmax, the residual stream, gated sums,
//! the loss — stays f32, as in a mixed-precision run on a GPU.
//!
//! Both backends round the same elements the same way (round to nearest, ties to even; past the
//! f16 range to ±∞, below it to f16's subnormals), so a mixed run's decisions can be checked on the
//! CPU as on a GPU. Neither is faster for it yet: the speed of f16 inputs needs the GPU's matrix
//! units (cooperative matrices), which the plain WGSL kernels do not use.

use half::{bf16, f16};

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
            Precision::Mixed => f16::from_f32(x).to_f32(),
            Precision::MixedBf16 => bf16::from_f32(x).to_f32(),
        }
    }

    /// Every element of `xs` rounded (a copy).
    pub fn round_all(self, xs: &[f32]) -> Vec<f32> {
        xs.iter().map(|&x| self.round(x)).collect()
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
