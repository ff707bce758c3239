//! What the op tests share: fresh seeds that can be replayed, a wgpu device with a clear message
//! when there is none, random tensors, and the tolerant comparison every op check uses.

use carve_core::backend::wgpu::{list_adapters, WgpuBackend, WgpuOptions};
use carve_core::backend::Backend;
use carve_core::HostTensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One device per test binary for the op tests (pipelines compile once on software Vulkan).
pub fn gpu() -> &'static WgpuBackend {
    static G: std::sync::OnceLock<WgpuBackend> = std::sync::OnceLock::new();
    G.get_or_init(|| {
        let b = new_wgpu(WgpuOptions::default());
        println!("wgpu backend: {}", b.describe());
        b
    })
}

/// The same with every tiled GEMM on the 128×128 kernel (the tests' sizes choose 64×64).
pub fn gpu_128() -> &'static WgpuBackend {
    static G: std::sync::OnceLock<WgpuBackend> = std::sync::OnceLock::new();
    G.get_or_init(|| new_wgpu(WgpuOptions { gemm_tile: Some(128), ..WgpuOptions::default() }))
}

/// `on_backends!(t_a, t_b)`: a test per check `fn t_a<B: Backend>(b: &B, r: &mut StdRng)` on
/// each backend: `wgpu_backend::t_a`, `wgpu_gemm_128::t_a` (every GEMM on the 128×128 kernel)
/// and `cpu_backend::t_a`, outputs poisoned, each with its own replayable seed.
#[macro_export]
macro_rules! on_backends {
    ($($name:ident),* $(,)?) => {
        mod wgpu_backend { use super::*; $(
            #[test] fn $name() {
                let b = $crate::op_check::gpu();
                b.set_poison(true);
                let t0 = std::time::Instant::now();
                super::$name(b, &mut $crate::op_check::rng(concat!("wgpu ", stringify!($name))));
                println!("wgpu {}: {:?}", stringify!($name), t0.elapsed());
            }
        )* }
        mod wgpu_gemm_128 { use super::*; $(
            #[test] fn $name() {
                let b = $crate::op_check::gpu_128();
                b.set_poison(true);
                super::$name(b, &mut $crate::op_check::rng(concat!("wgpu 128 ", stringify!($name))));
            }
        )* }
        mod cpu_backend { use super::*; $(
            #[test] fn $name() {
                let b = carve_core::backend::cpu::CpuBackend::new();
                b.set_poison(true);
                let t0 = std::time::Instant::now();
                super::$name(&b, &mut $crate::op_check::rng(concat!("cpu ", stringify!($name))));
                println!("cpu {}: {:?}", stringify!($name), t0.elapsed());
            }
        )* }
    };
}

pub fn rng(test: &str) -> StdRng {
    let seed = std::env::var("CARVE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("{test}: seed {seed} (CARVE_SEED={seed} to replay)");
    StdRng::seed_from_u64(seed)
}

pub fn new_wgpu(opts: WgpuOptions) -> WgpuBackend {
    match pollster::block_on(WgpuBackend::new(opts)) {
        Ok(b) => b,
        Err(e) => panic!(
            "no wgpu device: {e}\nadapters seen: {:?}\nThe wgpu tests need an adapter; on Linux CI install \
             mesa-vulkan-drivers (llvmpipe) and libvulkan1, and try WGPU_BACKEND=vulkan.",
            list_adapters().iter().map(|a| format!("{} ({:?})", a.name, a.backend)).collect::<Vec<_>>()
        ),
    }
}

pub fn rand_t(r: &mut StdRng, shape: &[usize], scale: f32) -> HostTensor {
    let n = shape.iter().product();
    HostTensor::new(shape.to_vec(), (0..n).map(|_| r.random_range(-scale..scale)).collect())
}

/// An f64 reference as the f32 tensor an op takes.
pub fn host(shape: &[usize], v: &[f64]) -> HostTensor {
    HostTensor::new(shape.to_vec(), v.iter().map(|&x| x as f32).collect())
}

pub fn up<B: Backend>(b: &B, t: &HostTensor) -> B::Tensor {
    b.upload(t).unwrap()
}

pub fn get<B: Backend>(b: &B, t: &B::Tensor) -> HostTensor {
    pollster::block_on(b.read(t)).unwrap()
}

pub fn d(t: &HostTensor) -> Vec<f64> {
    t.data.iter().map(|&v| v as f64).collect()
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Fails on a shape mismatch, any NaN, or max |got − want| > tol · max(1, max|want|).
pub fn close(what: &str, got: &HostTensor, shape: &[usize], want: &[f64], tol: f64) {
    assert_eq!(got.shape, shape, "{what}: shape");
    assert_eq!(got.data.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (&g, &w)) in got.data.iter().zip(want).enumerate() {
        let e = (g as f64 - w).abs();
        if e.is_nan() || e > worst {
            worst = if e.is_nan() { f64::INFINITY } else { e };
            at = i;
        }
    }
    assert!(
        worst <= tol * scale,
        "{what}: max err {worst:e} at {at} (got {}, want {}) > {tol:e} · {scale}",
        got.data[at],
        want[at]
    );
}
