// out[m, n] = Σ_k x(m, k) · w(n, k) (+ bias[n]) (+ out[m, n] when accumulating), optionally
// batched over z = b·H + h.
//
// Binding convention shared by every carve shader: @0 output (read_write), @1 params (uniform),
// @2.. read-only inputs in order. The host binds exact tensor sizes, so no arrayLength tricks.
//
// All offsets/strides are in f32 elements. Batched use (attention) picks, for z = b·H + h:
//   x base = x_off + b·x_sb + h·x_sh,  w base = w_off + b·w_sb + (h / G)·w_sh,
//   out base = o_off + b·o_sb + h·o_sh.  Plain matmul: H = G = 1, one z.

struct Params {
    M: u32, N: u32, K: u32, H: u32,
    G: u32, has_bias: u32, bias_off: u32, _pad: u32,
    x_off: u32, x_rs: u32, x_sb: u32, x_sh: u32,
    w_off: u32, w_rs: u32, w_sb: u32, w_sh: u32,
    o_off: u32, o_rs: u32, o_sb: u32, o_sh: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

// w is stored [K, N] (element (n, k) at k·w_rs + n) instead of [N, K]: attention's p·V.
override W_KN: bool = false;
// x is stored [K, M] (element (m, k) at k·x_rs + m) instead of [M, K]: the transposed products
// of the attention backward (dk = dsᵀ·q, dv = pᵀ·dout).
override X_KM: bool = false;
// Add to what `out` holds instead of overwriting it: sums over the row-chunks of a split weight
// (matmul_backward) or over the query heads that share a kv head.
override ACCUMULATE: bool = false;
// Skip output tiles entirely above the diagonal (n0 > m0 + 63): causal scores, whose upper
// triangle the softmax overwrites with zeros anyway.
override CAUSAL_SKIP: bool = false;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

// K-slices of the two operand tiles, as vec4 so the inner loop does 2 shared loads per 16 FMAs.
// As[kk·16 + r4] holds rows 4·r4 .. 4·r4+3 of the x tile at depth kk; Bs likewise for w rows.
var<workgroup> As: array<vec4<f32>, 256>;
var<workgroup> Bs: array<vec4<f32>, 256>;

fn load_w(wb: u32, n: u32, k: u32) -> f32 {
    if (n >= p.N || k >= p.K) { return 0.0; }
    if (W_KN) { return w[wb + k * p.w_rs + n]; }
    return w[wb + n * p.w_rs + k];
}

// 64×64 output tile per 256-thread workgroup; each thread owns a 4×4 register block.
@compute @workgroup_size(256)
fn matmul_tiled(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let n0 = wg.x * TN;
    let m0 = wg.y * TM;
    if (CAUSAL_SKIP && n0 > m0 + TM - 1u) { return; }
    let b = wg.z / p.H;
    let h = wg.z % p.H;
    let xb = p.x_off + b * p.x_sb + h * p.x_sh;
    let wb = p.w_off + b * p.w_sb + (h / p.G) * p.w_sh;
    let ob = p.o_off + b * p.o_sb + h * p.o_sh;
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
                if (m0 + mm < p.M && k0 + kx < p.K) { v = x[xb + (k0 + kx) * p.x_rs + m0 + mm]; }
                As[kx * 16u + mm / 4u][mm % 4u] = v;
            } else {
                var v = 0.0;
                if (gm < p.M && gk < p.K) { v = x[xb + gm * p.x_rs + gk]; }
                As[kk * 16u + r / 4u][r % 4u] = v;
            }
            if (W_KN) {
                let nn = idx % TN;
                let kw = idx / TN;
                Bs[kw * 16u + nn / 4u][nn % 4u] = load_w(wb, n0 + nn, k0 + kw);
            } else {
                Bs[kk * 16u + r / 4u][r % 4u] = load_w(wb, n0 + r, gk);
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
            if (nb + j < p.N) { bv[j] = bias[p.bias_off + nb + j]; }
        }
    }
    var accs = array<vec4<f32>, 4>(acc0 + bv, acc1 + bv, acc2 + bv, acc3 + bv);
    for (var i = 0u; i < 4u; i++) {
        let gm = m0 + ty * 4u + i;
        if (gm >= p.M) { break; }
        let row = ob + gm * p.o_rs;
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
            for (var k = lane; k < p.K; k += 32u) { s += w[wrow + k] * x[r0 + k]; }
            a.x = s;
        } else if (p.M <= 4u) {
            for (var k = lane; k < p.K; k += 32u) {
                a += w[wrow + k] * vec4<f32>(x[r0 + k], x[r1 + k], x[r2 + k], x[r3 + k]);
            }
        } else {
            for (var k = lane; k < p.K; k += 32u) {
                let wv = w[wrow + k];
                a += wv * vec4<f32>(x[r0 + k], x[r1 + k], x[r2 + k], x[r3 + k]);
                b += wv * vec4<f32>(x[r4 + k], x[r5 + k], x[r6 + k], x[r7 + k]);
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
