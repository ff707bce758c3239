// Row-wise norms, tree reductions in workgroup memory.
// A workgroup of 256 handles 256 / lanes rows, `lanes` invocations each: short rows (attention
// over a short sequence, tests with 3 columns) would otherwise leave most of a 256-wide row idle.
// Invocations past the last row still take part in the barriers, with `live` false.
// Two passes (mean, then Σ(x − mean)²) rather than E[x²] − E[x]², which cancels badly.
// Bindings: @0 out, @1 params, @2 x, @3 weight, @4 bias.

struct Params { rows: u32, cols: u32, eps: f32, lanes: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> wt: array<f32>;
@group(0) @binding(4) var<storage, read> bs: array<f32>;

var<workgroup> sh: array<f32, 256>;

// Sum over the `lanes` consecutive invocations that share a row (lanes: a power of two ≤ 256).
fn reduce_sum(li: u32, lanes: u32, v: f32) -> f32 {
    sh[li] = v;
    workgroupBarrier();
    let lane = li % lanes;
    for (var s = lanes / 2u; s > 0u; s >>= 1u) {
        if (lane < s) { sh[li] += sh[li + s]; }
        workgroupBarrier();
    }
    let r = sh[li - lane];
    workgroupBarrier(); // everyone has read its total before sh is reused
    return r;
}
@compute @workgroup_size(256)
fn layer_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nwg.x) * (256u / p.lanes) + li / p.lanes;
    let lane = li % p.lanes;
    let live = row < p.rows;
    let base = row * p.cols;
    let n = f32(p.cols);
    var s = 0.0;
    for (var c = lane; live && c < p.cols; c += p.lanes) { s += x[base + c]; }
    let mean = reduce_sum(li, p.lanes, s) / n;
    var q = 0.0;
    for (var c = lane; live && c < p.cols; c += p.lanes) { let d = x[base + c] - mean; q += d * d; }
    let inv = inverseSqrt(reduce_sum(li, p.lanes, q) / n + p.eps);
    for (var c = lane; live && c < p.cols; c += p.lanes) {
        out[base + c] = (x[base + c] - mean) * inv * wt[c] + bs[c];
    }
}

@compute @workgroup_size(256)
fn rms_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nwg.x) * (256u / p.lanes) + li / p.lanes;
    let lane = li % p.lanes;
    let live = row < p.rows;
    let base = row * p.cols;
    var q = 0.0;
    for (var c = lane; live && c < p.cols; c += p.lanes) { let v = x[base + c]; q += v * v; }
    let inv = inverseSqrt(reduce_sum(li, p.lanes, q) / f32(p.cols) + p.eps);
    for (var c = lane; live && c < p.cols; c += p.lanes) {
        out[base + c] = x[base + c] * inv * wt[c];
    }
}
