//! The tasks on SmolLM2-135M-Instruct (GGUF Q4_1, CPU backend): test-split accuracy near what
//! PyTorch measured on similar prompts, and batched evaluation equal to one prompt at a time.

use carve_core::backend::cpu::CpuBackend;
use carve_core::metrics::*;
use carve_core::model::load::{load_path, LoadedModel};
use carve_core::model::Model;
use carve_core::tasks::*;
use carve_tests::*;

fn setup() -> (LoadedModel, CpuBackend) {
    (load_path(&smollm2_gguf()).unwrap(), cpu())
}

/// The test split (200 prompts) of the default 100/100/200 split. Seed 2: the accuracies move
/// with the sample (seeds 0..4 gave IOI 0.93 0.875 0.89 0.89 0.865, acronyms 0.925 0.90 0.92 0.88
/// 0.89, greater-than 0.99 0.99 1.0 1.0 0.99); seed 2 sits near the middle of each.
fn accuracy(name: &str, reference: f64) {
    let (m, be) = setup();
    let tok = m.tokenizer.as_ref().unwrap();
    let plan = SplitSizes::default().plan_generated(None).unwrap();
    let task = generate(name, tok, &GenOptions { n: plan.total, seed: 2, bos: false }).unwrap();
    let splits = Splits::new(task.examples.clone(), plan.sizes, 2).unwrap();
    assert_eq!(splits.test.len(), 200);
    let model = Model::upload(&be, m.config.clone(), &m.weights).unwrap();
    let t = std::time::Instant::now();
    let r = pollster::block_on(evaluate(&model, &be, &task, &splits.test, None, &EvalOptions::default())).unwrap();
    println!(
        "SmolLM2 {name}: accuracy {:.3} (PyTorch about {reference}), {} {:.3}, P(answer) {:.3}, {} prompts in {:.1} s",
        r.full.accuracy,
        task.metric.key(),
        r.full.metric,
        r.full.answer_prob,
        r.n,
        t.elapsed().as_secs_f64()
    );
    assert!((r.full.accuracy - reference).abs() <= 0.07, "{name}: accuracy {:.3} is not within 0.07 of {reference}", r.full.accuracy);
    // The task's metric favours the answer.
    assert!(r.full.metric > 0.0);
}

#[test]
fn ioi_accuracy() {
    accuracy("ioi", 0.85);
}

#[test]
fn acronyms_accuracy() {
    accuracy("acronyms", 0.95);
}

#[test]
fn greater_than_accuracy() {
    accuracy("greater-than", 0.99);
}

/// 10 IOI prompts (templates of different lengths) and 10 greater-than prompts (two steps each;
/// the first 0, 1 or 2 tokens dropped so that lengths differ): batches of 4 equal one prompt at a
/// time.
#[test]
fn batched_equals_single() {
    let (m, be) = setup();
    let tok = m.tokenizer.as_ref().unwrap();
    let model = Model::upload(&be, m.config.clone(), &m.weights).unwrap();
    for name in ["ioi", "greater-than"] {
        let mut task = generate(name, tok, &GenOptions { n: 10, seed: 5, bos: false }).unwrap();
        if name == "greater-than" {
            for (i, e) in task.examples.iter_mut().enumerate() {
                e.prompt.drain(..i % 3);
            }
        }
        let lens: std::collections::HashSet<usize> = task.examples.iter().map(|e| e.prompt.len()).collect();
        assert!(lens.len() >= 3, "{name}: prompts of several lengths, got {lens:?}");
        let batched = pollster::block_on(evaluate(&model, &be, &task, &task.examples, None, &EvalOptions { batch_size: 4 })).unwrap();
        for (i, e) in task.examples.iter().enumerate() {
            let one = pollster::block_on(evaluate(&model, &be, &task, std::slice::from_ref(e), None, &EvalOptions { batch_size: 1 })).unwrap();
            let (a, b) = (&batched.full_examples[i], &one.full_examples[0]);
            assert_eq!((a.correct, &a.predicted), (b.correct, &b.predicted), "{name} #{i}");
            assert!((a.metric - b.metric).abs() <= 1e-3 * (1.0 + b.metric.abs()), "{name} #{i}: metric {} vs {}", a.metric, b.metric);
            assert!((a.answer_prob - b.answer_prob).abs() <= 1e-4, "{name} #{i}: P {} vs {}", a.answer_prob, b.answer_prob);
        }
    }
}
