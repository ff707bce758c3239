// gather_rows over one row-chunk of the table: the host groups the requested ids by the chunk
// holding them and passes (out_row, row_in_chunk) pairs, so a table split across several
// bindings (the 154 MB GPT-2 embedding on a 128 MiB binding limit) costs one dispatch per chunk.
// Bindings: @0 out, @1 params, @2 table chunk, @3 pairs.

struct Params { n: u32, cols: u32, _p2: u32, _p3: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read> pairs: array<vec2<u32>>;

@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + li;
    if (i >= p.n) { return; }
    let pr = pairs[i / p.cols];
    let c = i % p.cols;
    out[pr.x * p.cols + c] = table[pr.y * p.cols + c];
}
