//! node-prune's pieces: the expected parameter sparsity and its gradient, target mode reaching its
//! target, and a training loss that turns NaN stopping with the step named.

use carve_core::circuit::ModelShape;
use carve_core::extract::node_prune::{node_prune, Costs, Granularity, Layout, NodePruneData, NodePruneOptions};
use carve_core::extract::AblationKind;
use carve_core::model::load::load_path;
use carve_core::model::Model;
use carve_core::optim::hard_concrete as hc;
use carve_tests::*;

#[test]
fn expected_sparsity_gradient_matches_finite_differences() {
    let shape = ModelShape { n_heads: vec![3, 2, 0], d_ff: vec![4, 0, 5] };
    let c = Costs { head: vec![10.0, 7.0, 0.0], neuron: vec![3.0, 0.0, 2.0], total: 30.0 + 14.0 + 12.0 + 10.0 };
    for g in [Granularity::ALL, Granularity { attn: false, mlps: true, heads: true, neurons: false }] {
        let layout = Layout::new(&shape, g);
        let la: Vec<f64> = (0..layout.len()).map(|i| ((i * 7 % 11) as f64 - 5.0) * 0.6).collect();
        let s_of = |la: &[f64]| {
            let p: Vec<f64> = la.iter().map(|&a| hc::expected_l0(a)).collect();
            let dp: Vec<f64> = la.iter().map(|&a| hc::expected_l0_grad(a)).collect();
            layout.expected_sparsity(&p, &dp, &c)
        };
        let (s, grad) = s_of(&la);
        assert!((0.0..=1.0).contains(&s));
        for i in 0..la.len() {
            let (mut up, mut dn) = (la.clone(), la.clone());
            up[i] += 1e-6;
            dn[i] -= 1e-6;
            let fd = (s_of(&up).0 - s_of(&dn).0) / 2e-6;
            assert!((fd - grad[i]).abs() < 1e-7, "gate {i}: {} vs {fd}", grad[i]);
        }
        // Every gate shut: nothing kept; every gate open: nothing removed.
        let all = |a: f64| s_of(&vec![a; layout.len()]).0;
        assert!(all(-40.0) > 0.999 && all(40.0) < 1e-3, "{} {}", all(-40.0), all(40.0));
    }
}

/// On tiny-llama with a target of 60% of the parameters, the expected sparsity ends near the target.
#[test]
fn target_mode_reaches_its_target() {
    let m = load_path(&fixture("tiny-llama")).unwrap();
    let be = cpu();
    let model = Model::upload(&be, m.config.clone(), &m.weights).unwrap();
    let prompts: Vec<Vec<u32>> = (0..16u32).map(|i| (0..5 + i % 4).map(|j| (i * 29 + j * 13 + 3) % 500).collect()).collect();
    let d = NodePruneData { pairs: vec![None; prompts.len()], discovery: prompts.clone(), patching: prompts, corrupted: vec![] };
    let o = NodePruneOptions {
        target_sparsity: Some(0.6),
        sparsity_weight: 0.0,
        steps: 200,
        warmup: 10,
        batch: 8,
        ablation: AblationKind::Mean,
        ..NodePruneOptions::defaults()
    };
    let r = pollster::block_on(node_prune(&model, &be, &d, &o, None, &mut ())).unwrap();
    let last = r.state.history.last().unwrap();
    assert_eq!(last.target, Some(0.6));
    assert!((last.sparsity - 0.6).abs() < 0.1, "expected sparsity {} for a target of 0.6", last.sparsity);
    assert!(r.state.lambda[1] > 0.0, "λ2 rose: {:?}", r.state.lambda);
}

/// A training loss that turns NaN stops the run with an error naming the step, before the state
/// is advanced: here the mean ablation values are NaN (a patching prompt holds a token whose
/// embedding is NaN, a token no discovery prompt uses, so the full model's logits are finite), and
/// the first gate sampled below 1 mixes them in.
#[test]
fn a_loss_that_turns_nan_stops_naming_the_step() {
    let mut m = load_path(&fixture("tiny-llama")).unwrap();
    let d = m.config.d_model;
    // Untied, so that only the embedding of token 499 is NaN, not its logit.
    m.weights.lm_head = Some(m.weights.wte.clone());
    m.weights.wte.data[499 * d..500 * d].fill(f32::NAN);
    let be = cpu();
    let model = Model::upload(&be, m.config.clone(), &m.weights).unwrap();
    let discovery: Vec<Vec<u32>> = (0..8u32).map(|i| (0..5).map(|j| (i * 29 + j * 13 + 3) % 400).collect()).collect();
    let mut patching = discovery.clone();
    patching.push(vec![3, 499, 7]);
    let data = NodePruneData { pairs: vec![None; discovery.len()], discovery, patching, corrupted: vec![] };
    let o = NodePruneOptions { steps: 20, warmup: 2, batch: 4, ablation: AblationKind::Mean, ..NodePruneOptions::defaults() };
    let mut saved_steps = Vec::new();
    let mut hook = |_: &carve_core::extract::node_prune::StepInfo, st: &carve_core::extract::node_prune::NodePruneState| {
        assert!(st.log_alpha.iter().all(|a| a.is_finite()), "a state with NaN reached the hook");
        saved_steps.push(st.step);
        carve_core::extract::Flow::Continue
    };
    let err = match pollster::block_on(node_prune(&model, &be, &data, &o, None, &mut hook)) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("training on NaN ablation values finished"),
    };
    assert!(err.contains("node-prune step 1") && err.contains("NaN"), "{err}");
    assert!(err.contains("last good state (step 0)"), "{err}");
    assert!(saved_steps.is_empty(), "steps reported before the NaN: {saved_steps:?}");
}

/// Resample ablation with every prompt as its own corrupted prompt changes nothing, whatever the
/// gates: the task loss stays 0 (so only sparsity acts and every gate shuts) and the empty circuit
/// still has KL 0. Rows out of line (prompts of different lengths, padded) would show as KL > 0.
/// A corrupted prompt of another length is refused.
#[test]
fn resample_ablation_takes_each_prompts_own_corrupted_run() {
    let m = load_path(&fixture("tiny-llama")).unwrap();
    let be = cpu();
    let model = Model::upload(&be, m.config.clone(), &m.weights).unwrap();
    let prompts: Vec<Vec<u32>> = (0..12u32).map(|i| (0..4 + i % 5).map(|j| (i * 31 + j * 17 + 5) % 500).collect()).collect();
    let d = NodePruneData { pairs: vec![None; prompts.len()], discovery: prompts.clone(), patching: vec![], corrupted: prompts.clone() };
    let o = NodePruneOptions { sparsity_weight: 0.9, steps: 60, warmup: 5, batch: 5, lr: 0.5, ablation: AblationKind::Resample, ..NodePruneOptions::weighted() };
    let r = pollster::block_on(node_prune(&model, &be, &d, &o, None, &mut ())).unwrap();
    assert!(r.ablation.is_none(), "resample keeps no fixed values");
    assert!(r.state.history.iter().all(|h| h.kl.abs() < 1e-6), "KL on a step: {:?}", r.state.history.iter().map(|h| h.kl).collect::<Vec<_>>());
    assert!(r.kept.is_empty(), "with no task loss every gate shuts; kept {:?}", r.kept);
    assert!(r.discovery_kl.abs() < 1e-6, "the empty circuit's KL {}", r.discovery_kl);

    // Corrupted prompts that differ from the clean ones: the task loss is no longer 0.
    let other: Vec<Vec<u32>> = prompts.iter().map(|p| p.iter().map(|&t| (t + 101) % 500).collect()).collect();
    let d2 = NodePruneData { corrupted: other, ..d.clone() };
    let r2 = pollster::block_on(node_prune(&model, &be, &d2, &NodePruneOptions { steps: 3, warmup: 1, ..o.clone() }, None, &mut ())).unwrap();
    assert!(r2.state.history.iter().any(|h| h.kl > 1e-4), "{:?}", r2.state.history.iter().map(|h| h.kl).collect::<Vec<_>>());

    // λ_k = 0 for neurons: nothing pushes their gates, so every neuron stays while every head goes.
    let g = Granularity { attn: false, mlps: false, heads: true, neurons: true };
    let o0 = NodePruneOptions { granularity: g, granularity_weights: [1.0, 1.0, 1.0, 0.0], ..o.clone() };
    let r0 = pollster::block_on(node_prune(&model, &be, &d, &o0, None, &mut ())).unwrap();
    let heads = r0.kept.iter().filter(|c| matches!(c, carve_core::circuit::Component::Head { .. })).count();
    let neurons = r0.kept.iter().filter(|c| matches!(c, carve_core::circuit::Component::Neuron { .. })).count();
    assert_eq!((heads, neurons), (0, m.config.n_layers * m.config.d_ff), "kept {heads} heads and {neurons} neurons");

    let mut bad = d.clone();
    bad.corrupted[3].push(7);
    let err = pollster::block_on(node_prune(&model, &be, &bad, &o, None, &mut ())).err().expect("refused").to_string();
    assert!(err.contains("corrupted prompt 3"), "{err}");
    let none = NodePruneData { corrupted: vec![], ..d };
    let err = pollster::block_on(node_prune(&model, &be, &none, &o, None, &mut ())).err().expect("refused").to_string();
    assert!(err.contains("resample ablation needs a corrupted prompt"), "{err}");
}

/// On wgpu a training step reads once: the loss is computed on the device and read back with
/// the mask gradients, and resample's corrupted forward reads nothing. The work is submitted in
/// pieces of 7 dispatches along the way (so pooled buffers and the arena are reused across
/// submits within a step), and the losses still match the CPU backend's step for step (same
/// minibatches and gate noise) within 1e-4 relative.
#[test]
fn a_wgpu_step_reads_once_and_matches_the_cpu() {
    use carve_core::backend::wgpu::{WgpuBackend, WgpuOptions};
    let m = load_path(&fixture("tiny-llama")).unwrap();
    // Its own device: the counters must not see other tests' work.
    let g = pollster::block_on(WgpuBackend::new(WgpuOptions { submit_every: 7, ..WgpuOptions::default() }))
        .expect("a wgpu adapter (WGPU_BACKEND=vulkan with llvmpipe)");
    let c = cpu();
    let prompts: Vec<Vec<u32>> = (0..10u32).map(|i| (0..4 + i % 3).map(|j| (i * 37 + j * 11 + 1) % 500).collect()).collect();
    let corrupted: Vec<Vec<u32>> = prompts.iter().map(|p| p.iter().map(|&t| (t + 7) % 500).collect()).collect();
    let pairs = prompts.iter().map(|p| Some((p[0], p[1]))).collect();
    let d = NodePruneData { pairs, discovery: prompts.clone(), patching: prompts, corrupted };
    for ablation in [AblationKind::Mean, AblationKind::Resample] {
        let o = NodePruneOptions { steps: 6, warmup: 1, batch: 4, ablation, ..NodePruneOptions::defaults() };
        let mut counts = Vec::new();
        let mut hook = |_: &carve_core::extract::node_prune::StepInfo, _: &carve_core::extract::node_prune::NodePruneState| {
            counts.push((g.reads(), g.submits()));
            carve_core::extract::Flow::Continue
        };
        let mg = Model::upload(&g, m.config.clone(), &m.weights).unwrap();
        let rg = pollster::block_on(node_prune(&mg, &g, &d, &o, None, &mut hook)).unwrap();
        let per_step: Vec<(u64, u64)> = counts.windows(2).map(|w| (w[1].0 - w[0].0, w[1].1 - w[0].1)).collect();
        assert!(!per_step.is_empty() && per_step.iter().all(|&(reads, submits)| reads == 1 && submits > 1), "{ablation:?}: (reads, submits) per step {per_step:?}");
        let mc = Model::upload(&c, m.config.clone(), &m.weights).unwrap();
        let rc = pollster::block_on(node_prune(&mc, &c, &d, &o, None, &mut ())).unwrap();
        for (a, b) in rg.state.history.iter().zip(&rc.state.history) {
            assert!((a.loss - b.loss).abs() <= 1e-4 * b.loss.abs().max(1.0), "{ablation:?} step {}: wgpu {} cpu {}", a.step, a.loss, b.loss);
            assert!(a.margin > 0.0 || b.margin == 0.0, "{ablation:?}: the hinge term is on");
        }
    }
}
