// A thread's share of one K-slice of both operands, between its global reads and its store into
// the workgroup tiles: the tiled GEMMs' double buffering (matmul.wgsl, matmul_128.wgsl) on top of
// either staging (matmul_stage.wgsl, matmul_stage_vec4.wgsl), prepended after it.

struct Slice { x: vec4<f32>, w: vec4<f32> }

// The slice at depths k0 .. of the output tile at rows m0 .., columns n0 .. (bases: x, w, out).
fn fetch_slice(li: u32, base: vec3<u32>, m0: u32, n0: u32, k0: u32) -> Slice {
    return Slice(fetch_x(li, base.x, m0, k0), fetch_w(li, base.y, n0, k0));
}

// Into buffer `buf` (0 or 256) of the tiles.
fn stage_slice(li: u32, buf: u32, s: Slice) {
    stage_x(li, buf, s.x);
    stage_w(li, buf, s.w);
}
