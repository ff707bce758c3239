//! Whole-model mask gradients against central finite differences of an f64 reference forward
//! (`carve_tests::reference_model`), at fractional masks, for every mask kind, with zero and with
//! measured (mean) ablation values, on tiny-gpt2 and tiny-llama. The loss is the one `carve grad`
//! reports: the mean over prompts of KL(P_full ‖ P_masked) at each prompt's last position.
//! Tolerance: every entry within 1e-3 of the largest finite-difference gradient of its kind.

use carve_core::backend::Backend;
use carve_core::circuit::{AblationValues, Masks};
use carve_core::metrics::loss::kl_mean;
use carve_core::model::ablation::{mean_values, DeviceAblation};
use carve_core::model::load::{load_path, LoadedModel};
use carve_core::model::{Batch, Model};
use carve_tests::reference_model::{kl, last_logits, ref_ablation, RefAblation, RefMasks};
use carve_tests::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KINDS: [&str; 5] = ["heads", "attn", "mlp", "neurons", "layers"];

fn rng(test: &str) -> StdRng {
    let seed = std::env::var("CARVE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("{test}: seed {seed} (CARVE_SEED={seed} to replay)");
    StdRng::seed_from_u64(seed)
}

fn prompts(r: &mut StdRng, vocab: usize) -> Vec<Vec<u32>> {
    [7usize, 4, 6].iter().map(|&n| (0..n).map(|_| r.random_range(0..vocab as u32)).collect()).collect()
}

fn random_masks(r: &mut StdRng, m: &LoadedModel) -> Masks {
    let l = &m.weights.layers;
    let mut f = || r.random_range(0.15f32..0.95);
    Masks {
        heads: l.iter().map(|l| (0..l.n_heads).map(|_| f()).collect()).collect(),
        attn: (0..l.len()).map(|_| f()).collect(),
        mlp: (0..l.len()).map(|_| f()).collect(),
        neurons: l.iter().map(|l| (0..l.w_up.shape[0]).map(|_| f()).collect()).collect(),
        layers: (0..l.len()).map(|_| f()).collect(),
    }
}

fn ones(m: &LoadedModel) -> Masks {
    let l = &m.weights.layers;
    Masks::ones(&l.iter().map(|l| l.n_heads).collect::<Vec<_>>(), &l.iter().map(|l| l.w_up.shape[0]).collect::<Vec<_>>())
}

/// carve's loss and mask gradient on one batch.
fn carve_grad<B: Backend>(be: &B, m: &LoadedModel, prompts: &[Vec<u32>], masks: &Masks, abl: Option<&AblationValues>)
    -> (f64, Masks) {
    let model = Model::upload(be, m.config.clone(), &m.weights).unwrap();
    let batch = Batch::new(prompts, &m.config).unwrap();
    let dev = abl.map(|a| DeviceAblation::upload(be, a).unwrap());
    let full = model.forward_tape(be, &batch, &ones(m), None).unwrap();
    let full = pollster::block_on(be.read(&full.logits)).unwrap();
    let tape = model.forward_tape(be, &batch, masks, dev.as_ref()).unwrap();
    let logits = pollster::block_on(be.read(&tape.logits)).unwrap();
    let lg = kl_mean(&full, &logits).unwrap();
    let g = pollster::block_on(model.backward(be, &batch, tape, &lg.dlogits_tensor(&logits.shape))).unwrap();
    (lg.loss, g)
}

fn ref_loss(m: &LoadedModel, prompts: &[Vec<u32>], full: &[Vec<f64>], masks: &RefMasks, a: &RefAblation) -> f64 {
    prompts.iter().zip(full).map(|(p, f)| kl(f, &last_logits(&m.config, &m.weights, p, masks, a))).sum::<f64>()
        / prompts.len() as f64
}

fn kind_len(masks: &Masks, kind: &str) -> Vec<(usize, usize)> {
    let l = masks.n_layers();
    match kind {
        "heads" => (0..l).flat_map(|l| (0..masks.heads[l].len()).map(move |i| (l, i))).collect(),
        "neurons" => (0..l).flat_map(|l| (0..masks.neurons[l].len()).map(move |i| (l, i))).collect(),
        _ => (0..l).map(|l| (l, 0)).collect(),
    }
}

fn grad_entry(g: &Masks, kind: &str, l: usize, i: usize) -> f32 {
    match kind {
        "heads" => g.heads[l][i],
        "attn" => g.attn[l],
        "mlp" => g.mlp[l],
        "neurons" => g.neurons[l][i],
        _ => g.layers[l],
    }
}

fn check_model(name: &str, mean: bool) {
    let mut r = rng(&format!("{name} mean={mean}"));
    let m = load_path(&fixture(name)).unwrap();
    let prompts = prompts(&mut r, m.config.vocab);
    let masks = random_masks(&mut r, &m);
    let be = cpu();
    let abl = mean.then(|| {
        let model = Model::upload(&be, m.config.clone(), &m.weights).unwrap();
        let other: Vec<Vec<u32>> = (0..4).map(|_| (0..8).map(|_| r.random_range(0..m.config.vocab as u32)).collect()).collect();
        pollster::block_on(mean_values(&model, &be, &Batch::new(&other, &m.config).unwrap(), false)).unwrap()
    });
    let (loss, g) = carve_grad(&be, &m, &prompts, &masks, abl.as_ref());

    let ra = abl.as_ref().map(ref_ablation).unwrap_or_default();
    let ones_ref = RefMasks::from(&ones(&m));
    let full: Vec<Vec<f64>> = prompts.iter().map(|p| last_logits(&m.config, &m.weights, p, &ones_ref, &RefAblation::default())).collect();
    let base = RefMasks::from(&masks);
    let want_loss = ref_loss(&m, &prompts, &full, &base, &ra);
    assert!((loss - want_loss).abs() <= 1e-4 * want_loss.abs().max(1e-3), "{name}: loss {loss} vs reference {want_loss}");
    assert!(want_loss > 1e-4, "{name}: the masks should move the output (loss {want_loss})");

    let eps = 1e-4;
    for kind in KINDS {
        let idx = kind_len(&masks, kind);
        let fd: Vec<f64> = idx
            .iter()
            .map(|&(l, i)| {
                let mut up = base.clone();
                *up.entry(kind, l, i) += eps;
                let mut dn = base.clone();
                *dn.entry(kind, l, i) -= eps;
                (ref_loss(&m, &prompts, &full, &up, &ra) - ref_loss(&m, &prompts, &full, &dn, &ra)) / (2.0 * eps)
            })
            .collect();
        let scale = fd.iter().fold(0f64, |a, v| a.max(v.abs()));
        assert!(scale > 1e-6, "{name} {kind}: gradient vanishes ({scale:e}), the check would be empty");
        let worst = idx
            .iter()
            .zip(&fd)
            .map(|(&(l, i), &f)| {
                let got = grad_entry(&g, kind, l, i) as f64;
                assert!(got.is_finite(), "{name} {kind} L{l}[{i}]: {got}");
                ((got - f).abs(), l, i, got, f)
            })
            .fold((0.0, 0, 0, 0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a });
        println!("{name} mean={mean} {kind}: {} entries, max |grad| {scale:.3e}, worst error {:.2e}", idx.len(), worst.0);
        assert!(
            worst.0 <= 1e-3 * scale,
            "{name} mean={mean} {kind}: L{}[{}] carve {:.6e} vs finite differences {:.6e} (max |grad| {scale:.3e})",
            worst.1, worst.2, worst.3, worst.4
        );
    }
}

#[test]
fn mask_gradients_match_finite_differences_gpt2_zero() {
    check_model("tiny-gpt2", false);
}
#[test]
fn mask_gradients_match_finite_differences_gpt2_mean() {
    check_model("tiny-gpt2", true);
}
#[test]
fn mask_gradients_match_finite_differences_llama_zero() {
    check_model("tiny-llama", false);
}
#[test]
fn mask_gradients_match_finite_differences_llama_mean() {
    check_model("tiny-llama", true);
}

/// Prompts of different lengths in one batch give the mean of the prompts run one by one, on both
/// backends and with mean ablation values (per position) too. The CPU runs the batch's matrix
/// products on its real rows only (`Backend::packs_rows`), wgpu on every row and, asked to, on
/// the real rows; the one-by-one runs have no padding.
#[test]
fn batched_gradient_equals_one_by_one() {
    use carve_core::backend::wgpu::{WgpuBackend, WgpuOptions};
    assert!(cpu().packs_rows() && !gpu().packs_rows());
    batched_vs_one_by_one(&cpu(), "cpu");
    batched_vs_one_by_one(gpu(), "gpu");
    let packed = pollster::block_on(WgpuBackend::new(WgpuOptions { pack_rows: true, ..WgpuOptions::default() })).expect("a wgpu adapter");
    assert!(packed.packs_rows());
    batched_vs_one_by_one(&packed, "gpu, rows packed");
}

fn batched_vs_one_by_one<B: Backend>(be: &B, which: &str) {
    let mut r = rng("batched");
    for name in ["tiny-gpt2", "tiny-llama"] {
        let m = load_path(&fixture(name)).unwrap();
        let prompts = prompts(&mut r, m.config.vocab);
        let masks = random_masks(&mut r, &m);
        let model = Model::upload(be, m.config.clone(), &m.weights).unwrap();
        let other: Vec<Vec<u32>> = (0..3).map(|i| (0..5 + i).map(|_| r.random_range(0..m.config.vocab as u32)).collect()).collect();
        let means = pollster::block_on(mean_values(&model, be, &Batch::new(&other, &m.config).unwrap(), false)).unwrap();
        for abl in [None, Some(&means)] {
            let what = format!("{which} {name} {}", if abl.is_some() { "mean" } else { "zero" });
            let (loss, g) = carve_grad(be, &m, &prompts, &masks, abl);
            let mut sum = 0.0;
            let mut acc: Option<Masks> = None;
            for p in &prompts {
                let (l1, g1) = carve_grad(be, &m, std::slice::from_ref(p), &masks, abl);
                sum += l1 / prompts.len() as f64;
                let n = prompts.len() as f32;
                acc = Some(match acc {
                    None => scale(&g1, 1.0 / n),
                    Some(a) => add(&a, &scale(&g1, 1.0 / n)),
                });
            }
            let acc = acc.unwrap();
            assert!((loss - sum).abs() <= 1e-6 * sum.abs().max(1e-6), "{what}: batched loss {loss} vs one by one {sum}");
            assert_close(&format!("{what} batched grad"), &flat(&g), &flat(&acc), 1e-4);
        }
    }
}

fn flat(m: &Masks) -> Vec<f32> {
    m.heads.iter().flatten().chain(&m.attn).chain(&m.mlp).chain(m.neurons.iter().flatten()).chain(&m.layers).copied().collect()
}
fn map2(a: &Masks, b: &Masks, f: impl Fn(f32, f32) -> f32) -> Masks {
    let v = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(&x, &y)| f(x, y)).collect::<Vec<_>>();
    Masks {
        heads: a.heads.iter().zip(&b.heads).map(|(x, y)| v(x, y)).collect(),
        attn: v(&a.attn, &b.attn),
        mlp: v(&a.mlp, &b.mlp),
        neurons: a.neurons.iter().zip(&b.neurons).map(|(x, y)| v(x, y)).collect(),
        layers: v(&a.layers, &b.layers),
    }
}
fn scale(a: &Masks, s: f32) -> Masks {
    map2(a, a, |x, _| x * s)
}
fn add(a: &Masks, b: &Masks) -> Masks {
    map2(a, b, |x, y| x + y)
}

/// wgpu's mask gradients equal the CPU backend's: each kind within 1e-4 of its largest gradient.
#[test]
fn wgpu_gradients_equal_cpu() {
    let mut r = rng("wgpu vs cpu");
    for name in ["tiny-gpt2", "tiny-llama"] {
        let m = load_path(&fixture(name)).unwrap();
        let prompts = prompts(&mut r, m.config.vocab);
        let masks = random_masks(&mut r, &m);
        let cpu = cpu();
        let model = Model::upload(&cpu, m.config.clone(), &m.weights).unwrap();
        let other: Vec<Vec<u32>> = (0..3).map(|_| (0..8).map(|_| r.random_range(0..m.config.vocab as u32)).collect()).collect();
        let means = pollster::block_on(mean_values(&model, &cpu, &Batch::new(&other, &m.config).unwrap(), false)).unwrap();
        for abl in [None, Some(&means)] {
            let (lc, gc) = carve_grad(&cpu, &m, &prompts, &masks, abl);
            let (lg, gg) = carve_grad(gpu(), &m, &prompts, &masks, abl);
            assert!((lc - lg).abs() <= 1e-4 * lc.abs().max(1e-3), "{name}: loss cpu {lc} wgpu {lg}");
            for kind in KINDS {
                let idx = kind_len(&masks, kind);
                let c: Vec<f32> = idx.iter().map(|&(l, i)| grad_entry(&gc, kind, l, i)).collect();
                let g: Vec<f32> = idx.iter().map(|&(l, i)| grad_entry(&gg, kind, l, i)).collect();
                assert_close(&format!("{name} {kind} (means: {})", abl.is_some()), &g, &c, 1e-4);
            }
        }
    }
}
