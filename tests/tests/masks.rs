//! The masked forward: masks at 1 change nothing, ablating a head or neuron equals editing the
//! weights, mean ablation substitutes the measured mean, and a forward resumed from a cached
//! residual stream equals the full one. On both backends.

use carve_core::backend::Backend;
use carve_core::circuit::Masks;
use carve_core::model::ablation::{mean_values, DeviceAblation};
use carve_core::model::load::{load_path, LoadedModel};
use carve_core::model::{Batch, Capture, ForwardArgs, Model, ModelWeights};
use carve_core::HostTensor;
use carve_tests::*;

fn setup(name: &str) -> (LoadedModel, Batch) {
    let m = load_path(&fixture(name)).unwrap();
    // Prompts of different lengths, so padding is exercised too.
    let prompts = vec![(0..13).map(|i| (i * 37 + 5) % 500).collect(), (0..9).map(|i| (i * 11 + 3) % 500).collect()];
    let batch = Batch::new(&prompts, &m.config).unwrap();
    (m, batch)
}

fn logits<B: Backend>(be: &B, w: &ModelWeights<HostTensor>, m: &LoadedModel, batch: &Batch, args: &ForwardArgs<B>) -> Vec<f32> {
    let model = Model::upload(be, m.config.clone(), w).unwrap();
    let out = model.forward(be, batch, args).unwrap();
    pollster::block_on(be.read(out.logits.as_ref().unwrap())).unwrap().data
}

fn ones(m: &LoadedModel) -> Masks {
    let l = &m.weights.layers;
    Masks::ones(&l.iter().map(|l| l.n_heads).collect::<Vec<_>>(), &l.iter().map(|l| l.w_up.shape[0]).collect::<Vec<_>>())
}

/// Columns `c0..c1` of a `[rows, cols]` matrix.
fn cols(t: &HostTensor, c0: usize, c1: usize) -> Vec<Vec<f32>> {
    (0..t.shape[0]).map(|r| t.row(r)[c0..c1].to_vec()).collect()
}

fn zero_cols(t: &mut HostTensor, c0: usize, c1: usize) {
    let c = t.shape[1];
    for r in 0..t.shape[0] {
        t.data[r * c + c0..r * c + c1].fill(0.0);
    }
}

/// bias += W[:, c0..c1] · v
fn fold_into_bias(bias: &mut Option<HostTensor>, w: &HostTensor, c0: usize, c1: usize, v: &[f32]) {
    let b = bias.get_or_insert_with(|| HostTensor::zeros(vec![w.shape[0]]));
    for (r, row) in cols(w, c0, c1).iter().enumerate() {
        b.data[r] += row.iter().zip(v).map(|(a, b)| a * b).sum::<f32>();
    }
}

fn all_ones_is_plain<B: Backend>(be: &B, name: &str) {
    let (m, batch) = setup(name);
    let plain = logits(be, &m.weights, &m, &batch, &ForwardArgs::default());
    let masks = ones(&m);
    let masked = logits(be, &m.weights, &m, &batch, &ForwardArgs { masks: Some(&masks), ..ForwardArgs::default() });
    assert!(plain.iter().zip(&masked).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: all-ones masks changed the logits");
}

fn zero_head_is_zeroed_wo<B: Backend>(be: &B, name: &str) {
    let (m, batch) = setup(name);
    let (l, h, hd) = (1, 2, m.config.head_dim);
    let mut masks = ones(&m);
    masks.heads[l][h] = 0.0;
    let got = logits(be, &m.weights, &m, &batch, &ForwardArgs { masks: Some(&masks), ..ForwardArgs::default() });
    let mut w = m.weights.clone();
    zero_cols(&mut w.layers[l].wo, h * hd, (h + 1) * hd);
    let want = logits(be, &w, &m, &batch, &ForwardArgs::default());
    assert_close(&format!("{name}: head {h} of layer {l} zero-ablated"), &got, &want, 1e-5);
}

/// Mean-ablating head (0, 1) and neuron 7 of layer 1 equals moving their mean contribution into
/// the output biases (the weights' slices zeroed).
fn mean_is_substituted<B: Backend>(be: &B, name: &str) {
    let (m, batch) = setup(name);
    let model = Model::upload(be, m.config.clone(), &m.weights).unwrap();
    let means = pollster::block_on(mean_values(&model, be, &batch, false)).unwrap();
    let abl = DeviceAblation::upload(be, &means).unwrap();
    let (hd, h, n) = (m.config.head_dim, 1, 7);
    let mut masks = ones(&m);
    masks.heads[0][h] = 0.0;
    masks.neurons[1][n] = 0.0;
    let args = ForwardArgs { masks: Some(&masks), ablation: Some(&abl), ..ForwardArgs::default() };
    let got = logits(be, &m.weights, &m, &batch, &args);

    let mut w = m.weights.clone();
    let zmean = means.z[0].as_ref().unwrap();
    let l0 = &mut w.layers[0];
    fold_into_bias(&mut l0.bo, &m.weights.layers[0].wo, h * hd, (h + 1) * hd, &zmean.data[h * hd..(h + 1) * hd]);
    zero_cols(&mut l0.wo, h * hd, (h + 1) * hd);
    let hmean = means.hidden[1].as_ref().unwrap().data[n];
    let l1 = &mut w.layers[1];
    fold_into_bias(&mut l1.b_down, &m.weights.layers[1].w_down, n, n + 1, &[hmean]);
    zero_cols(&mut l1.w_down, n, n + 1);
    let want = logits(be, &w, &m, &batch, &ForwardArgs::default());
    assert_close(&format!("{name}: mean ablation"), &got, &want, 1e-5);
    // And it is not a no-op.
    let plain = logits(be, &m.weights, &m, &batch, &ForwardArgs::default());
    assert!(rel_err(&got, &plain) > 1e-4, "{name}: ablation changed nothing");
}

/// GPT-2: replacing layer 0's attention block by its per-position mean equals a model whose layer-0
/// attention writes nothing and whose position embedding row t carries that mean.
fn per_position_mean<B: Backend>(be: &B) {
    let (m, batch) = setup("tiny-gpt2");
    let model = Model::upload(be, m.config.clone(), &m.weights).unwrap();
    let means = pollster::block_on(mean_values(&model, be, &batch, true)).unwrap();
    let attn_mean = means.attn_out[0].as_ref().unwrap();
    assert_eq!(attn_mean.shape, vec![batch.seq, m.config.d_model]);
    let abl = DeviceAblation::upload(be, &means).unwrap();
    let mut masks = ones(&m);
    masks.attn[0] = 0.0;
    let args = ForwardArgs { masks: Some(&masks), ablation: Some(&abl), ..ForwardArgs::default() };
    let got = logits(be, &m.weights, &m, &batch, &args);

    let mut w = m.weights.clone();
    let l0 = &mut w.layers[0];
    l0.wo.data.fill(0.0);
    l0.bo.as_mut().unwrap().data.fill(0.0);
    let wpe = w.wpe.as_mut().unwrap();
    for (x, a) in wpe.data.iter_mut().zip(&attn_mean.data) {
        *x += a;
    }
    let want = logits(be, &w, &m, &batch, &ForwardArgs::default());
    assert_close("per-position mean of layer 0's attention", &got, &want, 1e-5);
}

#[test]
fn per_position_mean_cpu() {
    per_position_mean(&cpu());
}
#[test]
fn per_position_mean_gpu() {
    per_position_mean(gpu());
}

fn resume_from_cache<B: Backend>(be: &B, name: &str) {
    let (m, batch) = setup(name);
    let model = Model::upload(be, m.config.clone(), &m.weights).unwrap();
    let full = model.forward(be, &batch, &ForwardArgs { capture: Capture { resid: true, ..Capture::default() }, ..ForwardArgs::default() }).unwrap();
    let want = pollster::block_on(be.read(full.logits.as_ref().unwrap())).unwrap().data;
    for l in 0..=m.config.n_layers {
        let resid = full.captured.resid[l].clone().unwrap();
        let out = model.forward_from(be, &batch, l, resid, &ForwardArgs::default()).unwrap();
        let got = pollster::block_on(be.read(out.logits.as_ref().unwrap())).unwrap().data;
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: resumed at layer {l} differs");
    }
}

macro_rules! on_both {
    ($($check:ident),*) => { $(
        mod $check {
            use super::*;
            #[test] fn gpt2_cpu() { $check(&cpu(), "tiny-gpt2") }
            #[test] fn llama_cpu() { $check(&cpu(), "tiny-llama") }
            #[test] fn gpt2_gpu() { $check(gpu(), "tiny-gpt2") }
            #[test] fn llama_gpu() { $check(gpu(), "tiny-llama") }
        }
    )* };
}
on_both!(all_ones_is_plain, zero_head_is_zeroed_wo, mean_is_substituted, resume_from_cache);
