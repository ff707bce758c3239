//! Metrics against hand-computed values and a direct f64 KL; `evaluate` batched equals one by one
//! (prompts of different lengths), and a circuit's KL/metrics equal what its masked forward gives.

use carve_core::backend::Backend;
use carve_core::circuit::{AblationValues, Masks};
use carve_core::metrics::*;
use carve_core::model::ablation::{mean_values, DeviceAblation};
use carve_core::model::load::{load_path, LoadedModel};
use carve_core::model::{Batch, Capture, ForwardArgs, LogitsAt, Model};
use carve_core::tasks::{Example, MetricKind, Target, Task, YearTokens};
use carve_tests::*;
use rand::{Rng, SeedableRng};

fn task(metric: MetricKind, years: Option<YearTokens>) -> Task {
    Task { name: "hand".into(), metric, years, examples: vec![], filters: vec![] }
}

fn ex(prompt: Vec<u32>, target: Target) -> Example {
    Example { prompt, corrupted: None, target, source: "hand".into() }
}

/// KL(P‖Q) straight from the definition in f64: softmax without any shift, then Σ p ln(p/q).
fn kl_direct(p: &[f32], q: &[f32]) -> f64 {
    let soft = |x: &[f32]| {
        let e: Vec<f64> = x.iter().map(|&v| (v as f64).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect::<Vec<f64>>()
    };
    let (p, q) = (soft(p), soft(q));
    p.iter().zip(&q).map(|(&a, &b)| if a > 0.0 { a * (a / b).ln() } else { 0.0 }).sum()
}

#[test]
fn kl_matches_direct_f64_on_random_logits() {
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for (trial, scale) in [0.1f32, 1.0, 5.0, 20.0, 60.0].iter().enumerate() {
        let v = 1000 + 37 * trial;
        let p: Vec<f32> = (0..v).map(|_| rng.random_range(-1.0..1.0) * scale).collect();
        let q: Vec<f32> = (0..v).map(|_| rng.random_range(-1.0..1.0) * scale).collect();
        let (got, want) = (kl_div(&p, &q), kl_direct(&p, &q));
        assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "scale {scale} (seed {seed}): KL {got} vs direct {want}");
        assert_eq!(kl_div(&p, &p), 0.0, "KL(P‖P) must be 0");
        assert!(got > 0.0);
    }
}

/// `kl_div` as it was written before `KlFrom`: both log-sum-exps and every p computed afresh for
/// each pair. ablate's decisions were checked against PyTorch with these numbers.
fn kl_three_exps(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let (lp, lq) = (log_sum_exp(p_logits), log_sum_exp(q_logits));
    if !(lp.is_finite() && lq.is_finite()) || p_logits.iter().chain(q_logits).any(|x| x.is_nan()) {
        return f64::NAN;
    }
    let mut kl = 0.0;
    for (&a, &b) in p_logits.iter().zip(q_logits) {
        let log_p = a as f64 - lp;
        let p = log_p.exp();
        if p > 0.0 {
            kl += p * (log_p - (b as f64 - lq));
        }
    }
    kl.max(0.0)
}

#[test]
fn kl_from_one_p_gives_the_same_bits_for_every_q() {
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Scale 500 spreads the logits over 1000 nats, so that some p underflow to 0 in f64.
    for scale in [0.5f32, 8.0, 500.0] {
        let v = 3001;
        let p: Vec<f32> = (0..v).map(|_| rng.random_range(-1.0..1.0) * scale).collect();
        let from = KlFrom::new(&p);
        for i in 0..8 {
            let q: Vec<f32> = p.iter().map(|&x| x + rng.random_range(-1.0..1.0) * scale * (i as f32) / 8.0).collect();
            let (got, want) = (from.to(&q), kl_three_exps(&p, &q));
            assert_eq!(got.to_bits(), want.to_bits(), "scale {scale}, Q {i} (seed {seed}): {got} vs {want}");
            assert_eq!(kl_div(&p, &q).to_bits(), want.to_bits());
        }
    }
    let nan_p = KlFrom::new(&[0.0, f32::NAN, 1.0]);
    assert!(nan_p.to(&[0.0, 1.0, 2.0]).is_nan() && nan_p.to(&[3.0, 1.0, 2.0]).is_nan());
    assert!(KlFrom::new(&[0.0, f32::INFINITY]).to(&[0.0, 1.0]).is_nan());
    let from = KlFrom::new(&[0.0, 1.0, 2.0]);
    assert!(from.to(&[0.0, f32::INFINITY, 1.0]).is_nan() && from.to(&[f32::NAN, 1.0, 2.0]).is_nan());
    assert_eq!(from.to(&[0.0, 1.0, 2.0]), 0.0);
}

#[test]
fn kl_is_stable_for_huge_logits() {
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Multiples of 2^-10, so that adding ±1e4 is exact in f32 (its ulp there is 2^-10).
    let draw = |rng: &mut rand::rngs::StdRng| (rng.random_range(-3.0f32..3.0) * 1024.0).round() / 1024.0;
    let p: Vec<f32> = (0..500).map(|_| draw(&mut rng)).collect();
    let q: Vec<f32> = (0..500).map(|_| draw(&mut rng)).collect();
    let want = kl_direct(&p, &q);
    // A shift leaves softmax unchanged; exp(1e4) overflows without the max subtracted.
    let shift = |x: &[f32], c: f32| x.iter().map(|v| v + c).collect::<Vec<f32>>();
    let got = kl_div(&shift(&p, 1e4), &shift(&q, -1e4));
    assert!(got.is_finite(), "KL of shifted logits is {got}");
    assert!((got - want).abs() <= 1e-9 * want, "shifted KL {got} vs {want} (seed {seed})");
    // Hand value: P = (1/4, 1/2, 1/4), Q uniform: KL = ½·ln(9/8).
    let k = kl_div(&[0.0, 2f32.ln(), 0.0], &[5.0, 5.0, 5.0]);
    assert!((k - 0.5 * 1.125f64.ln()).abs() < 1e-7, "hand KL {k}");
}

#[test]
fn token_metrics_match_hand_values() {
    let row = [1.0f32, 3.0, 2.0, 0.0];
    let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
    assert_eq!(argmax(&row), 1);
    assert!((prob(&row, 1) - 3f64.exp() / z).abs() < 1e-12);
    assert!((log_sum_exp(&row) - z.ln()).abs() < 1e-12);
    assert_eq!(logit_diff(&row, 1, 2), 1.0);

    let t = task(MetricKind::LogitDiff, None);
    let right = score(&t, &ex(vec![0], Target::Token { answer: 1, wrong: Some(2) }), &row, None).unwrap();
    assert_eq!(right, ExampleScore { correct: true, metric: 1.0, answer_prob: 3f64.exp() / z, predicted: vec![1] });
    let wrong = score(&t, &ex(vec![0], Target::Token { answer: 2, wrong: Some(0) }), &row, None).unwrap();
    assert!(!wrong.correct);
    assert_eq!(wrong.metric, 1.0);

    let lp = task(MetricKind::LogProb, None);
    let s = score(&lp, &ex(vec![0], Target::Token { answer: 3, wrong: None }), &row, None).unwrap();
    assert!((s.metric - (0.0 - z.ln())).abs() < 1e-12);
    assert!((s.answer_prob - 1.0 / z).abs() < 1e-12);

    // The logit difference needs a distractor.
    assert!(score(&t, &ex(vec![0], Target::Token { answer: 1, wrong: None }), &row, None).is_err());

    let m = Scores::mean(&[right, wrong]);
    assert_eq!(m.accuracy, 0.5);
    assert_eq!(m.metric, 1.0);
}

/// logits = ln p (a vocabulary of 12: digits at ids 0..10, two other tokens at 10 and 11).
fn ln_row(p: &[f64]) -> Vec<f32> {
    p.iter().map(|&v| if v > 0.0 { v.ln() as f32 } else { -1e9 }).collect()
}

#[test]
fn two_step_years_match_hand_values() {
    let digits: Vec<u32> = (0..10).collect();
    let t = task(MetricKind::ProbDiff, Some(YearTokens::Digits(digits.clone())));
    let p1 = ln_row(&[0.02, 0.03, 0.05, 0.40, 0.20, 0.10, 0.05, 0.05, 0.05, 0.05, 0.0, 0.0]);
    let p2 = ln_row(&[0.1, 0.1, 0.1, 0.3, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.0, 0.0]);
    // YY = 32: P(>32) = (.2+.1+.05·4) + .4·(.3+.1+.1+.2) = .78; P(<32) = (.02+.03+.05) + .4·(.1+.1) = .18.
    let (gt, lt) = year_probs_digits(&p1, &p2, &digits, 32);
    assert!((gt - 0.78).abs() < 1e-6 && (lt - 0.18).abs() < 1e-6, "P(>)={gt} P(<)={lt}");
    let s = score(&t, &ex(vec![0], Target::Year { yy: 32 }), &p1, Some(&p2)).unwrap();
    assert!((s.metric - 0.60).abs() < 1e-6 && (s.answer_prob - 0.78).abs() < 1e-6);
    // Greedy: first digit 3 (= YY's), then 3 > 2: right.
    assert!(s.correct);
    assert_eq!(s.predicted, vec![3, 3]);
    // Second step argmax 1 < 2: wrong.
    let p2_low = ln_row(&[0.1, 0.4, 0.1, 0.1, 0.1, 0.1, 0.025, 0.025, 0.025, 0.025, 0.0, 0.0]);
    let s = score(&t, &ex(vec![0], Target::Year { yy: 32 }), &p1, Some(&p2_low)).unwrap();
    assert!(!s.correct);
    assert_eq!(s.predicted, vec![3, 1]);
    // YY = 25: first digit 3 > 2 decides alone.
    let s = score(&t, &ex(vec![0], Target::Year { yy: 25 }), &p1, Some(&p2_low)).unwrap();
    assert!(s.correct);
    assert_eq!(s.predicted, vec![3]);
    // A non-digit argmax is wrong.
    let p1_word = ln_row(&[0.02, 0.03, 0.05, 0.10, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.5, 0.0]);
    assert!(!score(&t, &ex(vec![0], Target::Year { yy: 2 }), &p1_word, Some(&p2)).unwrap().correct);
    // Out-of-range years and ids are errors, not panics.
    assert!(score(&t, &ex(vec![0], Target::Year { yy: 100 }), &p1, Some(&p2)).is_err());
    assert!(score(&t, &ex(vec![0], Target::Year { yy: 32 }), &p1[..9], Some(&p2[..9])).is_err());
    let tok = task(MetricKind::LogitDiff, None);
    assert!(score(&tok, &ex(vec![0], Target::Token { answer: 12, wrong: Some(0) }), &p1, None).is_err());
    // The conditional is needed.
    assert!(score(&t, &ex(vec![0], Target::Year { yy: 32 }), &p1, None).is_err());
}

#[test]
fn two_digit_years_match_hand_values() {
    // Tokens 0..100 are "00".."99"; token 100 is a word.
    let ids: Vec<u32> = (0..100).collect();
    let t = task(MetricKind::ProbDiff, Some(YearTokens::TwoDigit(ids.clone())));
    let mut p = vec![0.0f64; 101];
    p[70] = 0.3;
    p[20] = 0.2;
    p[100] = 0.5;
    let row = ln_row(&p);
    let (gt, lt) = year_probs_two_digit(&row, &ids, 50);
    assert!((gt - 0.3).abs() < 1e-6 && (lt - 0.2).abs() < 1e-6);
    let s = score(&t, &ex(vec![0], Target::Year { yy: 50 }), &row, None).unwrap();
    assert!(!s.correct, "the argmax is a word, not a year");
    assert!((s.metric - 0.1).abs() < 1e-6);
    p[100] = 0.05;
    p[70] = 0.75;
    let s = score(&t, &ex(vec![0], Target::Year { yy: 50 }), &ln_row(&p), None).unwrap();
    assert!(s.correct && (s.metric - 0.55).abs() < 1e-6);
    // YY itself is neither greater nor smaller.
    let s = score(&t, &ex(vec![0], Target::Year { yy: 70 }), &ln_row(&p), None).unwrap();
    assert!(!s.correct && (s.answer_prob - 0.0).abs() < 1e-6);
}

fn tiny<B: Backend>(be: &B) -> (LoadedModel, Model<B>) {
    let m = load_path(&fixture("tiny-gpt2")).unwrap();
    let model = Model::upload(be, m.config.clone(), &m.weights).unwrap();
    (m, model)
}

/// Prompts of lengths 2..=24 in a scrambled order, with targets of both kinds.
fn tiny_examples(n: usize, years: bool) -> Vec<Example> {
    (0..n as u32)
        .map(|i| {
            let len = 2 + (i * 7) % 23;
            let prompt: Vec<u32> = (0..len).map(|t| (t * 131 + i * 17 + 5) % 500).collect();
            let corrupted = prompt.iter().map(|&t| (t * 3 + 11) % 500).collect();
            let target = if years { Target::Year { yy: (2 + i * 13 % 97) as u8 } } else { Target::Token { answer: i * 5 % 512, wrong: Some((i * 5 + 1) % 512) } };
            Example { prompt, corrupted: Some(corrupted), target, source: format!("#{i}") }
        })
        .collect()
}

#[track_caller]
fn same_scores(what: &str, a: &[ExampleScore], b: &[ExampleScore], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.correct, y.correct, "{what} #{i}: accuracy differs");
        assert_eq!(x.predicted, y.predicted, "{what} #{i}: prediction differs");
        assert!((x.metric - y.metric).abs() <= tol * (1.0 + x.metric.abs()), "{what} #{i}: metric {} vs {}", x.metric, y.metric);
        assert!((x.answer_prob - y.answer_prob).abs() <= tol, "{what} #{i}: P(answer) {} vs {}", x.answer_prob, y.answer_prob);
    }
}

fn batched_equals_single<B: Backend>(be: &B) {
    let (_, model) = tiny(be);
    let digit_ids: Vec<u32> = (300..310).collect();
    for (t, examples) in [
        (task(MetricKind::LogitDiff, None), tiny_examples(21, false)),
        (task(MetricKind::ProbDiff, Some(YearTokens::Digits(digit_ids))), tiny_examples(21, true)),
    ] {
        let batched = pollster::block_on(evaluate(&model, be, &t, &examples, None, &EvalOptions { batch_size: 8 })).unwrap();
        let mut single = Vec::new();
        for e in &examples {
            let r = pollster::block_on(evaluate(&model, be, &t, std::slice::from_ref(e), None, &EvalOptions { batch_size: 1 })).unwrap();
            single.extend(r.full_examples);
        }
        same_scores(&format!("{:?}", t.metric), &batched.full_examples, &single, 1e-4);
        assert_eq!(batched.n, 21);
        // And the logits themselves.
        let prompts: Vec<Vec<u32>> = examples.iter().map(|e| e.prompt.clone()).collect();
        let all = pollster::block_on(last_logits(&model, be, &prompts, None, None, 64)).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            let one = pollster::block_on(last_logits(&model, be, std::slice::from_ref(p), None, None, 1)).unwrap();
            assert_close(&format!("last logits of prompt {i}"), all.row(i), &one.data, 1e-5);
        }
    }
}

#[test]
fn batched_equals_single_cpu() {
    batched_equals_single(&cpu());
}

#[test]
fn batched_equals_single_gpu() {
    batched_equals_single(gpu());
}

fn ones(m: &LoadedModel) -> Masks {
    let l = &m.weights.layers;
    Masks::ones(&l.iter().map(|l| l.n_heads).collect::<Vec<_>>(), &l.iter().map(|l| l.w_up.shape[0]).collect::<Vec<_>>())
}

fn circuits<B: Backend>(be: &B) {
    let (m, model) = tiny(be);
    let t = task(MetricKind::LogitDiff, None);
    let examples = tiny_examples(10, false);
    let opts = EvalOptions { batch_size: 4 };
    let eval = |c: &Circuit<B>| pollster::block_on(evaluate(&model, be, &t, &examples, Some(c), &opts)).unwrap();

    // Everything kept: the circuit is the model.
    let all = ones(&m);
    let r = eval(&Circuit { masks: &all, ablation: CircuitAblation::Zero, edges: None });
    assert_eq!(r.kl, Some(0.0));
    assert_eq!(r.circuit, Some(r.full));
    assert_eq!(r.circuit_examples, r.full_examples);

    // Head 1 of layer 0 and the MLP of layer 1 zero-ablated: what the masked forward gives.
    let mut masks = ones(&m);
    masks.heads[0][1] = 0.0;
    masks.mlp[1] = 0.0;
    let r = eval(&Circuit { masks: &masks, ablation: CircuitAblation::Zero, edges: None });
    let prompts: Vec<Vec<u32>> = examples.iter().map(|e| e.prompt.clone()).collect();
    let full = pollster::block_on(last_logits(&model, be, &prompts, None, None, 64)).unwrap();
    let circ = pollster::block_on(last_logits(&model, be, &prompts, Some(&masks), None, 64)).unwrap();
    for (i, e) in examples.iter().enumerate() {
        let want = score(&t, e, circ.row(i), None).unwrap();
        same_scores("zero-ablated circuit", std::slice::from_ref(&r.circuit_examples[i]), &[want], 1e-4);
        let kl = kl_div(full.row(i), circ.row(i));
        assert!((r.kl_examples[i] - kl).abs() <= 1e-5 * kl.max(1e-3), "KL #{i}: {} vs {kl}", r.kl_examples[i]);
    }
    assert!(r.kl.unwrap() > 1e-4, "ablating a head and an MLP must move the distribution");

    // As edges: every edge kept scores as the full model; every edge out of L1MLP cut (zero
    // values) scores as that MLP zero-ablated. (Not a head: under zero ablation the node keeps
    // b_O, while a head writer carries b_O / H, so cutting it removes its share.)
    let ew = carve_core::model::edges::EdgeWeights::new(be, &model, &m.weights).unwrap();
    let lay = &ew.layout;
    let mut gates = vec![1.0f32; lay.n_edges()];
    let kept_all = eval(&Circuit { masks: &all, ablation: CircuitAblation::Zero, edges: Some(EdgeGates { weights: &ew, gates: &gates, values: None }) });
    same_scores("edge circuit of every edge", &kept_all.circuit_examples, &kept_all.full_examples, 1e-4);
    assert!(kept_all.kl.unwrap() < 1e-6, "every edge kept: KL {:?}", kept_all.kl);
    let wi = lay.writers.iter().position(|&x| x == carve_core::mask::Writer::Mlp { layer: 1 }).unwrap();
    for (rd, &reads) in lay.reads.iter().enumerate() {
        if wi < reads {
            gates[lay.first[rd] + wi] = 0.0;
        }
    }
    let mut mlp_off = ones(&m);
    mlp_off.mlp[1] = 0.0;
    let r = eval(&Circuit { masks: &mlp_off, ablation: CircuitAblation::Zero, edges: None });
    let re = eval(&Circuit { masks: &all, ablation: CircuitAblation::Zero, edges: Some(EdgeGates { weights: &ew, gates: &gates, values: None }) });
    same_scores("edge circuit ≡ node circuit", &re.circuit_examples, &r.circuit_examples, 1e-4);
    assert!((re.kl.unwrap() - r.kl.unwrap()).abs() <= 1e-4 * r.kl.unwrap(), "KL {:?} vs {:?}", re.kl, r.kl);

    // Mean ablation values (uploaded once) are what the masked forward uses.
    let patch = Batch::new(&tiny_examples(6, false).iter().map(|e| e.corrupted.clone().unwrap()).collect::<Vec<_>>(), &m.config).unwrap();
    let means = pollster::block_on(mean_values(&model, be, &patch, false)).unwrap();
    let dev = DeviceAblation::upload(be, &means).unwrap();
    let r = eval(&Circuit { masks: &masks, ablation: CircuitAblation::Values(&dev), edges: None });
    let circ = pollster::block_on(last_logits(&model, be, &prompts, Some(&masks), Some(&dev), 64)).unwrap();
    for (i, e) in examples.iter().enumerate() {
        same_scores("mean-ablated circuit", std::slice::from_ref(&r.circuit_examples[i]), &[score(&t, e, circ.row(i), None).unwrap()], 1e-4);
    }

    // Resample ablation with each prompt as its own corrupted prompt changes nothing.
    let same: Vec<Example> = examples.iter().map(|e| Example { corrupted: Some(e.prompt.clone()), ..e.clone() }).collect();
    let r = pollster::block_on(evaluate(&model, be, &t, &same, Some(&Circuit { masks: &masks, ablation: CircuitAblation::Resample, edges: None }), &opts)).unwrap();
    assert!(r.kl.unwrap() < 1e-6, "resampling from the prompt itself gave KL {}", r.kl.unwrap());
    same_scores("self-resampled circuit", &r.circuit_examples, &r.full_examples, 1e-4);

    // Resample ablation from other prompts: the corrupted run's activations, one prompt at a time.
    let r = eval(&Circuit { masks: &masks, ablation: CircuitAblation::Resample, edges: None });
    assert!(r.kl.unwrap() > 1e-4);
    for (i, e) in examples.iter().enumerate() {
        let c = Batch::new(std::slice::from_ref(e.corrupted.as_ref().unwrap()), &m.config).unwrap();
        let args = ForwardArgs { capture: Capture { z: true, mlp_out: true, ..Capture::default() }, logits: LogitsAt::None, ..ForwardArgs::default() };
        let cap = model.forward(be, &c, &args).unwrap().captured;
        let read = |t: &Option<B::Tensor>| t.as_ref().map(|t| pollster::block_on(be.read(t)).unwrap());
        let values = AblationValues {
            z: cap.z.iter().map(read).collect(),
            mlp_out: cap.mlp_out.iter().map(read).collect(),
            hidden: vec![None; 2],
            attn_out: vec![None; 2],
        };
        let dev = DeviceAblation::upload(be, &values).unwrap();
        let one = pollster::block_on(last_logits(&model, be, std::slice::from_ref(&e.prompt), Some(&masks), Some(&dev), 1)).unwrap();
        same_scores("resampled circuit", std::slice::from_ref(&r.circuit_examples[i]), &[score(&t, e, one.row(0), None).unwrap()], 1e-4);
    }

    // Resample ablation needs corrupted prompts of the prompts' lengths.
    let mut bad = examples.clone();
    bad[3].corrupted.as_mut().unwrap().push(1);
    let err = pollster::block_on(evaluate(&model, be, &t, &bad, Some(&Circuit { masks: &masks, ablation: CircuitAblation::Resample, edges: None }), &opts)).unwrap_err();
    assert!(err.to_string().contains("equal lengths"), "{err}");
    bad[3].corrupted = None;
    let err = pollster::block_on(evaluate(&model, be, &t, &bad, Some(&Circuit { masks: &masks, ablation: CircuitAblation::Resample, edges: None }), &opts)).unwrap_err();
    assert!(err.to_string().contains("needs a corrupted prompt"), "{err}");
}

#[test]
fn circuits_cpu() {
    circuits(&cpu());
}

#[test]
fn circuits_gpu() {
    circuits(gpu());
}

#[test]
fn bad_examples_are_refused_before_any_work() {
    let be = cpu();
    let (_, model) = tiny(&be);
    let t = task(MetricKind::LogitDiff, None);
    let opts = EvalOptions::default();
    let run = |e: Vec<Example>| pollster::block_on(evaluate(&model, &be, &t, &e, None, &opts)).unwrap_err().to_string();
    assert!(run(vec![]).contains("no examples"));
    assert!(run(vec![ex(vec![1, 2], Target::Token { answer: 600, wrong: Some(1) })]).contains("outside the model's vocabulary"));
    assert!(run(vec![ex(vec![1, 2], Target::Token { answer: 6, wrong: None })]).contains("no wrong answer"));
    assert!(run(vec![ex(vec![1, 2], Target::Year { yy: 5 })]).contains("does not fit"));
    assert!(run(vec![ex(vec![], Target::Token { answer: 6, wrong: Some(1) })]).contains("empty"));
    assert!(run(vec![ex(vec![1; 65], Target::Token { answer: 6, wrong: Some(1) })]).contains("context"));
}

/// A NaN anywhere makes KL NaN (never a clamped 0 that would read as "no change").
#[test]
fn kl_of_non_finite_logits_is_nan() {
    assert!(kl_div(&[0.0, f32::NAN, 1.0], &[0.0, 1.0, 2.0]).is_nan());
    assert!(kl_div(&[0.0, 1.0, 2.0], &[f32::NAN, 1.0, 2.0]).is_nan());
    assert!(kl_div(&[0.0, f32::INFINITY], &[0.0, 1.0]).is_nan());
    assert_eq!(kl_div(&[0.0, 1.0, 2.0], &[0.0, 1.0, 2.0]), 0.0);
}

