// out[m, n] = Σ_k x(m, k) · w(n, k) (+ bias[n]) (+ out[m, n] when accumulating), optionally
// batched over z = b·H + h: matmul.wgsl's `matmul_tiled` with a 128×128 output tile per 256-thread
// workgroup, for products large enough to fill the device with such tiles.
//
// Params, bindings, offsets/strides and override constants: matmul_params.wgsl, prepended (and
// precision.wgsl's input rounding before it); how a thread reads its share of a slice from global
// memory and stages it in workgroup memory (`fetch_x`/`stage_x`, `fetch_w`/`stage_w`): either
// matmul_stage.wgsl (an f32 load per element, any layout) or matmul_stage_vec4.wgsl (one vec4
// load per operand, for aligned products), prepended too, and matmul_slice.wgsl on top of it.
// What differs from matmul.wgsl:
// - each thread owns an 8×8 register block: rows 4·ty + {0..3} and 64 + 4·ty + {0..3}, columns
//   4·tx + {0..3} and 64 + 4·tx + {0..3} (the two halves keep neighbouring threads' workgroup
//   reads apart), so a step of the inner loop does 4 vec4 workgroup loads per 64 FMAs;
// - K-slices are 8 deep (128 × 8 per operand), double-buffered as there: 2 × 2 × 8 × 128 f32 =
//   16 KiB, WebGPU's default limit.
// - CAUSAL_SKIP skips tiles entirely above the diagonal (n0 > m0 + 127); tiles across it are
//   computed whole, and the callers overwrite the upper triangle anyway.

const TM: u32 = 128u;
const TN: u32 = 128u;
const TK: u32 = 8u;

// x's tiles, then w's (from W_TILES): [buffer][kk][r4]: tiles[buf·256 + kk·32 + r4] holds rows
// 4·r4 .. 4·r4+3 of the x tile at depth kk, tiles[W_TILES + buf·256 + kk·32 + r4] columns
// 4·r4 .. of the w tile. One array so that the staging can take either as an offset.
const W_TILES: u32 = 512u;
var<workgroup> tiles: array<vec4<f32>, 1024>;

// Adds row `gm`'s 4 values at columns gn.. to the output, within bounds.
fn put(ob: u32, gm: u32, gn: u32, v: vec4<f32>) {
    if (gm >= p.M) { return; }
    let row = ob + gm * p.o_rs;
    for (var j = 0u; j < 4u; j++) {
        if (gn + j < p.N) {
            var o = v[j];
            if (ACCUMULATE) { o += out[row + gn + j]; }
            out[row + gn + j] = o;
        }
    }
}

fn bias4(z: u32, gn: u32) -> vec4<f32> {
    var b = vec4<f32>(0.0);
    if (p.has_bias != 0u) {
        for (var j = 0u; j < 4u; j++) {
            if (gn + j < p.N) { b[j] = bias[bias_base(z) + gn + j]; }
        }
    }
    return b;
}

@compute @workgroup_size(256)
fn matmul_128(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let n0 = wg.x * TN;
    let m0 = wg.y * TM;
    if (CAUSAL_SKIP && n0 > m0 + TM - 1u) { return; }
    let base = bases(wg.z); // x, w, out
    let tx = li % 16u;
    let ty = li / 16u;

    // Slice 0 into buffer 0.
    var next = fetch_slice(li, base, m0, n0, 0u);
    stage_slice(li, 0u, next);
    workgroupBarrier();

    // c[4·q + j]: row j of the a-half (q / 2: rows 4·ty.. or 64 + 4·ty..), b-half (q % 2).
    var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0); var c2 = vec4<f32>(0.0); var c3 = vec4<f32>(0.0);
    var c4 = vec4<f32>(0.0); var c5 = vec4<f32>(0.0); var c6 = vec4<f32>(0.0); var c7 = vec4<f32>(0.0);
    var c8 = vec4<f32>(0.0); var c9 = vec4<f32>(0.0); var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
    var c12 = vec4<f32>(0.0); var c13 = vec4<f32>(0.0); var c14 = vec4<f32>(0.0); var c15 = vec4<f32>(0.0);

    let slices = (p.K + TK - 1u) / TK;
    for (var s = 0u; s < slices; s++) {
        let cur = (s % 2u) * 256u;
        let more = s + 1u < slices;
        // The next slice's global reads, in flight while this one is multiplied.
        if (more) { next = fetch_slice(li, base, m0, n0, (s + 1u) * TK); }
        for (var kk = 0u; kk < TK; kk++) {
            let a0 = tiles[cur + kk * 32u + ty];
            let a1 = tiles[cur + kk * 32u + 16u + ty];
            let b0 = tiles[W_TILES + cur + kk * 32u + tx];
            let b1 = tiles[W_TILES + cur + kk * 32u + 16u + tx];
            c0 += a0.x * b0; c1 += a0.y * b0; c2 += a0.z * b0; c3 += a0.w * b0;
            c4 += a0.x * b1; c5 += a0.y * b1; c6 += a0.z * b1; c7 += a0.w * b1;
            c8 += a1.x * b0; c9 += a1.y * b0; c10 += a1.z * b0; c11 += a1.w * b0;
            c12 += a1.x * b1; c13 += a1.y * b1; c14 += a1.z * b1; c15 += a1.w * b1;
        }
        // Into the other buffer: every thread finished reading it before the last barrier.
        if (more) { stage_slice(li, 256u - cur, next); }
        workgroupBarrier();
    }

    let ra = m0 + ty * 4u;
    let rb = m0 + 64u + ty * 4u;
    let na = n0 + tx * 4u;
    let nb = n0 + 64u + tx * 4u;
    let ba = bias4(wg.z, na);
    let bb = bias4(wg.z, nb);
    put(base.z, ra, na, c0 + ba); put(base.z, ra + 1u, na, c1 + ba); put(base.z, ra + 2u, na, c2 + ba); put(base.z, ra + 3u, na, c3 + ba);
    put(base.z, ra, nb, c4 + bb); put(base.z, ra + 1u, nb, c5 + bb); put(base.z, ra + 2u, nb, c6 + bb); put(base.z, ra + 3u, nb, c7 + bb);
    put(base.z, rb, na, c8 + ba); put(base.z, rb + 1u, na, c9 + ba); put(base.z, rb + 2u, na, c10 + ba); put(base.z, rb + 3u, na, c11 + ba);
    put(base.z, rb, nb, c12 + bb); put(base.z, rb + 1u, nb, c13 + bb); put(base.z, rb + 2u, nb, c14 + bb); put(base.z, rb + 3u, nb, c15 + bb);
}
