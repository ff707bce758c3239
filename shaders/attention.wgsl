// Causal softmax over attention scores, in place. The raw q·k scores are produced by the tiled
// kernel in matmul.wgsl run batched over (batch, head) (one GEMM kernel to tune, not two); this
// pass turns row (b·H + h)·T + i into probabilities: softmax_j(scale · s_ij) for j ≤ i and exact
// zeros for j > i (whatever the GEMM left there, including poison or skipped tiles).
// A workgroup of 256 handles 256 / lanes rows, `lanes` invocations each: short rows (attention
// over a short sequence, tests with 3 columns) would otherwise leave most of a 256-wide row idle.
// Invocations past the last row still take part in the barriers, with `live` false.
// Bindings: @0 scores/probs (read_write), @1 params.

// Just above −f32::MAX: browsers (Tint) refuse a literal that rounds past the f32 range.
const NEG_MAX: f32 = -3.40282346e38;

struct Params { rows: u32, seq: u32, scale: f32, lanes: u32 }

@group(0) @binding(0) var<storage, read_write> s: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;

var<workgroup> sh: array<f32, 256>;

fn reduce_max(li: u32, lanes: u32, v: f32) -> f32 {
    sh[li] = v;
    workgroupBarrier();
    let lane = li % lanes;
    for (var k = lanes / 2u; k > 0u; k >>= 1u) {
        if (lane < k) { sh[li] = max(sh[li], sh[li + k]); }
        workgroupBarrier();
    }
    let r = sh[li - lane];
    workgroupBarrier();
    return r;
}

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

@compute @workgroup_size(256)
fn causal_softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nwg.x) * (256u / p.lanes) + li / p.lanes;
    let lane = li % p.lanes;
    let live = row < p.rows;
    let i = row % p.seq;
    let base = row * p.seq;
    var m = NEG_MAX;
    for (var j = lane; live && j <= i; j += p.lanes) { m = max(m, p.scale * s[base + j]); }
    let mx = reduce_max(li, p.lanes, m);
    var t = 0.0;
    for (var j = lane; live && j <= i; j += p.lanes) { t += exp(p.scale * s[base + j] - mx); }
    let inv = 1.0 / reduce_sum(li, p.lanes, t);
    for (var j = lane; live && j < p.seq; j += p.lanes) {
        var v = 0.0;
        if (j <= i) { v = exp(p.scale * s[base + j] - mx) * inv; }
        s[base + j] = v;
    }
}
