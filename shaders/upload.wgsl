// upload: out[i] = data[i], bit for bit, for i < n. `data` is the host's values staged in the
// recorder's arena for this submit, so a small upload (masks, ablation values, index lists) fills a
// pooled buffer by a recorded command, in order with the commands around it, instead of creating a
// new buffer for each. Bindings: @0 out, @1 params, @2 data.

struct Params { n: u32, _p1: u32, _p2: u32, _p3: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> data: array<u32>;

@compute @workgroup_size(256)
fn upload(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + li;
    if (i < p.n) { out[i] = data[i]; }
}
