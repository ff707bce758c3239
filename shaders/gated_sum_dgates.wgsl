// gated_sum backward, the gates' gradient: dz [n, k] = dy [n, C] · sᵀ, s [k, C]. C is long (a
// layer's tokens × width) and n·k small, so the columns are split across workgroups and summed
// in two launches, without atomics:
//   dgates_part: part[q, i, j] = Σ_{c in chunk q} dy[i, c] · s[j, c], a 4×4 block of (i, j) per
//                workgroup (its y, from `tile0`), each invocation striding over the chunk's columns,
//                then a tree sum over the workgroup;
//   dgates_sum:  dz[i, j] = Σ_q part[q, i, j], one invocation per entry, into columns
//                out_off.. of a dz whose rows are out_row apart (one dgates for all groups).
// Bindings: dgates_part: @0 part [parts, n, k], @1 params, @2 dy, @3 s.
//           dgates_sum:  @0 dz [n, K], @1 params, @2 part.

struct Params { n: u32, k: u32, cols: u32, chunk: u32, tiles_k: u32, tile0: u32, parts: u32, out_off: u32,
                out_row: u32, _p9: u32, _p10: u32, _p11: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

var<workgroup> sh: array<vec4<f32>, 256>;

// The workgroup's sum of `v` (every invocation gets it back; the caller writes from lane 0).
fn wg_sum(li: u32, v: vec4<f32>) -> vec4<f32> {
    sh[li] = v;
    workgroupBarrier();
    for (var st = 128u; st > 0u; st >>= 1u) {
        if (li < st) { sh[li] += sh[li + st]; }
        workgroupBarrier();
    }
    let r = sh[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn dgates_part(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let q = wg.x;
    let tile = p.tile0 + wg.y;
    let i0 = (tile / p.tiles_k) * 4u;
    let j0 = (tile % p.tiles_k) * 4u;
    let c0 = q * p.chunk;
    let c1 = min(c0 + p.chunk, p.cols);
    // Rows past n (or k) repeat the last; their sums are never written.
    let ri = vec4<u32>(min(i0, p.n - 1u), min(i0 + 1u, p.n - 1u), min(i0 + 2u, p.n - 1u), min(i0 + 3u, p.n - 1u)) * p.cols;
    let rj = vec4<u32>(min(j0, p.k - 1u), min(j0 + 1u, p.k - 1u), min(j0 + 2u, p.k - 1u), min(j0 + 3u, p.k - 1u)) * p.cols;
    var s0 = vec4<f32>(0.0);
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    var s3 = vec4<f32>(0.0);
    for (var c = c0 + li; c < c1; c += 256u) {
        let sv = vec4<f32>(b[rj.x + c], b[rj.y + c], b[rj.z + c], b[rj.w + c]);
        s0 += a[ri.x + c] * sv;
        s1 += a[ri.y + c] * sv;
        s2 += a[ri.z + c] * sv;
        s3 += a[ri.w + c] * sv;
    }
    var rows = array<vec4<f32>, 4>(wg_sum(li, s0), wg_sum(li, s1), wg_sum(li, s2), wg_sum(li, s3));
    if (li == 0u) {
        for (var r = 0u; r < 4u; r++) {
            for (var t = 0u; t < 4u; t++) {
                let i = i0 + r;
                let j = j0 + t;
                if (i < p.n && j < p.k) { out[(q * p.n + i) * p.k + j] = rows[r][t]; }
            }
        }
    }
}

@compute @workgroup_size(256)
fn dgates_sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let e = (wg.x + wg.y * nwg.x) * 256u + li;
    let nk = p.n * p.k;
    if (e >= nk) { return; }
    var t = 0.0;
    for (var q = 0u; q < p.parts; q++) { t += a[q * nk + e]; }
    out[(e / p.k) * p.out_row + p.out_off + e % p.k] = t;
}
