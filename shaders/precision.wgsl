// The matrix products' input precision (`--precision`, core/src/backend/precision.rs), prepended
// to the shaders that multiply matrices. INPUTS: 0 f32 (inputs as they are); 1 f16 and 2 bf16
// (mixed precision: each input element rounded to that format as it is read, the products summed
// in f32, as tensor cores compute). Rounding is to nearest, ties to even, written with integer
// operations so every adapter rounds alike and no shader-f16 feature is needed: f16 past 65504
// goes to ±∞, below 2⁻¹⁴ to a multiple of 2⁻²⁴ (its subnormals); bf16 keeps f32's range.
override INPUTS: u32 = 0u;

fn rnd(v: f32) -> f32 {
    if (INPUTS == 0u) { return v; }
    let b = bitcast<u32>(v);
    if (INPUTS == 2u) {
        return bitcast<f32>((b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u);
    }
    if (abs(v) < 6.103515625e-05) {
        // round() is ties-to-even; v·2²⁴ < 2¹⁰ is exact.
        return round(v * 16777216.0) * 5.9604644775390625e-08;
    }
    let r = bitcast<f32>((b + 0xfffu + ((b >> 13u) & 1u)) & 0xffffe000u);
    if (abs(r) > 65504.0) { return bitcast<f32>((b & 0x80000000u) | 0x7f800000u); }
    return r;
}

fn rnd4(v: vec4<f32>) -> vec4<f32> {
    if (INPUTS == 0u) { return v; }
    return vec4<f32>(rnd(v.x), rnd(v.y), rnd(v.z), rnd(v.w));
}
