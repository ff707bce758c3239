//! Writes the generated part of the fuzz seed corpora into `fuzz/corpus/`: the tiny models (HF
//! and GGUF) and sweep states saved on tiny-llama. The run files (circuit.json, means, links,
//! task files) beside them were written by `carve` on the tiny fixtures and are kept as they are.
//!
//! `cargo run -p carve-tests --example fuzz_seeds`

use carve_tests::fuzz_harness::{join2, tiny, TARGETS};
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    println!("{} ({} bytes)", p.display(), bytes.len());
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    assert!(TARGETS.iter().any(|(n, _)| *n == "state_json"));
    let (c, w) = tiny::gpt2_hf();
    write(&root.join("safetensors_config"), "gpt2", &join2(&c, &w));
    let (c, w) = tiny::llama_hf();
    write(&root.join("safetensors_config"), "llama", &join2(&c, &w));
    write(&root.join("gguf"), "gpt2.gguf", &tiny::gpt2_gguf());
    write(&root.join("gguf"), "llama.gguf", &tiny::llama_gguf());
    for (i, s) in carve_tests::fuzz_harness::state_seeds().iter().enumerate() {
        write(&root.join("state_json"), &format!("sweep-{i}.json"), s);
    }
}
