//! The standalone edge model (`prune::edges`) against the masked edge forward of the full model:
//! written to a directory, loaded back as any model is, and run whole at every position of prompts
//! of several lengths padded into one batch. On tiny-gpt2 and tiny-llama, both backends, with mean
//! and zero values; circuits of random edges, of every edge, of no edge, and with a layer left
//! with nothing; and with edges of the standalone model toggled (as the web app does), against the
//! same edges toggled in the full model. Tolerance: max |standalone − masked| ≤ 1e-4 · max(1, max |masked|) over the
//! logits of every real position.

use carve_core::backend::Backend;
use carve_core::circuit::{EdgeCircuit, ModelShape};
use carve_core::extract::edge_prune::{effective, writer_means};
use carve_core::mask::{Edge, EdgeLayout, Reader, Writer};
use carve_core::model::edges::EdgeWeights;
use carve_core::model::load::{load_path, LoadedModel};
use carve_core::model::{Batch, ForwardArgs, LogitsAt, Model};
use carve_core::prune::{prune_edges, write_dir, DirExtras, PrunedLayer};
use carve_core::metrics::{evaluate, Circuit, CircuitAblation, EdgeGates, EvalOptions};
use carve_core::tasks::{Example, MetricKind, Target, Task, YearTokens};
use carve_core::HostTensor;
use carve_tests::*;

const TOL: f64 = 1e-4;

fn prompts(vocab: u32, seed: u32) -> Vec<Vec<u32>> {
    (0..5u32).map(|i| (0..2 + (i + seed) % 5).map(|j| (i * 29 + j * 13 + seed * 7 + 1) % vocab).collect()).collect()
}

/// The logits of the batch's real positions, `[Σ lens, vocab]`.
fn real_rows(t: &HostTensor, batch: &Batch) -> Vec<f32> {
    let v = t.shape[1];
    let mut out = Vec::new();
    for (b, &len) in batch.lens.iter().enumerate() {
        for p in 0..len {
            let r = b * batch.seq + p;
            out.extend_from_slice(&t.data[r * v..(r + 1) * v]);
        }
    }
    out
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: size");
    let scale = want.iter().fold(1.0f64, |m, &v| m.max(v.abs() as f64));
    let worst = got.iter().zip(want).map(|(&a, &b)| (a as f64 - b as f64).abs()).fold(0.0, f64::max);
    assert!(worst <= TOL * scale, "{what}: max error {worst:e} over {scale}");
}

/// A circuit's standalone model, written and read back, and what each of its layers came from.
fn standalone(host: &LoadedModel, circuit: &EdgeCircuit, values: Option<&[HostTensor]>, dir: &std::path::Path)
    -> (LoadedModel, Vec<PrunedLayer>) {
    let shape = ModelShape::of(&host.weights.layers, |t| t.shape[0]);
    let pm = prune_edges(&host.config, &host.weights, &shape, circuit, values).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    write_dir(dir, &pm, &DirExtras::default()).unwrap();
    assert!(dir.join("edges.safetensors").is_file());
    (load_path(dir).unwrap(), pm.layers)
}

/// The full model's name of a standalone model's edge.
fn source_edge(e: Edge, layers: &[PrunedLayer]) -> Edge {
    let writer = match e.writer {
        Writer::Head { layer, head } => Writer::Head { layer: layers[layer].source_layer, head: layers[layer].heads[head] },
        Writer::Mlp { layer } => Writer::Mlp { layer: layers[layer].source_layer },
        w => w,
    };
    let reader = match e.reader {
        Reader::Q { layer, head } => Reader::Q { layer: layers[layer].source_layer, head: layers[layer].heads[head] },
        Reader::Mlp { layer } => Reader::Mlp { layer: layers[layer].source_layer },
        Reader::Logits => Reader::Logits,
        r => panic!("{r}: only query, MLP and logits readers are toggled here"),
    };
    Edge { writer, reader }
}

fn circuit_of(lay: &EdgeLayout, host: &LoadedModel, kept: &[bool]) -> EdgeCircuit {
    let n_kv = host.weights.layers.iter().map(|l| l.n_kv_heads).collect();
    EdgeCircuit::new(lay, n_kv, kept, |_| 1.0, 0.0, kept.iter().filter(|&&k| k).count(), 0)
}

fn check<B: Backend>(be: &B, name: &str) {
    let host = load_path(&fixture(name)).unwrap();
    let cfg = &host.config;
    let m = Model::upload(be, cfg.clone(), &host.weights).unwrap();
    let ew = EdgeWeights::new(be, &m, &host.weights).unwrap();
    let lay = ew.layout.clone();
    let read = |t: &B::Tensor| pollster::block_on(be.read(t)).unwrap();
    let patching = prompts(cfg.vocab as u32, 3);
    let means = pollster::block_on(writer_means(&m, be, &ew, &patching)).unwrap();
    let means_dev: Vec<B::Tensor> = means.iter().map(|t| be.upload(t).unwrap()).collect();
    let dir = std::env::temp_dir().join(format!("carve-edge-model-{name}-{}-{}", be.describe().len(), std::process::id()));

    let n = lay.n_edges();
    // Random edges (a fixed hash), then only those that reach the logits.
    let random: Vec<bool> = (0..n).map(|i| (i * 7919 + 13) % 10 < 4).collect();
    // A layer with nothing left: every edge out of layer 0's writers cut.
    let mut no_layer0 = random.clone();
    for i in 0..n {
        if matches!(lay.edge(i).unwrap().writer, Writer::Head { layer: 0, .. } | Writer::Mlp { layer: 0 }) {
            no_layer0[i] = false;
        }
    }
    let cases: [(&str, Vec<bool>, bool); 6] = [
        ("random edges, mean values", effective(&lay, &random), true),
        ("random edges toggled in the standalone model, mean values", effective(&lay, &random), true),
        ("random edges, zero values", effective(&lay, &random), false),
        ("layer 0 left with nothing, mean values", effective(&lay, &no_layer0), true),
        ("every edge", vec![true; n], false),
        ("no edge, mean values", vec![false; n], true),
    ];
    for (what, kept, mean) in cases {
        let what = format!("{name}: {what}");
        let circuit = circuit_of(&lay, &host, &kept);
        let values = mean.then_some(&means[..]);
        let (sm, layers) = standalone(&host, &circuit, values, &dir);
        let mut model = sm.upload(be).unwrap();
        let mut gates: Vec<f32> = kept.iter().map(|&k| k as u8 as f32).collect();
        if what.contains("toggled") {
            // Flip every third edge into a query, MLP or logits reader of the standalone model,
            // kept or cut, in it and in the full model's gates alike.
            let em = model.edges.as_mut().unwrap();
            let own = em.weights.layout.clone();
            let mut own_gates = em.gates().to_vec();
            let mut flipped = 0;
            for i in (0..own.n_edges()).step_by(3) {
                let e = own.edge(i).unwrap();
                if matches!(e.reader, Reader::K { .. } | Reader::V { .. }) {
                    continue;
                }
                own_gates[i] = 1.0 - own_gates[i];
                let fi = lay.index(source_edge(e, &layers)).unwrap();
                gates[fi] = 1.0 - gates[fi];
                flipped += 1;
            }
            assert!(flipped >= 3, "{what}: {flipped} edges flipped");
            em.set_gates(be, own_gates).unwrap();
        }
        for seed in [0, 1] {
            let batch = Batch::new(&prompts(cfg.vocab as u32, seed), cfg).unwrap();
            let rows: Vec<u32> = (0..batch.rows() as u32).collect();
            let masked = m.edge_forward(be, &ew, &batch, &gates, mean.then_some(&means_dev[..]), &rows, false).unwrap();
            let want = real_rows(&read(&masked.logits), &batch);
            let out = model.forward(be, &batch, &ForwardArgs { logits: LogitsAt::All, ..ForwardArgs::default() }).unwrap();
            let got = real_rows(&read(out.logits.as_ref().unwrap()), &batch);
            close(&format!("{what} (prompts {seed})"), &got, &want);
            // The last positions, as scoring asks for them.
            let last = model.forward(be, &batch, &ForwardArgs { logits: LogitsAt::Last, ..ForwardArgs::default() }).unwrap();
            let last = read(last.logits.as_ref().unwrap());
            let v = cfg.vocab;
            let want_last: Vec<f32> = batch
                .lens
                .iter()
                .enumerate()
                .flat_map(|(b, &len)| {
                    let at: usize = batch.lens[..b].iter().sum::<usize>() + len - 1;
                    want[at * v..(at + 1) * v].to_vec()
                })
                .collect();
            close(&format!("{what} (prompts {seed}, last positions)"), &last.data, &want_last);
        }
        // What was removed is gone from the weights.
        let heads: usize = sm.weights.layers.iter().map(|l| l.n_heads).sum();
        let live = carve_core::circuit::edges::live_components(&lay, &gates);
        let live_heads = live.iter().filter(|c| matches!(c, carve_core::mask::Component::Head { .. })).count();
        assert_eq!(heads, live_heads, "{what}: heads kept");
        if what.contains("no edge") {
            assert_eq!(sm.weights.layers.len(), 0, "{what}: no layer is left");
        }
        if what.contains("layer 0 left") {
            assert!(sm.config.n_layers < cfg.n_layers, "{what}: layer 0 is gone");
        }
    }
    // Scoring: the standalone model's scores are the circuit's, scored through the full model's edge
    // forward, on a task with two-digit years (logits at the last two positions) and on one with
    // token answers.
    let circuit = circuit_of(&lay, &host, &effective(&lay, &random));
    let model = standalone(&host, &circuit, Some(&means), &dir).0.upload(be).unwrap();
    let gates = circuit.gates(&lay).unwrap();
    let v = cfg.vocab as u32;
    let digits: Vec<u32> = (10..20).collect();
    let examples = |years: bool| -> Vec<Example> {
        prompts(v, 2)
            .into_iter()
            .enumerate()
            .map(|(i, prompt)| {
                let i = i as u32;
                let target = if years { Target::Year { yy: (3 + i * 17 % 90) as u8 } } else { Target::Token { answer: i * 7 % v, wrong: Some((i * 7 + 1) % v) } };
                Example { prompt, corrupted: None, target, source: format!("#{i}") }
            })
            .collect()
    };
    for (metric, years) in [(MetricKind::ProbDiff, Some(YearTokens::Digits(digits))), (MetricKind::LogitDiff, None)] {
        let two = years.is_some();
        let task = Task { name: "hand".into(), metric, years, examples: vec![], filters: vec![] };
        let ex = examples(two);
        let opts = EvalOptions { batch_size: 3 };
        let edges = Some(EdgeGates { weights: &ew, gates: &gates, values: Some(&means_dev) });
        let masks = carve_core::mask::Masks::ones(&host.weights.layers.iter().map(|l| l.n_heads).collect::<Vec<_>>(), &host.weights.layers.iter().map(|l| l.w_up.shape[0]).collect::<Vec<_>>());
        let c = Circuit { masks: &masks, ablation: CircuitAblation::Zero, edges };
        let through_full = pollster::block_on(evaluate(&m, be, &task, &ex, Some(&c), &opts)).unwrap();
        let standalone = pollster::block_on(evaluate(&model, be, &task, &ex, None, &opts)).unwrap();
        let (a, b) = (through_full.circuit.unwrap(), standalone.full);
        for (what, x, y) in [("accuracy", a.accuracy, b.accuracy), ("metric", a.metric, b.metric), ("answer prob", a.answer_prob, b.answer_prob)] {
            assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{name}, years {two}: {what} {x} through the full model, {y} standalone");
        }
    }

    // An edge model runs only whole.
    let circuit = circuit_of(&lay, &host, &effective(&lay, &random));
    let model = standalone(&host, &circuit, Some(&means), &dir).0.upload(be).unwrap();
    let batch = Batch::new(&prompts(cfg.vocab as u32, 0), cfg).unwrap();
    let err = model
        .forward(be, &batch, &ForwardArgs { capture: carve_core::model::Capture::ALL, ..ForwardArgs::default() })
        .err()
        .expect("captures refused")
        .to_string();
    assert!(err.contains("standalone edge model"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn edge_model_tiny_gpt2_cpu() {
    check(&cpu(), "tiny-gpt2");
}
#[test]
fn edge_model_tiny_llama_cpu() {
    check(&cpu(), "tiny-llama");
}
#[test]
fn edge_model_tiny_gpt2_gpu() {
    check(gpu(), "tiny-gpt2");
}
#[test]
fn edge_model_tiny_llama_gpu() {
    check(gpu(), "tiny-llama");
}
