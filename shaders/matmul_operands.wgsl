// The products' operands x (@2) and w (@3) as arrays of f32, and w's reader: prepended after
// matmul_params.wgsl to matmul.wgsl and matmul_128.wgsl (with matmul_stage.wgsl),
// matmul_small_m.wgsl and matmul_coop.wgsl. matmul_stage_vec4.wgsl declares them as arrays of vec4
// instead.

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;

// w(n, k) as the product reads it (rounded: precision.wgsl), 0 outside the product.
fn load_w(wb: u32, n: u32, k: u32) -> f32 {
    if (n >= p.N || k >= p.K) { return 0.0; }
    if (W_KN) { return rnd(w[wb + k * p.w_rs + n]); }
    return rnd(w[wb + n * p.w_rs + k]);
}
