// kl_hinge, part 1: a row's terms. A row per `lanes` invocations (as log_softmax); out [rows, 4] =
// (KL(P ‖ Q), h, logsumexp(x), logsumexp(f)) with Q = softmax(x), P = softmax(f), and the hinge
// h = relu(margin − (x[a] − x[w])) where the row has a pair (a, w) (a = 0xffffffff: none).
// KL = Σ_j P_j·(log P_j − log Q_j), terms with P_j = 0 adding 0, clamped at 0.
// Bindings: @0 out, @1 params, @2 x (the logits), @3 f (the reference logits), @4 pairs [rows, 2].

const NEG_MAX: f32 = -3.40282346e38;
const NONE: u32 = 0xffffffffu;

struct Params { rows: u32, cols: u32, lanes: u32, margin: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> f: array<f32>;
@group(0) @binding(4) var<storage, read> pairs: array<u32>;

var<workgroup> sh: array<f32, 256>;

fn reduce(li: u32, lanes: u32, v: f32, is_max: bool) -> f32 {
    sh[li] = v;
    workgroupBarrier();
    let lane = li % lanes;
    for (var s = lanes / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            if (is_max) { sh[li] = max(sh[li], sh[li + s]); } else { sh[li] += sh[li + s]; }
        }
        workgroupBarrier();
    }
    let r = sh[li - lane];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn kl_hinge_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let row = (wg.x + wg.y * nwg.x) * (256u / p.lanes) + li / p.lanes;
    let lane = li % p.lanes;
    let live = row < p.rows;
    let base = row * p.cols;
    var mx = NEG_MAX;
    var mf = NEG_MAX;
    for (var c = lane; live && c < p.cols; c += p.lanes) {
        mx = max(mx, x[base + c]);
        mf = max(mf, f[base + c]);
    }
    mx = reduce(li, p.lanes, mx, true);
    mf = reduce(li, p.lanes, mf, true);
    var sx = 0.0;
    var sf = 0.0;
    for (var c = lane; live && c < p.cols; c += p.lanes) {
        sx += exp(x[base + c] - mx);
        sf += exp(f[base + c] - mf);
    }
    let lx = mx + log(reduce(li, p.lanes, sx, false));
    let lf = mf + log(reduce(li, p.lanes, sf, false));
    var kl = 0.0;
    for (var c = lane; live && c < p.cols; c += p.lanes) {
        let lp = f[base + c] - lf;
        let pj = exp(lp);
        if (pj > 0.0) { kl += pj * (lp - (x[base + c] - lx)); }
    }
    kl = reduce(li, p.lanes, kl, false);
    if (live && lane == 0u) {
        var h = 0.0;
        let a = pairs[2u * row];
        if (a != NONE) {
            let diff = x[base + a] - x[base + pairs[2u * row + 1u]];
            h = max(bitcast<f32>(p.margin) - diff, 0.0);
        }
        out[4u * row] = max(kl, 0.0);
        out[4u * row + 1u] = h;
        out[4u * row + 2u] = lx;
        out[4u * row + 3u] = lf;
    }
}
