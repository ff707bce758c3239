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
    let (grad, _) = pollster::block_on(m.edge_backward(be, &ew, &batch, tape, false, &dl, &[])).unwrap();
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

/// Prompts of different lengths in one batch give what the prompts give run one by one: the
/// logits at each prompt's last row, and the gate gradient of L = Σ dy·logits (the batch's is the
/// sum of the prompts'), at fractional gates, with no values, a shared row per writer, a row per
/// position and a row per row of the batch (a corrupted run's). The CPU mixes and multiplies the
/// real rows only (`Backend::packs_rows`), wgpu every row and, asked to, the real rows; a prompt run
/// alone has no padding. On tiny-gpt2, tiny-llama, and tiny-llama pruned to a layer of heads
/// without its MLP and a layer with its MLP and no heads (where the MLP reader mixes on its own
/// rather than with its layer's heads' readers). Tolerance: 1e-5 of the largest logit, 1e-4 of
/// the largest gradient.
#[test]
fn edge_batched_equals_one_by_one() {
    use carve_core::backend::wgpu::{WgpuBackend, WgpuOptions};
    batched_vs_alone(&cpu(), "cpu");
    batched_vs_alone(gpu(), "gpu");
    // Packing turned on after the backend is made, as `bench train` does.
    let packed = pollster::block_on(WgpuBackend::new(WgpuOptions::default())).expect("a wgpu adapter");
    assert!(!packed.packs_rows() && packed.set_pack_rows(true) && packed.packs_rows());
    batched_vs_alone(&packed, "gpu, rows packed");
}

/// tiny-gpt2, tiny-llama, and tiny-llama without layer 0's MLP and layer 1's heads.
fn edge_models() -> Vec<(&'static str, carve_core::model::ModelConfig, carve_core::model::ModelWeights<HostTensor>)> {
    let (g, l) = (load_path(&fixture("tiny-gpt2")).unwrap(), load_path(&fixture("tiny-llama")).unwrap());
    let shape = carve_core::mask::ModelShape::of(&l.weights.layers, |t| t.shape[0]);
    let mut masks = Masks::ones(&shape.n_heads, &shape.d_ff);
    masks.mlp[0] = 0.0;
    masks.heads[1].iter_mut().for_each(|h| *h = 0.0);
    let p = carve_core::prune::prune(&l.config, &l.weights, &masks, &carve_core::mask::Ablation::Zero).unwrap();
    assert_eq!((p.weights.layers.len(), p.layers[0].d_ff, p.layers[1].n_heads), (2, 0, 0), "the pruned layers");
    vec![("tiny-gpt2", g.config, g.weights), ("tiny-llama", l.config, l.weights), ("pruned tiny-llama", p.config, p.weights)]
}

fn batched_vs_alone<B: Backend>(be: &B, which: &str) {
    for (name, cfg, weights) in edge_models() {
        let cfg = &cfg;
        let m = Model::upload(be, cfg.clone(), &weights).unwrap();
        let ew = EdgeWeights::new(be, &m, &weights).unwrap();
        if name.starts_with("pruned") {
            use carve_core::mask::Reader;
            assert!(!ew.layout.readers.contains(&Reader::Mlp { layer: 0 }) && ew.layout.readers.contains(&Reader::Mlp { layer: 1 }));
        }
        let lay = &ew.layout;
        let ps = prompts(cfg.vocab as u32);
        let batch = Batch::new(&ps, cfg).unwrap();
        assert!(ps.iter().any(|p| p.len() < batch.seq), "the batch has padding");
        let read = |t: &B::Tensor| pollster::block_on(be.read(t)).unwrap();
        let (v, d, seq) = (cfg.vocab, cfg.d_model, batch.seq);
        // Writer outputs of another batch of the same shape, as a corrupted run's rows.
        let other: Vec<Vec<u32>> = ps.iter().map(|p| p.iter().map(|&t| (t * 7 + 3) % v as u32).collect()).collect();
        let ob = Batch::new(&other, cfg).unwrap();
        let ones = vec![1.0; lay.n_edges()];
        let outs: Vec<HostTensor> = m.edge_forward(be, &ew, &ob, &ones, None, &[0], true).unwrap().writers.iter().map(read).collect();
        let shared: Vec<HostTensor> = outs.iter().map(|h| mean_rows(h, &ob, false)).collect();
        let per_pos: Vec<HostTensor> = outs.iter().map(|h| mean_rows(h, &ob, true)).collect();
        assert_eq!(per_pos[0].shape, [seq, d]);
        let gates: Vec<f32> = (0..lay.n_edges()).map(|i| 0.2 + 0.75 * (((i * 7919) % 101) as f32 / 100.0)).collect();
        let dy: Vec<f32> = (0..ps.len() * v).map(|i| (((i * 2654435761usize) % 1000) as f32 / 500.0) - 1.0).collect();
        // Logits and gradient of a batch with `values` (host tensors, uploaded).
        let run = |b: &Batch, values: Option<Vec<HostTensor>>, dy: &[f32]| -> (HostTensor, Vec<f32>) {
            let dev: Option<Vec<B::Tensor>> = values.map(|vs| vs.iter().map(|t| be.upload(t).unwrap()).collect());
            let tape = m.edge_forward(be, &ew, b, &gates, dev.as_deref(), &b.last_rows(), false).unwrap();
            let logits = read(&tape.logits);
            let dl = be.upload(&HostTensor::new(vec![b.size(), v], dy.to_vec())).unwrap();
            let (grad, _) = pollster::block_on(m.edge_backward(be, &ew, b, tape, false, &dl, &[])).unwrap();
            (logits, grad)
        };
        let rows_of = |t: &HostTensor, r0: usize, n: usize| HostTensor::new(vec![n, d], t.data[r0 * d..(r0 + n) * d].to_vec());
        for kind in ["zero", "shared", "per position", "per row"] {
            let values = |b: Option<usize>| -> Option<Vec<HostTensor>> {
                // `b`: prompt b alone (its positions, its rows); None: the batch.
                let len = b.map_or(seq, |b| ps[b].len());
                match kind {
                    "zero" => None,
                    "shared" => Some(shared.clone()),
                    "per position" => Some(per_pos.iter().map(|t| rows_of(t, 0, len)).collect()),
                    _ => Some(outs.iter().map(|t| match b {
                        None => t.clone(),
                        Some(b) => rows_of(t, b * seq, len),
                    }).collect()),
                }
            };
            let what = format!("{which} {name}, {kind} values");
            let (logits, grad) = run(&batch, values(None), &dy);
            let mut sum = vec![0f64; grad.len()];
            for (b, p) in ps.iter().enumerate() {
                let alone = Batch::new(std::slice::from_ref(p), cfg).unwrap();
                let (l1, g1) = run(&alone, values(Some(b)), &dy[b * v..(b + 1) * v]);
                close(&format!("{what}: prompt {b}'s logits"), &HostTensor::new(vec![1, v], logits.row(b).to_vec()), &l1, 1e-5);
                sum.iter_mut().zip(&g1).for_each(|(s, &g)| *s += g as f64);
            }
            let sum: Vec<f32> = sum.iter().map(|&s| s as f32).collect();
            let scale = sum.iter().fold(1e-12f32, |a, &x| a.max(x.abs()));
            let worst = grad.iter().zip(&sum).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(worst <= 1e-4 * scale, "{what}: batched gate gradient vs one by one: {worst:e} over {scale}");
        }
    }
}

/// Logits asked for at every row, padding included: the real rows' equal those asked for alone;
/// where the backend packs rows, the padding rows (which it leaves out) hold zeros.
#[test]
fn edge_logits_at_padding_rows() {
    let be = cpu();
    let host = load_path(&fixture("tiny-llama")).unwrap();
    let m = Model::upload(&be, host.config.clone(), &host.weights).unwrap();
    let ew = EdgeWeights::new(&be, &m, &host.weights).unwrap();
    let batch = Batch::new(&prompts(host.config.vocab as u32), &host.config).unwrap();
    let ones = vec![1.0; ew.layout.n_edges()];
    let read = |t: &<carve_core::backend::cpu::CpuBackend as Backend>::Tensor| pollster::block_on(be.read(t)).unwrap();
    let all: Vec<u32> = (0..batch.rows() as u32).collect();
    let every = read(&m.edge_forward(&be, &ew, &batch, &ones, None, &all, false).unwrap().logits);
    let real = read(&m.edge_forward(&be, &ew, &batch, &ones, None, &batch.real_rows(), false).unwrap().logits);
    assert_eq!(every.shape, [batch.rows(), host.config.vocab]);
    let real_rows = batch.real_rows();
    let mut k = 0;
    for r in 0..batch.rows() {
        if real_rows.contains(&(r as u32)) {
            assert_eq!(every.row(r), real.row(k), "real row {r}");
            k += 1;
        } else {
            assert!(every.row(r).iter().all(|&x| x == 0.0), "padding row {r} is not zero");
        }
    }
    assert!(k < batch.rows(), "the batch has padding");
}
