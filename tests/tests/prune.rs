//! The standalone pruned model: written as an HF directory and loaded back, its logits equal the
//! masked full model's (1e-4 relative, several prompt lengths, both backends), for GPT-2 and Llama
//! with GQA, with heads, KV heads, neurons, MLPs and whole layers removed, under zero and mean
//! ablation. Values that depend on the prompt cannot be folded and are refused.

use std::path::PathBuf;

use carve_core::backend::Backend;
use carve_core::circuit::{Ablation, Component, Masks, ModelShape};
use carve_core::model::ablation::{mean_values, DeviceAblation};
use carve_core::model::load::{load_path, LoadedModel};
use carve_core::model::{Batch, ForwardArgs, Model};
use carve_core::prune::{prune, write_dir, DirExtras, PrunedModel};
use carve_tests::*;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("carve-prune-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn h(layer: usize, head: usize) -> Component {
    Component::Head { layer, head }
}
fn mlp(layer: usize) -> Component {
    Component::Mlp { layer }
}
fn n(layer: usize, neuron: usize) -> Component {
    Component::Neuron { layer, neuron }
}

/// Removal sets on a 2-layer, 4-head model (Llama: KV heads {0,1} and {2,3}), with what the pruned
/// model must then have: (removed, layers kept, heads per kept layer, KV heads per kept layer).
fn cases() -> Vec<(&'static str, Vec<Component>)> {
    vec![
        ("nothing", vec![]),
        // Layer 0: one head; layer 1: a whole KV group and two neurons.
        ("partial", vec![h(0, 1), h(1, 0), h(1, 1), n(1, 3), n(1, 7)]),
        // Layer 0 keeps heads {0,1,3} (uneven GQA groups) and loses its MLP; layer 1 loses everything.
        ("layer 1 gone", vec![h(0, 2), mlp(0), h(1, 0), h(1, 1), h(1, 2), h(1, 3), mlp(1)]),
        // Layer 0 loses everything: its constants have no earlier block to go to.
        ("layer 0 gone", vec![h(0, 0), h(0, 1), h(0, 2), h(0, 3), mlp(0), h(1, 3)]),
        ("all heads", (0..2).flat_map(|l| (0..4).map(move |i| h(l, i))).collect()),
        ("everything", vec![h(0, 0), h(0, 1), h(0, 2), h(0, 3), mlp(0), h(1, 0), h(1, 1), h(1, 2), h(1, 3), mlp(1)]),
    ]
}

/// Prompts of several lengths, each run alone and all together padded into one batch.
fn prompt_sets(vocab: u32, n_ctx: usize) -> Vec<Vec<Vec<u32>>> {
    let p = |len: usize, s: u32| (0..len as u32).map(|t| (t * 131 + s * 17 + 3) % vocab).collect::<Vec<u32>>();
    let lens = [1, 6, 23, n_ctx];
    let mut sets: Vec<Vec<Vec<u32>>> = lens.iter().map(|&l| vec![p(l, l as u32)]).collect();
    sets.push(lens.iter().map(|&l| p(l, 5)).collect());
    sets
}

fn logits<B: Backend>(be: &B, m: &Model<B>, prompts: &[Vec<u32>], masks: Option<&Masks>, abl: Option<&DeviceAblation<B>>) -> Vec<f32> {
    let batch = Batch::new(prompts, &m.config).unwrap();
    let args = ForwardArgs { masks, ablation: abl, ..ForwardArgs::default() };
    let out = m.forward(be, &batch, &args).unwrap();
    let all = pollster::block_on(be.read(out.logits.as_ref().unwrap())).unwrap();
    // Padded rows are not compared: only each prompt's real positions.
    let v = all.shape[1];
    (0..batch.size()).flat_map(|b| all.data[b * batch.seq * v..(b * batch.seq + batch.lens[b]) * v].to_vec()).collect()
}

fn shape_of(m: &LoadedModel) -> ModelShape {
    ModelShape::of(&m.weights.layers, |t| t.shape[0])
}

/// The pruned model's layers, heads, KV heads and widths are what `removed` leaves.
fn check_structure(name: &str, case: &str, src: &LoadedModel, p: &PrunedModel, removed: &[Component], mean: bool) {
    let n_src = src.weights.layers.len();
    for pl in &p.layers {
        let l = pl.source_layer;
        let kept: Vec<usize> = (0..4).filter(|&i| !removed.contains(&h(l, i))).collect();
        assert_eq!(pl.heads, kept, "{name} {case}: heads of layer {l}");
        let group = src.weights.layers[l].n_heads / src.weights.layers[l].n_kv_heads;
        for (i, &q) in pl.heads.iter().enumerate() {
            assert_eq!(pl.kv_heads[i / (pl.n_heads / pl.n_kv_heads)], q / group, "{name} {case}: KV head of query head {q}");
        }
        let d_ff = if removed.contains(&mlp(l)) { 0 } else { src.weights.layers[l].w_up.shape[0] - removed.iter().filter(|c| matches!(c, Component::Neuron { layer, .. } if *layer == l)).count() };
        assert_eq!(pl.d_ff, d_ff, "{name} {case}: MLP width of layer {l}");
    }
    let gone: Vec<usize> = (0..n_src).filter(|l| removed.contains(&mlp(*l)) && (0..4).all(|i| removed.contains(&h(*l, i)))).collect();
    // A fully removed layer 0 stays as a bias-only block only where its constants are not zero.
    let gpt2 = src.weights.wpe.is_some();
    let hosts = usize::from(case == "layer 0 gone" && (gpt2 || mean)) + usize::from(case == "everything" && (gpt2 || mean));
    assert_eq!(p.removed_layers.len() + hosts, gone.len(), "{name} {case}: removed layers {:?}", p.removed_layers);
    let (full, _) = src.weights.param_counts();
    let (pruned, _) = p.weights.param_counts();
    assert!(removed.is_empty() == (pruned >= full), "{name} {case}: {pruned} vs {full} parameters");
}

fn pruned_equals_masked<B: Backend>(be: &B, name: &str) {
    let src = load_path(&fixture(name)).unwrap();
    let base: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture(name).join("config.json")).unwrap()).unwrap();
    let full = Model::upload(be, src.config.clone(), &src.weights).unwrap();
    let shape = shape_of(&src);
    let vocab = src.config.vocab as u32;
    let patching: Vec<Vec<u32>> = (0..6).map(|i| (0..9 + i).map(|t| (t * 53 + i * 7 + 1) % vocab).collect()).collect();
    let pbatch = Batch::new(&patching, &src.config).unwrap();
    let means = pollster::block_on(mean_values(&full, be, &pbatch, false)).unwrap();
    let dev_means = DeviceAblation::upload(be, &means).unwrap();
    for (case, removed) in cases() {
        let masks = shape.masks_without(&removed).unwrap();
        for (abl, dev) in [(Ablation::Zero, None), (Ablation::Given(means.clone()), Some(&dev_means))] {
            let mean = dev.is_some();
            let p = prune(&src.config, &src.weights, &masks, &abl).unwrap();
            check_structure(name, case, &src, &p, &removed, mean);
            // The backend in the name: the CPU and GPU tests of one model run at once in this process.
            let backend = be.describe().split_whitespace().next().unwrap_or("backend").to_string();
            let dir = scratch(&format!("{name}-{backend}-{}-{}", case.replace(' ', "_"), mean));
            write_dir(&dir, &p, &DirExtras { base_config: Some(&base), ..DirExtras::default() }).unwrap();
            let loaded = load_path(&dir).unwrap();
            assert_eq!(loaded.config.n_layers, p.layers.len());
            let pm = Model::upload(be, loaded.config.clone(), &loaded.weights).unwrap();
            for prompts in prompt_sets(vocab, src.config.n_ctx) {
                let want = logits(be, &full, &prompts, Some(&masks), dev);
                let got = logits(be, &pm, &prompts, None, None);
                let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
                assert_close(&format!("{name} {case} mean={mean} lengths {lens:?}"), &got, &want, 1e-4);
                if !removed.is_empty() {
                    let plain = logits(be, &full, &prompts, None, None);
                    assert!(rel_err(&want, &plain) > 1e-3, "{name} {case}: the removal changed nothing, a vacuous comparison");
                }
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn gpt2_cpu() {
    pruned_equals_masked(&cpu(), "tiny-gpt2");
}
#[test]
fn llama_cpu() {
    pruned_equals_masked(&cpu(), "tiny-llama");
}
#[test]
fn gpt2_gpu() {
    pruned_equals_masked(gpu(), "tiny-gpt2");
}
#[test]
fn llama_gpu() {
    pruned_equals_masked(gpu(), "tiny-llama");
}

/// SmolLM2 from its GGUF (no config.json to start from): the written directory has a tokenizer
/// that encodes as the source's, a `carve_layers` config, and logits equal to the masked model's.
#[test]
fn smollm2_dir() {
    let be = cpu();
    let src = load_path(&smollm2_gguf()).unwrap();
    let tok = src.tokenizer.as_ref().unwrap();
    let full = Model::upload(&be, src.config.clone(), &src.weights).unwrap();
    let patching: Vec<Vec<u32>> = ["The cat sat on the mat.", "When Mary and John went to the store, John gave a drink to"]
        .iter()
        .map(|t| tok.encode(t, false).unwrap())
        .collect();
    let means = pollster::block_on(mean_values(&full, &be, &Batch::new(&patching, &src.config).unwrap(), false)).unwrap();
    let removed: Vec<Component> = (0..9).filter(|i| i % 3 != 0).map(|i| h(20, i)).chain([mlp(25), h(3, 4), n(7, 11)]).collect();
    let masks = shape_of(&src).masks_without(&removed).unwrap();
    let p = prune(&src.config, &src.weights, &masks, &Ablation::Given(means.clone())).unwrap();
    let dir = scratch("smollm2");
    let circuit = serde_json::json!({"removed": removed});
    write_dir(&dir, &p, &DirExtras { tokenizer: Some(tok), circuit: Some(&circuit), ..DirExtras::default() }).unwrap();
    let loaded = load_path(&dir).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["carve_layers"][20]["n_heads"], 3);
    assert_eq!(config["carve_layers"][20]["n_kv_heads"], 3, "heads 0, 3, 6 sit on KV heads 0, 1, 2");
    assert_eq!(config["carve_layers"][25]["d_ff"], 0);
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("circuit.json")).unwrap()).unwrap();
    assert_eq!(written, circuit);
    let text = "When Lisa and Kevin went to the park, Kevin gave a ball to";
    let ids = tok.encode(text, false).unwrap();
    assert_eq!(loaded.tokenizer.as_ref().unwrap().encode(text, false).unwrap(), ids);
    let pm = Model::upload(&be, loaded.config.clone(), &loaded.weights).unwrap();
    let dev = DeviceAblation::upload(&be, &means).unwrap();
    for prompts in [vec![ids.clone()], vec![ids[..5].to_vec(), ids.clone()]] {
        let want = logits(&be, &full, &prompts, Some(&masks), Some(&dev));
        assert_close("SmolLM2 pruned", &logits(&be, &pm, &prompts, None, None), &want, 1e-4);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn refused() {
    let src = load_path(&fixture("tiny-llama")).unwrap();
    let be = cpu();
    let full = Model::upload(&be, src.config.clone(), &src.weights).unwrap();
    let batch = Batch::new(&[vec![1, 2, 3, 4], vec![5, 6, 7]], &src.config).unwrap();
    let per_pos = pollster::block_on(mean_values(&full, &be, &batch, true)).unwrap();
    let shape = shape_of(&src);
    let masks = shape.masks_without(&[h(0, 1)]).unwrap();
    let err = prune(&src.config, &src.weights, &masks, &Ablation::Given(per_pos.clone())).err().unwrap().to_string();
    assert!(err.contains("position-independent"), "{err}");
    // Nothing removed: nothing to fold, so even per-position values are fine.
    assert!(prune(&src.config, &src.weights, &shape.masks_without(&[]).unwrap(), &Ablation::Given(per_pos)).is_ok());
    let mut half = masks.clone();
    half.heads[1][2] = 0.5;
    assert!(prune(&src.config, &src.weights, &half, &Ablation::Zero).err().unwrap().to_string().contains("0 or 1"));
    let mut short = masks.clone();
    short.heads[0].pop();
    assert!(prune(&src.config, &src.weights, &short, &Ablation::Zero).is_err());
    // A directory whose carve_layers disagree with its weights or config is refused on load.
    let p = prune(&src.config, &src.weights, &masks, &Ablation::Zero).unwrap();
    let dir = scratch("bad-layout");
    write_dir(&dir, &p, &DirExtras::default()).unwrap();
    let cfg_path = dir.join("config.json");
    let good = std::fs::read_to_string(&cfg_path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["carve_layers"][0]["n_kv_heads"] = 2.into(); // 3 query heads cannot share 2 KV heads
    std::fs::write(&cfg_path, v.to_string()).unwrap();
    assert!(load_path(&dir).err().unwrap().to_string().contains("KV heads"));
    v["carve_layers"] = serde_json::json!([]);
    std::fs::write(&cfg_path, v.to_string()).unwrap();
    assert!(load_path(&dir).err().unwrap().to_string().contains("entries"));
    std::fs::remove_dir_all(&dir).unwrap();
}
