//! Runs one input through a fuzz target's harness, panics and all: a crash file, or the hex
//! replay string that `tests/tests/fuzz_short.rs` prints for a failing case.
//!
//! `cargo run -p carve-tests --example fuzz_replay -- TARGET FILE|HEX`

use carve_tests::fuzz_harness::{from_hex, target, TARGETS};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    let [name, input] = args.as_slice() else {
        eprintln!("usage: fuzz_replay TARGET FILE|HEX (targets: {})", names.join(", "));
        std::process::exit(2);
    };
    let Some(f) = target(name) else {
        eprintln!("unknown target `{name}` (targets: {})", names.join(", "));
        std::process::exit(2);
    };
    let bytes = match std::fs::read(input) {
        Ok(b) => b,
        Err(_) => from_hex(input).unwrap_or_else(|| {
            eprintln!("{input} is neither a file nor a hex string");
            std::process::exit(2);
        }),
    };
    f(&bytes);
    println!("{name}: {} bytes ran without a panic", bytes.len());
}
