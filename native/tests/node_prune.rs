//! `carve extract --method node-prune` and `carve grad` as a user runs them: a run directory like
//! ablate's, an interrupted run resumed to the same circuit and loss curve, and bad settings or
//! mask files refused with a message that names them.

mod common;
use common::*;

fn np_args<'a>(model: &'a str, task: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "extract", "--model", model, "--task", task, "--patching", "20", "--discovery", "12", "--test", "16", "--method",
        "node-prune", "--steps", "40", "--batch", "8", "--out", out, "--backend", "cpu", "--latency-batch", "4",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn node_prune_run_directory_and_resume() {
    let d = scratch("np-run");
    let (m, t) = (tiny_model(&d), task_file(&d));
    let (a, b) = (d.join("a"), d.join("b"));
    ok(&np_args(s(&m), s(&t), s(&a), &[]));
    for f in ["circuit.json", "report.md", "report.json", "circuit.svg", "training.svg", "state.json", "model/config.json"] {
        assert!(a.join(f).exists(), "{f} missing");
    }
    let cf = read_json(&a.join("circuit.json"));
    assert_eq!(cf["method"]["name"], "node-prune");
    for k in ["granularity", "sparsity_weight", "steps", "lr", "batch", "seed", "final_loss"] {
        assert!(!cf["method"]["hyperparameters"][k].is_null(), "hyperparameter {k} missing: {}", cf["method"]);
    }
    let rep = read_json(&a.join("report.json"));
    assert_eq!(rep["training"]["steps"], 40);
    assert!(rep["total"]["neurons"].as_u64().unwrap() > 0);
    assert!(std::fs::read_to_string(a.join("report.md")).unwrap().contains("training.svg"));
    // The pruned model runs.
    ok(&["run", "--model", s(&a.join("model")), "--prompt", "w3 w16 w29", "--backend", "cpu"]);

    // Stopped after 15 steps, then resumed: the same circuit and the same loss curve, to the bit.
    let o = carve(&np_args(s(&m), s(&t), s(&b), &["--stop-after", "15"]));
    assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
    let st = read_json(&b.join("state.json"));
    assert_eq!(st["node_prune"]["step"], 15);
    ok(&np_args(s(&m), s(&t), s(&b), &["--resume", s(&b)]));
    let (ca, cb) = (read_json(&a.join("circuit.json")), read_json(&b.join("circuit.json")));
    assert_eq!(ca["kept"], cb["kept"]);
    assert_eq!(ca["removed"], cb["removed"]);
    let (ha, hb) = (read_json(&a.join("state.json")), read_json(&b.join("state.json")));
    assert_eq!(ha["node_prune"]["history"], hb["node_prune"]["history"]);
    assert_eq!(ha["node_prune"]["log_alpha"], hb["node_prune"]["log_alpha"]);

    // Trained too briefly to reach the target: the report says so, with advice node-prune can take
    // (`--cut` is edge-prune's).
    let e = d.join("e");
    let mut short = np_args(s(&m), s(&t), s(&e), &[]);
    let at = short.iter().position(|&a| a == "--steps").unwrap() + 1;
    short[at] = "2";
    ok(&short);
    assert_eq!(read_json(&e.join("report.json"))["training"]["short_of_target"], true);
    let md = std::fs::read_to_string(e.join("report.md")).unwrap();
    assert!(md.contains("had not reached the target") && md.contains("--steps") && md.contains("--target-sparsity") && !md.contains("--cut"), "{md}");
    // node-prune keeps the gates left open: it cuts nothing to the target.
    assert!(md.contains("whose gates ended open") && !md.contains("Cutting to the target"), "{md}");

    // Resuming with other options is refused.
    let c = d.join("c");
    let o = carve(&np_args(s(&m), s(&t), s(&c), &["--stop-after", "3"]));
    assert_eq!(o.status.code(), Some(130));
    fails(&np_args(s(&m), s(&t), s(&c), &["--resume", s(&c), "--lr", "0.3"]), "other options");
}

/// Resample ablation: each prompt's removed components take its corrupted prompt's values, so the
/// circuit is scored but not folded into a model (its values depend on the prompt).
#[test]
fn node_prune_with_resample_ablation() {
    let d = scratch("np-resample");
    let (m, t) = (tiny_model(&d), task_file(&d));
    let a = d.join("a");
    ok(&np_args(s(&m), s(&t), s(&a), &["--ablation", "resample"]));
    let cf = read_json(&a.join("circuit.json"));
    assert_eq!(cf["ablation"]["kind"], "resample");
    assert_eq!(cf["method"]["hyperparameters"]["ablation"], "resample");
    assert!(cf["metrics"]["kl"].as_f64().unwrap().is_finite(), "{}", cf["metrics"]);
    assert!(!a.join("model").exists() && !a.join("means.safetensors").exists(), "resampled values fold into no model");
    assert_eq!(read_json(&a.join("report.json"))["training"]["steps"], 40);
}

#[test]
fn node_prune_bad_settings() {
    let d = scratch("np-bad");
    let (m, t) = (tiny_model(&d), task_file(&d));
    let o = d.join("o");
    fails(&np_args(s(&m), s(&t), s(&o), &["--sparsity-weight", "1.5"]), "sparsity weight");
    fails(&np_args(s(&m), s(&t), s(&o), &["--sparsity-weight", "NaN"]), "sparsity weight");
    fails(&np_args(s(&m), s(&t), s(&o), &["--lr", "0"]), "learning rate");
    fails(&np_args(s(&m), s(&t), s(&o), &["--lr", "inf"]), "learning rate");
    fails(&np_args(s(&m), s(&t), s(&o), &["--target-sparsity", "0.5", "--lambda-lr", "0"]), "λ learning rate");
    fails(&np_args(s(&m), s(&t), s(&o), &["--init-open", "1"]), "starting open probability");
    fails(&np_args(s(&m), s(&t), s(&o), &["--target-sparsity", "off"]), "nothing would remove a component");
    fails(&np_args(s(&m), s(&t), s(&o), &["--granularity-weights", "neurons=-1"]), "sparsity weight of neurons");
    fails(&np_args(s(&m), s(&t), s(&o), &["--granularity-weights", "layers=2"]), "`layers` is not a granularity");
    fails(&np_args(s(&m), s(&t), s(&o), &["--target-sparsity", "most"]), "not a fraction in [0, 1) or `off`");
    fails(&np_args(s(&m), s(&t), s(&o), &["--target-sparsity", "1.2"]), "target sparsity must be in [0, 1)");
    let mut zero = np_args(s(&m), s(&t), s(&o), &[]);
    let i = zero.iter().position(|a| *a == "--steps").unwrap();
    zero[i + 1] = "0";
    fails(&zero, "at least 1 step");
    fails(&np_args(s(&m), s(&t), s(&o), &["--granularity", "heads,layerz"]), "`layerz` is not a granularity");
    fails(&np_args(s(&m), s(&t), s(&o), &["--ablation", "mean-per-position"]), "zero, mean or resample ablation");
    fails(&np_args(s(&m), s(&t), s(&o), &["--alpha", "0.1"]), "ablate's settings");
    assert!(!o.join("circuit.json").exists(), "a refused run writes nothing");
}

fn write_masks(path: &std::path::Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (n.to_string(), TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn grad_writes_loss_and_mask_gradients_and_refuses_bad_masks() {
    let d = scratch("grad");
    let m = tiny_model(&d);
    let ids = d.join("ids.json");
    std::fs::write(&ids, "[[5, 17, 30, 41, 9], [7, 8, 99]]").unwrap();
    let masks = d.join("masks.safetensors");
    // tiny-llama: 2 layers, 4 heads, 128 neurons.
    let good = vec![
        ("heads", vec![2, 4], vec![0.5; 8]),
        ("attn", vec![2], vec![0.9, 0.7]),
        ("mlp", vec![2], vec![0.6, 1.0]),
        ("neurons", vec![2, 128], vec![0.8; 256]),
        ("layers", vec![2], vec![1.0, 0.9]),
    ];
    write_masks(&masks, &good);
    let out = d.join("g.safetensors");
    let printed = ok(&["grad", "--model", s(&m), "--token-ids", s(&ids), "--masks", s(&masks), "--out", s(&out), "--backend", "cpu"]);
    assert!(printed.contains("loss"), "{printed}");
    let g = carve_tests_read(&out);
    for (name, len) in [("loss", 1), ("grad.heads", 8), ("grad.attn", 2), ("grad.mlp", 2), ("grad.neurons", 256), ("grad.layers", 2)] {
        let v = g.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(v.1.len(), len, "{name}");
        assert!(v.1.iter().all(|x| x.is_finite()), "{name}");
    }
    assert!(g.iter().find(|(n, _)| n == "loss").unwrap().1[0] > 0.0, "fractional masks move the output");
    // Written by carve grad: replaced only with --force; another file is never replaced.
    fails(&["grad", "--model", s(&m), "--token-ids", s(&ids), "--masks", s(&masks), "--out", s(&out), "--backend", "cpu"], "--force");
    ok(&["grad", "--model", s(&m), "--token-ids", s(&ids), "--masks", s(&masks), "--out", s(&out), "--backend", "cpu", "--force"]);
    fails(&["grad", "--model", s(&m), "--token-ids", s(&ids), "--masks", s(&masks), "--out", s(&ids), "--backend", "cpu", "--force"], "not a file carve grad wrote");

    let bad = |tensors: Vec<(&str, Vec<usize>, Vec<f32>)>, needle: &str| {
        let p = d.join("bad.safetensors");
        write_masks(&p, &tensors);
        let o = d.join("bad-out.safetensors");
        fails(&["grad", "--model", s(&m), "--token-ids", s(&ids), "--masks", s(&p), "--out", s(&o), "--backend", "cpu"], needle);
        assert!(!o.exists());
    };
    bad(vec![("head", vec![2, 4], vec![1.0; 8])], "`head` is not a mask");
    bad(vec![("heads", vec![2, 5], vec![1.0; 10])], "needs [2, 4]");
    bad(vec![("attn", vec![2], vec![f32::NAN, 1.0])], "is NaN");
    bad(vec![("mlp", vec![2], vec![1.5, 1.0])], "[0, 1]");
}

fn carve_tests_read(p: &std::path::Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(n, v)| (n, v.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())).collect()
}

#[test]
fn bench_train_prints_the_parts_of_a_step() {
    let d = scratch("bench-train");
    let (m, t) = (tiny_model(&d), task_file(&d));
    let out = ok(&[
        "bench", "train", "--model", s(&m), "--task", s(&t), "--patching", "20", "--discovery", "12", "--test", "16", "--batch", "8",
        "--iters", "2", "--backend", "cpu",
    ]);
    for row in ["| plain forward |", "| masked forward with tape |", "| backward to the masks |", "backward / masked forward:"] {
        assert!(out.contains(row), "{row} missing:\n{out}");
    }
    assert!(!out.contains("dispatches") && !out.contains("real rows only"), "the CPU has no submits and no packing to compare:\n{out}");
    // On a GPU (llvmpipe here) each method's step is also timed with a submit every 256
    // dispatches beside the default submit per read, and with the matrix products on the real
    // rows beside every row.
    let heads = [
        "| part | ms, a submit per read | ms, a submit every 256 dispatches | speedup |",
        "| part | ms, every row | ms, the real rows only | speedup |",
    ];
    for (method, rows) in [("node-prune", &["plain forward", "training step"][..]), ("edge-prune", &["edge backward, gates sampled", "training step, gates sampled"][..])] {
        let out = ok(&[
            "bench", "train", "--model", s(&m), "--task", s(&t), "--patching", "20", "--discovery", "12", "--test", "16", "--batch", "8",
            "--iters", "1", "--method", method, "--backend", "gpu",
        ]);
        for (head, row) in heads.iter().flat_map(|h| rows.iter().map(move |r| (h, r))) {
            let table = out.split("\n\n").find(|p| p.starts_with(head));
            let table = table.unwrap_or_else(|| panic!("{method}: no table {head}:\n{out}"));
            let cells: Vec<&str> = table.lines().find(|l| l.starts_with(&format!("| {row} |"))).unwrap_or_else(|| panic!("{method}: {row} missing:\n{table}")).trim_matches('|').split('|').map(str::trim).collect();
            let ms: Vec<f64> = cells[1..3].iter().map(|c| c.parse().unwrap()).collect();
            assert!(ms.iter().all(|&v| v > 0.0), "{method}: {cells:?}");
            let ratio: f64 = cells[3].trim_end_matches('×').parse().unwrap();
            // The speedup is the first time over the second; the printed ms are rounded to 0.05.
            let (lo, hi) = ((ms[0] - 0.05) / (ms[1] + 0.05), (ms[0] + 0.05) / (ms[1] - 0.05).max(1e-9));
            assert!(ratio >= lo - 0.005 && ratio <= hi + 0.005, "{method}: {cells:?}");
        }
        // The warm-up round filled the pool and the bind group cache: a node-prune step binds the
        // same buffers every round.
        assert!(out.contains("device buffers created during the 1 timed rounds: 0"), "{method}:\n{out}");
        if method == "node-prune" {
            assert!(out.contains("bind groups created during the 1 timed rounds: 0"), "{method}:\n{out}");
        }
    }
    fails(&["bench", "train", "--model", s(&m), "--task", s(&t), "--batch", "0", "--backend", "cpu"], "--batch");
}

#[test]
fn bench_ops_splits_a_step_by_op() {
    let d = scratch("bench-ops");
    let (m, t) = (tiny_model(&d), task_file(&d));
    // The CPU times the backend's ops; a GPU (llvmpipe here) times its kernels with timestamps.
    for (backend, how, matmul, backward_ops) in [
        ("cpu", "wall time of each op", "matmul_backward", [("node-prune", "matmul_backward"), ("edge-prune", "gated_sum_backward")]),
        ("gpu", "timestamp queries", "matmul (w [K,N], x [K,M])", [("node-prune", "mix_backward_mask"), ("edge-prune", "dgates_part")]),
    ] {
        for (method, backward_op) in backward_ops {
            let out = ok(&[
                "bench", "ops", "--model", s(&m), "--task", s(&t), "--patching", "20", "--discovery", "12", "--test", "16", "--batch",
                "8", "--iters", "2", "--method", method, "--backend", backend,
            ]);
            assert!(out.contains(how), "{backend}: {how} not said:\n{out}");
            let sections: Vec<&str> = out.split("\n\n").filter(|p| p.starts_with("| op |")).collect();
            assert_eq!(sections.len(), 3, "{backend} {method}: plain forward, the method's forward and its backward:\n{out}");
            for (i, sec) in sections.iter().enumerate() {
                let rows: Vec<Vec<&str>> = sec.lines().skip(2).map(|l| l.trim_matches('|').split('|').map(str::trim).collect()).collect();
                assert!(!rows.is_empty(), "{backend} {method}: section {i} has no ops:\n{out}");
                let share: f64 = rows.iter().map(|r| r[3].trim_end_matches('%').parse::<f64>().unwrap()).sum();
                assert!((share - 100.0).abs() < 0.5, "{backend} {method}: section {i}'s shares sum to {share}:\n{out}");
                for r in &rows {
                    assert!(r[1].parse::<u64>().unwrap() > 0, "{backend} {method}: {r:?} never called");
                }
                // The GEMM reading its operands a vec4 at a time (`matmul_vec4`, aligned products) counts as the GEMM.
                let has = |op: &str| rows.iter().any(|r| r[0].replacen("_vec4", "", 1) == op);
                assert!(has("matmul") || i == 2, "{backend} {method}: no matmul in section {i}:\n{out}");
                if i == 2 {
                    assert!(has(backward_op) && has(matmul), "{backend} {method}: {backward_op} or {matmul} missing from the backward:\n{out}");
                }
            }
        }
    }
}
