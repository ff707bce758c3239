//! What the `carve` program tests share: the tiny Llama with a word-level tokenizer, its task
//! file, scratch directories and running the program.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// A fresh folder for one test, removed when the test passes and kept when it panics (to look
/// at). Derefs to its path.
pub struct Scratch(Option<tempfile::TempDir>);

pub fn scratch(name: &str) -> Scratch {
    let d = tempfile::Builder::new().prefix(&format!("carve-cli-{name}-")).tempdir().unwrap();
    Scratch(Some(d))
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.as_ref().expect("held until drop").path()
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            if std::thread::panicking() {
                let _ = d.keep();
            }
        }
    }
}

/// tiny-llama's weights with the word-level tokenizer of `fixtures/word-tokenizer` (`w3` … `w511`).
pub fn tiny_model(dir: &Path) -> PathBuf {
    let m = dir.join("tiny");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("tiny-llama").join(f), m.join(f)).unwrap();
    }
    std::fs::copy(fixtures().join("word-tokenizer/tokenizer.json"), m.join("tokenizer.json")).unwrap();
    m
}

/// 48 distinct prompts of 6 words, with answer, wrong answer and a same-length corrupted prompt.
pub fn task_file(dir: &Path) -> PathBuf {
    let p = dir.join("task.jsonl");
    std::fs::copy(fixtures().join("word-tokenizer/words.jsonl"), &p).unwrap();
    p
}

pub fn carve(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_carve")).args(args).output().expect("carve runs")
}

pub fn ok(args: &[&str]) -> String {
    let o = carve(args);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "carve {args:?} failed:\n{err}\n{out}");
    out.into_owned()
}

pub fn fails(args: &[&str], needle: &str) {
    let o = carve(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "carve {args:?} should have failed");
    assert!(err.contains(needle), "carve {args:?}: expected `{needle}` in the error, got:\n{err}");
    assert!(!err.contains("panicked"), "carve {args:?} panicked:\n{err}");
}

pub fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `extract` with the splits every test here uses: 20 patching, 12 discovery, 16 test prompts.
pub fn extract_args<'a>(model: &'a str, task: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "extract", "--model", model, "--task", task, "--patching", "20", "--discovery", "12", "--test", "16", "--alpha", "0.15",
        "--mlps", "--out", out, "--backend", "cpu", "--latency-batch", "4",
    ];
    v.extend_from_slice(extra);
    v
}

/// `args` with `--alpha` set to `alpha`.
pub fn with_alpha<'a>(mut args: Vec<&'a str>, alpha: &'a str) -> Vec<&'a str> {
    let i = args.iter().position(|a| *a == "--alpha").unwrap();
    args[i + 1] = alpha;
    args
}

/// `args` without the flag `flag`.
pub fn without<'a>(mut args: Vec<&'a str>, flag: &str) -> Vec<&'a str> {
    args.retain(|a| *a != flag);
    args
}

pub fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1e-6)
}

pub const PROMPT: &str = "w5 w17 w40 w41 w42 w99";

/// The top tokens of `carve run` on [`PROMPT`] with `extra` args, as (id, prob).
pub fn run_top(model: &Path, extra: &[&str]) -> Vec<(u64, f64)> {
    let mut args = vec!["run", "--model", s(model), "--prompt", PROMPT, "--json", "--backend", "cpu"];
    args.extend_from_slice(extra);
    let v: Value = serde_json::from_str(&ok(&args)).unwrap();
    v["top"].as_array().unwrap().iter().map(|t| (t["id"].as_u64().unwrap(), t["prob"].as_f64().unwrap())).collect()
}

pub fn same_top(a: &[(u64, f64)], b: &[(u64, f64)], what: &str) {
    assert_eq!(a.iter().map(|x| x.0).collect::<Vec<_>>(), b.iter().map(|x| x.0).collect::<Vec<_>>(), "{what}: ids");
    for (x, y) in a.iter().zip(b) {
        assert!(close(x.1, y.1, 1e-4), "{what}: p {} vs {}", x.1, y.1);
    }
}
