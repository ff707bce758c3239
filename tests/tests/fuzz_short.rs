//! A short run of every fuzz target (see fuzz/README.md): each file of its seed corpus, then
//! seeded random mutations of them, through the same harness as the coverage-guided binaries.
//! No input may panic. A failure prints each crashing input as a hex replay string for
//! `cargo run -p carve-tests --example fuzz_replay -- TARGET HEX`.
//!
//! `CARVE_FUZZ_CASES` sets the mutations per target (default 4000), `CARVE_FUZZ_SEED` the seed;
//! `CARVE_FUZZ_TRACE=1` prints every case before it runs (an allocation failure aborts the whole
//! process, and the last case printed is the culprit).

use carve_tests::fuzz_harness::{mutate, target, to_hex, Rng};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir(sub: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(sub).join(name)
}

/// The files of a folder, in name order (none when it does not exist).
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<(String, Vec<u8>)> = rd
        .map(|e| e.expect("a readable folder entry").path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))))
        .collect();
    v.sort();
    v
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{key}={v} is not a number")))
}

/// The panic message of `f(input)`, if it panics.
fn panics(f: fn(&[u8]), input: &[u8]) -> Option<String> {
    let err = catch_unwind(AssertUnwindSafe(|| f(input))).err()?;
    let msg = err.downcast_ref::<String>().cloned().or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()));
    Some(msg.unwrap_or_else(|| "(a panic without a message)".into()))
}

/// Every corpus file of `name`, then `CARVE_FUZZ_CASES` mutations of them; fails listing every
/// input that panicked.
fn short_run(name: &str) {
    let f = target(name).expect("a known target");
    let corpus = files(&fuzz_dir("corpus", name));
    assert!(!corpus.is_empty(), "fuzz/corpus/{name} has no seed files");
    let trace = std::env::var_os("CARVE_FUZZ_TRACE").is_some();
    let mut failures = Vec::new();
    for (path, bytes) in &corpus {
        if trace {
            eprintln!("{name}: {path}");
        }
        if let Some(msg) = panics(f, bytes) {
            failures.push(format!("{path}: {msg}"));
        }
    }
    let seed = env_u64("CARVE_FUZZ_SEED").unwrap_or_else(|| name.bytes().fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)));
    let cases = env_u64("CARVE_FUZZ_CASES").unwrap_or(4000);
    for case in 0..cases {
        let mut rng = Rng::new(seed ^ case.wrapping_mul(0x1000_0001));
        let a = &corpus[rng.below(corpus.len())].1;
        let b = &corpus[rng.below(corpus.len())].1;
        let input = mutate(a, b, &mut rng);
        if trace {
            eprintln!("{name}: seed {seed} case {case}: {}", to_hex(&input));
        }
        if let Some(msg) = panics(f, &input) {
            failures.push(format!("seed {seed} case {case}: {msg}\n  replay: {}", to_hex(&input)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs of `{name}` panicked (replay one with `cargo run -p carve-tests --example fuzz_replay -- {name} HEX`):\n{}",
        failures.len(),
        corpus.len() as u64 + cases,
        failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn safetensors_config() {
    short_run("safetensors_config");
}

#[test]
fn gguf() {
    short_run("gguf");
}

#[test]
fn task_jsonl() {
    short_run("task_jsonl");
}

#[test]
fn circuit_json() {
    short_run("circuit_json");
}

#[test]
fn means() {
    short_run("means");
}

#[test]
fn state_json() {
    short_run("state_json");
}

#[test]
fn link() {
    short_run("link");
}

/// The inputs that crashed a reader once (`fuzz/crashes/TARGET/`): none may panic again.
#[test]
fn found_crashes_no_longer_crash() {
    let mut failures = Vec::new();
    for (name, f) in carve_tests::fuzz_harness::TARGETS {
        for (path, bytes) in files(&fuzz_dir("crashes", name)) {
            if let Some(msg) = panics(f, &bytes) {
                failures.push(format!("{path}: {msg}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} found crashes still panic:\n{}", failures.len(), failures.join("\n"));
}

/// Every seed reaches the end of its reader, so that mutations start deep inside each format: the
/// models load (GGUF with its tokenizer), the run files load for tiny-llama, and the sweep states
/// saved on tiny-llama resume their sweep.
#[test]
fn seeds_are_valid_inputs() {
    use carve_core::circuit::{means, CircuitFile, LinkState};
    use carve_core::extract::{ablate, AblateState, RunOptions};
    use carve_core::model::load::{load_gguf_bytes, load_hf_bytes};
    use carve_tests::fuzz_harness::{signed_link, split2, TinyRun};

    let seeds = |name: &str| files(&fuzz_dir("corpus", name));
    for (path, bytes) in seeds("safetensors_config") {
        let (config, weights) = split2(&bytes);
        load_hf_bytes(config, &[weights], None).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    for (path, bytes) in seeds("gguf") {
        let m = load_gguf_bytes(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(m.tokenizer.is_some(), "{path}: no tokenizer");
    }
    for (path, bytes) in seeds("circuit_json") {
        CircuitFile::from_json(std::str::from_utf8(&bytes).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    for (path, bytes) in seeds("link") {
        // A link as carve prints it, or the JSON payload of one (`*.payload.json`).
        let link = if path.ends_with(".payload.json") { signed_link(&bytes) } else { String::from_utf8(bytes).unwrap() };
        LinkState::decode(&link).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    TinyRun::with(|t| {
        for (path, bytes) in seeds("means") {
            let c = &t.model.config;
            means::from_bytes(&bytes, &t.shape, c.head_dim, c.d_model).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        for (path, bytes) in seeds("state_json") {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let st = AblateState::from_json(&v["ablate"].to_string()).unwrap_or_else(|e| panic!("{path}: {e}"));
            if path.contains("sweep-") {
                let opts = st.options.clone();
                let run = pollster::block_on(ablate(&t.model, &t.be, &t.data, &opts, &RunOptions::default(), Some(st), &mut ()));
                assert!(run.is_ok_and(|r| r.finished), "{path} does not resume its sweep");
            }
        }
    });
}
