//! Run files handed back to the `carve` program: a malformed circuit.json (`run --circuit`,
//! `eval --circuit`), state.json (`extract --resume`), means file (`run --means`) or task file is
//! refused with a message that names the problem, never a panic.

mod common;

use common::{carve, fixtures, ok, s, scratch, tiny_model};
use serde_json::{json, Value};
use std::path::Path;

#[track_caller]
fn fails_with(args: &[&str], wants: &[&str]) {
    let o = carve(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "carve {args:?} panicked:\n{err}");
    assert_eq!(o.status.code(), Some(1), "carve {args:?} should fail with exit 1:\n{err}");
    for w in wants {
        assert!(err.contains(w), "carve {args:?}: expected `{w}` in the error, got:\n{err}");
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A circuit of the tiny model on the task file `task`, as extract writes one: L1H0 removed, zero
/// ablation.
fn circuit(model: &Path, task: &Path) -> Value {
    let sha = carve_core::model::load::weights_sha256(model).unwrap();
    let removed = ["L1H0"];
    let all = ["L0H0", "L0H1", "L0H2", "L0H3", "L0MLP", "L1H0", "L1H1", "L1H2", "L1H3", "L1MLP"];
    let kept: Vec<&str> = all.iter().copied().filter(|c| !removed.contains(c)).collect();
    json!({
        "format": "carve-circuit", "version": 1,
        "model": { "name": "tiny", "arch": "llama", "sha256": sha },
        "task": { "name": s(task), "seed": 0, "bos": false, "metric": "logit_diff", "n_patching": 4, "n_discovery": 4, "n_test": 4 },
        "method": { "name": "ablate", "hyperparameters": {}, "discovery_kl": 0.0 },
        "ablation": { "kind": "zero" },
        "shape": { "n_heads": [4, 4], "d_ff": [128, 128] },
        "kept": kept, "removed": removed,
    })
}

#[test]
fn run_and_eval_refuse_a_bad_circuit() {
    let d = scratch("circuit");
    let model = tiny_model(&d);
    let task = d.join("task.jsonl");
    std::fs::copy(fixtures().join("word-tokenizer/words.jsonl"), &task).unwrap();
    let good = circuit(&model, &task);
    let write = |name: &str, v: &Value| {
        let p = d.join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let run = |c: &Path| ["run", "--model", s(&model), "--prompt", "w5 w17 w40", "--circuit", s(c), "--backend", "cpu"].map(String::from);
    let run_ok = run(&write("good.json", &good));
    ok(&strs(&run_ok));

    let bad = |name: &str, edit: &dyn Fn(&mut Value), wants: &[&str]| {
        let mut v = good.clone();
        edit(&mut v);
        let p = write(name, &v);
        fails_with(&strs(&run(&p)), wants);
        p
    };
    // "a" then 3-byte characters: byte 12 falls inside one.
    let odd = format!("a{}", "€".repeat(21));
    bad("sha.json", &|v| v["model"]["sha256"] = json!(odd), &["sha.json", "model.sha256", "64 lowercase hex digits"]);
    let short = bad("d_ff.json", &|v| v["shape"]["d_ff"] = json!([128]), &["d_ff.json", "`n_heads` lists 2 layers and `d_ff` 1"]);
    fails_with(&["eval", "--model", s(&model), "--circuit", s(&short), "--backend", "cpu"], &["d_ff.json", "`d_ff` 1"]);
    bad("kind.json", &|v| v["ablation"]["kind"] = json!("median"), &["`ablation.kind` is `median`"]);
    bad("both.json", &|v| v["kept"].as_array_mut().unwrap().push(json!("L1H0")), &["L1H0 is listed both as kept and as removed"]);
    bad("cover.json", &|v| v["kept"].as_array_mut().unwrap().retain(|c| c != "L0MLP"), &["L0MLP is in the shape but neither kept nor removed"]);
    bad("outside.json", &|v| v["removed"] = json!(["L1H0", "L1H4"]), &["L1H4 is not in this model: layer 1 has 4 heads"]);
    bad("version.json", &|v| v["version"] = json!("1"), &["the `version` field has the wrong type"]);
    bad("future.json", &|v| v["version"] = json!(2), &["version 2", "understands version 1"]);
    // A consistent circuit of the same weights but another shape (3 heads in layer 1).
    let other = |v: &mut Value| {
        v["shape"]["n_heads"] = json!([4, 3]);
        v["kept"].as_array_mut().unwrap().retain(|c| c != "L1H3");
    };
    let p = bad("shape.json", &other, &["shape.json does not fit", "another shape: layer 1 has 3 heads in the circuit and 4 in the model"]);
    fails_with(&["eval", "--model", s(&model), "--circuit", s(&p), "--backend", "cpu"], &["another shape", "layer 1 has 3 heads"]);
}

#[test]
fn run_refuses_a_bad_means_file() {
    let d = scratch("means");
    let model = tiny_model(&d);
    let write = |name: &str, tensors: &[(&str, Vec<usize>)]| {
        let data: Vec<Vec<u8>> = tensors.iter().map(|(_, sh)| vec![0u8; 4 * sh.iter().product::<usize>()]).collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .zip(&data)
            .map(|((n, sh), b)| (n.to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, sh.clone(), b).unwrap()))
            .collect();
        let p = d.join(name);
        std::fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
        p
    };
    let run = |means: &Path, ablate: &[&str]| {
        let mut a = vec!["run", "--model", s(&model), "--prompt", "w5 w17 w40", "--means", s(means), "--backend", "cpu"];
        for c in ablate {
            a.extend(["--ablate", c]);
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let good = write("good.safetensors", &[("z.1", vec![1, 64]), ("hidden.0", vec![1, 128])]);
    ok(&strs(&run(&good, &["L1H0"])));
    fails_with(&strs(&run(&good, &[])), &["--means", "nothing is ablated"]);
    for name in ["z.01", "z.+1", "z.1 "] {
        let p = write("bad.safetensors", &[(name, vec![1, 64])]);
        fails_with(&strs(&run(&p, &["L1H0"])), &[&format!("unexpected tensor `{name}`")]);
    }
    let p = write("wide.safetensors", &[("z.1", vec![1, 65])]);
    fails_with(&strs(&run(&p, &["L1H0"])), &["`z.1` is F32 [1, 65]; this model needs F32 [1, 64]"]);
}

/// A state.json, as an interrupted extract leaves it, edited: refused by --resume with the field named.
#[test]
fn resume_refuses_a_bad_state() {
    let d = scratch("state");
    let model = tiny_model(&d);
    let task = d.join("task.jsonl");
    std::fs::copy(fixtures().join("word-tokenizer/words.jsonl"), &task).unwrap();
    let out = d.join("run");
    let extract = |extra: &[&str]| {
        let mut v = vec![
            "extract", "--model", s(&model), "--task", s(&task), "--patching", "20", "--discovery", "12", "--test", "16",
            "--alpha", "0.15", "--mlps", "--out", s(&out), "--backend", "cpu", "--latency-batch", "4",
        ];
        v.extend_from_slice(extra);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let o = carve(&strs(&extract(&["--stop-after", "1"])));
    assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
    let state_path = out.join("state.json");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    let resume = extract(&["--resume", s(&out)]);
    let resume = strs(&resume);
    let odd = format!("a{}", "€".repeat(21));
    let cases: [(&dyn Fn(&mut Value), &[&str]); 6] = [
        (&|v| v["model_sha256"] = json!(odd), &["state.json", "`model_sha256` is `a€€€", "64 lowercase hex digits"]),
        (&|v| v["model_sha256"] = json!("0".repeat(64)), &["saved for another model", "sha256 000000000000…"]),
        (&|v| v["ablate"]["shape"]["d_ff"] = json!([128]), &["state.json", "ablate.shape", "`n_heads` lists 2 layers and `d_ff` 1"]),
        (&|v| v["ablate"]["next"] = json!("1"), &["`ablate.next`", "invalid type"]),
        (&|v| v["format"] = json!(1), &["`format` is 1"]),
        (&|v| v["extract_seconds"] = json!(-1.0), &["`extract_seconds` is -1"]),
    ];
    for (edit, wants) in cases {
        let mut v = saved.clone();
        edit(&mut v);
        std::fs::write(&state_path, v.to_string()).unwrap();
        fails_with(&resume, wants);
    }
    // The state as saved still resumes.
    std::fs::write(&state_path, saved.to_string()).unwrap();
    ok(&resume);
    assert!(out.join("circuit.json").is_file());
}

/// A task file with prompts longer than the model's context (128) is refused at load, each such
/// line named, whatever the seed.
#[test]
fn task_prompts_longer_than_the_context() {
    let d = scratch("context");
    let model = tiny_model(&d);
    let mut text = std::fs::read_to_string(fixtures().join("word-tokenizer/words.jsonl")).unwrap();
    let long = |n: usize, first: usize| (0..n).map(|i| format!("w{}", 3 + (first + i) % 500)).collect::<Vec<_>>().join(" ");
    for (n, first) in [(129, 0), (200, 7)] {
        text += &format!("{}\n", json!({"prompt": long(n, first), "answer": " w6", "wrong": " w8", "corrupted": long(n, first + 1)}));
    }
    let task = d.join("long.jsonl");
    std::fs::write(&task, text).unwrap();
    for seed in ["0", "1"] {
        fails_with(
            &["eval", "--model", s(&model), "--task", s(&task), "--n", "48", "--seed", seed, "--backend", "cpu"],
            &["long.jsonl", "2 problem(s)", "line 49: the prompt is 129 tokens, longer than the model's context of 128", "line 50: the prompt is 200 tokens"],
        );
    }
}

/// Split sizes that overflow or ask for absurd numbers of examples are refused before any work.
#[test]
fn absurd_split_sizes_are_refused() {
    let d = scratch("sizes");
    let model = tiny_model(&d);
    let huge = usize::MAX.to_string();
    for (flag, want) in [("--test", "add up to more than"), ("--n", "at most 10000000")] {
        fails_with(&["eval", "--model", s(&model), "--task", "ioi", flag, &huge, "--backend", "cpu"], &[want]);
    }
    fails_with(&["eval", "--model", s(&model), "--task", "ioi", "--patching", "20000000", "--backend", "cpu"], &["at most 10000000"]);
}
