// The tiled GEMMs' staging with one vec4 load per operand and slice, a quarter of the scalar
// staging's loads and bounds checks (matmul_stage.wgsl): x (@2) and w (@3) are bound as arrays
// of vec4, so every row of an operand must start at a multiple of 4 elements (offsets and strides
// multiples of 4) and its contiguous dimension be a multiple of 4 (K for a [*, K] operand, M or N
// for a [K, *] one), so that a vec4 lies wholly inside or wholly outside the product. The host
// checks both (`MmParams::vec4_fits`) and takes the scalar staging otherwise. Both stagings fill
// the tiles with the same values, so the two kernels' outputs are identical. Prepended to
// matmul.wgsl (64×16 slices) or matmul_128.wgsl (128×8), which declare TM (= TN), TK, `tiles`
// and W_TILES; a slice is TM·TK = 1024 elements, a vec4 per thread of 256.

@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<vec4<f32>>;

// Where thread li's vec4 of an operand's slice (depths k0 .. k0+TK−1, rows r0 .. r0+TM−1 of
// `rows`) lies: its index in the operand, in vec4s, and whether it is inside the product. A
// [*, K] operand's slice is TM rows × TK depths: thread li reads row li / (TK/4), depths
// 4·(li % (TK/4)) .. +3. A [K, *] operand's (`row_fast`): depth li / (TM/4), rows
// 4·(li % (TM/4)) .. +3, which is the tile's own layout (tiles[kk·TM/4 + r4]), so it is stored
// whole.
struct Quad { at: u32, inside: bool }

fn quad(li: u32, base: u32, r0: u32, k0: u32, rows: u32, rs: u32, row_fast: bool) -> Quad {
    if (row_fast) {
        let k = k0 + li / (TM / 4u);
        let r = r0 + (li % (TM / 4u)) * 4u;
        return Quad((base + k * rs + r) / 4u, k < p.K && r < rows);
    }
    let r = r0 + li / (TK / 4u);
    let k = k0 + (li % (TK / 4u)) * 4u;
    return Quad((base + r * rs + k) / 4u, r < rows && k < p.K);
}

fn fetch_x(li: u32, xb: u32, m0: u32, k0: u32) -> vec4<f32> {
    let q = quad(li, xb, m0, k0, p.M, p.x_rs, X_KM);
    if (!q.inside) { return vec4<f32>(0.0); }
    return rnd4(x[q.at]);
}
fn fetch_w(li: u32, wb: u32, n0: u32, k0: u32) -> vec4<f32> {
    let q = quad(li, wb, n0, k0, p.N, p.w_rs, W_KN);
    if (!q.inside) { return vec4<f32>(0.0); }
    return rnd4(w[q.at]);
}

// The fetched vec4 into buffer `buf` (0 or 256) of the x or w tiles (from `tile`: 0 or W_TILES):
// whole for a [K, *] operand, else one element at each of its 4 depths.
fn stage_at(tile: u32, buf: u32, li: u32, row_fast: bool, v: vec4<f32>) {
    if (row_fast) {
        tiles[tile + buf + li] = v;
        return;
    }
    let q = TM / 4u;
    let r = li / (TK / 4u);
    let at = tile + buf + (li % (TK / 4u)) * 4u * q + r / 4u; // depth 4·(li % (TK/4)), rows 4·(r / 4) ..
    tiles[at][r % 4u] = v.x;
    tiles[at + q][r % 4u] = v.y;
    tiles[at + 2u * q][r % 4u] = v.z;
    tiles[at + 3u * q][r % 4u] = v.w;
}
fn stage_x(li: u32, buf: u32, v: vec4<f32>) { stage_at(0u, buf, li, X_KM, v); }
fn stage_w(li: u32, buf: u32, v: vec4<f32>) { stage_at(W_TILES, buf, li, W_KN, v); }
