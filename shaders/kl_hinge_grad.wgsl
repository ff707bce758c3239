// kl_hinge, part 2: the gradient, one invocation per element of [rows, cols]:
// d[r, j] = s·(Q_j − P_j), minus s at a and plus s at w where the row's hinge is active (h > 0),
// with s = weight / rows and Q, P from the row's log-sum-exps that part 1 wrote.
// Bindings: @0 out, @1 params, @2 x (the logits), @3 f (the reference logits), @4 terms [rows, 4]
// (KL, h, logsumexp(x), logsumexp(f)), @5 pairs [rows, 2].

struct Params { n: u32, cols: u32, scale: u32, _p3: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> f: array<f32>;
@group(0) @binding(4) var<storage, read> terms: array<f32>;
@group(0) @binding(5) var<storage, read> pairs: array<u32>;

@compute @workgroup_size(256)
fn kl_hinge_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + li;
    if (i >= p.n) { return; }
    let r = i / p.cols;
    let j = i % p.cols;
    let s = bitcast<f32>(p.scale);
    var g = s * (exp(x[i] - terms[4u * r + 2u]) - exp(f[i] - terms[4u * r + 3u]));
    if (terms[4u * r + 1u] > 0.0) {
        if (j == pairs[2u * r]) { g -= s; }
        if (j == pairs[2u * r + 1u]) { g += s; }
    }
    out[i] = g;
}
