// gated_sum, the edge forward's mixing, one group of writers per launch:
//   out[i, c] = base[i, c] + Σ_j z[i, j] · s[j, c]
// with z [n, k] (readers' gates on the group's k rows) and s [k, C] (the group's stacked outputs).
// z is read where it lies in a larger table of gates: z[i, j] = gates[zoff + i·zrow + j·zcol] (the
// backward's transpose is the same table with the strides swapped).
// base is 0 (mode 0, the first group), what `out` holds (mode 1, the groups after it), a third
// tensor (mode 2: the backward's dstacks = acc + zᵀ·dy, the same product with z = gatesᵀ, s = dy),
// or a vector of blen elements repeated along each row (mode 3: base[c mod blen], the readers' Σ a_w).
// One invocation per column and block of R readers: the stack's column is read once per block, the
// gates are the same for the whole workgroup (broadcast reads), the R sums stay in registers.
// Bindings: @0 out [n, C], @1 params, @2 gates (the table z lies in), @3 s [k, C], @4 base [n, C] (mode 2), [blen] (mode 3).

const R: u32 = 16u;

struct Params { n: u32, k: u32, cols: u32, mode: u32, zoff: u32, zrow: u32, zcol: u32, blen: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> gates: array<f32>;
@group(0) @binding(3) var<storage, read> s: array<f32>;
@group(0) @binding(4) var<storage, read> base: array<f32>;

// Columns fold over workgroups x and y (c = (x + y·nx)·256 + lane); z picks the block of readers.
@compute @workgroup_size(256)
fn gated_sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let c = (wg.x + wg.y * nwg.x) * 256u + li;
    if (c >= p.cols) { return; }
    let i0 = wg.z * R;
    var acc: array<f32, 16>;
    for (var r = 0u; r < R; r++) { acc[r] = 0.0; }
    for (var j = 0u; j < p.k; j++) {
        let v = s[j * p.cols + c];
        let zj = p.zoff + j * p.zcol;
        // Readers past n repeat the last one's gate; their sums are never written.
        for (var r = 0u; r < R; r++) {
            acc[r] += gates[zj + min(i0 + r, p.n - 1u) * p.zrow] * v;
        }
    }
    for (var r = 0u; r < R; r++) {
        let i = i0 + r;
        if (i < p.n) {
            let o = i * p.cols + c;
            if (p.mode == 1u) {
                out[o] += acc[r];
            } else if (p.mode == 2u) {
                out[o] = base[o] + acc[r];
            } else if (p.mode == 3u) {
                out[o] = base[c % p.blen] + acc[r];
            } else {
                out[o] = acc[r];
            }
        }
    }
}
