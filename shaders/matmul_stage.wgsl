// The tiled GEMMs' staging with an f32 load per element, for any layout, offsets and strides: a
// thread reads 4 elements of each TM×TK slice of x and of w (`fetch_x`, `fetch_w`) and stores them
// into one buffer of the workgroup tiles (`stage_x`, `stage_w`). The host prepends it (after
// matmul_operands.wgsl) to matmul.wgsl (64×16 slices) and matmul_128.wgsl (128×8), which declare
// TM (= TN), TK, `tiles` and W_TILES; a slice is TM·TK = 1024 elements, 4 per thread of 256.

// Element e (0..3) a thread stages of a slice: (row or column within the tile, depth). k fastest
// for [*, K] operands, the row fastest for [K, *] ones, so that neighbouring threads read
// neighbouring addresses.
fn slot_k_fast(li: u32, e: u32) -> vec2<u32> {
    let idx = li + e * 256u;
    return vec2<u32>(idx / TK, idx % TK);
}
fn slot_row_fast(li: u32, e: u32) -> vec2<u32> {
    let idx = li + e * 256u;
    return vec2<u32>(idx % TM, idx / TM);
}

fn load_x(xb: u32, m: u32, k: u32) -> f32 {
    if (m >= p.M || k >= p.K) { return 0.0; }
    if (X_KM) { return rnd(x[xb + k * p.x_rs + m]); }
    return rnd(x[xb + m * p.x_rs + k]);
}

fn x_slot(li: u32, e: u32) -> vec2<u32> {
    if (X_KM) { return slot_row_fast(li, e); }
    return slot_k_fast(li, e);
}
fn w_slot(li: u32, e: u32) -> vec2<u32> {
    if (W_KN) { return slot_row_fast(li, e); }
    return slot_k_fast(li, e);
}

// Thread li's 4 elements of x's slice at depths k0 .. k0+TK−1, rows m0 .. m0+TM−1 (0 outside).
fn fetch_x(li: u32, xb: u32, m0: u32, k0: u32) -> vec4<f32> {
    let s0 = x_slot(li, 0u); let s1 = x_slot(li, 1u); let s2 = x_slot(li, 2u); let s3 = x_slot(li, 3u);
    return vec4<f32>(load_x(xb, m0 + s0.x, k0 + s0.y), load_x(xb, m0 + s1.x, k0 + s1.y),
                     load_x(xb, m0 + s2.x, k0 + s2.y), load_x(xb, m0 + s3.x, k0 + s3.y));
}
fn fetch_w(li: u32, wb: u32, n0: u32, k0: u32) -> vec4<f32> {
    let s0 = w_slot(li, 0u); let s1 = w_slot(li, 1u); let s2 = w_slot(li, 2u); let s3 = w_slot(li, 3u);
    return vec4<f32>(load_w(wb, n0 + s0.x, k0 + s0.y), load_w(wb, n0 + s1.x, k0 + s1.y),
                     load_w(wb, n0 + s2.x, k0 + s2.y), load_w(wb, n0 + s3.x, k0 + s3.y));
}

// The fetched elements into buffer `buf` (0 or 256) of the x or w tiles (from `tile`: 0 or
// W_TILES), at slots s0 .. s3: tiles[tile + buf + depth·TM/4 + row/4][row % 4].
fn stage_at(tile: u32, buf: u32, s0: vec2<u32>, s1: vec2<u32>, s2: vec2<u32>, s3: vec2<u32>, v: vec4<f32>) {
    let q = TM / 4u;
    tiles[tile + buf + s0.y * q + s0.x / 4u][s0.x % 4u] = v.x;
    tiles[tile + buf + s1.y * q + s1.x / 4u][s1.x % 4u] = v.y;
    tiles[tile + buf + s2.y * q + s2.x / 4u][s2.x % 4u] = v.z;
    tiles[tile + buf + s3.y * q + s3.x / 4u][s3.x % 4u] = v.w;
}
fn stage_x(li: u32, buf: u32, v: vec4<f32>) {
    stage_at(0u, buf, x_slot(li, 0u), x_slot(li, 1u), x_slot(li, 2u), x_slot(li, 3u), v);
}
fn stage_w(li: u32, buf: u32, v: vec4<f32>) {
    stage_at(W_TILES, buf, w_slot(li, 0u), w_slot(li, 1u), w_slot(li, 2u), w_slot(li, 3u), v);
}
