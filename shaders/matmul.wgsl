// out[m, n] = Σ_k x(m, k) · w(n, k) (+ bias[n]) (+ out[m, n] when accumulating), optionally
// batched over z = b·H + h. 64×64 output tiles; matmul_128.wgsl is the same with 128×128 tiles for
// large products.
//
// Params, bindings, offsets/strides and override constants: matmul_params.wgsl, prepended (and
// precision.wgsl's input rounding, `--precision`, before it); how a thread reads its share of a
// slice from global memory and stages it in workgroup memory (`fetch_x`/`stage_x`,
// `fetch_w`/`stage_w`): matmul_stage.wgsl (an f32 load per element, any layout) or
// matmul_stage_vec4.wgsl (one vec4 load per operand, for aligned products), prepended too, with
// matmul_slice.wgsl taking both operands' shares together (`fetch_slice`, `stage_slice`).
// - Each of the 256 threads owns a 4×4 register block: rows 4·ty .. 4·ty+3, columns 4·tx .. +3,
//   so a step of the inner loop does 2 vec4 workgroup loads per 16 FMAs.
// - K-slices of 16 are double-buffered in workgroup memory: the next slice is fetched from global
//   memory into registers while the current one is multiplied, then stored into the other buffer,
//   one barrier per slice. 2 × 2 × 16 × 64 f32 = 16 KiB, WebGPU's default limit.
// - CAUSAL_SKIP skips tiles entirely above the diagonal (n0 > m0 + 63).

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

// x's tiles, then w's (from W_TILES): [buffer][kk][r4]: tiles[buf·256 + kk·16 + r4] holds rows
// 4·r4 .. 4·r4+3 of the x tile at depth kk, tiles[W_TILES + buf·256 + kk·16 + r4] columns
// 4·r4 .. of the w tile.
const W_TILES: u32 = 512u;
var<workgroup> tiles: array<vec4<f32>, 1024>;

@compute @workgroup_size(256)
fn matmul_tiled(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
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

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    let slices = (p.K + TK - 1u) / TK;
    for (var s = 0u; s < slices; s++) {
        let cur = (s % 2u) * 256u;
        let more = s + 1u < slices;
        // The next slice's global reads, in flight while this one is multiplied.
        if (more) { next = fetch_slice(li, base, m0, n0, (s + 1u) * TK); }
        for (var kk = 0u; kk < TK; kk++) {
            let a = tiles[cur + kk * 16u + ty];
            let bv = tiles[W_TILES + cur + kk * 16u + tx];
            acc0 += a.x * bv;
            acc1 += a.y * bv;
            acc2 += a.z * bv;
            acc3 += a.w * bv;
        }
        // Into the other buffer: every thread finished reading it before the last barrier.
        if (more) { stage_slice(li, 256u - cur, next); }
        workgroupBarrier();
    }

    var bv = vec4<f32>(0.0);
    let nb = n0 + tx * 4u;
    if (p.has_bias != 0u) {
        for (var j = 0u; j < 4u; j++) {
            if (nb + j < p.N) { bv[j] = bias[bias_base(wg.z) + nb + j]; }
        }
    }
    var accs = array<vec4<f32>, 4>(acc0 + bv, acc1 + bv, acc2 + bv, acc3 + bv);
    for (var i = 0u; i < 4u; i++) {
        let gm = m0 + ty * 4u + i;
        if (gm >= p.M) { break; }
        let row = base.z + gm * p.o_rs;
        for (var j = 0u; j < 4u; j++) {
            if (nb + j < p.N) {
                var v = accs[i][j];
                if (ACCUMULATE) { v += out[row + nb + j]; }
                out[row + nb + j] = v;
            }
        }
    }
}
