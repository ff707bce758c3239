// The GEMMs' shared declarations (matmul.wgsl, matmul_128.wgsl, matmul_small_m.wgsl,
// matmul_coop.wgsl): the host prepends this file to each, and the operands' declarations after it
// (matmul_operands.wgsl, or matmul_stage_vec4.wgsl's vec4 arrays).
//
// Binding convention shared by every carve shader: @0 output (read_write), @1 params (uniform),
// @2.. read-only inputs in order. The host binds exact tensor sizes, so no arrayLength tricks.
//
// All offsets/strides are in f32 elements. Batched use (attention) picks, for z = b·H + h:
//   x base = x_off + b·x_sb + h·x_sh,  w base = w_off + b·w_sb + (h / G)·w_sh,
//   out base = o_off + b·o_sb + h·o_sh,  bias base = bias_off + h·bias_sh.  Plain matmul: H = G = 1,
//   one z.

struct Params {
    M: u32, N: u32, K: u32, H: u32,
    G: u32, has_bias: u32, bias_off: u32, bias_sh: u32,
    x_off: u32, x_rs: u32, x_sb: u32, x_sh: u32,
    w_off: u32, w_rs: u32, w_sb: u32, w_sh: u32,
    o_off: u32, o_rs: u32, o_sb: u32, o_sh: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

// w is stored [K, N] (element (n, k) at k·w_rs + n) instead of [N, K]: attention's p·V.
override W_KN: bool = false;
// x is stored [K, M] (element (m, k) at k·x_rs + m) instead of [M, K]: the transposed products
// of the attention backward (dk = dsᵀ·q, dv = pᵀ·dout).
override X_KM: bool = false;
// Add to what `out` holds instead of overwriting it: sums over the row-chunks of a split weight
// (matmul_backward) or over the query heads that share a kv head.
override ACCUMULATE: bool = false;
// Skip output tiles entirely above the diagonal (n0 > m0 + tile − 1): causal scores, whose upper
// triangle the callers overwrite with zeros anyway.
override CAUSAL_SKIP: bool = false;

// The bases of x, w and out for batch item z = b·H + h (the workgroup's z).
fn bases(z: u32) -> vec3<u32> {
    let b = z / p.H;
    let h = z % p.H;
    return vec3<u32>(p.x_off + b * p.x_sb + h * p.x_sh, p.w_off + b * p.w_sb + (h / p.G) * p.w_sh, p.o_off + b * p.o_sb + h * p.o_sh);
}

// Where product z's bias starts: bias_off, plus bias_sh per head (`matmul_blocks`' bias per block).
fn bias_base(z: u32) -> u32 {
    return p.bias_off + (z % p.H) * p.bias_sh;
}
