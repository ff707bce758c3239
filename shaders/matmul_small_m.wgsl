// out[m, n] = Σ_k x[m, k] · w[n, k] (+ bias[n]) for few rows (M ≤ 8, e.g. last-position logits).
// Params and bindings: matmul_params.wgsl and matmul_operands.wgsl, prepended (precision.wgsl's
// input rounding before them); only x [M, K] and w [N, K] with row strides, no batching.
//
// Matrix–vector style. Each 32-lane slice of the workgroup owns one w row and strides over K with
// coalesced reads; partial sums for the M rows (two vec4 accumulators, rows 0–3 and 4–7) are then
// tree-reduced in workgroup memory (no subgroup ops: not every adapter has them). No dynamically
// indexed private arrays: those spill to memory on many compilers.
// Rows ≥ M read row M−1 (always in bounds) and are discarded.

var<workgroup> redA: array<vec4<f32>, 256>;
var<workgroup> redB: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn matmul_small_m(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lane = li % 32u;
    let slot = li / 32u;
    let n = (wg.x + wg.y * nwg.x) * 8u + slot;
    let last = p.M - 1u;
    let r0 = p.x_off;
    let r1 = p.x_off + min(1u, last) * p.x_rs;
    let r2 = p.x_off + min(2u, last) * p.x_rs;
    let r3 = p.x_off + min(3u, last) * p.x_rs;
    let r4 = p.x_off + min(4u, last) * p.x_rs;
    let r5 = p.x_off + min(5u, last) * p.x_rs;
    let r6 = p.x_off + min(6u, last) * p.x_rs;
    let r7 = p.x_off + min(7u, last) * p.x_rs;
    var a = vec4<f32>(0.0);
    var b = vec4<f32>(0.0);
    if (n < p.N) {
        let wrow = p.w_off + n * p.w_rs;
        if (p.M == 1u) {
            var s = 0.0;
            for (var k = lane; k < p.K; k += 32u) { s += rnd(w[wrow + k]) * rnd(x[r0 + k]); }
            a.x = s;
        } else if (p.M <= 4u) {
            for (var k = lane; k < p.K; k += 32u) {
                a += rnd(w[wrow + k]) * rnd4(vec4<f32>(x[r0 + k], x[r1 + k], x[r2 + k], x[r3 + k]));
            }
        } else {
            for (var k = lane; k < p.K; k += 32u) {
                let wv = rnd(w[wrow + k]);
                a += wv * rnd4(vec4<f32>(x[r0 + k], x[r1 + k], x[r2 + k], x[r3 + k]));
                b += wv * rnd4(vec4<f32>(x[r4 + k], x[r5 + k], x[r6 + k], x[r7 + k]));
            }
        }
    }
    redA[li] = a;
    redB[li] = b;
    workgroupBarrier();
    for (var s = 16u; s > 0u; s >>= 1u) {
        if (lane < s) {
            redA[li] += redA[li + s];
            if (p.M > 4u) { redB[li] += redB[li + s]; }
        }
        workgroupBarrier();
    }
    if (n < p.N && lane < p.M) {
        let base = slot * 32u;
        var v = 0.0;
        if (lane < 4u) { v = redA[base][lane]; } else { v = redB[base][lane - 4u]; }
        if (p.has_bias != 0u) { v += bias[p.bias_off + n]; }
        out[p.o_off + lane * p.o_rs + n] = v;
    }
}
