// Attention backward, the parts that are not products: the products (dq = ds·k, dk = dsᵀ·q,
// dprobs = dout·vᵀ, dv = pᵀ·dout) run on the tiled GEMM of matmul.wgsl, batched over
// (batch, head) as in the forward.
// Bindings: @0 out, @1 params, @2.. inputs.

struct Params { rows: u32, seq: u32, scale: f32, lanes: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> probs: array<f32>;
@group(0) @binding(3) var<storage, read> dprobs: array<f32>;

var<workgroup> sh: array<f32, 256>;

// Sum over the `lanes` consecutive invocations that share a row (lanes: a power of two ≤ 256).
fn reduce_sum(li: u32, lanes: u32, v: f32) -> f32 {
    sh[li] = v;
    workgroupBarrier();
    let lane = li % lanes;
    for (var k = lanes / 2u; k > 0u; k >>= 1u) {
        if (lane < k) { sh[li] += sh[li + k]; }
        workgroupBarrier();
    }
    let r = sh[li - lane];
    workgroupBarrier(); // everyone has read its total before sh is reused
    return r;
}

// The causal softmax's input gradient, row (b·H + h)·T + i of [B·H·T, T]:
// ds_ij = p_ij·(dp_ij − Σ_{j' ≤ i} p_ij'·dp_ij')·scale for j ≤ i, exactly 0 for j > i.
// Rows as in causal_softmax: 256 / lanes rows per workgroup.
@compute @workgroup_size(256)
fn causal_softmax_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nwg.x) * (256u / p.lanes) + li / p.lanes;
    let lane = li % p.lanes;
    let live = row < p.rows;
    let i = row % p.seq;
    let base = row * p.seq;
    var t = 0.0;
    for (var j = lane; live && j <= i; j += p.lanes) { t += probs[base + j] * dprobs[base + j]; }
    let pd = reduce_sum(li, p.lanes, t);
    for (var j = lane; live && j < p.seq; j += p.lanes) {
        var v = 0.0;
        if (j <= i) { v = probs[base + j] * (dprobs[base + j] - pd) * p.scale; }
        out[base + j] = v;
    }
}

// In place on [rows, seq] (rows = B·H·T): element (row, j) becomes 0 where j > row % seq, the
// part of a causal product that the GEMM computed or skipped but that is 0 by definition.
// One thread per element; `rows` here counts elements.
@compute @workgroup_size(256)
fn causal_zero(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let e = (wg.x + wg.y * nwg.x) * 256u + li;
    if (e < p.rows) {
        let j = e % p.seq;
        let i = (e / p.seq) % p.seq;
        if (j > i) { out[e] = 0.0; }
    }
}
