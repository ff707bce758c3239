//! Attribution patching: each estimate is −∂metric/∂m at m = 1 (checked against central finite
//! differences of the masked forward), each "actual" is the metric with that component ablated
//! minus the full model's (checked against an independent forward), and the task metrics'
//! gradients with respect to the logits match finite differences for every metric kind.

use carve_core::backend::Backend;
use carve_core::circuit::Masks;
use carve_core::extract::attribute::attribute;
use carve_core::extract::node_prune::Granularity;
use carve_core::metrics::loss::example_metric;
use carve_core::metrics::logit_diff;
use carve_core::model::ablation::{mean_values, DeviceAblation};
use carve_core::model::load::{load_path, LoadedModel};
use carve_core::model::{Batch, ForwardArgs, LogitsAt, Model};
use carve_core::tasks::{Example, MetricKind, Target, Task, YearTokens};
use carve_tests::*;

fn task(m: &LoadedModel) -> Task {
    let v = m.config.vocab as u32;
    let examples = (0..6u32)
        .map(|i| Example {
            prompt: (0..4 + i % 3).map(|j| (i * 37 + j * 11 + 5) % v).collect(),
            corrupted: None,
            target: Target::Token { answer: (i * 7 + 1) % v, wrong: Some((i * 13 + 2) % v) },
            source: format!("example {i}"),
        })
        .collect();
    Task { name: "synthetic".into(), metric: MetricKind::LogitDiff, years: None, examples, filters: vec![] }
}

fn ones(m: &LoadedModel) -> Masks {
    let l = &m.weights.layers;
    Masks::ones(&l.iter().map(|l| l.n_heads).collect::<Vec<_>>(), &l.iter().map(|l| l.w_up.shape[0]).collect::<Vec<_>>())
}

/// Mean logit difference under `masks`, from a plain masked forward.
fn metric<B: Backend>(be: &B, model: &Model<B>, t: &Task, masks: &Masks, abl: Option<&DeviceAblation<B>>) -> f64 {
    let prompts: Vec<Vec<u32>> = t.examples.iter().map(|e| e.prompt.clone()).collect();
    let batch = Batch::new(&prompts, &model.config).unwrap();
    let args = ForwardArgs { masks: Some(masks), ablation: abl, logits: LogitsAt::Last, ..ForwardArgs::default() };
    let l = pollster::block_on(be.read(model.forward(be, &batch, &args).unwrap().logits.as_ref().unwrap())).unwrap();
    t.examples
        .iter()
        .enumerate()
        .map(|(i, e)| match e.target {
            Target::Token { answer, wrong: Some(w) } => logit_diff(l.row(i), answer, w),
            _ => unreachable!(),
        })
        .sum::<f64>()
        / t.examples.len() as f64
}

fn check(name: &str, mean: bool) {
    let m = load_path(&fixture(name)).unwrap();
    let be = cpu();
    let model = Model::upload(&be, m.config.clone(), &m.weights).unwrap();
    let t = task(&m);
    let dev = mean.then(|| {
        let other: Vec<Vec<u32>> = (0..4).map(|i| (0..6).map(|j| (i * 31 + j * 17 + 3) % 500).collect()).collect();
        let v = pollster::block_on(mean_values(&model, &be, &Batch::new(&other, &m.config).unwrap(), false)).unwrap();
        DeviceAblation::upload(&be, &v).unwrap()
    });
    let g = Granularity { attn: true, mlps: true, heads: true, neurons: false };
    let r = pollster::block_on(attribute(&model, &be, &t, &t.examples, dev.as_ref(), g, 5, 4)).unwrap();
    let full = metric(&be, &model, &t, &ones(&m), dev.as_ref());
    assert!((r.full - full).abs() < 1e-5 * full.abs().max(1.0), "{name}: full metric {} vs {full}", r.full);
    assert_eq!(r.items.len(), 2 + 2 + 8);
    let scale = r.items.iter().fold(0f64, |a, x| a.max(x.estimate.abs()));
    let eps = 1e-2;
    for it in &r.items {
        let set = |v: f32| {
            let mut k = ones(&m);
            let c = &it.component;
            let l: usize = c[1..2].parse().unwrap();
            if c.ends_with("ATTN") {
                k.attn[l] = v;
            } else if c.ends_with("MLP") {
                k.mlp[l] = v;
            } else {
                let h: usize = c[3..].parse().unwrap();
                k.heads[l][h] = v;
            }
            k
        };
        let fd = (metric(&be, &model, &t, &set(1.0 + eps), dev.as_ref()) - metric(&be, &model, &t, &set(1.0 - eps), dev.as_ref())) / (2.0 * eps as f64);
        assert!((it.estimate + fd).abs() <= 2e-3 * scale.max(1e-3), "{name} {}: estimate {} vs −∂metric/∂m {}", it.component, it.estimate, -fd);
        if let Some(a) = it.actual {
            let want = metric(&be, &model, &t, &set(0.0), dev.as_ref()) - full;
            assert!((a - want).abs() <= 1e-5 * want.abs().max(1.0), "{name} {}: actual {a} vs {want}", it.component);
        }
    }
    assert_eq!(r.items.iter().filter(|x| x.actual.is_some()).count(), 5);
    for w in r.items.windows(2) {
        assert!(w[0].estimate.abs() >= w[1].estimate.abs(), "ranked by |estimate|");
    }
}

#[test]
fn attribution_is_the_mask_gradient_and_actual_is_the_ablation() {
    check("tiny-gpt2", false);
    check("tiny-gpt2", true);
    check("tiny-llama", true);
}

/// Every metric's logit gradient against central differences in f64 of its own value.
#[test]
fn task_metric_gradients_match_finite_differences() {
    let v = 40;
    let row = |k: u32| -> Vec<f32> { (0..v).map(|i| (((i * 7 + k * 3) % 11) as f32 - 5.0) * 0.4).collect() };
    let digits: Vec<u32> = (10..20).collect();
    // A two-digit vocabulary cut to 40 numbers: "00".."39" are ids 0..39.
    let two: Vec<u32> = (0..40).collect();
    let cases = vec![
        (Task { name: "ld".into(), metric: MetricKind::LogitDiff, years: None, examples: vec![], filters: vec![] }, Target::Token { answer: 3, wrong: Some(9) }, false),
        (Task { name: "lp".into(), metric: MetricKind::LogProb, years: None, examples: vec![], filters: vec![] }, Target::Token { answer: 5, wrong: None }, false),
        (Task { name: "gt2".into(), metric: MetricKind::ProbDiff, years: Some(YearTokens::TwoDigit(two)), examples: vec![], filters: vec![] }, Target::Year { yy: 17 }, false),
        (Task { name: "gtd".into(), metric: MetricKind::ProbDiff, years: Some(YearTokens::Digits(digits)), examples: vec![], filters: vec![] }, Target::Year { yy: 47 }, true),
    ];
    for (t, target, cond) in cases {
        let e = Example { prompt: vec![1], corrupted: None, target, source: "x".into() };
        let (f, c) = (row(1), row(2));
        let value = |f: &[f32], c: &[f32]| example_metric(&t, &e, f, cond.then_some(c)).unwrap().0;
        let (_, g1, g2) = example_metric(&t, &e, &f, cond.then_some(&c[..])).unwrap();
        assert_eq!(g2.is_some(), cond, "{}", t.name);
        let h = 1e-3f32;
        for i in 0..v as usize {
            let (mut fp, mut fm) = (f.clone(), f.clone());
            fp[i] += h;
            fm[i] -= h;
            let fd = (value(&fp, &c) - value(&fm, &c)) / (2.0 * h as f64);
            assert!((fd - g1[i]).abs() < 1e-4, "{} first[{i}]: {} vs {fd}", t.name, g1[i]);
            if let Some(g2) = &g2 {
                let (mut cp, mut cm) = (c.clone(), c.clone());
                cp[i] += h;
                cm[i] -= h;
                let fd = (value(&f, &cp) - value(&f, &cm)) / (2.0 * h as f64);
                assert!((fd - g2[i]).abs() < 1e-4, "{} cond[{i}]: {} vs {fd}", t.name, g2[i]);
            }
        }
    }
}
