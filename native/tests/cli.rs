//! The `carve` program end to end on a tiny Llama (GQA) with a word-level tokenizer: extract writes
//! a consistent run (circuit, pruned model, reports, picture), the pruned model agrees with `eval
//! --circuit` and `run --ablate` on the full model, an interrupted run resumes to the same circuit,
//! and bad input is refused with a message that names it.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

#[test]
fn extract_writes_a_consistent_run() {
    let d = scratch("run");
    let (model, task) = (tiny_model(&d), task_file(&d));
    let out = d.join("run");
    ok(&extract_args(s(&model), s(&task), s(&out), &["--ablation", "zero"]));

    let r = read_json(&out.join("report.json"));
    for key in [
        "/params/full", "/params/pruned", "/params/full_non_embedding", "/params/pruned_non_embedding",
        "/test/full/accuracy", "/test/full/metric", "/test/circuit/accuracy", "/test/circuit/metric",
        "/test/pruned/accuracy", "/test/pruned/metric", "/test/kl", "/latency_ms/full", "/latency_ms/pruned",
        "/extract_seconds", "/kept/heads", "/kept/mlps", "/total/heads", "/total/mlps",
    ] {
        assert!(r.pointer(key).is_some_and(|v| v.is_number()), "report.json lacks a number at {key}: {r:#}");
    }
    assert_eq!(r["total"]["heads"], 8);
    assert_eq!(r["total"]["mlps"], 2);
    let kept: Vec<&str> = r["kept"]["components"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let heads = kept.iter().filter(|c| c.contains('H')).count();
    assert_eq!(r["kept"]["heads"], heads);
    assert!(kept.len() < 10 && kept.len() > 1, "α = 0.15 on a random model should remove something: kept {kept:?}");

    // The pruned model scores as the masked circuit does.
    for k in ["accuracy", "metric", "answer_prob"] {
        let (c, p) = (r["test"]["circuit"][k].as_f64().unwrap(), r["test"]["pruned"][k].as_f64().unwrap());
        assert!(close(c, p, 1e-4), "test.{k}: circuit {c} vs pruned {p}");
    }
    let cf = read_json(&out.join("circuit.json"));
    assert_eq!(cf["format"], "carve-circuit");
    assert_eq!(cf["model"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(cf["kept"], r["kept"]["components"]);
    let decided: Vec<&Value> = cf["decisions"].as_array().unwrap().iter().collect();
    assert_eq!(decided.len(), 10, "every head and MLP was tried");
    let removed_by_decision: Vec<&Value> = decided.iter().filter(|d| d["removed"] == true).map(|d| &d["component"]).collect();
    assert_eq!(removed_by_decision, cf["removed"].as_array().unwrap().iter().collect::<Vec<_>>());
    let svg = std::fs::read_to_string(out.join("circuit.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("(kept)").count() == kept.len(), "circuit.svg marks the kept components");
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("pruned model"));
    for t in [out.join("task.json"), out.join("model/task.json")] {
        assert_eq!(read_json(&t)["examples"].as_array().map(|e| e.len()), Some(16), "{} holds the test split", t.display());
    }

    // eval --circuit on the full model reproduces the report's circuit numbers.
    let e: Value = serde_json::from_str(&ok(&["eval", "--model", s(&model), "--circuit", s(&out.join("circuit.json")), "--json", "--backend", "cpu"])).unwrap();
    for k in ["accuracy", "metric"] {
        assert!(close(e["circuit"][k].as_f64().unwrap(), r["test"]["circuit"][k].as_f64().unwrap(), 1e-9), "eval --circuit {k}: {e:#}");
    }
    assert!(close(e["circuit"]["kl"].as_f64().unwrap(), r["test"]["kl"].as_f64().unwrap(), 1e-9));

    // run on the pruned model ≡ run on the full model with the removed components zero-ablated.
    let removed: Vec<&str> = cf["removed"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let prompt = "w5 w17 w40 w41 w42 w99";
    let pruned: Value = serde_json::from_str(&ok(&["run", "--model", s(&out.join("model")), "--prompt", prompt, "--json", "--backend", "cpu"])).unwrap();
    let ablate = removed.join(",");
    let mut args = vec!["run", "--model", s(&model), "--prompt", prompt, "--json", "--backend", "cpu"];
    if !removed.is_empty() {
        args.extend(["--ablate", &ablate]);
    }
    let full: Value = serde_json::from_str(&ok(&args)).unwrap();
    for (a, b) in pruned["top"].as_array().unwrap().iter().zip(full["top"].as_array().unwrap()) {
        assert_eq!(a["id"], b["id"]);
        assert!(close(a["prob"].as_f64().unwrap(), b["prob"].as_f64().unwrap(), 1e-4), "{a} vs {b}");
    }
    // A kept head can be ablated in the pruned model by its source name; a removed one cannot.
    if let Some(h) = kept.iter().find(|c| c.contains('H')) {
        ok(&["run", "--model", s(&out.join("model")), "--prompt", prompt, "--ablate", h, "--backend", "cpu"]);
    }
    if let Some(h) = removed.iter().find(|c| c.contains('H')) {
        fails(&["run", "--model", s(&out.join("model")), "--prompt", prompt, "--ablate", h, "--backend", "cpu"], "not in this pruned model");
    }
    let gen = ok(&["run", "--model", s(&model), "--prompt", prompt, "--max-new-tokens", "3", "--backend", "cpu"]);
    assert!(gen.lines().last().unwrap().starts_with(prompt), "a greedy continuation follows the prompt:\n{gen}");
    assert!(ok(&["info", "--model", s(&out.join("model"))]).contains("pruned by carve"));

    // Share links: to the pruned model (every component on), or to the full one with the mask.
    let cj = out.join("circuit.json");
    let link = ok(&["link", s(&cj), "--model-url", "https://example.org/ioi/model/", "--prompt", "<b>hi</b>"]);
    let st: Value = serde_json::from_str(&ok(&["link", "--decode", link.trim()])).unwrap();
    assert_eq!(st["model_url"], "https://example.org/ioi/model/");
    assert_eq!(st["prompt"], "<b>hi</b>");
    assert_eq!(st["task"], "task.jsonl", "a link names a task file by its name, not its path on this disk");
    assert_eq!(st["kept"], st["components"]);
    let full = ok(&["link", s(&cj), "--full", "--model-url", "/tiny/"]);
    let st: Value = serde_json::from_str(&ok(&["link", "--decode", full.trim()])).unwrap();
    assert_eq!(st["components"], 10);
    assert_eq!(st["kept"], kept.len());
    assert_eq!(st["model_sha256"].as_str().unwrap(), &cf["model"]["sha256"].as_str().unwrap()[..16]);
    let mut broken = full.trim().to_string();
    broken.pop();
    fails(&["link", "--decode", &broken], "checksum");
    serve_gives_the_app_and_the_run(&d, &out);
}

#[test]
fn mean_ablation_ships_its_means_and_full_and_pruned_agree() {
    let d = scratch("means");
    let (model, task) = (tiny_model(&d), task_file(&d));
    let out = d.join("run");
    let mut args = extract_args(s(&model), s(&task), s(&out), &["--ablation", "mean"]);
    let at = args.iter().position(|a| *a == "0.15").unwrap();
    args[at] = "0.12";
    ok(&args);
    let cf = read_json(&out.join("circuit.json"));
    assert_eq!(cf["ablation"]["values"], "means.safetensors");
    assert!(out.join("means.safetensors").is_file() && out.join("model/means.safetensors").is_file());
    let pruned = out.join("model");
    let circuit = out.join("circuit.json");
    let removed: Vec<&str> = cf["removed"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let kept: Vec<&str> = cf["kept"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(removed.iter().any(|c| c.contains('H')), "α = 0.12 removes some heads: {removed:?}");

    // The full model with the circuit's means is the pruned model.
    same_top(&run_top(&pruned, &[]), &run_top(&model, &["--circuit", s(&circuit)]), "pruned vs full --circuit");
    let zero = run_top(&model, &["--circuit", s(&circuit), "--zero-ablation"]);
    assert_ne!(zero, run_top(&model, &["--circuit", s(&circuit)]), "zeros and means ablate differently");
    // A kept head ablated in the pruned model (its own means) ≡ in the full model.
    let h = kept.iter().find(|c| c.contains('H')).unwrap();
    let both = format!("{},{h}", removed.join(","));
    let means = out.join("means.safetensors");
    same_top(&run_top(&pruned, &["--ablate", h]), &run_top(&model, &["--circuit", s(&circuit), "--ablate", h]), "kept head ablated");
    same_top(&run_top(&pruned, &["--ablate", h]), &run_top(&model, &["--ablate", &both, "--means", s(&means)]), "--means");

    fails(&["run", "--model", s(&pruned), "--prompt", "w5", "--ablate", h, "--means", s(&means), "--backend", "cpu"], "another model");
    fails(&["run", "--model", s(&pruned), "--prompt", "w5", "--circuit", s(&circuit), "--backend", "cpu"], "already pruned");
    let bad = d.join("bad.safetensors");
    std::fs::write(&bad, &std::fs::read(&means).unwrap()[..20]).unwrap();
    fails(&["run", "--model", s(&model), "--prompt", "w5", "--ablate", h, "--means", s(&bad), "--backend", "cpu"], "not a safetensors file");
}

fn http_get(port: u16, path: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP response");
    (String::from_utf8_lossy(&buf[..split]).into_owned(), buf[split + 4..].to_vec())
}

/// `carve serve`: the app at /, the run under /run/, MIME types, no way out of either folder.
fn serve_gives_the_app_and_the_run(d: &Path, run: &Path) {
    let app = d.join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("index.html"), "<!doctype html><title>carve</title>").unwrap();
    std::fs::write(app.join("carve_web_bg.wasm"), b"\0asm").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_carve"))
        .args(["serve", s(run), "--port", &port.to_string(), "--app", s(&app)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let printed: Vec<String> = (0..3).map(|_| lines.next().unwrap().unwrap()).collect();
    let link = printed[2].rsplit(' ').next().unwrap();
    let st: Value = serde_json::from_str(&ok(&["link", "--decode", link])).unwrap();
    assert_eq!(st["model_url"], "/run/model/");

    let (h, body) = http_get(port, "/");
    assert!(h.starts_with("HTTP/1.1 200") && h.contains("text/html"), "{h}");
    assert!(body.starts_with(b"<!doctype html>"));
    assert!(http_get(port, "/carve_web_bg.wasm").0.contains("application/wasm"));
    let (h, body) = http_get(port, "/run/circuit.json");
    assert!(h.contains("application/json"), "{h}");
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["format"], "carve-circuit");
    assert!(http_get(port, "/run/model/model.safetensors").0.starts_with("HTTP/1.1 200"));
    for bad in ["/run/../tiny/config.json", "/run/%2e%2e/tiny/config.json", "/..%2f..%2fetc/passwd", "/run//etc/passwd"] {
        let (h, _) = http_get(port, bad);
        assert!(h.starts_with("HTTP/1.1 400") || h.starts_with("HTTP/1.1 404"), "{bad}: {h}");
    }
    assert!(http_get(port, "/run/nothing.json").0.starts_with("HTTP/1.1 404"));
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn resume_after_an_interruption_gives_the_same_circuit() {
    let d = scratch("resume");
    let (model, task) = (tiny_model(&d), task_file(&d));
    let (whole, cut) = (d.join("whole"), d.join("cut"));
    ok(&extract_args(s(&model), s(&task), s(&whole), &[]));
    let o = carve(&extract_args(s(&model), s(&task), s(&cut), &["--stop-after", "2"]));
    assert_eq!(o.status.code(), Some(130), "a stopped run exits with 130: {}", String::from_utf8_lossy(&o.stderr));
    assert!(cut.join("state.json").is_file() && !cut.join("circuit.json").exists());
    // The interrupted directory is not overwritten by accident.
    fails(&extract_args(s(&model), s(&task), s(&cut), &[]), "already holds a run");
    let mut args = extract_args(s(&model), s(&task), s(&cut), &[]);
    args.extend(["--resume", s(&cut)]);
    ok(&args);
    let (a, b) = (read_json(&whole.join("circuit.json")), read_json(&cut.join("circuit.json")));
    assert_eq!(a["kept"], b["kept"]);
    assert_eq!(a["removed"], b["removed"]);
    assert_eq!(a["method"]["discovery_kl"], b["method"]["discovery_kl"]);
}

#[test]
fn bad_input_is_refused_with_a_message() {
    let d = scratch("bad");
    let (model, task) = (tiny_model(&d), task_file(&d));
    let out = d.join("out");
    let (m, t, o) = (s(&model), s(&task), s(&out));
    for alpha in ["0", "-1", "NaN", "inf"] {
        let mut a = extract_args(m, t, o, &[]);
        let i = a.iter().position(|x| *x == "--alpha").unwrap();
        a.drain(i..i + 2);
        let flag = format!("--alpha={alpha}");
        a.push(&flag);
        fails(&a, "--alpha must be a finite number above 0");
    }
    fails(&extract_args(m, t, o, &["--discovery", "0"]), "discovery");
    // An answer that is two tokens, named by its line.
    let two = d.join("two.jsonl");
    let mut text = std::fs::read_to_string(&task).unwrap();
    text += &format!("{}\n", json!({"prompt": "w3 w4 w5", "answer": " w6 w7", "wrong": " w8", "corrupted": "w9 w4 w5"}));
    std::fs::write(&two, text).unwrap();
    fails(&extract_args(m, s(&two), o, &[]), "line 49");
    fails(&extract_args(m, s(&two), o, &[]), "must be one token");
    fails(&["extract", "--model", m, "--task", t, "--alpha", "0.1"], "--out");
    fails(&extract_args(m, t, o, &["--resume", o]), "no state.json");

    // A finished run: refused again without --force, replaced with it.
    ok(&extract_args(m, t, o, &[]));
    fails(&extract_args(m, t, o, &[]), "already holds a run");
    ok(&extract_args(m, t, o, &["--force"]));

    // A circuit of another model (one weight changed: another sha256) is refused by eval.
    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(model.join(f), other.join(f)).unwrap();
    }
    let mut w = std::fs::read(model.join("model.safetensors")).unwrap();
    let last = w.len() - 1;
    w[last] ^= 1;
    std::fs::write(other.join("model.safetensors"), w).unwrap();
    fails(&["eval", "--model", s(&other), "--circuit", s(&out.join("circuit.json")), "--backend", "cpu"], "extracted from another model");
    // A broken circuit file.
    let broken = d.join("broken.json");
    std::fs::write(&broken, "{\"format\": \"carve-circuit\", \"version\": 1, \"kept\": [\"L99H0\"]}").unwrap();
    fails(&["eval", "--model", m, "--circuit", s(&broken), "--backend", "cpu"], "circuit file");
}

#[test]
fn bench_extract_reports_the_same_decisions() {
    let d = scratch("bench");
    let (model, task) = (tiny_model(&d), task_file(&d));
    let out = ok(&[
        "bench", "extract", "--model", s(&model), "--task", s(&task), "--patching", "20", "--discovery", "12", "--test", "16",
        "--alpha", "0.15", "--mlps", "--all-batchings", "--backend", "cpu",
    ]);
    assert!(out.contains("same decisions as the reference: yes"), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("fast") || l.starts_with("reference")).count(), 4, "{out}");
    // The CPU sweeps one candidate per forward (its forwards cost in proportion to their rows).
    assert!(out.contains("the batching `extract` uses on this backend: single"), "{out}");
}

/// `--save-sweep` writes what `bench/torch_ablate.py` runs: the options, the prompts' token ids
/// and the reference's decisions in sweep order (layers from the last, heads then the MLP). It
/// replaces a sweep file it wrote, and refuses, before the sweep runs, a file it did not write and
/// a folder that is not there.
#[test]
fn bench_extract_saves_the_sweep_for_the_pytorch_loop() {
    let d = scratch("sweep");
    let (model, task) = (tiny_model(&d), task_file(&d));
    let sweep = d.join("sweep.json");
    let args = |path: &Path| -> Vec<String> {
        ["bench", "extract", "--model", s(&model), "--task", s(&task), "--patching", "20", "--discovery", "12", "--test", "16", "--alpha", "0.15", "--mlps", "--backend", "cpu", "--save-sweep", s(path)]
            .map(String::from)
            .to_vec()
    };
    let run = |path: &Path| ok(&args(path).iter().map(String::as_str).collect::<Vec<_>>());
    let out = run(&sweep);
    assert!(out.contains("sweep written to"), "{out}");
    let v = read_json(&sweep);
    assert_eq!(v["format"], "carve-ablate-sweep");
    assert_eq!(v["version"], 1);
    assert_eq!(v["options"]["alpha"], 0.15);
    assert_eq!(v["options"]["ablation"], "mean");
    assert_eq!(v["options"]["mlps"], true);
    let ids = |k: &str| v[k].as_array().unwrap().iter().map(|p| p.as_array().unwrap().len()).collect::<Vec<_>>();
    assert_eq!(ids("discovery").len(), 12);
    assert_eq!(ids("patching").len(), 20);
    assert!(ids("discovery").iter().chain(&ids("patching")).all(|&n| n > 0));
    // Every discovery prompt's corrupted version, of its length (the task file has them).
    assert_eq!(ids("corrupted"), ids("discovery"));
    let cfg = read_json(&model.join("config.json"));
    let (layers, heads) = (cfg["num_hidden_layers"].as_u64().unwrap() as usize, cfg["num_attention_heads"].as_u64().unwrap() as usize);
    let order: Vec<String> = (0..layers).rev().flat_map(|l| (0..heads).map(move |h| format!("L{l}H{h}")).chain([format!("L{l}MLP")])).collect();
    let decisions = v["decisions"].as_array().unwrap();
    let names: Vec<&str> = decisions.iter().map(|d| d["component"].as_str().unwrap()).collect();
    assert_eq!(names, order);
    let removed = decisions.iter().filter(|d| d["accepted"] == true).count();
    assert!(out.lines().any(|l| l.starts_with("reference") && l.split_whitespace().nth(4) == Some(&removed.to_string())), "{removed} removed:
{out}");
    assert!(decisions.iter().all(|d| d["kl"].as_f64().is_some_and(|k| k.is_finite() && k >= -1e-9)));
    // Its own file is replaced, with the same sweep.
    run(&sweep);
    assert_eq!(read_json(&sweep)["decisions"], v["decisions"]);
    // Not its file, not a folder: refused before the sweep, the file left as it was.
    let other = d.join("notes.json");
    std::fs::write(&other, "{\"mine\": true}").unwrap();
    let refused = |path: &Path, needle: &str| fails(&args(path).iter().map(String::as_str).collect::<Vec<_>>(), needle);
    refused(&other, "is not a sweep carve wrote");
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "{\"mine\": true}");
    refused(&d.join("missing/sweep.json"), "does not exist");
}

/// On a GPU (llvmpipe here) `bench matmul` puts both tiled GEMM kernels side by side, each timed
/// on the device, and checks that they agree.
#[test]
fn bench_matmul_compares_the_gemm_kernels() {
    let out = ok(&["bench", "matmul", "--m", "300", "--k", "70", "--n", "260", "--iters", "1", "--backend", "gpu"]);
    let row = |tile: &str| out.lines().find(|l| l.starts_with(&format!("| {tile} |"))).unwrap_or_else(|| panic!("no {tile} row:\n{out}"));
    assert!(row("64×64").contains("| matmul ×1 |"), "{out}");
    assert!(row("128×128").contains("| matmul_128 ×1 |"), "{out}");
    for tile in ["64×64", "128×128", "chosen by size"] {
        let ms: f64 = row(tile).split('|').nth(3).unwrap().trim().parse().unwrap();
        assert!(ms > 0.0, "{tile}: no device time:\n{out}");
    }
    assert!(out.contains("largest difference between the two kernels' outputs"), "{out}");
    // On the CPU: w as a tensor and as a weight (read from its transpose), the threads on tiles,
    // on gemm's own threads and one thread, and how far apart the products are.
    let cpu = ok(&["bench", "matmul", "--m", "300", "--k", "70", "--n", "260", "--iters", "1", "--backend", "cpu"]);
    for w in ["uploaded as a tensor, the threads on tiles", "uploaded as a weight (its transpose kept), the threads on tiles",
        "uploaded as a tensor, on gemm's own threads", "uploaded as a weight, on gemm's own threads", "uploaded as a weight, one thread"] {
        let row = cpu.lines().find(|l| l.starts_with(&format!("| {w} |"))).unwrap_or_else(|| panic!("no {w} row:\n{cpu}"));
        let gflops: f64 = row.split('|').nth(3).unwrap().trim().parse().unwrap();
        assert!(gflops > 0.0, "{row}");
    }
    let diff: f64 = cpu.split("largest difference between the products: ").nth(1).unwrap().trim().parse().unwrap();
    assert!(diff <= 1e-5, "the products differ by {diff}:\n{cpu}");
    // Mixed precision: on an adapter without cooperative matrices the plain kernels, said so.
    let mixed = ok(&["bench", "matmul", "--m", "300", "--k", "70", "--n", "260", "--iters", "1", "--precision", "mixed", "--backend", "gpu"]);
    assert!(mixed.contains("mixed precision (f16 matmul inputs, f32 sums), plain kernels (the adapter has no"), "{mixed}");
    assert!(mixed.contains("| chosen by size |"), "{mixed}");
    let cpu = ok(&["bench", "matmul", "--m", "300", "--k", "70", "--n", "260", "--iters", "1", "--precision", "mixed-bf16", "--backend", "cpu"]);
    assert!(cpu.contains("mixed precision (bf16 matmul inputs, f32 sums)"), "{cpu}");
}

#[test]
fn bench_attention_compares_the_fused_kernel_with_the_two_gemms() {
    let out = ok(&["bench", "attention", "--batch", "3", "--seq", "70", "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--iters", "1", "--backend", "gpu"]);
    let row = |p: &str| out.lines().find(|l| l.starts_with(&format!("| {p} |"))).unwrap_or_else(|| panic!("no {p} row:\n{out}"));
    assert!(row("fused (one pass)").contains("| attention_fused ×1 |"), "{out}");
    assert!(row("scores, softmax, apply").contains("causal_softmax ×1"), "{out}");
    for p in ["fused (one pass)", "scores, softmax, apply"] {
        let ms: f64 = row(p).split('|').nth(3).unwrap().trim().parse().unwrap();
        assert!(ms > 0.0, "{p}: no device time:\n{out}");
    }
    assert!(out.contains("largest difference between the two paths' outputs"), "{out}");
    fails(&["bench", "attention", "--heads", "4", "--kv-heads", "3", "--backend", "gpu"], "a multiple of --kv-heads");
    fails(&["bench", "attention", "--backend", "cpu"], "needs a GPU");
}
