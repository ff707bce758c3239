//! `--backend cpu|gpu|auto`: auto takes a real GPU adapter and falls back to the CPU backend when
//! the only adapters are software renderers (llvmpipe, SwiftShader, WARP), which run our shaders
//! ~50× slower than the CPU backend runs its GEMMs.

use anyhow::{Context, Result};
use carve_core::backend::cpu::CpuBackend;
use carve_core::backend::wgpu::{is_software, list_adapters, WgpuBackend, WgpuOptions};
use carve_core::backend::{Backend, Precision};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    Auto,
    Cpu,
    Gpu,
}

/// `--precision`: what matrix products round their inputs to (see `Precision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionChoice {
    /// f32 throughout.
    F32,
    /// f16 inputs to every matrix product, f32 sums (tensor-core numerics).
    Mixed,
    /// bf16 inputs to every matrix product, f32 sums.
    MixedBf16,
}

impl From<PrecisionChoice> for Precision {
    fn from(p: PrecisionChoice) -> Precision {
        match p {
            PrecisionChoice::F32 => Precision::F32,
            PrecisionChoice::Mixed => Precision::Mixed,
            PrecisionChoice::MixedBf16 => Precision::MixedBf16,
        }
    }
}

/// Work that runs on whichever backend was picked.
pub trait Job {
    type Out;
    fn run<B: Backend>(self, be: &B) -> Result<Self::Out>;
}

/// What `auto` would pick, with the reason, without creating a device.
pub fn auto_choice() -> (BackendChoice, String) {
    let adapters = list_adapters();
    match adapters.iter().find(|a| !is_software(a)) {
        Some(a) => (BackendChoice::Gpu, format!("gpu: {} ({:?})", a.name, a.backend)),
        None => {
            let sw: Vec<_> = adapters.iter().map(|a| a.name.clone()).collect();
            let why = if sw.is_empty() {
                "no GPU adapter found".to_string()
            } else {
                format!("only software adapters ({})", sw.join(", "))
            };
            (BackendChoice::Cpu, format!("cpu ({} threads): {why}", rayon_threads()))
        }
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `auto` resolved (and said on stderr); `cpu` and `gpu` as they are.
pub fn resolve(choice: BackendChoice) -> BackendChoice {
    match choice {
        BackendChoice::Auto => {
            let (c, why) = auto_choice();
            eprintln!("backend auto → {why}");
            c
        }
        c => c,
    }
}

pub fn dispatch<J: Job>(choice: BackendChoice, job: J) -> Result<J::Out> {
    dispatch_at(choice, Precision::F32, job)
}

/// `dispatch` with the matrix products at `precision`.
pub fn dispatch_at<J: Job>(choice: BackendChoice, precision: Precision, job: J) -> Result<J::Out> {
    match resolve(choice) {
        BackendChoice::Gpu => {
            let opts = WgpuOptions { prefer_hardware: true, precision, ..WgpuOptions::default() };
            let be = pollster::block_on(WgpuBackend::new(opts)).context("starting the wgpu backend")?;
            eprintln!("backend: {}", be.describe());
            job.run(&be)
        }
        _ => job.run(&CpuBackend::with_precision(precision)),
    }
}

/// Vulkan drivers look for a Wayland display even for compute, and libwayland prints
/// "XDG_RUNTIME_DIR is invalid or not set" (twice per probe) when that variable is missing. carve
/// draws nothing: when it is unset or not a directory, it is pointed at a private directory
/// (`$TMPDIR/carve-runtime-$UID`, mode 0700, created if absent) before any adapter is looked at.
pub fn quiet_display_probe() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_dir()) {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else { return };
        let dir = std::env::temp_dir().join(format!("carve-runtime-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        // Only a directory of ours that no one else can enter.
        let ours = std::fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0);
        if ours {
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
}
