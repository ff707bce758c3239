// Row-wise log_softmax; max subtracted before exp.
// A workgroup of 256 handles 256 / lanes rows, `lanes` invocations each: short rows (attention
// over a short sequence, tests with 3 columns) would otherwise leave most of a 256-wide row idle.
// Invocations past the last row still take part in the barriers, with `live` false.
// Bindings: @0 out, @1 params, @2 x.

// Just above −f32::MAX: browsers (Tint) refuse a literal that rounds past the f32 range.
const NEG_MAX: f32 = -3.40282346e38;

struct Params { rows: u32, cols: u32, lanes: u32, _p3: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;

var<workgroup> sh: array<f32, 256>;

fn reduce_max(li: u32, lanes: u32, v: f32) -> f32 {
    sh[li] = v;
    workgroupBarrier();
    let lane = li % lanes;
    for (var s = lanes / 2u; s > 0u; s >>= 1u) {
        if (lane < s) { sh[li] = max(sh[li], sh[li + s]); }
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
    for (var s = lanes / 2u; s > 0u; s >>= 1u) {
        if (lane < s) { sh[li] += sh[li + s]; }
        workgroupBarrier();
    }
    let r = sh[li - lane];
    workgroupBarrier(); // everyone has read its total before sh is reused
    return r;
}

@compute @workgroup_size(256)
fn log_softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nwg.x) * (256u / p.lanes) + li / p.lanes;
    let lane = li % p.lanes;
    let live = row < p.rows;
    let base = row * p.cols;
    var m = NEG_MAX;
    for (var c = lane; live && c < p.cols; c += p.lanes) { m = max(m, x[base + c]); }
    let mx = reduce_max(li, p.lanes, m);
    var s = 0.0;
    for (var c = lane; live && c < p.cols; c += p.lanes) { s += exp(x[base + c] - mx); }
    let lse = mx + log(reduce_sum(li, p.lanes, s));
    for (var c = lane; live && c < p.cols; c += p.lanes) { out[base + c] = x[base + c] - lse; }
}
