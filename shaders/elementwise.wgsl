// One thread per element (rope: per rotated pair). Bindings: @0 out, @1 params, @2.. inputs.
// Dispatches over 65535 workgroups come as a 2-D grid; the linear index folds it back.

struct Params {
    n: u32,   // elements (rope: pairs) to write
    p1: u32,  // fill: value bits · mix: cols · rope: seq
    p2: u32,  // mix: mask div · rope: n_heads
    p3: u32,  // mix: mask rows · rope: half head_dim
    p4: u32,  // mix: abl div · rope: 1 turns by the opposite angle (its backward)
    p5: u32,  // mix: abl rows
    _p6: u32,
    _p7: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> c: array<f32>;

fn gid(wg: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + li;
}

// Poison: fill the output with a constant (NaN) so unwritten elements show up in tests.
@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = gid(wg, nwg, li);
    if (i < p.n) { out[i] = bitcast<f32>(p.p1); }
}

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) li: u32) {
    let i = gid(wg, nwg, li);
    if (i < p.n) { out[i] = a[i] + b[i]; }
}

@compute @workgroup_size(256)
fn gelu_new(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let i = gid(wg, nwg, li);
    if (i < p.n) {
        let v = a[i];
        // Clamped: some tanh implementations compute (e^2t − 1)/(e^2t + 1) and give NaN for
        // large t; tanh(±15) is ±1 in f32 anyway.
        let t = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), -15.0, 15.0);
        out[i] = 0.5 * v * (1.0 + tanh(t));
    }
}

@compute @workgroup_size(256)
fn silu_mul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let i = gid(wg, nwg, li);
    if (i < p.n) {
        let g = a[i];
        out[i] = g / (1.0 + exp(-g)) * b[i];
    }
}

// out[r, c] = m·x + (1 − m)·abl with m = mask[(r / mdiv) % mrows, c], abl[(r / adiv) % arows, c].
@compute @workgroup_size(256)
fn mix_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) li: u32) {
    let i = gid(wg, nwg, li);
    if (i < p.n) {
        let cols = p.p1;
        let r = i / cols;
        let col = i % cols;
        let m = b[((r / p.p2) % p.p3) * cols + col];
        let ab = c[((r / p.p4) % p.p5) * cols + col];
        out[i] = m * a[i] + (1.0 - m) * ab;
    }
}

// HF rotate_half rope, or with p4 set its backward: the rotation is orthogonal, so the gradient
// turns back by the opposite angle (sin negated). `b` is a host-computed table [seq, half, 2] of (cos, sin): computing the
// angles in f64 on the host keeps large positions exact, where GPU sin/cos of big arguments are
// only loosely specified.
@compute @workgroup_size(256)
fn rope(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = gid(wg, nwg, li);
    if (i < p.n) {
        let seq = p.p1;
        let heads = p.p2;
        let half = p.p3;
        let per_row = heads * half;
        let r = i / per_row;
        let rem = i % per_row;
        let h = rem / half;
        let d = rem % half;
        let t = ((r % seq) * half + d) * 2u;
        let cs = b[t];
        var sn = b[t + 1u];
        if (p.p4 != 0u) { sn = -sn; }
        let base = r * per_row * 2u + h * half * 2u + d;
        let x1 = a[base];
        let x2 = a[base + half];
        out[base] = x1 * cs - x2 * sn;
        out[base + half] = x2 * cs + x1 * sn;
    }
}
