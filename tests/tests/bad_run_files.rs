//! The run files a user hands back to carve (circuit.json, means.safetensors, an ablate state) are
//! checked whole when read: a malformed one is refused with a message that names the field, the
//! tensor or the component, never a panic. A means file of a circuit that emptied a layer (or
//! every layer) is written and read back.

use carve_core::circuit::file::{AblationSource, CircuitFile, MethodInfo, ModelIdentity, TaskInfo, FORMAT, VERSION};
use carve_core::circuit::{means, AblationValues, Component, ModelShape};
use carve_core::extract::{AblateOptions, AblateState, AblationKind, Decision};
use carve_core::prune::PrunedLayer;
use carve_core::HostTensor;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Value};

use Component::{Head, Mlp, Neuron};

/// Two layers: 2 and 3 heads, MLPs of 4 neurons.
fn shape() -> ModelShape {
    ModelShape { n_heads: vec![2, 3], d_ff: vec![4, 4] }
}

const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A circuit as extract writes it: L1H0 and L0's MLP removed, the rest kept.
fn circuit() -> CircuitFile {
    let removed = vec![Head { layer: 1, head: 0 }, Mlp { layer: 0 }];
    let kept = shape().components(false).into_iter().filter(|c| !removed.contains(c)).collect();
    CircuitFile {
        format: FORMAT.into(),
        version: VERSION,
        model: ModelIdentity { name: "tiny".into(), arch: "llama".into(), sha256: SHA.into() },
        task: TaskInfo { name: "ioi".into(), seed: 0, bos: false, metric: "logit_diff".into(), n_patching: 4, n_discovery: 4, n_test: 4 },
        method: MethodInfo { name: "ablate".into(), hyperparameters: json!({ "alpha": 0.1 }), discovery_kl: 0.05 },
        ablation: AblationSource { kind: "mean".into(), split: Some("patching".into()), values: Some(means::MEANS_FILE.into()) },
        shape: shape(),
        kept,
        removed,
        metrics: None,
        decisions: vec![],
        edges: None,
    }
}

/// The circuit's JSON after `edit`.
fn edited(edit: impl FnOnce(&mut Value)) -> String {
    let mut v = serde_json::to_value(circuit()).unwrap();
    edit(&mut v);
    v.to_string()
}

#[track_caller]
fn refused(text: &str, wants: &[&str]) {
    let err = CircuitFile::from_json(text).expect_err("a malformed circuit file was accepted").to_string();
    for w in wants {
        assert!(err.contains(w), "expected {w:?} in: {err}");
    }
}

fn names(cs: &[Component]) -> Value {
    json!(cs.iter().map(|c| c.to_string()).collect::<Vec<_>>())
}

#[test]
fn a_circuit_as_written_reads_back() {
    let c = circuit();
    assert_eq!(CircuitFile::from_json(&c.to_json()).unwrap(), c);
    // With neurons decided on in layer 1 (all of them listed) and a layer without heads kept.
    let mut n = circuit();
    n.kept.retain(|c| *c != Head { layer: 1, head: 1 } && *c != Head { layer: 1, head: 2 });
    n.removed.extend([Head { layer: 1, head: 1 }, Head { layer: 1, head: 2 }]);
    n.kept.extend((0..3).map(|neuron| Neuron { layer: 1, neuron }));
    n.removed.push(Neuron { layer: 1, neuron: 3 });
    assert_eq!(CircuitFile::from_json(&n.to_json()).unwrap(), n);
}

#[test]
fn circuit_sha256_is_64_lowercase_hex() {
    // "a" then 3-byte characters: byte 12 falls inside one.
    let odd = format!("a{}", "€".repeat(21));
    for bad in [odd.as_str(), &SHA.to_uppercase(), &SHA[..62], &SHA.replace('0', "g"), ""] {
        refused(&edited(|v| v["model"]["sha256"] = json!(bad)), &["model.sha256", "64 lowercase hex digits"]);
    }
    refused(&edited(|v| v["model"]["sha256"] = json!(7)), &["model.sha256", "invalid type"]);
    // A circuit built in code with such a hash is still compared without a panic.
    let mut c = circuit();
    c.model.sha256 = odd.clone();
    let err = c.check_model(SHA).unwrap_err().to_string();
    assert!(err.contains("another model") && err.contains(&format!("a{}…", "€".repeat(11))), "{err}");
    assert!(circuit().check_model(&odd).is_err());
    assert!(circuit().check_model(SHA).is_ok());
}

#[test]
fn circuit_shape_is_checked() {
    refused(&edited(|v| v["shape"]["d_ff"] = json!([4])), &["shape", "`n_heads` lists 2 layers and `d_ff` 1"]);
    refused(&edited(|v| v["shape"]["n_heads"] = json!([2])), &["`n_heads` lists 1 layers and `d_ff` 2"]);
    refused(&edited(|v| v["shape"]["d_ff"] = json!([4, 1u64 << 40])), &["`d_ff[1]` is 1099511627776"]);
    refused(&edited(|v| v["shape"]["n_heads"] = json!([2, 1u64 << 40])), &["`n_heads[1]` is 1099511627776"]);
    refused(&edited(|v| v["shape"]["d_ff"] = json!(["4", 4])), &["shape.d_ff[0]", "invalid type"]);
    refused(&edited(|v| v["shape"]["d_ff"] = json!([4, -4])), &["shape.d_ff[1]"]);
    refused(&edited(|v| v["shape"]["layers"] = json!(2)), &["shape", "unknown field `layers`"]);
    // A shape built in code with the lists out of step answers without a panic.
    let odd = ModelShape { n_heads: vec![2, 3], d_ff: vec![4] };
    assert!(odd.validate().is_err());
    assert!(odd.check(Mlp { layer: 1 }).is_err() && odd.check(Head { layer: 1, head: 0 }).is_err());
    assert!(odd.masks_without(&[Neuron { layer: 1, neuron: 0 }]).is_err());
    assert_eq!(odd.components(false).len(), 3, "the layer with both lists: 2 heads and its MLP");
}

#[test]
fn component_names_and_ranges() {
    let s = shape();
    let err = |c: &str| s.check(Component::parse(c).unwrap()).unwrap_err().to_string();
    assert!(err("L12H3").contains("L12H3 is not in this model: it has 2 layers (L0 to L1)"), "{}", err("L12H3"));
    assert!(err("L1H3").contains("L1H3 is not in this model: layer 1 has 3 heads (H0 to H2)"), "{}", err("L1H3"));
    assert!(err("L0N4").contains("L0N4 is not in this model: layer 0's MLP has 4 neurons (N0 to N3)"), "{}", err("L0N4"));
    assert!(err("L7MLP").contains("L7MLP"));
    let no_mlp = ModelShape { n_heads: vec![0], d_ff: vec![0] };
    assert!(no_mlp.check(Mlp { layer: 0 }).unwrap_err().to_string().contains("layer 0 has no MLP"));
    assert!(no_mlp.check(Head { layer: 0, head: 0 }).unwrap_err().to_string().contains("layer 0 has no heads"));
    for ok in ["L0H0", "L12MLP", "L3N345", "L10H10"] {
        assert_eq!(Component::parse(ok).unwrap().to_string(), ok);
    }
    let huge = format!("L{}H0", "9".repeat(40));
    for bad in ["", "L", "L1", "LH3", "L01H3", "L1H01", "L1H", "L1H-1", "L1H+1", "L1H 1", "L1MLPx", "L1é", "é", "l1H1", "L1N", huge.as_str()] {
        let e = Component::parse(bad).expect_err(bad).to_string();
        assert!(e.contains("is not a component name"), "{bad}: {e}");
    }
}

#[test]
fn circuit_ablation_and_components_are_checked() {
    refused(&edited(|v| v["ablation"]["kind"] = json!("median")), &["`ablation.kind` is `median`", "`zero`, `mean`"]);
    refused(&edited(|v| v["ablation"]["kind"] = json!(3)), &["ablation.kind", "invalid type"]);
    refused(&edited(|v| v["task"]["n_test"] = json!(u64::MAX)), &["the split sizes in `task`", "add up past"]);
    refused(&edited(|v| v["task"]["n_test"] = json!(-1)), &["task.n_test", "invalid value"]);
    for path in ["../means.safetensors", "/etc/passwd", "a/b.safetensors", "..", "", "x\\y"] {
        refused(&edited(|v| v["ablation"]["values"] = json!(path)), &["`ablation.values`", "a file beside the circuit file"]);
    }
    let c = circuit();
    // Both kept and removed; twice in one list.
    let mut kept = c.kept.clone();
    kept.push(Head { layer: 1, head: 0 });
    refused(&edited(|v| v["kept"] = names(&kept)), &["L1H0 is listed both as kept and as removed"]);
    let mut removed = c.removed.clone();
    removed.push(Mlp { layer: 0 });
    refused(&edited(|v| v["removed"] = names(&removed)), &["L0MLP is listed twice in `removed`"]);
    // Not covering the shape; outside it.
    let short: Vec<Component> = c.kept.iter().copied().filter(|&k| k != Head { layer: 1, head: 2 }).collect();
    refused(&edited(|v| v["kept"] = names(&short)), &["L1H2 is in the shape but neither kept nor removed"]);
    let mut outside = c.removed.clone();
    outside.push(Head { layer: 5, head: 0 });
    refused(&edited(|v| v["removed"] = names(&outside)), &["`removed`", "L5H0 is not in this model"]);
    refused(&edited(|v| v["kept"][0] = json!("L0H")), &["kept[0]", "`L0H` is not a component name"]);
    let mut partial = c.kept.clone();
    partial.push(Neuron { layer: 1, neuron: 2 });
    refused(&edited(|v| v["kept"] = names(&partial)), &["1 of layer 1's 4 MLP neurons are listed"]);
    refused(
        &edited(|v| v["decisions"] = json!([{ "component": "L1H9", "kl": 0.1, "removed": true }])),
        &["`decisions`", "L1H9 is not in this model"],
    );
}

#[test]
fn circuit_format_and_version() {
    refused(&edited(|v| v["version"] = json!("1")), &["the `version` field has the wrong type: it is a string (\"1\")"]);
    refused(&edited(|v| v["version"] = json!(2)), &["version 2", "understands version 1"]);
    refused(&edited(|v| v["version"] = json!(1.5)), &["version 1.5", "understands version 1"]);
    refused(&edited(|v| v.as_object_mut().unwrap().remove("version").map(drop).unwrap()), &["no `version` field"]);
    refused(&edited(|v| v["format"] = json!(["carve-circuit"])), &["`format` is an array"]);
    refused(&edited(|v| v["format"] = json!("carve-state")), &["its format is `carve-state`"]);
    refused("[1, 2]", &["not a JSON object"]);
    refused("{\"format\": \"carve-circuit\", \"version\": 1, \"kept\": [\"L99H0\"]}", &["missing field"]);
}

#[test]
fn circuit_on_a_model_of_another_shape() {
    let c = circuit();
    assert!(c.masks(&shape()).is_ok());
    for (other, want) in [
        (ModelShape { n_heads: vec![2, 4], d_ff: vec![4, 4] }, "layer 1 has 3 heads in the circuit and 4 in the model"),
        (ModelShape { n_heads: vec![2, 3], d_ff: vec![4, 8] }, "layer 1 has 4 MLP neurons in the circuit and 8 in the model"),
        (ModelShape { n_heads: vec![2], d_ff: vec![4] }, "2 layers in the circuit and 1 in the model"),
    ] {
        let err = c.masks(&other).unwrap_err().to_string();
        assert!(err.contains("another shape") && err.contains(want), "{err}");
        assert_eq!(c.check_shape(&other).unwrap_err().to_string(), err);
    }
}

// means.safetensors

const HEAD_DIM: usize = 2;
const D_MODEL: usize = 3;

fn tensors(named: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView)> =
        named.iter().map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize(views, None).unwrap()
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[track_caller]
fn means_refused(bytes: &[u8], shape: &ModelShape, wants: &[&str]) {
    let err = means::from_bytes(bytes, shape, HEAD_DIM, D_MODEL).expect_err("a malformed means file was accepted").to_string();
    for w in wants {
        assert!(err.contains(w), "expected {w:?} in: {err}");
    }
}

#[test]
fn means_names_are_canonical() {
    let s = shape();
    let z0 = f32s(&[0.5; 4]);
    let ok = tensors(&[("z.0", Dtype::F32, vec![1, 4], z0.clone())]);
    assert_eq!(means::from_bytes(&ok, &s, HEAD_DIM, D_MODEL).unwrap().z[0].as_ref().unwrap().data, vec![0.5; 4]);
    for name in ["z.00", "z.01", "z.+1", "z.1 ", " z.1", "z.-1", "z.1.0", "z", "Z.0", "q.0", "z.", ".0", "z.0x1", "z.１"] {
        means_refused(&tensors(&[(name, Dtype::F32, vec![1, 4], z0.clone())]), &s, &[&format!("unexpected tensor `{name}`")]);
    }
    means_refused(&tensors(&[("q.9", Dtype::F32, vec![1, 4], z0.clone())]), &s, &["unexpected tensor `q.9`"]);
    means_refused(&tensors(&[("z.2", Dtype::F32, vec![1, 4], z0.clone())]), &s, &["`z.2` is for layer 2", "2 layers"]);
    // The same name twice: a JSON header may say so, a map keeps one; refused.
    let header = r#"{"z.0":{"dtype":"F32","shape":[1,4],"data_offsets":[0,16]},"z.0":{"dtype":"F32","shape":[1,4],"data_offsets":[0,16]}}"#;
    let mut dup = (header.len() as u64).to_le_bytes().to_vec();
    dup.extend(header.as_bytes());
    dup.extend(&z0);
    means_refused(&dup, &s, &["tensor `z.0` is given twice"]);
}

#[test]
fn means_shapes_dtypes_and_values() {
    let s = shape();
    means_refused(&tensors(&[("z.1", Dtype::F32, vec![1, 4], f32s(&[0.0; 4]))]), &s, &["`z.1`", "[1, 4]", "needs F32 [1, 6]"]);
    means_refused(&tensors(&[("hidden.0", Dtype::F32, vec![2, 4], f32s(&[0.0; 8]))]), &s, &["`hidden.0`", "[1, 4]"]);
    means_refused(&tensors(&[("attn_out.0", Dtype::F32, vec![3], f32s(&[0.0; 3]))]), &s, &["`attn_out.0`", "[1, 3]"]);
    means_refused(&tensors(&[("mlp_out.1", Dtype::F16, vec![1, 3], vec![0; 6])]), &s, &["`mlp_out.1` is F16"]);
    means_refused(&tensors(&[("mlp_out.1", Dtype::F32, vec![1, 3], f32s(&[0.0, f32::NAN, 1.0]))]), &s, &["`mlp_out.1` holds NaN", "column 1"]);
    means_refused(&tensors(&[("hidden.1", Dtype::F32, vec![1, 4], f32s(&[f32::INFINITY; 4]))]), &s, &["`hidden.1` holds NaN or infinite"]);
    means_refused(&[1, 2, 3], &s, &["not a safetensors file"]);
    means_refused(&[], &s, &["not a safetensors file"]);
}

fn row(v: Vec<f32>) -> Option<HostTensor> {
    Some(HostTensor::new(vec![1, v.len()], v))
}

/// Means of a model whose layer 1 has no heads and no MLP left (a pruned model's), and of a model
/// with no layers at all: written, read back, equal.
#[test]
fn means_of_empty_layers_round_trip() {
    let empty_layer = ModelShape { n_heads: vec![2, 0], d_ff: vec![4, 0] };
    let v = AblationValues {
        z: vec![row(vec![0.5, -1.0, 2.0, 0.25]), row(vec![])],
        hidden: vec![row(vec![1.0; 4]), row(vec![])],
        attn_out: vec![row(vec![0.1, 0.2, 0.3]), row(vec![0.4, 0.5, 0.6])],
        mlp_out: vec![None, row(vec![0.7, 0.8, 0.9])],
    };
    assert!(v.position_independent(), "[1, 0] is one row");
    let bytes = means::to_bytes(&v).unwrap();
    assert_eq!(means::from_bytes(&bytes, &empty_layer, HEAD_DIM, D_MODEL).unwrap(), v);
    // A [1, 0] tensor is refused where the model has width there.
    means_refused(&bytes, &shape(), &["`hidden.1` is F32 [1, 0]", "needs F32 [1, 4]"]);

    // As extract makes them: the full model's means cut to a pruned model whose layer 1 kept no head.
    let full = AblationValues {
        z: vec![row((0..4).map(|i| i as f32).collect()), row((0..6).map(|i| 10.0 + i as f32).collect())],
        hidden: vec![row(vec![1.0, 2.0, 3.0, 4.0]), row(vec![5.0, 6.0, 7.0, 8.0])],
        attn_out: vec![row(vec![0.0; 3]), row(vec![1.0; 3])],
        mlp_out: vec![row(vec![2.0; 3]), row(vec![3.0; 3])],
    };
    let layer = |source_layer: usize, heads: Vec<usize>, neurons: Option<Vec<usize>>| PrunedLayer {
        n_heads: heads.len(),
        n_kv_heads: heads.len(),
        d_ff: neurons.as_ref().map_or(4, Vec::len),
        source_layer,
        kv_heads: heads.clone(),
        heads,
        neurons,
    };
    let layers = [layer(0, vec![1], None), layer(1, vec![], Some(vec![0, 3]))];
    let pruned = means::for_pruned(&full, &layers, HEAD_DIM);
    assert_eq!(pruned.z[1].as_ref().unwrap().shape, vec![1, 0]);
    let pruned_shape = ModelShape { n_heads: vec![1, 0], d_ff: vec![4, 2] };
    let back = means::from_bytes(&means::to_bytes(&pruned).unwrap(), &pruned_shape, HEAD_DIM, D_MODEL).unwrap();
    assert_eq!(back, pruned);
    assert_eq!(back.z[0].as_ref().unwrap().data, vec![2.0, 3.0]);
    assert_eq!(back.hidden[1].as_ref().unwrap().data, vec![5.0, 8.0]);

    // Nothing left at all: no layers, no tensors.
    let none = AblationValues::default();
    let bytes = means::to_bytes(&none).unwrap();
    let nothing = ModelShape { n_heads: vec![], d_ff: vec![] };
    assert_eq!(means::from_bytes(&bytes, &nothing, HEAD_DIM, D_MODEL).unwrap(), none);
}

// The ablate state (state.json's `ablate`).

/// Layer 1's heads and MLP come first in the sweep (positions 0 to 3), then layer 0's (4 to 6).
fn state() -> AblateState {
    let opts = AblateOptions { alpha: 0.1, ablation: AblationKind::Mean, mlps: true, neurons: false };
    let mut st = AblateState::new(shape(), opts, "00ff00ff00ff00ff".into());
    st.decisions = vec![
        Decision { component: Head { layer: 1, head: 0 }, kl: 0.01, accepted: true },
        Decision { component: Head { layer: 1, head: 2 }, kl: 0.5, accepted: false },
    ];
    st.kl_cur = 0.01;
    st.kl_cur_bits = 0.01f64.to_bits();
    st.next = 3;
    st
}

fn state_edited(edit: impl FnOnce(&mut Value)) -> String {
    let mut v = serde_json::to_value(state()).unwrap();
    edit(&mut v);
    v.to_string()
}

#[track_caller]
fn state_refused(text: &str, wants: &[&str]) {
    let err = AblateState::from_json(text).expect_err("a malformed state was accepted").to_string();
    for w in wants {
        assert!(err.contains(w), "expected {w:?} in: {err}");
    }
}

#[test]
fn ablate_state_is_checked() {
    let st = state();
    assert_eq!(AblateState::from_json(&st.to_json()).unwrap(), st);
    state_refused(&state_edited(|v| v["version"] = json!("1")), &["`version` \"1\"", "expected \"carve-ablate-state\" and 1"]);
    state_refused(&state_edited(|v| v["format"] = json!(1)), &["`format` is 1"]);
    state_refused(&state_edited(|v| v["shape"]["d_ff"] = json!([4])), &["`n_heads` lists 2 layers and `d_ff` 1"]);
    state_refused(&state_edited(|v| v["next"] = json!("3")), &["`next`", "invalid type"]);
    state_refused(&state_edited(|v| v["next"] = json!(8)), &["`next` is 8, but the sweep has 7 candidates"]);
    state_refused(&state_edited(|v| v["next"] = json!(2)), &["`decisions[1]` (L1H2) comes at or after `next` (2)"]);
    state_refused(&state_edited(|v| v["options"]["alpha"] = json!(-1.0)), &["`options.alpha` is -1"]);
    state_refused(&state_edited(|v| v["options"]["ablation"] = json!("median")), &["options.ablation", "unknown variant"]);
    state_refused(&state_edited(|v| v["fingerprint"] = json!("é")), &["`fingerprint` is `é`"]);
    state_refused(&state_edited(|v| v["decisions"][1]["component"] = json!("L1H7")), &["`decisions[1]` is L1H7", "layer 1 has 3 heads"]);
    state_refused(&state_edited(|v| v["decisions"][1]["component"] = json!("L1N0")), &["`decisions[1]` is L1N0", "the options do not decide on it"]);
    state_refused(&state_edited(|v| v["decisions"][1]["component"] = json!("L1H0")), &["`decisions[1]` (L1H0) is out of the sweep's order or given twice"]);
    let swapped = state_edited(|v| {
        v["decisions"][0]["component"] = json!("L0H0");
        v["next"] = json!(7);
    });
    state_refused(&swapped, &["`decisions[1]` (L1H2) is out of the sweep's order"]);
    state_refused(&state_edited(|v| v["kl_cur_bits"] = json!(f64::NAN.to_bits())), &["KL_cur"]);
    // KLs kept to predict verdicts: candidates of the sweep, finite; a state written before them
    // has none.
    let mut earlier = state();
    earlier.earlier_kls.insert(4, 0.02f64.to_bits());
    assert_eq!(AblateState::from_json(&earlier.to_json()).unwrap(), earlier);
    state_refused(&state_edited(|v| v["earlier_kls"] = json!({"7": 0.02f64.to_bits()})), &["`earlier_kls` has a KL for candidate 7, but the sweep has 7 candidates"]);
    state_refused(&state_edited(|v| v["earlier_kls"] = json!({"5": f64::INFINITY.to_bits()})), &["`earlier_kls` has a KL for candidate 5 that is not a finite number"]);
    state_refused(&state_edited(|v| v["earlier_kls"] = json!({"x": 1})), &["earlier_kls"]);
    let old = state_edited(|v| {
        v.as_object_mut().unwrap().remove("earlier_kls");
    });
    assert!(AblateState::from_json(&old).unwrap().earlier_kls.is_empty());
    state_refused("{\"format\": 1}", &["`format` is 1"]);
    state_refused("null", &["`format` is missing"]);
    // The MLP block is a candidate only with `mlps`.
    let mut no_mlps = state();
    no_mlps.options.mlps = false;
    no_mlps.decisions[1].component = Mlp { layer: 1 };
    state_refused(&no_mlps.to_json(), &["`decisions[1]` is L1MLP", "the options do not decide on it"]);
}
