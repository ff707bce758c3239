// out[m, n] = Σ_k x(m, k) · w(n, k) (+ bias[n]) (+ out[m, n] when accumulating), optionally
// batched over z = b·H + h. 64×64 output tiles; matmul_128.wgsl is the same with 128×128 tiles for
// large products.
//
// Params, bindings and the variants' override constants: matmul_params.wgsl, prepended; the
// inputs' rounding (rnd, `--precision`): precision.wgsl, prepended before it.

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

// K-slices of the two operand tiles, as vec4 so the inner loop does 2 shared loads per 16 FMAs.
// As[kk·16 + r4] holds rows 4·r4 .. 4·r4+3 of the x tile at depth kk; Bs likewise for w rows.
var<workgroup> As: array<vec4<f32>, 256>;
var<workgroup> Bs: array<vec4<f32>, 256>;

// 64×64 output tile per 256-thread workgroup; each thread owns a 4×4 register block.
@compute @workgroup_size(256)
fn matmul_tiled(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let n0 = wg.x * TN;
    let m0 = wg.y * TM;
    if (CAUSAL_SKIP && n0 > m0 + TM - 1u) { return; }
    let base = bases(wg.z); // x, w, out
    let tx = li % 16u;
    let ty = li / 16u;

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < p.K; k0 += TK) {
        // Each thread stages 4 of the 1024 elements of each tile. Index order is chosen so that
        // neighbouring threads read neighbouring addresses (k fastest for [*, K] operands).
        for (var e = 0u; e < 4u; e++) {
            let idx = li + e * 256u;
            let kk = idx % TK;
            let r = idx / TK;
            let gm = m0 + r;
            let gk = k0 + kk;
            if (X_KM) {
                // m fastest, so neighbouring threads read neighbouring addresses.
                let mm = idx % TM;
                let kx = idx / TM;
                var v = 0.0;
                if (m0 + mm < p.M && k0 + kx < p.K) { v = rnd(x[base.x + (k0 + kx) * p.x_rs + m0 + mm]); }
                As[kx * 16u + mm / 4u][mm % 4u] = v;
            } else {
                var v = 0.0;
                if (gm < p.M && gk < p.K) { v = rnd(x[base.x + gm * p.x_rs + gk]); }
                As[kk * 16u + r / 4u][r % 4u] = v;
            }
            if (W_KN) {
                let nn = idx % TN;
                let kw = idx / TN;
                Bs[kw * 16u + nn / 4u][nn % 4u] = load_w(base.y, n0 + nn, k0 + kw);
            } else {
                Bs[kk * 16u + r / 4u][r % 4u] = load_w(base.y, n0 + r, gk);
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = As[kk * 16u + ty];
            let bv = Bs[kk * 16u + tx];
            acc0 += a.x * bv;
            acc1 += a.y * bv;
            acc2 += a.z * bv;
            acc3 += a.w * bv;
        }
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

// Few rows (M ≤ 8, e.g. last-position logits): matrix–vector style. Each 32-lane slice of the
// workgroup owns one w row and strides over K with coalesced reads; partial sums for the M rows
// (two vec4 accumulators, rows 0–3 and 4–7) are then tree-reduced in workgroup memory (no
// subgroup ops: not every adapter has them). No dynamically indexed private arrays: those spill
// to memory on many compilers. Rows ≥ M read row M−1 (always in bounds) and are discarded.
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
