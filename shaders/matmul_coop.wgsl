// out[m, n] = Σ_k x(m, k) · w(n, k) (+ bias[n]) (+ out[m, n] when accumulating), optionally
// batched over z = b·H + h, on the GPU's matrix units: wgpu's cooperative matrices (tensor cores
// through Vulkan's VK_KHR_cooperative_matrix; simdgroup matrices on Apple), f16 inputs, f32 sums.
// Only for `--precision mixed` (its inputs are f16 anyway), on adapters with 16×16×16 f16 × f16 +
// f32 matrices and a fixed subgroup size of 32 (the host checks both, and checks this kernel
// against the plain one before using it). The enables, precision.wgsl and matmul_params.wgsl are
// prepended; the same params, bindings and override constants as matmul.wgsl.
//
// A workgroup of 128 invocations (4 subgroups of 32) computes a 64×64 output tile. Per K-slice of
// 32 it stages x's 64×32 and w's 32×64 (as [k][n]) in workgroup memory as f16, each element
// rounded by `rnd` first so the conversion is exact; each subgroup then multiplies its 32×32
// quadrant as 2×2 matrices of 16×16, two steps of 16 along k. At the end each subgroup stores its
// accumulators to workgroup memory, and every invocation writes its share of the tile within
// bounds, with the bias and ACCUMULATE as matmul.wgsl does.
// Workgroup memory: 2 × 2048 f16 + 4096 f32 = 24 KiB (the host checks the adapter allows it).

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 32u;

var<workgroup> As: array<f16, 2048>; // [m][k], row stride TK
var<workgroup> Bs: array<f16, 2048>; // [k][n], row stride TN
var<workgroup> Cs: array<f32, 4096>; // [m][n], row stride TN

fn x_at(xb: u32, m: u32, k: u32) -> f32 {
    if (m >= p.M || k >= p.K) { return 0.0; }
    if (X_KM) { return rnd(x[xb + k * p.x_rs + m]); }
    return rnd(x[xb + m * p.x_rs + k]);
}

@compute @workgroup_size(128)
fn matmul_coop(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let n0 = wg.x * TN;
    let m0 = wg.y * TM;
    // A tile above the diagonal multiplies nothing and writes nothing (no early return: every
    // cooperative operation must run in uniform control flow).
    let live = !(CAUSAL_SKIP && n0 > m0 + TM - 1u);
    let k_end = select(0u, p.K, live);
    let base = bases(wg.z); // x, w, out
    let sg = li / 32u;            // this invocation's subgroup: its quadrant
    let qm = (sg / 2u) * 32u;     // quadrant's first row in the tile
    let qn = (sg % 2u) * 32u;     // and first column

    for (var e = li; e < 4096u; e += 128u) { Cs[e] = 0.0; }
    workgroupBarrier();
    var c00 = coopLoadT<coop_mat16x16<f32, C>>(&Cs[0], TN);
    var c01 = c00;
    var c10 = c00;
    var c11 = c00;

    for (var k0 = 0u; k0 < k_end; k0 += TK) {
        // 2048 elements of each slice, 16 per invocation. x: k fastest ([M, K] rows) or m fastest
        // ([K, M]); w: k fastest ([N, K]) or n fastest ([K, N]), so neighbours read neighbours.
        for (var e = li; e < 2048u; e += 128u) {
            var mm = e / TK;
            var kx = e % TK;
            if (X_KM) { mm = e % TM; kx = e / TM; }
            As[mm * TK + kx] = f16(x_at(base.x, m0 + mm, k0 + kx));
            var nn = e / TK;
            var kw = e % TK;
            if (W_KN) { nn = e % TN; kw = e / TN; }
            Bs[kw * TN + nn] = f16(load_w(base.y, n0 + nn, k0 + kw));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&As[qm * TK + kk], TK);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&As[(qm + 16u) * TK + kk], TK);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&Bs[kk * TN + qn], TN);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&Bs[kk * TN + qn + 16u], TN);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }

    coopStoreT(c00, &Cs[qm * TN + qn], TN);
    coopStoreT(c01, &Cs[qm * TN + qn + 16u], TN);
    coopStoreT(c10, &Cs[(qm + 16u) * TN + qn], TN);
    coopStoreT(c11, &Cs[(qm + 16u) * TN + qn + 16u], TN);
    workgroupBarrier();

    for (var e = li; e < 4096u; e += 128u) {
        let gm = m0 + e / TN;
        let gn = n0 + e % TN;
        if (live && gm < p.M && gn < p.N) {
            var v = Cs[e];
            if (p.has_bias != 0u) { v += bias[bias_base(wg.z) + gn]; }
            let at = base.z + gm * p.o_rs + gn;
            if (ACCUMULATE) { v += out[at]; }
            out[at] = v;
        }
    }
}
