// Backward of the row-wise norms (weights frozen: only dx), laid out as norms.wgsl: a workgroup
// of 256 handles 256 / lanes rows, `lanes` invocations each, tree reductions in workgroup memory;
// invocations past the last row still take part in the barriers, with `live` false.
// Bindings: @0 dx, @1 params, @2 x, @3 weight, @4 dy.

struct Params { rows: u32, cols: u32, eps: f32, lanes: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> wt: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;

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

// With x̂ = (x − μ)·r, r = 1/sqrt(var + eps), g = dy·w: dx = r·(g − mean(g) − x̂·mean(g·x̂)).
@compute @workgroup_size(256)
fn layer_norm_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
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
    let r = inverseSqrt(reduce_sum(li, p.lanes, q) / n + p.eps);
    var sg = 0.0;
    var sgx = 0.0;
    for (var c = lane; live && c < p.cols; c += p.lanes) {
        let g = dy[base + c] * wt[c];
        sg += g;
        sgx += g * (x[base + c] - mean) * r;
    }
    let mg = reduce_sum(li, p.lanes, sg) / n;
    let mgx = reduce_sum(li, p.lanes, sgx) / n;
    for (var c = lane; live && c < p.cols; c += p.lanes) {
        let g = dy[base + c] * wt[c];
        out[base + c] = r * (g - mg - (x[base + c] - mean) * r * mgx);
    }
}

// With r = 1/sqrt(mean(x²) + eps), g = dy·w: dx = r·g − x·r³·mean(g·x).
@compute @workgroup_size(256)
fn rms_norm_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nwg.x) * (256u / p.lanes) + li / p.lanes;
    let lane = li % p.lanes;
    let live = row < p.rows;
    let base = row * p.cols;
    let n = f32(p.cols);
    var q = 0.0;
    for (var c = lane; live && c < p.cols; c += p.lanes) { let v = x[base + c]; q += v * v; }
    let r = inverseSqrt(reduce_sum(li, p.lanes, q) / n + p.eps);
    var sgx = 0.0;
    for (var c = lane; live && c < p.cols; c += p.lanes) { sgx += dy[base + c] * wt[c] * x[base + c]; }
    let mgx = reduce_sum(li, p.lanes, sgx) / n;
    for (var c = lane; live && c < p.cols; c += p.lanes) {
        out[base + c] = r * dy[base + c] * wt[c] - x[base + c] * r * r * r * mgx;
    }
}
