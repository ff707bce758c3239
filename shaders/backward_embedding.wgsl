// scatter_rows, the backward of gather_rows: out[ids[i], :] += src[i, :], without atomics. The
// host groups the source rows by target row; one thread per (target row, column) sums its sources
// in order. Rows that no id names are zeroed by a fill beforehand.
// Bindings: @0 out, @1 params, @2 src, @3 plan: `targets` triples (target row, first, end) into
// the list of source rows that follows them at `list`.

struct Params { n: u32, cols: u32, list: u32, _p3: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read> plan: array<u32>;

@compute @workgroup_size(256)
fn scatter_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + li;
    if (i >= p.n) { return; }
    let t = i / p.cols;
    let c = i % p.cols;
    let target_row = plan[3u * t];
    var s = 0.0;
    for (var k = plan[3u * t + 1u]; k < plan[3u * t + 2u]; k++) {
        s += src[plan[p.list + k] * p.cols + c];
    }
    out[target_row * p.cols + c] = s;
}
