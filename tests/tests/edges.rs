//! The edge forward against the plain forward: with every gate at 1 it is the same model, and with
//! every edge out of one writer at 0 it is that writer ablated as a node with the same values. On
//! tiny-gpt2 and tiny-llama, prompts of different lengths in one batch, both backends.
//! Tolerance: max |edge − plain| over every logit of every real (unpadded) row, against max(1, max |plain|):
//! 1e-6 with every gate 1 (measured 5.0e-7 to 6.9e-7 over both models and both backends), 2e-6
//! with mean values in the sum (they are subtracted and added back; measured up to 8.4e-7). The
//! edge forward adds the writers' outputs in another order than the residual stream does, so the
//! f32 rounding differs by a few ulps a layer.

use carve_core::backend::Backend;
use carve_core::mask::{AblationValues, Masks, Writer};
use carve_core::model::ablation::{mean_rows, mean_values, DeviceAblation};
use carve_core::model::edges::EdgeWeights;
use carve_core::model::load::load_path;
use carve_core::model::{Batch, ForwardArgs, LogitsAt, Model};
use carve_core::HostTensor;
use carve_tests::*;

/// Every gate 1, no values: the plain forward.
const TOL: f64 = 1e-6;
/// With mean values subtracted and added back.
const TOL_VALUES: f64 = 2e-6;

fn close(what: &str, got: &HostTensor, want: &HostTensor, tol: f64) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let scale = want.data.iter().fold(1.0f64, |m, &v| m.max(v.abs() as f64));
    let worst = got.data.iter().zip(&want.data).map(|(&a, &b)| (a as f64 - b as f64).abs()).fold(0.0, f64::max);
    assert!(worst <= tol * scale, "{what}: max error {worst:e} over {scale}");
}

fn prompts(vocab: u32) -> Vec<Vec<u32>> {
    (0..5u32).map(|i| (0..3 + i % 4).map(|j| (i * 31 + j * 17 + 2) % vocab).collect()).collect()
}

/// The plain forward's logits at every real (unpadded) row of the batch: what the padding rows
/// hold is no prompt's output (the CPU does not even run the matrix products there).
fn plain<B: Backend>(be: &B, m: &Model<B>, batch: &Batch, masks: Option<&Masks>, abl: Option<&DeviceAblation<B>>) -> HostTensor {
    let args = ForwardArgs { masks, ablation: abl, logits: LogitsAt::All, ..ForwardArgs::default() };
    let out = m.forward(be, batch, &args).unwrap();
    let all = pollster::block_on(be.read(out.logits.as_ref().unwrap())).unwrap();
    let rows = batch.real_rows();
    let v = all.shape[1];
    HostTensor::new(vec![rows.len(), v], rows.iter().flat_map(|&r| all.row(r as usize).to_vec()).collect())
}


fn check<B: Backend>(be: &B, name: &str) {
    let host = load_path(&fixture(name)).unwrap();
    let m = Model::upload(be, host.config.clone(), &host.weights).unwrap();
    let ew = EdgeWeights::new(be, &m, &host.weights).unwrap();
    let lay = &ew.layout;
    let batch = Batch::new(&prompts(host.config.vocab as u32), &host.config).unwrap();
    let rows = batch.real_rows();
    let read = |t: &B::Tensor| pollster::block_on(be.read(t)).unwrap();

    // Every gate 1, zero ablation: the plain forward.
    let ones = vec![1.0; lay.n_edges()];
    let out = m.edge_forward(be, &ew, &batch, &ones, None, &rows, true).unwrap();
    close(&format!("{name}: every gate 1"), &read(&out.logits), &plain(be, &m, &batch, None, None), TOL);

    // Writer means over a patching batch, as the edge forward measures them, and the node means.
    let patching = Batch::new(&prompts(host.config.vocab as u32 - 7).iter().rev().cloned().collect::<Vec<_>>(), &host.config).unwrap();
    let pout = m.edge_forward(be, &ew, &patching, &ones, None, &[0], true).unwrap();
    assert_eq!(pout.writers.len(), lay.writers.len());
    let means: Vec<B::Tensor> = pout.writers.iter().map(|h| be.upload(&mean_rows(&read(h), &patching, false)).unwrap()).collect();
    let node_means: AblationValues = pollster::block_on(mean_values(&m, be, &patching, false)).unwrap();
    let node_dev = DeviceAblation::upload(be, &node_means).unwrap();

    // Every gate 1 with mean values: still the plain forward (the values cancel).
    let out = m.edge_forward(be, &ew, &batch, &ones, Some(&means), &rows, false).unwrap();
    close(&format!("{name}: every gate 1, mean values"), &read(&out.logits), &plain(be, &m, &batch, None, None), TOL_VALUES);

    // Every edge out of one writer at 0 with mean values: that writer ablated as a node.
    let layers = host.weights.layers.len();
    for writer in [Writer::Head { layer: 0, head: 1 }, Writer::Mlp { layer: 0 }, Writer::Head { layer: layers - 1, head: 0 }] {
        let wi = lay.writers.iter().position(|&w| w == writer).unwrap();
        let mut gates = ones.clone();
        for (r, &reads) in lay.reads.iter().enumerate() {
            if wi < reads {
                gates[lay.first[r] + wi] = 0.0;
            }
        }
        let shape = carve_core::mask::ModelShape::of(&host.weights.layers, |t| t.shape[0]);
        let mut masks = Masks::ones(&shape.n_heads, &shape.d_ff);
        match writer {
            Writer::Head { layer, head } => masks.heads[layer][head] = 0.0,
            Writer::Mlp { layer } => masks.mlp[layer] = 0.0,
            _ => unreachable!(),
        }
        let out = m.edge_forward(be, &ew, &batch, &gates, Some(&means), &rows, false).unwrap();
        close(&format!("{name}: {writer} cut off"), &read(&out.logits), &plain(be, &m, &batch, Some(&masks), Some(&node_dev)), TOL_VALUES);
    }
}

#[test]
fn edge_forward_tiny_gpt2_cpu() {
    check(&cpu(), "tiny-gpt2");
}
#[test]
fn edge_forward_tiny_llama_cpu() {
    check(&cpu(), "tiny-llama");
}
#[test]
fn edge_forward_tiny_gpt2_gpu() {
    check(gpu(), "tiny-gpt2");
}
#[test]
fn edge_forward_tiny_llama_gpu() {
    check(gpu(), "tiny-llama");
}

/// Edge-gate gradients at fractional gates with mean values: the f64 reference edge forward
/// (`reference_edges.rs`, one prompt at a time) matches the edge forward's logits (1e-4 of the
/// largest), and the edge backward's gradient of L = Σ dy·logits (dy random, prompts of different
/// lengths in one batch) matches central finite differences of the reference on every reader kind
/// within 1e-3 of the largest gradient. Returns the gradient, for comparing backends.
fn grad_check<B: Backend>(be: &B, name: &str) -> Vec<f32> {
    use carve_tests::reference_edges::edge_last_logits;
    let host = load_path(&fixture(name)).unwrap();
    let cfg = &host.config;
    let m = Model::upload(be, cfg.clone(), &host.weights).unwrap();
    let ew = EdgeWeights::new(be, &m, &host.weights).unwrap();
    let lay = &ew.layout;
    let ps: Vec<Vec<u32>> = prompts(cfg.vocab as u32).into_iter().take(3).collect();
    let batch = Batch::new(&ps, cfg).unwrap();
    let read = |t: &B::Tensor| pollster::block_on(be.read(t)).unwrap();
    let ones = vec![1.0; lay.n_edges()];
    let pout = m.edge_forward(be, &ew, &batch, &ones, None, &[0], true).unwrap();
    let means: Vec<HostTensor> = pout.writers.iter().map(|h| mean_rows(&read(h), &batch, false)).collect();
    let dev: Vec<B::Tensor> = means.iter().map(|t| be.upload(t).unwrap()).collect();
    let ref_values: Vec<Vec<f64>> = means.iter().map(|t| t.data.iter().map(|&v| v as f64).collect()).collect();
    // Fixed fractional gates, different per edge.
    let gates: Vec<f32> = (0..lay.n_edges()).map(|i| 0.2 + 0.75 * (((i * 7919) % 101) as f32 / 100.0)).collect();
    let g64: Vec<f64> = gates.iter().map(|&g| g as f64).collect();
    let v = cfg.vocab;
    let dy: Vec<f32> = (0..ps.len() * v).map(|i| (((i * 2654435761usize) % 1000) as f32 / 500.0) - 1.0).collect();
    let loss = |g: &[f64]| -> f64 {
        ps.iter()
            .enumerate()
            .map(|(b, p)| {
                let lg = edge_last_logits(cfg, &host.weights, lay, p, g, Some(&ref_values));
                lg.iter().zip(&dy[b * v..(b + 1) * v]).map(|(a, d)| a * *d as f64).sum::<f64>()
            })
            .sum()
    };
    let tape = m.edge_forward(be, &ew, &batch, &gates, Some(&dev), &batch.last_rows(), false).unwrap();
    let got = read(&tape.logits);
    for (b, p) in ps.iter().enumerate() {
        let want = edge_last_logits(cfg, &host.weights, lay, p, &g64, Some(&ref_values));
        let scale = want.iter().fold(1.0f64, |a, &x| a.max(x.abs()));
        let worst = want.iter().zip(&got.data[b * v..(b + 1) * v]).map(|(w, &g)| (w - g as f64).abs()).fold(0.0, f64::max);
        assert!(worst <= 1e-4 * scale, "{name}: prompt {b}: edge forward vs f64 reference {worst:e} over {scale}");
    }
    let dl = be.upload(&HostTensor::new(vec![ps.len(), v], dy.clone())).unwrap();
    let (grad, _) = pollster::block_on(m.edge_backward(be, &ew, &batch, tape, &gates, false, &dl, &[])).unwrap();
    let scale = grad.iter().fold(0.0f64, |a, &x| a.max(x.abs() as f64));
    assert!(scale > 0.0, "{name}: every gradient is 0");
    // Edges into every reader, from several writers each.
    let mut at: Vec<usize> = Vec::new();
    for r in 0..lay.readers.len() {
        for wi in [0, lay.reads[r] / 2, lay.reads[r] - 1] {
            at.push(lay.first[r] + wi);
        }
    }
    at.dedup();
    let eps = 1e-5;
    for &i in &at {
        let (mut up, mut dn) = (g64.clone(), g64.clone());
        up[i] += eps;
        dn[i] -= eps;
        let fd = (loss(&up) - loss(&dn)) / (2.0 * eps);
        let e = lay.edge(i).unwrap();
        assert!((fd - grad[i] as f64).abs() <= 1e-3 * scale, "{name}: edge {e}: finite difference {fd} vs {} (largest {scale})", grad[i]);
    }
    grad
}

#[test]
fn edge_gradients_match_finite_differences() {
    for name in ["tiny-gpt2", "tiny-llama"] {
        let c = grad_check(&cpu(), name);
        let g = grad_check(gpu(), name);
        let scale = c.iter().fold(1e-12f32, |a, &x| a.max(x.abs()));
        let worst = c.iter().zip(&g).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst <= 1e-4 * scale, "{name}: wgpu and cpu gradients differ by {worst:e} over {scale}");
    }
}
