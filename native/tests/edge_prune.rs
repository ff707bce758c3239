//! `carve extract --method edge-prune` as a user runs it: a run directory with the edge circuit,
//! its standalone model (scored as the circuit is), an interrupted run resumed to the same circuit,
//! `eval --circuit` reproducing the run's scores, and bad settings or circuit files refused with a
//! message that names them.

mod common;
use common::*;

/// The run every test here starts from; `extra` pairs (`--flag value`) replace its settings or add to them.
fn ep_args<'a>(model: &'a str, task: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "extract", "--model", model, "--task", task, "--patching", "20", "--discovery", "12", "--test", "16", "--method",
        "edge-prune", "--sparsity", "0.9", "--steps", "30", "--batch", "8", "--out", out, "--backend", "cpu", "--latency-batch", "4",
    ];
    for pair in extra.chunks(2) {
        match v.iter().position(|a| *a == pair[0]) {
            Some(i) if pair.len() == 2 => v[i + 1] = pair[1],
            _ => v.extend_from_slice(pair),
        }
    }
    v
}

#[test]
fn edge_prune_run_directory_resume_and_eval() {
    let d = scratch("ep-run");
    let (m, t) = (tiny_model(&d), task_file(&d));
    let (a, b) = (d.join("a"), d.join("b"));
    let out = ok(&ep_args(s(&m), s(&t), s(&a), &[]));
    assert!(out.contains("pruned model"), "{out}");
    for f in ["circuit.json", "report.md", "report.json", "circuit.svg", "training.svg", "state.json", "model/config.json", "model/edges.safetensors"] {
        assert!(a.join(f).exists(), "{f} missing");
    }
    let cf = read_json(&a.join("circuit.json"));
    assert_eq!(cf["method"]["name"], "edge-prune");
    let e = &cf["edges"];
    let (total, kept, selected) = (e["total"].as_u64().unwrap(), e["kept"].as_array().unwrap().len() as u64, e["selected"].as_u64().unwrap());
    // tiny-llama: 2 layers of 4 query heads and 2 KV heads: 82 edges; 10% of them selected, but
    // for those the training closed, which are counted.
    assert_eq!(total, 82);
    assert_eq!(selected + e["closed"].as_u64().unwrap(), 8, "{e}");
    assert!(kept <= selected && kept > 0, "{e}");
    assert!((e["sparsity"].as_f64().unwrap() - (1.0 - kept as f64 / total as f64)).abs() < 1e-12);
    for k in e["kept"].as_array().unwrap() {
        assert!(k["edge"].as_str().unwrap().contains(" -> "), "{k}");
        let g = k["gate"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&g), "{k}");
    }
    let svg = std::fs::read_to_string(a.join("circuit.svg")).unwrap();
    assert_eq!(svg.matches("<path").count() as u64, kept, "one curve per kept edge");
    let rep = read_json(&a.join("report.json"));
    assert_eq!(rep["training"]["steps"], 30);
    assert_eq!(cf["method"]["hyperparameters"]["hold"], "open", "the default hold");
    assert_eq!(cf["method"]["hyperparameters"]["schedule"], "cosine", "the default schedule");
    assert_eq!(rep["edges"]["kept"], kept);
    // The report gives the last step's held sparsity (the open hold's: the fraction of gates
    // closed) against the target, and says so when the gates ended short of it: by 0.02, or by a
    // tenth of what the target keeps when that is less.
    let st = read_json(&a.join("state.json"));
    let last = st["edge_prune"]["history"].as_array().unwrap().last().unwrap().clone();
    let tr = &rep["training"];
    let closed = 1.0 - last["kept"].as_f64().unwrap();
    assert_eq!(tr["final_sparsity"].as_f64(), Some(closed));
    assert_eq!(tr["final_sparsity_of"], "closed gates");
    assert_eq!(tr["target_sparsity"], last["target"]);
    let target = last["target"].as_f64().unwrap();
    let short = closed < target - 0.02f64.min(0.1 * (1.0 - target));
    assert_eq!(tr["short_of_target"], short);
    let md = std::fs::read_to_string(a.join("report.md")).unwrap();
    assert_eq!(md.contains("had not reached the target"), short, "{md}");
    // The standalone model scores as the circuit does.
    let (circ, pruned) = (&rep["test"]["circuit"], &rep["test"]["pruned"]);
    for k in ["accuracy", "metric", "answer_prob"] {
        let (c, p) = (circ[k].as_f64().unwrap(), pruned[k].as_f64().unwrap());
        assert!((c - p).abs() <= 1e-4 * c.abs().max(1.0), "{k}: circuit {c}, pruned model {p}");
    }
    ok(&["run", "--model", s(&a.join("model")), "--prompt", "w3 w16 w29", "--backend", "cpu"]);

    // eval --circuit gives the run's test scores (the circuit's own task and splits).
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["eval", "--model", s(&m), "--circuit", s(&a.join("circuit.json")), "--task", s(&t), "--patching", "20",
            "--discovery", "12", "--test", "16", "--backend", "cpu", "--json"]))
        .unwrap();
    for k in ["accuracy", "metric", "answer_prob"] {
        assert_eq!(j["circuit"][k], cf["metrics"]["circuit"][k], "{k}");
    }
    assert_eq!(j["circuit"]["kl"], cf["metrics"]["kl"]);

    // Stopped after 11 steps, then resumed: the same circuit and loss curve, to the bit.
    let o = carve(&ep_args(s(&m), s(&t), s(&b), &["--stop-after", "11"]));
    assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read_json(&b.join("state.json"))["edge_prune"]["step"], 11);
    ok(&ep_args(s(&m), s(&t), s(&b), &["--resume", s(&b)]));
    let cb = read_json(&b.join("circuit.json"));
    assert_eq!(cf["edges"], cb["edges"]);
    assert_eq!(cf["kept"], cb["kept"]);
    let (ha, hb) = (read_json(&a.join("state.json")), read_json(&b.join("state.json")));
    assert_eq!(ha["edge_prune"]["history"], hb["edge_prune"]["history"]);
    assert_eq!(ha["edge_prune"]["log_alpha"], hb["edge_prune"]["log_alpha"]);
    // A finished run resumed trains no step and cuts its gates again to the same circuit; with
    // --cut open, to the gates the training left open (log α > 0), and back with --cut target.
    ok(&ep_args(s(&m), s(&t), s(&b), &["--resume", s(&b)]));
    assert_eq!(read_json(&b.join("circuit.json"))["edges"], cb["edges"]);
    assert_eq!(read_json(&b.join("state.json"))["edge_prune"]["history"], hb["edge_prune"]["history"]);
    ok(&ep_args(s(&m), s(&t), s(&b), &["--resume", s(&b), "--cut", "open"]));
    let open = hb["edge_prune"]["log_alpha"].as_array().unwrap().iter().filter(|a| a.as_f64().unwrap() > 0.0).count() as u64;
    let co = read_json(&b.join("circuit.json"));
    assert_eq!((co["edges"]["selected"].as_u64(), co["edges"]["closed"].as_u64()), (Some(open), Some(0)), "{}", co["edges"]);
    assert_eq!(co["method"]["hyperparameters"]["cut"], "open");
    assert_eq!(read_json(&b.join("state.json"))["edge_prune"]["history"], hb["edge_prune"]["history"]);
    // --cut exact: the target's count, closed gates reopened and counted in the report.
    ok(&ep_args(s(&m), s(&t), s(&b), &["--resume", s(&b), "--cut", "exact"]));
    let ce = read_json(&b.join("circuit.json"));
    let total = ce["edges"]["total"].as_f64().unwrap();
    let want = ((1.0 - ce["edges"]["target_sparsity"].as_f64().unwrap()) * total).round() as u64;
    assert_eq!((ce["edges"]["selected"].as_u64(), ce["edges"]["closed"].as_u64()), (Some(want), Some(0)), "{}", ce["edges"]);
    assert_eq!(ce["method"]["hyperparameters"]["cut"], "exact");
    let reopened = ce["edges"]["kept"].as_array().unwrap().iter().filter(|k| k["gate"].as_f64().unwrap() <= 0.5).count();
    let report = std::fs::read_to_string(b.join("report.md")).unwrap();
    assert_eq!(report.contains("were reopened to hit the target"), reopened > 0, "{reopened} reopened\n{report}");
    ok(&ep_args(s(&m), s(&t), s(&b), &["--resume", s(&b), "--cut", "target"]));
    assert_eq!(read_json(&b.join("circuit.json"))["edges"], cb["edges"]);
    // A node-prune state does not resume an edge-prune run.
    let c = d.join("c");
    let o = carve(&ep_args(s(&m), s(&t), s(&c), &["--stop-after", "2"]));
    assert_eq!(o.status.code(), Some(130));
    fails(&ep_args(s(&m), s(&t), s(&c), &["--resume", s(&c), "--lr", "0.2"]), "other options");
    fails(&ep_args(s(&m), s(&t), s(&c), &["--resume", s(&c), "--hold", "expected"]), "other options");
    fails(&ep_args(s(&m), s(&t), s(&c), &["--resume", s(&c), "--schedule", "flat"]), "other options");
    fails(&ep_args(s(&m), s(&t), s(&c), &["--resume", s(&c), "--lambda2-scale", "10"]), "other options");
    // A run with a faster λ2 saves it, resumes with it untold, and records it in circuit.json.
    let g = d.join("g");
    let o = carve(&ep_args(s(&m), s(&t), s(&g), &["--lambda2-scale", "10", "--stop-after", "2"]));
    assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read_json(&g.join("state.json"))["edge_prune"]["options"]["lambda2_scale"], 10.0);
    fails(&ep_args(s(&m), s(&t), s(&g), &["--resume", s(&g), "--lambda2-scale", "1"]), "other options");
    ok(&ep_args(s(&m), s(&t), s(&g), &["--resume", s(&g)]));
    assert_eq!(read_json(&g.join("circuit.json"))["method"]["hyperparameters"]["lambda2_scale"], 10.0);
    // A run that held the expected sparsity, or decayed by cosine (the default), saves its options
    // as runs from before --hold and --schedule did (without them), and resumes without being told.
    for (name, key, old, new) in [("e", "hold", "expected", "open"), ("f", "schedule", "cosine", "flat")] {
        let e = d.join(name);
        let flag = format!("--{key}");
        let o = carve(&ep_args(s(&m), s(&t), s(&e), &[&flag, old, "--stop-after", "2"]));
        assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(read_json(&e.join("state.json"))["edge_prune"]["options"].get(key).is_none());
        fails(&ep_args(s(&m), s(&t), s(&e), &["--resume", s(&e), &flag, new]), "other options");
        ok(&ep_args(s(&m), s(&t), s(&e), &["--resume", s(&e)]));
        assert_eq!(read_json(&e.join("circuit.json"))["method"]["hyperparameters"][key], old);
    }
    let e = d.join("e");
    let tr = &read_json(&e.join("report.json"))["training"];
    let last = read_json(&e.join("state.json"))["edge_prune"]["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((&tr["final_sparsity"], &tr["final_sparsity_of"]), (&last["sparsity"], &"expected".into()));

    // The standalone model refuses what needs the full model.
    fails(
        &["extract", "--model", s(&a.join("model")), "--task", s(&t), "--method", "edge-prune", "--sparsity", "0.5", "--out", s(&d.join("x")), "--backend", "cpu"],
        "standalone edge model",
    );
}

/// Resample ablation: scored, not folded into a model.
#[test]
fn edge_prune_with_resample_ablation() {
    let d = scratch("ep-resample");
    let (m, t) = (tiny_model(&d), task_file(&d));
    let a = d.join("a");
    ok(&ep_args(s(&m), s(&t), s(&a), &["--ablation", "resample", "--steps", "8"]));
    let cf = read_json(&a.join("circuit.json"));
    assert_eq!(cf["ablation"]["kind"], "resample");
    assert!(cf["metrics"]["kl"].as_f64().unwrap().is_finite(), "{}", cf["metrics"]);
    assert!(!a.join("model").exists(), "resampled values fold into no model");
}

#[test]
fn edge_prune_bad_settings_and_circuit_files() {
    let d = scratch("ep-bad");
    let (m, t) = (tiny_model(&d), task_file(&d));
    let o = d.join("o");
    fails(&ep_args(s(&m), s(&t), s(&o), &["--sparsity", "1.5"]), "target sparsity must be in [0, 1]");
    fails(&ep_args(s(&m), s(&t), s(&o), &["--sparsity", "-0.1"]), "target sparsity must be in [0, 1]");
    fails(&ep_args(s(&m), s(&t), s(&o), &["--sparsity", "NaN"]), "target sparsity must be in [0, 1]");
    fails(&ep_args(s(&m), s(&t), s(&o), &["--lr", "0"]), "learning rate");
    fails(&ep_args(s(&m), s(&t), s(&o), &["--init-log-alpha", "inf"]), "starting log α");
    for bad in ["0", "-1", "NaN", "1e9"] {
        fails(&ep_args(s(&m), s(&t), s(&o), &["--lambda2-scale", bad]), "λ2 scale must be a finite number in (0, 1000]");
    }
    fails(&ep_args(s(&m), s(&t), s(&o), &["--ablation", "mean-per-position"]), "zero, mean or resample");
    fails(&ep_args(s(&m), s(&t), s(&o), &["--alpha", "0.1"]), "ablate's settings");
    // A task of open answers (a user's file) has no answer tokens to take a KL over.
    fails(&ep_args(s(&m), s(&t), s(&o), &["--kl-over", "answers"]), "closed set of tokens");
    let mut none = ep_args(s(&m), s(&t), s(&o), &[]);
    let i = none.iter().position(|a| *a == "--sparsity").unwrap();
    none.drain(i..i + 2);
    fails(&none, "edge-prune needs --sparsity");
    fails(
        &["extract", "--model", s(&m), "--task", s(&t), "--method", "node-prune", "--cut", "open", "--out", s(&o), "--backend", "cpu"],
        "--cut is edge-prune's",
    );
    fails(
        &["extract", "--model", s(&m), "--task", s(&t), "--method", "node-prune", "--hold", "open", "--out", s(&o), "--backend", "cpu"],
        "--hold is edge-prune's",
    );
    fails(
        &["extract", "--model", s(&m), "--task", s(&t), "--method", "ablate", "--alpha", "0.01", "--schedule", "flat", "--out", s(&o), "--backend", "cpu"],
        "--schedule is edge-prune's",
    );
    fails(
        &["extract", "--model", s(&m), "--task", s(&t), "--method", "node-prune", "--lambda2-scale", "10", "--out", s(&o), "--backend", "cpu"],
        "--lambda2-scale is edge-prune's",
    );

    fails(
        &["extract", "--model", s(&m), "--task", s(&t), "--method", "node-prune", "--sparsity", "0.5", "--out", s(&o), "--backend", "cpu"],
        "--sparsity is edge-prune's",
    );
    assert!(!o.join("circuit.json").exists(), "a refused run writes nothing");

    // A circuit file whose edges name readers (or writers) the model lacks.
    let a = d.join("a");
    ok(&ep_args(s(&m), s(&t), s(&a), &["--steps", "4"]));
    let text = std::fs::read_to_string(a.join("circuit.json")).unwrap();
    let mut cf: serde_json::Value = serde_json::from_str(&text).unwrap();
    let edit = |cf: &mut serde_json::Value, edge: &str| {
        cf["edges"]["kept"][0]["edge"] = serde_json::json!(edge);
        let p = d.join("bad.json");
        std::fs::write(&p, serde_json::to_string(cf).unwrap()).unwrap();
        p
    };
    let eval = |p: &std::path::Path| vec!["eval".to_string(), "--model".into(), s(&m).into(), "--circuit".into(), s(p).into(), "--backend".into(), "cpu".into()];
    for (edge, why) in [
        ("L0H0 -> L7H1.q", "no reader L7H1.q"),
        ("L0H0 -> L1KV5.k", "no reader L1KV5.k"),
        ("L9MLP -> logits", "no writer L9MLP"),
        ("L1H0 -> L0MLP", "does not come before"),
        ("L0H0 => logits", "is not an edge"),
    ] {
        let p = edit(&mut cf, edge);
        let args = eval(&p);
        fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), why);
    }
    cf = serde_json::from_str(&text).unwrap();
    cf["edges"]["total"] = serde_json::json!(81);
    let p = d.join("bad.json");
    std::fs::write(&p, serde_json::to_string(&cf).unwrap()).unwrap();
    let args = eval(&p);
    fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), "has 82 edges");
    cf = serde_json::from_str(&text).unwrap();
    cf["edges"]["closed"] = serde_json::json!(80);
    std::fs::write(&p, serde_json::to_string(&cf).unwrap()).unwrap();
    fails(&eval(&p).iter().map(String::as_str).collect::<Vec<_>>(), "closed are more than the 82 edges");
    // A file written before `closed` was recorded reads as none closed.
    cf = serde_json::from_str(&text).unwrap();
    cf["edges"].as_object_mut().unwrap().remove("closed");
    std::fs::write(&p, serde_json::to_string(&cf).unwrap()).unwrap();
    ok(&eval(&p).iter().map(String::as_str).collect::<Vec<_>>());

    // An edge model whose edges file is missing, or of the wrong length.
    let mdir = a.join("model");
    let bytes = std::fs::read(mdir.join("edges.safetensors")).unwrap();
    std::fs::remove_file(mdir.join("edges.safetensors")).unwrap();
    fails(&["run", "--model", s(&mdir), "--prompt", "w3", "--backend", "cpu"], "no such file was found");
    std::fs::write(mdir.join("edges.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    fails(&["run", "--model", s(&mdir), "--prompt", "w3", "--backend", "cpu"], "edges.safetensors");
}

/// Gates trained past the target (flat schedule, a fast λ) close edges the target keeps: the
/// default cut leaves them out and counts them; `--cut exact` reopens them to the target's count
/// and the report says how many of the kept edges were closed.
#[test]
fn cut_exact_reopens_what_the_training_closed() {
    let d = scratch("ep-exact");
    let (m, t) = (tiny_model(&d), task_file(&d));
    let a = d.join("a");
    let extra = ["--steps", "150", "--schedule", "flat", "--lambda-lr", "20"];
    ok(&ep_args(s(&m), s(&t), s(&a), &extra));
    let c = read_json(&a.join("circuit.json"));
    let closed = c["edges"]["closed"].as_u64().unwrap();
    assert!(closed > 0, "the gates did not end sparser than the target: {}", c["edges"]);
    let mut resumed = extra.to_vec();
    resumed.extend(["--resume", s(&a), "--cut", "exact"]);
    ok(&ep_args(s(&m), s(&t), s(&a), &resumed));
    let e = read_json(&a.join("circuit.json"))["edges"].clone();
    assert_eq!((e["selected"].as_u64(), e["closed"].as_u64()), (Some(8), Some(0)), "{e}");
    let reopened = e["kept"].as_array().unwrap().iter().filter(|k| k["gate"].as_f64().unwrap() <= 0.5).count();
    assert!(reopened > 0, "{e}");
    let report = std::fs::read_to_string(a.join("report.md")).unwrap();
    assert!(report.contains(&format!("{reopened} of the kept edges had been closed by the training")), "{report}");
}

/// `--hold exact`: the settings under which the open hold closed gates past the target (above) end
/// with exactly the target's gates open, so the cut keeps them all and reopens none; the hold is
/// recorded, and a resumed run keeps it.
#[test]
fn hold_exact_ends_on_the_target() {
    let d = scratch("ep-hold-exact");
    let (m, t) = (tiny_model(&d), task_file(&d));
    let a = d.join("a");
    let extra = ["--steps", "150", "--schedule", "flat", "--lambda-lr", "20", "--hold", "exact", "--stop-after", "120"];
    let o = carve(&ep_args(s(&m), s(&t), s(&a), &extra));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("holding exactly the target's count") && err.contains("--resume"), "{err}");
    let resumed = ["--steps", "150", "--schedule", "flat", "--lambda-lr", "20", "--resume", s(&a)];
    ok(&ep_args(s(&m), s(&t), s(&a), &resumed));
    let c = read_json(&a.join("circuit.json"));
    assert_eq!(c["method"]["hyperparameters"]["hold"], "exact");
    let e = &c["edges"];
    assert_eq!((e["selected"].as_u64(), e["closed"].as_u64()), (Some(8), Some(0)), "{e}");
    assert!(e["kept"].as_array().unwrap().iter().all(|k| k["gate"].as_f64().unwrap() > 0.5), "{e}");
    let tr = &read_json(&a.join("report.json"))["training"];
    assert_eq!((tr["steps"].as_u64(), tr["final_sparsity_of"].as_str()), (Some(150), Some("closed gates")), "{tr}");
    assert!((tr["final_sparsity"].as_f64().unwrap() - (1.0 - 8.0 / 82.0)).abs() < 1e-12, "{tr}");
    // Held from a step past the ramp (105) and at the latest from 90% of the run (135).
    let from = c["method"]["hyperparameters"]["count_held_from"].as_u64().unwrap();
    assert!((105..=135).contains(&from) && tr["count_held_from"].as_u64() == Some(from), "held from {from}; {tr}");
    let report = std::fs::read_to_string(a.join("report.md")).unwrap();
    assert!(!report.contains("closed by the training"), "{report}");
    assert!(report.contains(&format!("held at the target from step {from} on")), "{report}");
}
