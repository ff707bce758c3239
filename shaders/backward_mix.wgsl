// Backward of the masked mix out[r, c] = m·x[r, c] + (1 − m)·a, with m = mask[(r / mdiv) % mrows, c]
// and a = abl[(r / adiv) % arows, c]. Bindings: @0 out, @1 params, @2.. inputs.

struct Params {
    n: u32,      // elements to write
    cols: u32,
    rows: u32,   // rows of x
    mdiv: u32,   // at most rows (a larger div picks the same rows)
    mrows: u32,
    adiv: u32,
    arows: u32,
    blocks: u32, // ceil(rows / mdiv)
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> c: array<f32>;

fn gid(wg: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + li;
}

// a = mask, b = dy: dx[r, c] = m·dy[r, c]. One thread per element of x.
@compute @workgroup_size(256)
fn mix_backward_x(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let i = gid(wg, nwg, li);
    if (i < p.n) {
        let r = i / p.cols;
        let col = i % p.cols;
        out[i] = a[((r / p.mdiv) % p.mrows) * p.cols + col] * b[i];
    }
}

// a = x, b = abl, c = dy: dmask[k, c] = Σ_{r: (r / mdiv) % mrows = k} dy[r, c]·(x[r, c] − abl[arow, c]).
// One thread per element of the mask, summing in f32 over its rows: the blocks of mdiv rows
// numbered k, k + mrows, k + 2·mrows, …
@compute @workgroup_size(256)
fn mix_backward_mask(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let i = gid(wg, nwg, li);
    if (i < p.n) {
        let k = i / p.cols;
        let col = i % p.cols;
        var s = 0.0;
        for (var blk = k; blk < p.blocks; blk += p.mrows) {
            let r0 = blk * p.mdiv;
            let end = min(r0 + p.mdiv, p.rows);
            for (var r = r0; r < end; r++) {
                let e = r * p.cols + col;
                s += c[e] * (a[e] - b[((r / p.adiv) % p.arows) * p.cols + col]);
            }
        }
        out[i] = s;
    }
}
