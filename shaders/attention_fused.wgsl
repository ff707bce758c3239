// Causal attention in one pass (scores, softmax, apply), for a forward that does not keep the
// probabilities: out_i = Σ_{j ≤ i} softmax_j(scale · q_i·k_j) · v_j per (prompt, head), with the
// grouped-query KV head h / group. The [T, T] probabilities never reach memory, and key tiles
// past a workgroup's last query row (the masked half) are never loaded.
//
// One invocation per query row, 64 rows per workgroup. The workgroup walks the keys in tiles of
// `BC` rows: it loads a tile of k and v into workgroup memory, then each invocation scores its row
// against the tile's keys (j ≤ i), and folds them into its running softmax (online: the running
// max m, the running sum l, and the output o rescaled by exp(m_old − m_new) when m grows), and at
// the end writes o / l. Invocations past the last row take part in the loads and barriers only.
//
// Mixed precision (precision.wgsl, prepended): q, k, v and each probability are rounded as the
// products read them; the running max, sum and output stay f32, as the two-GEMM path's softmax.
//
// Rows are read and kept as vec4: HEAD_DIM (a pipeline constant) is a multiple of 4, at most
// MAX_D. Workgroup memory: 2 · BC · MAX_D floats = 16 KiB, WebGPU's default limit.
// Bindings: @0 out [B·T, H·D] (read_write), @1 params, @2 q [B·T, H·D], @3 k [B·T, KVH·D],
// @4 v [B·T, KVH·D], each as vec4s.

// Just above −f32::MAX: browsers (Tint) refuse a literal that rounds past the f32 range.
const NEG_MAX: f32 = -3.40282346e38;
const MAX_D4: u32 = 32u;     // MAX_D / 4 = 128 / 4
const BR: u32 = 64u;
const BC: u32 = 16u;

override HEAD_DIM: u32 = 64u;

struct Params { seq: u32, heads: u32, group: u32, kv_heads: u32, scale: f32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> v: array<vec4<f32>>;

var<workgroup> kt: array<vec4<f32>, 512>; // BC · MAX_D4
var<workgroup> vt: array<vec4<f32>, 512>;

@compute @workgroup_size(64)
fn attention_fused(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let d4 = HEAD_DIM / 4u;
    let t = p.seq;
    let bh = wg.y;                   // prompt · H + head
    let b = bh / p.heads;
    let h = bh % p.heads;
    let kvh = h / p.group;
    let r0 = wg.x * BR;
    let i = r0 + li;                 // this invocation's query row
    let live = i < t;
    let qw = p.heads * d4;           // row widths in vec4s
    let kw = p.kv_heads * d4;

    var qr: array<vec4<f32>, MAX_D4>;
    var o: array<vec4<f32>, MAX_D4>;
    var s: array<f32, BC>;
    if (live) {
        let qb = (b * t + i) * qw + h * d4;
        for (var d = 0u; d < d4; d++) { qr[d] = rnd4(q[qb + d]) * p.scale; o[d] = vec4<f32>(0.0); }
    }
    var m = NEG_MAX;
    var l = 0.0;
    let last = min(r0 + BR, t);      // keys 0 .. last − 1 reach some row of this workgroup
    for (var j0 = 0u; j0 < last; j0 += BC) {
        for (var e = li; e < BC * d4; e += BR) {
            let key = j0 + e / d4;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (key < t) {
                let at = (b * t + key) * kw + kvh * d4 + e % d4;
                kv = rnd4(k[at]);
                vv = rnd4(v[at]);
            }
            kt[e] = kv;
            vt[e] = vv;
        }
        workgroupBarrier();
        if (live && j0 <= i) {
            let nk = min(BC, i + 1u - j0);
            var tm = NEG_MAX;
            for (var jj = 0u; jj < nk; jj++) {
                var acc = vec4<f32>(0.0);
                let kb = jj * d4;
                for (var d = 0u; d < d4; d++) { acc += qr[d] * kt[kb + d]; }
                let sc = acc.x + acc.y + acc.z + acc.w;
                s[jj] = sc;
                tm = max(tm, sc);
            }
            let mn = max(m, tm);
            let c = exp(m - mn);
            l *= c;
            for (var d = 0u; d < d4; d++) { o[d] *= c; }
            for (var jj = 0u; jj < nk; jj++) {
                let pj = exp(s[jj] - mn);
                l += pj;
                let vb = jj * d4;
                let pr = rnd(pj);
                for (var d = 0u; d < d4; d++) { o[d] += pr * vt[vb + d]; }
            }
            m = mn;
        }
        workgroupBarrier();
    }
    if (live) {
        let ob = (b * t + i) * qw + h * d4;
        let inv = 1.0 / l;
        for (var d = 0u; d < d4; d++) { out[ob + d] = o[d] * inv; }
    }
}
