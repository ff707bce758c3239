//! The run directory a user gets back: degenerate circuits (a layer with no heads left, no layers
//! at all) are written, load and run; `--force` replaces a carve run and nothing else, and only
//! once the new run has something to write.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A finished run checked end to end: the circuit, the
/// means, the pruned model loads and runs as the circuit on the full model does, and evaluates.
fn check_run(model: &Path, task: &Path, out: &Path, mean: bool) -> serde_json::Value {
    let cf = read_json(&out.join("circuit.json"));
    assert_eq!(out.join("means.safetensors").is_file(), mean, "means shipped for mean ablation only");
    let pruned = out.join("model");
    let info = ok(&["info", "--model", s(&pruned)]);
    assert!(info.contains("pruned by carve"), "{info}");
    let circuit = out.join("circuit.json");
    same_top(&run_top(&pruned, &[]), &run_top(model, &["--circuit", s(&circuit)]), "pruned vs full --circuit");
    let r = read_json(&out.join("report.json"));
    for k in ["accuracy", "metric", "answer_prob"] {
        let (c, p) = (r["test"]["circuit"][k].as_f64().unwrap(), r["test"]["pruned"][k].as_f64().unwrap());
        assert!(close(c, p, 1e-4), "test.{k}: circuit {c} vs pruned {p}");
    }
    ok(&["eval", "--model", s(model), "--circuit", s(&circuit), "--json", "--backend", "cpu"]);
    ok(&["eval", "--model", s(&pruned), "--task", s(task), "--backend", "cpu", "--n", "24"]);
    let gen = ok(&["run", "--model", s(&pruned), "--prompt", PROMPT, "--max-new-tokens", "3", "--backend", "cpu"]);
    assert!(gen.lines().last().unwrap().starts_with(PROMPT), "{gen}");
    assert!(std::fs::read_to_string(out.join("circuit.svg")).unwrap().starts_with("<svg"));
    cf
}

#[test]
fn circuits_with_nothing_left_are_written_loaded_and_run() {
    let d = scratch("degenerate");
    let (model, task) = (tiny_model(&d), task_file(&d));
    // Heads only, every head goes: every layer is left without heads, the MLPs stay.
    let heads = d.join("no-heads");
    ok(&without(with_alpha(extract_args(s(&model), s(&task), s(&heads), &["--ablation", "mean"]), "1e9"), "--mlps"));
    let cf = check_run(&model, &task, &heads, true);
    assert!(cf["kept"].as_array().unwrap().iter().all(|c| c.as_str().unwrap().ends_with("MLP")), "{}", cf["kept"]);
    assert_eq!(cf["kept"].as_array().unwrap().len(), 2);

    // Heads and MLPs, everything goes: a model of no layers.
    for (name, ablation) in [("nothing-mean", "mean"), ("nothing-zero", "zero")] {
        let out = d.join(name);
        ok(&with_alpha(extract_args(s(&model), s(&task), s(&out), &["--ablation", ablation]), "1e9"));
        let cf = check_run(&model, &task, &out, ablation == "mean");
        assert_eq!(cf["kept"].as_array().unwrap().len(), 0, "{name}: {}", cf["kept"]);
        assert_eq!(cf["removed"].as_array().unwrap().len(), 10);
    }
}

#[test]
fn force_replaces_a_carve_run_and_nothing_else() {
    let d = scratch("force");
    let (model, task) = (tiny_model(&d), task_file(&d));

    // A user's project folder that merely has a run's file names: the source model in model/,
    // their own task.json and report.md.
    let project = d.join("project");
    std::fs::create_dir_all(&project).unwrap();
    let src = project.join("model");
    std::fs::create_dir_all(&src).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(model.join(f), src.join(f)).unwrap();
    }
    std::fs::write(project.join("task.json"), "{\"mine\": true}").unwrap();
    std::fs::write(project.join("report.md"), "# my notes\n").unwrap();
    let before = snapshot(&project);
    fails(&extract_args(s(&src), s(&task), s(&project), &["--force"]), "not a carve run");
    fails(&extract_args(s(&model), s(&task), s(&project), &["--force"]), "not a carve run");
    assert_eq!(snapshot(&project), before, "nothing in the project folder changed");

    // A genuine run.
    let run = d.join("run");
    ok(&extract_args(s(&model), s(&task), s(&run), &[]));
    let first = snapshot(&run);

    // A new run that fails before it has anything to write leaves the old one whole.
    let broken = d.join("broken.jsonl");
    std::fs::write(&broken, "{\"prompt\": \"w3 w4\", \"answer\": \" w5 w6\"}\n").unwrap();
    fails(&extract_args(s(&model), s(&broken), s(&run), &["--force"]), "one token");
    fails(&extract_args(s(&d.join("no-such-model")), s(&task), s(&run), &["--force"]), "no-such-model");
    assert_eq!(snapshot(&run), first, "a failed --force run removed nothing");

    // The model extracted from lives in the run's model/: never replaced.
    fails(&extract_args(s(&run.join("model")), s(&task), s(&run), &["--force"]), "inside");
    assert_eq!(snapshot(&run), first);

    // A file of a run's name that carve did not write is not replaced.
    let user_report = "# my own report\n";
    std::fs::write(run.join("report.md"), user_report).unwrap();
    fails(&extract_args(s(&model), s(&task), s(&run), &["--force"]), "report.md");
    assert_eq!(std::fs::read_to_string(run.join("report.md")).unwrap(), user_report);
    std::fs::write(run.join("report.md"), &first["report.md"]).unwrap();

    // A run's file name that is a symbolic link is not followed or removed.
    #[cfg(unix)]
    {
        let svg = run.join("circuit.svg");
        std::fs::remove_file(&svg).unwrap();
        std::fs::write(d.join("elsewhere.svg"), "<svg>mine</svg>").unwrap();
        std::os::unix::fs::symlink(d.join("elsewhere.svg"), &svg).unwrap();
        fails(&extract_args(s(&model), s(&task), s(&run), &["--force"]), "symbolic link");
        assert_eq!(std::fs::read_to_string(d.join("elsewhere.svg")).unwrap(), "<svg>mine</svg>");
        std::fs::remove_file(&svg).unwrap();
        std::fs::write(&svg, &first["circuit.svg"]).unwrap();
    }

    // With --force a carve run is replaced: a new α gives a new circuit.
    ok(&with_alpha(extract_args(s(&model), s(&task), s(&run), &["--force"]), "0.01"));
    let second = snapshot(&run);
    assert_ne!(second["circuit.json"], first["circuit.json"]);
    assert!(!second.keys().any(|k| k.contains(".tmp")), "no temporary files left: {:?}", second.keys());
}

#[test]
fn a_resume_with_other_options_says_which_in_flags() {
    let d = scratch("resume-options");
    let (model, task) = (tiny_model(&d), task_file(&d));
    let out = d.join("cut");
    let o = carve(&extract_args(s(&model), s(&task), s(&out), &["--stop-after", "1"]));
    assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
    let args = with_alpha(extract_args(s(&model), s(&task), s(&out), &["--resume", s(&out)]), "0.2");
    let o = carve(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("made with --alpha 0.15 --ablation mean --mlps, not --alpha 0.2 --ablation mean --mlps"), "{err}");
    assert!(!err.contains("AblateOptions") && !err.contains('{'), "no Rust struct in the message: {err}");
}
