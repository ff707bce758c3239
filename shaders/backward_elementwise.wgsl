// Backward of the elementwise activations, one thread per element: the input gradient is the
// upstream gradient dy times the forward's derivative. Bindings: @0 out, @1 params, @2.. inputs.
// Dispatches over 65535 workgroups come as a 2-D grid; the linear index folds it back.

struct Params { n: u32, _p1: u32, _p2: u32, _p3: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> c: array<f32>;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;

fn gid(wg: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + li;
}

fn sigmoid(g: f32) -> f32 {
    return 1.0 / (1.0 + exp(-g));
}

// a = x, b = dy: dx = dy · (0.5·(1 + t) + 0.5·x·(1 − t²)·c·(1 + 3·0.044715·x²)),
// t = tanh(c·(x + 0.044715·x³)), c = sqrt(2/π). The tanh argument is clamped as in the forward.
@compute @workgroup_size(256)
fn gelu_new_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let i = gid(wg, nwg, li);
    if (i < p.n) {
        let x = a[i];
        let t = tanh(clamp(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x), -15.0, 15.0));
        let d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
        out[i] = b[i] * d;
    }
}

// a = gate, b = up, c = dy: dgate = dy·up·σ(g)·(1 + g·(1 − σ(g))).
@compute @workgroup_size(256)
fn silu_mul_backward_gate(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
    let i = gid(wg, nwg, li);
    if (i < p.n) {
        let g = a[i];
        let s = sigmoid(g);
        out[i] = c[i] * b[i] * s * (1.0 + g * (1.0 - s));
    }
}

// a = gate, b = dy: dup = dy·silu(g) = dy·g·σ(g).
@compute @workgroup_size(256)
fn silu_mul_backward_up(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) li: u32) {
    let i = gid(wg, nwg, li);
    if (i < p.n) {
        let g = a[i];
        out[i] = b[i] * g * sigmoid(g);
    }
}
