//! `--backend cpu|gpu|auto`: auto takes a real GPU adapter and falls back to the CPU backend when
//! the only adapters are software renderers (llvmpipe, SwiftShader, WARP), which run our shaders
//! ~50× slower than the CPU backend runs its GEMMs.

use anyhow::{Context, Result};
use carve_core::backend::cpu::CpuBackend;
use carve_core::backend::wgpu::{is_software, list_adapters, WgpuBackend, WgpuOptions};
use carve_core::backend::Backend;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    Auto,
    Cpu,
    Gpu,
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

pub fn dispatch<J: Job>(choice: BackendChoice, job: J) -> Result<J::Out> {
    let choice = match choice {
        BackendChoice::Auto => {
            let (c, why) = auto_choice();
            eprintln!("backend auto → {why}");
            c
        }
        c => c,
    };
    match choice {
        BackendChoice::Gpu => {
            let opts = WgpuOptions { prefer_hardware: true, ..WgpuOptions::default() };
            let be = pollster::block_on(WgpuBackend::new(opts)).context("starting the wgpu backend")?;
            eprintln!("backend: {}", be.describe());
            job.run(&be)
        }
        _ => job.run(&CpuBackend::new()),
    }
}
