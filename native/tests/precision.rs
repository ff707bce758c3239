//! `--precision` as a user meets it: `carve bench precision` puts f32, mixed and mixed-bf16 side by
//! side; a run started at one precision says so in its state and report, resumes at it, and is
//! refused at another; a state file naming no known precision is refused.

mod common;
use common::*;

fn np_args<'a>(model: &'a str, task: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "extract", "--model", model, "--task", task, "--patching", "20", "--discovery", "12", "--test", "16", "--method",
        "node-prune", "--steps", "12", "--batch", "8", "--out", out, "--backend", "cpu", "--latency-batch", "4",
    ];
    v.extend_from_slice(extra);
    v
}

/// The row of `precision` in bench precision's table, as numbers.
fn row(out: &str, precision: &str) -> Vec<f64> {
    let line = out.lines().find(|l| l.split_whitespace().next() == Some(precision)).unwrap_or_else(|| panic!("no {precision} row:\n{out}"));
    line.split_whitespace().skip(1).map(|w| w.trim_end_matches('s').parse().unwrap()).collect()
}

#[test]
fn bench_precision_compares_against_f32() {
    let d = scratch("bench-precision");
    let (m, t) = (tiny_model(&d), task_file(&d));
    let out = ok(&["bench", "precision", "--model", s(&m), "--task", s(&t), "--patching", "20", "--discovery", "12", "--test", "16",
        "--backend", "cpu"]);
    // error, KL mean, KL max, same top, accuracy, metric, time
    let (f, h, b) = (row(&out, "f32"), row(&out, "mixed"), row(&out, "mixed-bf16"));
    assert_eq!(&f[..4], &[0.0, 0.0, 0.0, 1.0], "f32 against itself:\n{out}");
    assert!(h[0] > 0.0 && h[0] < 1e-2, "f16 inputs move the logits a little:\n{out}");
    assert!(b[0] > h[0], "bf16 (8 bits of mantissa) moves them more than f16 (11):\n{out}");
    fails(&["bench", "precision", "--model", s(&m), "--task", s(&t), "--batch", "0", "--backend", "cpu"], "--batch");
}

#[test]
fn a_run_keeps_its_precision() {
    let d = scratch("precision-run");
    let (m, t) = (tiny_model(&d), task_file(&d));
    let a = d.join("a");
    let o = carve(&np_args(s(&m), s(&t), s(&a), &["--precision", "mixed", "--stop-after", "4"]));
    assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read_json(&a.join("state.json"))["precision"], "mixed");
    fails(&np_args(s(&m), s(&t), s(&a), &["--resume", s(&a)]), "was trained at --precision mixed");
    fails(&np_args(s(&m), s(&t), s(&a), &["--resume", s(&a), "--precision", "mixed-bf16"]), "--precision mixed");
    ok(&np_args(s(&m), s(&t), s(&a), &["--resume", s(&a), "--precision", "mixed"]));
    let rep = read_json(&a.join("report.json"));
    assert!(rep["backend"].as_str().unwrap().contains("mixed precision (f16"), "{}", rep["backend"]);

    // An f32 run's state names no precision and resumes at f32 only.
    let b = d.join("b");
    let o = carve(&np_args(s(&m), s(&t), s(&b), &["--stop-after", "2"]));
    assert_eq!(o.status.code(), Some(130));
    assert!(read_json(&b.join("state.json")).get("precision").is_none());
    fails(&np_args(s(&m), s(&t), s(&b), &["--resume", s(&b), "--precision", "mixed"]), "was trained at --precision f32");

    // A state file with a precision carve does not know.
    let p = b.join("state.json");
    let mut st = read_json(&p);
    st["precision"] = "fp8".into();
    std::fs::write(&p, serde_json::to_string(&st).unwrap()).unwrap();
    fails(&np_args(s(&m), s(&t), s(&b), &["--resume", s(&b)]), "`precision` is \"fp8\"");
    fails(&np_args(s(&m), s(&t), s(&d.join("c")), &["--precision", "fp8"]), "fp8");
}
