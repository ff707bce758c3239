//! ablate (greedy node ablation): the fast sweep makes the reference's decisions (tiny fixtures on
//! both backends, and a short SmolLM2 run), per-group masks equal separate forwards, a stopped and
//! resumed run gives the uninterrupted run's circuit, and bad input is refused.

use carve_core::backend::Backend;
use carve_core::circuit::{Component, Masks, ModelShape};
use carve_core::extract::*;
use carve_core::model::forward::MaskGroups;
use carve_core::model::load::load_path;
use carve_core::model::{Batch, ForwardArgs, LogitsAt, Model};
use carve_tests::*;

fn model<B: Backend>(be: &B, name: &str) -> Model<B> {
    let m = load_path(&fixture(name)).unwrap();
    Model::upload(be, m.config, &m.weights).unwrap()
}

/// Pseudo-random prompts of lengths 5..=12 (different lengths exercise the padding).
fn prompts(n: usize, seed: u32, vocab: u32) -> Vec<Vec<u32>> {
    (0..n as u32).map(|i| (0..5 + (i * 3 + seed) % 8).map(|t| (t * 97 + i * 31 + seed * 13 + 7) % vocab).collect()).collect()
}

fn data(vocab: u32) -> AblateData {
    let discovery = prompts(6, 1, vocab);
    let corrupted = discovery.iter().map(|p| p.iter().map(|&t| (t * 7 + 3) % vocab).collect()).collect();
    AblateData { discovery, patching: prompts(8, 2, vocab), corrupted: Some(corrupted) }
}

fn opts(alpha: f64, ablation: AblationKind, mlps: bool) -> AblateOptions {
    AblateOptions { alpha, ablation, mlps, neurons: false }
}

fn run<B: Backend>(m: &Model<B>, be: &B, d: &AblateData, o: &AblateOptions, imp: Implementation) -> AblateRun {
    let run = RunOptions { implementation: imp, ..RunOptions::default() };
    pollster::block_on(ablate(m, be, d, o, &run, None, &mut ())).unwrap()
}

/// Same decisions, KLs within 1e-4 relative (plus 1e-9 absolute for KLs near 0).
#[track_caller]
fn same_decisions(what: &str, fast: &AblateState, reference: &AblateState) {
    assert_eq!(fast.decisions.len(), reference.decisions.len(), "{what}: number of decisions");
    for (f, r) in fast.decisions.iter().zip(&reference.decisions) {
        assert_eq!((f.component, f.accepted), (r.component, r.accepted), "{what}: fast {f:?} vs reference {r:?}");
        assert!((f.kl - r.kl).abs() <= 1e-4 * r.kl.abs() + 1e-9, "{what}: KL of {} {} vs {}", f.component, f.kl, r.kl);
    }
}

fn fast_is_reference<B: Backend>(be: &B, name: &str) {
    let m = model(be, name);
    let d = data(m.config.vocab as u32);
    let (mut accepted, mut rejected) = (0, 0);
    for kind in [AblationKind::Zero, AblationKind::Mean, AblationKind::MeanPerPosition, AblationKind::Resample] {
        for mlps in [false, true] {
            for alpha in [1e-3, 1e-2, 5e-2] {
                let o = opts(alpha, kind, mlps);
                let fast = run(&m, be, &d, &o, Implementation::Fast);
                let reference = run(&m, be, &d, &o, Implementation::Reference);
                same_decisions(&format!("{name} {o:?}"), &fast.state, &reference.state);
                let whole = RunOptions { batching: Batching::WholeLayer, ..RunOptions::default() };
                let whole = pollster::block_on(ablate(&m, be, &d, &o, &whole, None, &mut ())).unwrap();
                same_decisions(&format!("{name} {o:?} whole layers"), &whole.state, &reference.state);
                assert!(fast.finished && reference.finished);
                assert_eq!(fast.removed, reference.removed);
                assert_eq!(fast.masks, reference.masks);
                let n = 4 * 2 + if mlps { 2 } else { 0 };
                assert_eq!(fast.state.decisions.len(), n, "{name}: every candidate decided once");
                assert_eq!(fast.removed.len() + fast.kept.len(), if mlps { n } else { n + 2 });
                // Fewer forwards: one per decision batch, plus the full model's.
                assert!(fast.stats.forwards < reference.stats.forwards, "{name}: {:?} vs {:?}", fast.stats, reference.stats);
                accepted += fast.removed.len();
                rejected += n - fast.removed.len();
            }
        }
    }
    // The α grid spans both verdicts, so the comparison tests decisions, not a constant answer.
    assert!(accepted > 0 && rejected > 0, "{name}: accepted {accepted}, rejected {rejected}");
}

#[test]
fn fast_is_reference_gpt2_cpu() {
    fast_is_reference(&cpu(), "tiny-gpt2");
}
#[test]
fn fast_is_reference_llama_cpu() {
    fast_is_reference(&cpu(), "tiny-llama");
}
#[test]
fn fast_is_reference_gpt2_gpu() {
    fast_is_reference(gpu(), "tiny-gpt2");
}
#[test]
fn fast_is_reference_llama_gpu() {
    fast_is_reference(gpu(), "tiny-llama");
}

/// Neurons as candidates (after their MLP block, skipped when the block went): same decisions,
/// also with whole layers per batch, where verdicts predicted from earlier KLs hold for long runs.
/// At α 10 everything is accepted: after each layer's first batch (predicted rejections, wrong
/// from its first candidate) the heads are predicted accepted, the MLP block never (its neurons
/// would then be skipped, not decided), so a layer takes two batches and its neurons none.
fn neurons_fast_is_reference<B: Backend>(be: &B, name: &str) {
    let m = model(be, name);
    let d = data(m.config.vocab as u32);
    let d_ff = m.config.d_ff;
    let (mut accepted, mut rejected) = (0, 0);
    for (alpha, mlps) in [(1e-5, false), (1e-3, false), (2e-2, true), (0.3, true), (10.0, true)] {
        let o = AblateOptions { alpha, ablation: AblationKind::Mean, mlps, neurons: true };
        let fast = run(&m, be, &d, &o, Implementation::Fast);
        let reference = run(&m, be, &d, &o, Implementation::Reference);
        same_decisions(&format!("{name} neurons {o:?}"), &fast.state, &reference.state);
        let whole = RunOptions { batching: Batching::WholeLayer, ..RunOptions::default() };
        let whole = pollster::block_on(ablate(&m, be, &d, &o, &whole, None, &mut ())).unwrap();
        same_decisions(&format!("{name} neurons {o:?} whole layers"), &whole.state, &reference.state);
        assert!(whole.state.earlier_kls.is_empty(), "{name}: KLs kept past the end: {:?}", whole.state.earlier_kls);
        if alpha == 10.0 {
            assert_eq!(reference.removed.len(), reference.state.decisions.len(), "{name}: α 10 removes everything");
            assert_eq!(whole.stats.forwards, 1 + 2 * 2, "{name}: whole layers at α 10: {:?}", whole.stats);
        }
        let mlps_gone = fast.removed.iter().filter(|c| matches!(c, Component::Mlp { .. })).count();
        let n = 8 + if mlps { 2 } else { 0 } + (2 - mlps_gone) * d_ff;
        assert_eq!(fast.state.decisions.len(), n, "{name}: neurons of a removed MLP are not candidates");
        let neurons = fast.removed.iter().filter(|c| matches!(c, Component::Neuron { .. })).count();
        accepted += neurons;
        rejected += (2 - mlps_gone) * d_ff - neurons;
    }
    assert!(accepted > 0 && rejected > 0, "{name}: neurons removed {accepted}, kept {rejected}");
}

#[test]
fn neurons_gpt2_cpu() {
    neurons_fast_is_reference(&cpu(), "tiny-gpt2");
}
#[test]
fn neurons_llama_cpu() {
    neurons_fast_is_reference(&cpu(), "tiny-llama");
}

/// Per-group masks: each group's logits equal a separate forward with that group's masks.
fn groups_are_separate<B: Backend>(be: &B, name: &str) {
    let m = model(be, name);
    let ps = prompts(3, 5, m.config.vocab as u32);
    let batch = Batch::new(&ps, &m.config).unwrap();
    let shape = ModelShape::of(&m.weights.layers, |t| be.shape(t)[0]);
    let sets: Vec<Masks> = [
        vec![],
        vec![Component::Head { layer: 1, head: 2 }],
        vec![Component::Mlp { layer: 0 }, Component::Head { layer: 0, head: 1 }],
        vec![Component::Neuron { layer: 1, neuron: 5 }, Component::Head { layer: 1, head: 0 }],
    ]
    .iter()
    .map(|r| shape.masks_without(r).unwrap())
    .collect();
    let g = sets.len();
    let rep = Batch { ids: batch.ids.repeat(g), lens: batch.lens.repeat(g), seq: batch.seq };
    let x = be.gather_rows(&m.weights.wte, &rep.ids).unwrap();
    let x = match &m.weights.wpe {
        Some(wpe) => be.add(&x, &be.gather_rows(wpe, &rep.positions()).unwrap()).unwrap(),
        None => x,
    };
    let args = ForwardArgs { logits: LogitsAt::Last, ..ForwardArgs::default() };
    let groups = MaskGroups { masks: &sets, rows_per_group: batch.rows() };
    let out = m.forward_from_groups(be, &rep, 0, x, &args, &groups).unwrap();
    let got = pollster::block_on(be.read(out.logits.as_ref().unwrap())).unwrap();
    let v = m.config.vocab;
    for (i, s) in sets.iter().enumerate() {
        let args = ForwardArgs { masks: Some(s), logits: LogitsAt::Last, ..ForwardArgs::default() };
        let want = pollster::block_on(be.read(m.forward(be, &batch, &args).unwrap().logits.as_ref().unwrap())).unwrap();
        let n = batch.size() * v;
        assert_close(&format!("{name} group {i}"), &got.data[i * n..(i + 1) * n], &want.data, 1e-5);
    }
    // Masks and groups together, or groups that do not split the batch, are refused.
    let bad = MaskGroups { masks: &sets[..3], rows_per_group: batch.rows() };
    let x = be.gather_rows(&m.weights.wte, &rep.ids).unwrap();
    assert!(m.forward_from_groups(be, &rep, 0, x.clone(), &args, &bad).is_err());
    let with_masks = ForwardArgs { masks: Some(&sets[0]), ..ForwardArgs::default() };
    assert!(m.forward_from_groups(be, &rep, 0, x, &with_masks, &groups).is_err());
}

#[test]
fn groups_gpt2_cpu() {
    groups_are_separate(&cpu(), "tiny-gpt2");
}
#[test]
fn groups_llama_cpu() {
    groups_are_separate(&cpu(), "tiny-llama");
}
#[test]
fn groups_gpt2_gpu() {
    groups_are_separate(gpu(), "tiny-gpt2");
}
#[test]
fn groups_llama_gpu() {
    groups_are_separate(gpu(), "tiny-llama");
}

/// Stops after `k` decision batches, saves the state as JSON, resumes from it.
fn stopped_and_resumed<B: Backend>(m: &Model<B>, be: &B, d: &AblateData, o: &AblateOptions, run: &RunOptions, k: usize) -> AblateRun {
    let mut batches = 0;
    let mut saved = String::new();
    let mut stop = |_: &ProgressInfo, st: &AblateState| {
        batches += 1;
        saved = st.to_json();
        if batches == k { Flow::Stop } else { Flow::Continue }
    };
    let first = pollster::block_on(ablate(m, be, d, o, run, None, &mut stop)).unwrap();
    assert!(!first.finished, "stopped after {k} batches");
    assert_eq!(first.state.to_json(), saved, "the last state handed to the hook is the final one");
    let state = AblateState::from_json(&saved).unwrap();
    pollster::block_on(ablate(m, be, d, o, run, Some(state), &mut ())).unwrap()
}

/// Equal states: KL_cur to the bit; the decisions' KLs (shown, never reused) may lose their last
/// bit through JSON.
#[track_caller]
fn same_state(what: &str, a: &AblateState, b: &AblateState) {
    let key = |s: &AblateState| (s.next, s.kl_cur_bits, s.batch, s.earlier_kls.clone(), s.fingerprint.clone(), s.options.clone());
    assert_eq!(key(a), key(b), "{what}");
    assert_eq!(a.decisions.len(), b.decisions.len(), "{what}");
    for (x, y) in a.decisions.iter().zip(&b.decisions) {
        assert_eq!((x.component, x.accepted), (y.component, y.accepted), "{what}");
        assert!((x.kl - y.kl).abs() <= 1e-15 * y.kl.abs(), "{what}: {x:?} vs {y:?}");
    }
}

fn resume_gives_same<B: Backend>(be: &B, name: &str) {
    let m = model(be, name);
    let d = data(m.config.vocab as u32);
    // Small whole-layer batches, so that a stop can fall between two batches of one layer.
    let runs = [
        RunOptions { max_batch_rows: 64, batching: Batching::WholeLayer, ..RunOptions::default() },
        RunOptions::default(),
        RunOptions { implementation: Implementation::Reference, ..RunOptions::default() },
    ];
    for r in &runs {
        for (o, k) in [(opts(1e-2, AblationKind::Mean, true), 2), (opts(5e-2, AblationKind::Zero, true), 3)] {
            let whole = pollster::block_on(ablate(&m, be, &d, &o, r, None, &mut ())).unwrap();
            let resumed = stopped_and_resumed(&m, be, &d, &o, r, k);
            assert!(resumed.finished);
            same_state(&format!("{name} {r:?} {o:?}"), &resumed.state, &whole.state);
            assert_eq!(resumed.removed, whole.removed);
        }
    }
}

#[test]
fn resume_gpt2_cpu() {
    resume_gives_same(&cpu(), "tiny-gpt2");
}
#[test]
fn resume_llama_cpu() {
    resume_gives_same(&cpu(), "tiny-llama");
}

#[test]
fn bad_input() {
    let be = cpu();
    let m = model(&be, "tiny-llama");
    let d = data(512);
    let err = |d: &AblateData, o: &AblateOptions| {
        pollster::block_on(ablate(&m, &be, d, o, &RunOptions::default(), None, &mut ())).err().expect("refused").to_string()
    };
    for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(err(&d, &opts(alpha, AblationKind::Zero, false)).contains("α"), "α = {alpha}");
    }
    let empty = AblateData { discovery: vec![], ..d.clone() };
    assert!(err(&empty, &opts(0.01, AblationKind::Zero, false)).contains("discovery"));
    let no_patching = AblateData { patching: vec![], ..d.clone() };
    assert!(err(&no_patching, &opts(0.01, AblationKind::Mean, false)).contains("patching"));
    let no_corrupted = AblateData { corrupted: None, ..d.clone() };
    assert!(err(&no_corrupted, &opts(0.01, AblationKind::Resample, false)).contains("corrupted"));
    let mut short = d.clone();
    short.corrupted.as_mut().unwrap()[2].pop();
    assert!(err(&short, &opts(0.01, AblationKind::Resample, false)).contains("corrupted prompt 2"));
    let out_of_vocab = AblateData { discovery: vec![vec![1, 2, 9999]], ..d.clone() };
    assert!(err(&out_of_vocab, &opts(0.01, AblationKind::Zero, false)).contains("vocabulary"));
    // A state resumes only the run it came from.
    let o = opts(0.01, AblationKind::Zero, false);
    let st = run(&m, &be, &d, &o, Implementation::Fast).state;
    let resume = |d: &AblateData, o: &AblateOptions| {
        pollster::block_on(ablate(&m, &be, d, o, &RunOptions::default(), Some(st.clone()), &mut ())).err().expect("refused").to_string()
    };
    assert!(resume(&d, &opts(0.02, AblationKind::Zero, false)).contains("options"));
    let other = AblateData { discovery: prompts(6, 9, 512), ..d.clone() };
    assert!(resume(&other, &o).contains("prompts"));
    assert!(AblateState::from_json("{\"format\": 1}").is_err());
    assert!(AblateState::from_json(&st.to_json().replace("carve-ablate-state", "other")).is_err());
}

/// SmolLM2: the last three layers of a sweep with heads and MLPs, mean ablation, 8 prompts made
/// with its tokenizer; the fast sweep decides as the reference does.
#[test]
fn smollm2_last_layers() {
    let be = cpu();
    let loaded = load_path(&smollm2_gguf()).unwrap();
    let tok = loaded.tokenizer.as_ref().unwrap();
    let text = |names: [&str; 2], obj: &str| format!("When {} and {} went to the store, {} gave the {obj} to", names[0], names[1], names[1]);
    let names = [["Mary", "John"], ["Anna", "Paul"], ["Lisa", "Mark"], ["Sarah", "Tom"], ["Kate", "James"]];
    let objs = ["book", "ball", "drink", "key"];
    let mk = |i: usize| tok.encode(&text(names[i % 5], objs[i % 4]), false).unwrap();
    let d = AblateData { discovery: (0..8).map(mk).collect(), patching: (8..20).map(mk).collect(), corrupted: None };
    let m = Model::upload(&be, loaded.config.clone(), &loaded.weights).unwrap();
    let o = opts(2e-3, AblationKind::Mean, true);
    let n_layers = m.config.n_layers;
    let short = |implementation, batching| {
        let mut stop = |p: &ProgressInfo, _: &AblateState| if p.layer + 3 <= n_layers && p.left_in_layer == 0 { Flow::Stop } else { Flow::Continue };
        let t = std::time::Instant::now();
        let run = RunOptions { implementation, batching, ..RunOptions::default() };
        let r = pollster::block_on(ablate(&m, &be, &d, &o, &run, None, &mut stop)).unwrap();
        let removed: Vec<String> = r.removed.iter().map(|c| c.to_string()).collect();
        eprintln!("SmolLM2 {implementation:?} {batching:?}: {:.2} s, {:?}, removed {removed:?}", t.elapsed().as_secs_f64(), r.stats);
        r
    };
    let fast = short(Implementation::Fast, Batching::Adaptive);
    let whole = short(Implementation::Fast, Batching::WholeLayer);
    let reference = short(Implementation::Reference, Batching::Adaptive);
    assert_eq!(fast.state.decisions.len(), 3 * 10, "three layers of 9 heads and an MLP");
    same_decisions("SmolLM2 adaptive", &fast.state, &reference.state);
    same_decisions("SmolLM2 whole layers", &whole.state, &reference.state);
    let removed = fast.removed.len();
    assert!(removed > 0 && removed < 30, "a test that decides something: {removed} of 30 removed");
}
