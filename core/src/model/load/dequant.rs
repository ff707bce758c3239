//! GGML tensor types and their dequantization to f32 (F32, F16, BF16, Q8_0, Q4_0, Q4_1).
//!
//! Block layouts follow ggml (`ggml-common.h`): every quantized block holds 32 values and starts with
//! an f16 scale `d` (Q4_1 adds an f16 minimum `m`). Work is split over blocks with rayon: a 135M
//! model is 4 M blocks, and the scalar loop is the whole cost of loading a GGUF.

use half::{bf16, f16};
use rayon::prelude::*;

/// A ggml tensor type id as stored in GGUF tensor infos.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const BF16: GgmlType = GgmlType(30);

    /// The ggml name, so that an unsupported type is named the way llama.cpp users know it.
    pub fn name(self) -> String {
        #[rustfmt::skip]
        const NAMES: [&str; 40] = [
            "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K",
            "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
            "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16", "Q4_0_4_4", "Q4_0_4_8",
            "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4",
        ];
        match NAMES.get(self.0 as usize) {
            Some(n) => (*n).to_string(),
            None => format!("type {}", self.0),
        }
    }

    /// (values per block, bytes per block) for the types we can dequantize; None otherwise.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::BF16 => Some((1, 2)),
            GgmlType::Q8_0 => Some((32, 34)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            _ => None,
        }
    }

    /// Bytes that `n` values of this type take, or None if the type is unsupported or `n` is not a
    /// whole number of blocks (or the size overflows).
    pub fn byte_size(self, n: usize) -> Option<usize> {
        let (per_block, bytes) = self.block_layout()?;
        if !n.is_multiple_of(per_block) {
            return None;
        }
        (n / per_block).checked_mul(bytes)
    }
}

/// Dequantizes `bytes` (whole blocks of `ty`) into f32; None for a type we cannot read.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    let f4 = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    Some(match ty {
        GgmlType::F32 => run::<1, 4>(bytes, |b, o| o[0] = f32::from_le_bytes(f4(b))),
        GgmlType::F16 => run::<1, 2>(bytes, |b, o| o[0] = f16::from_le_bytes([b[0], b[1]]).to_f32()),
        GgmlType::BF16 => run::<1, 2>(bytes, |b, o| o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        GgmlType::Q8_0 => run::<32, 34>(bytes, block_q8_0),
        GgmlType::Q4_0 => run::<32, 18>(bytes, block_q4_0),
        GgmlType::Q4_1 => run::<32, 20>(bytes, block_q4_1),
        _ => return None,
    })
}

/// Applies `f` to each block of `B` bytes holding `N` values, in parallel. Generic so that `f` is
/// inlined into the loop (an indirect call per F16 value would cost as much as the conversion).
fn run<const N: usize, const B: usize>(bytes: &[u8], f: impl Fn(&[u8], &mut [f32]) + Sync) -> Vec<f32> {
    assert_eq!(bytes.len() % B, 0, "data is not whole blocks of {B} bytes");
    let mut out = vec![0f32; bytes.len() / B * N];
    // Many blocks per rayon task keep the scheduling cost negligible.
    let per_task = (16384 / N).max(1);
    out.par_chunks_mut(N * per_task).zip(bytes.par_chunks(B * per_task)).for_each(|(o, b)| {
        for (ob, bb) in o.chunks_exact_mut(N).zip(b.chunks_exact(B)) {
            f(bb, ob);
        }
    });
    out
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q8_0: f16 d, 32 × i8 q; x = d·q.
pub fn block_q8_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = d * (q as i8) as f32;
    }
}

/// Q4_0: f16 d, 16 bytes; low nibbles are values 0..16, high nibbles 16..32; x = d·(q − 8).
pub fn block_q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        out[j] = d * ((q & 0x0F) as i32 - 8) as f32;
        out[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
    }
}

/// Q4_1: f16 d, f16 m, 16 bytes; x = d·q + m with the same nibble order as Q4_0.
pub fn block_q4_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        out[j] = d * (q & 0x0F) as f32 + m;
        out[j + 16] = d * (q >> 4) as f32 + m;
    }
}
