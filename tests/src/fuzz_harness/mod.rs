//! One function per fuzz target: each takes arbitrary bytes, feeds them to one of carve's readers
//! the way the program does, and returns normally whatever the reader answers; only a panic (or an
//! abort) is a finding. The coverage-guided binaries in `fuzz/` and the short run in
//! `tests/tests/fuzz_short.rs` both call these, so a crash found by one replays in the other.

mod model_files;
mod mutate;
mod run_files;
pub use model_files::{gguf, safetensors_config};
pub use run_files::{circuit_json, link, means, signed_link, state_json, state_seeds, TinyRun};
pub use task_file::task_jsonl;
mod task_file;
pub mod tiny;

pub use mutate::{mutate, Rng};

/// A target: its name (the folder of its corpus under `fuzz/corpus/`) and its harness.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order the short run takes them.
pub const TARGETS: [Target; 7] = [
    ("safetensors_config", safetensors_config),
    ("gguf", gguf),
    ("task_jsonl", task_jsonl),
    ("circuit_json", circuit_json),
    ("means", means),
    ("state_json", state_json),
    ("link", link),
];

/// The harness of the target called `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Two files in one input: the first (a JSON text, which never holds a NUL byte), a NUL byte, then
/// the second. Any input splits (without a NUL, all of it is the first file), and the fuzzer can
/// grow or shrink the first file without moving the cut.
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// The input that [`split2`] splits into `a` (no NUL byte in it) and `b`.
pub fn join2(a: &[u8], b: &[u8]) -> Vec<u8> {
    assert!(!a.contains(&0), "the first file holds no NUL byte");
    [a, &[0], b].concat()
}

/// Hex of an input, for a replay string.
pub fn to_hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a replay string written by [`to_hex`].
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}
