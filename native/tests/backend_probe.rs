//! What picking a backend prints.

mod common;

use common::*;

/// Probing the GPU adapters prints nothing of the window system's (no XDG_RUNTIME_DIR warnings).
#[test]
fn probing_adapters_prints_no_window_system_warnings() {
    let model = fixtures().join("tiny-llama");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_carve"))
        .args(["info", "--model", s(&model)])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("XDG_RUNTIME_DIR"), "{err}");
}
