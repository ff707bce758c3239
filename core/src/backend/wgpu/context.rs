//! Adapter and device selection, limits, and the device-health hooks (lost device, uncaptured
//! validation errors) that `read` turns into `Error::Backend` instead of wgpu's default panic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::Precision;
use crate::{Error, Result};

/// How `WgpuBackend::new` picks and configures its adapter.
#[derive(Clone, Debug)]
pub struct WgpuOptions {
    /// `true`: take the best hardware adapter (discrete > integrated > virtual > other) and fall
    /// back to a software one only when there is none. `false`: prefer a software adapter
    /// (llvmpipe, lavapipe, SwiftShader, WARP), e.g. to test shaders on a machine that has a GPU.
    /// The `WGPU_BACKEND` (backends to try) and `WGPU_ADAPTER_NAME` (substring of the adapter
    /// name) environment variables narrow the choice first. In the browser the user agent picks.
    pub prefer_hardware: bool,
    /// Test aid: a binding limit below the adapter's, to force weights to be split into chunks.
    pub max_binding_bytes: Option<usize>,
    /// Time every kernel on the device with timestamp queries (`carve bench ops`): each dispatch
    /// gets its own compute pass with a timestamp at its start and end, read back by
    /// `WgpuBackend::take_kernel_times`. An adapter without timestamp queries is an error.
    pub profile: bool,
    /// The tiled GEMM's output tile for every product: `Some(64)` or `Some(128)` (tests, and
    /// `carve bench matmul` putting the two side by side); `None` chooses per product by its size.
    pub gemm_tile: Option<usize>,
    /// The tiled GEMMs read their operands a vec4 at a time where a product is aligned for it
    /// (shaders/matmul_stage_vec4.wgsl); `false` keeps an f32 load per element everywhere
    /// (`carve bench matmul` puts the two side by side). The outputs are identical.
    pub vec4_loads: bool,
    /// What matrix products round their inputs to (`--precision`; see `Precision`).
    pub precision: Precision,
    /// At `Precision::Mixed`, run the tiled GEMMs on cooperative matrices (tensor cores) where the
    /// adapter has them and the kernel passes its check at start (see `coop.rs`); `gemm_tile`
    /// set takes the plain kernels instead.
    pub cooperative_matrices: bool,
    /// Test aid: run the cooperative-matrix GEMM's check even on an adapter without them (it
    /// must fail there, and mixed precision fall back to the plain kernels).
    #[doc(hidden)]
    pub check_cooperative_matrices_anyway: bool,
    /// Also submit the recorded work every this many dispatches, so the device starts on a step
    /// while the host is still recording it. 0 (the default): one submit per read, as a forward
    /// has always been. `carve bench forward` and `bench train` time both (`OVERLAP_DISPATCHES`).
    pub submit_every: usize,
    /// Run the matrix products on a padded batch's real rows only (`Backend::packs_rows`). Off by
    /// default: on wgpu every gather and scatter around a product is two more dispatches.
    pub pack_rows: bool,
}

impl Default for WgpuOptions {
    fn default() -> Self {
        WgpuOptions {
            prefer_hardware: true,
            max_binding_bytes: None,
            profile: false,
            gemm_tile: None,
            vec4_loads: true,
            precision: Precision::F32,
            cooperative_matrices: true,
            check_cooperative_matrices_anyway: false,
            submit_every: 0,
            pack_rows: false,
        }
    }
}

/// Software rasterisers and emulators: usable for testing shaders, far too slow for real work.
pub fn is_software(info: &wgpu::AdapterInfo) -> bool {
    if info.device_type == wgpu::DeviceType::Cpu {
        return true;
    }
    let name = info.name.to_lowercase();
    ["llvmpipe", "lavapipe", "swiftshader", "warp", "microsoft basic render"].iter().any(|s| name.contains(s))
}

fn instance() -> wgpu::Instance {
    // `with_env` applies WGPU_BACKEND (and the instance flags' env vars) on top of the defaults.
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env())
}

/// Every adapter the backends allowed by `WGPU_BACKEND` (default: all) can see.
#[cfg(not(target_arch = "wasm32"))]
pub fn list_adapters() -> Vec<wgpu::AdapterInfo> {
    let inst = instance();
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    pollster::block_on(inst.enumerate_adapters(backends)).iter().map(|a| a.get_info()).collect()
}

/// Lower is better.
#[cfg(not(target_arch = "wasm32"))]
fn rank(info: &wgpu::AdapterInfo, prefer_hardware: bool) -> u32 {
    let hw = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let soft = is_software(info);
    let pref = match (prefer_hardware, soft) {
        (true, false) | (false, true) => hw,
        _ => 10 + hw,
    };
    // At equal rank, GL last: its compute support is the narrowest (GLES 3.1 limits).
    pref * 2 + (info.backend == wgpu::Backend::Gl) as u32
}

#[cfg(not(target_arch = "wasm32"))]
async fn pick_adapter(inst: &wgpu::Instance, opts: &WgpuOptions) -> Result<wgpu::Adapter> {
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    let name_filter = std::env::var("WGPU_ADAPTER_NAME").ok().map(|s| s.to_lowercase());
    let all = inst.enumerate_adapters(backends).await;
    let seen: Vec<String> = all.iter().map(|a| describe_info(&a.get_info())).collect();
    let best = all
        .into_iter()
        .filter(|a| name_filter.as_ref().is_none_or(|f| a.get_info().name.to_lowercase().contains(f)))
        .min_by_key(|a| rank(&a.get_info(), opts.prefer_hardware));
    best.ok_or_else(|| {
        Error::Backend(format!(
            "no wgpu adapter found (backends {backends:?}, WGPU_ADAPTER_NAME {name_filter:?}; seen: {seen:?}); \
             on Linux install a Vulkan driver, e.g. mesa-vulkan-drivers for llvmpipe"
        ))
    })
}

#[cfg(target_arch = "wasm32")]
async fn pick_adapter(inst: &wgpu::Instance, opts: &WgpuOptions) -> Result<wgpu::Adapter> {
    let power_preference = if opts.prefer_hardware {
        wgpu::PowerPreference::HighPerformance
    } else {
        wgpu::PowerPreference::LowPower
    };
    let ro = wgpu::RequestAdapterOptions { power_preference, ..Default::default() };
    inst.request_adapter(&ro).await.map_err(|e| Error::Backend(format!("no WebGPU adapter: {e}")))
}

/// "vulkan: llvmpipe (LLVM 15.0.6, 256 bits)".
pub(crate) fn describe_info(info: &wgpu::AdapterInfo) -> String {
    format!("{}: {}", info.backend, info.name)
}

/// Everything tied to one logical device.
pub(crate) struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// min(max_storage_buffer_binding_size, max_buffer_size, the test override).
    pub max_binding: u64,
    /// Cooperative matrices: Ok when the device was created with them, else why not (None: not
    /// asked for).
    pub coop: Option<std::result::Result<(), String>>,
    pub lost: Arc<AtomicBool>,
    pub lost_reason: Arc<Mutex<Option<String>>>,
    /// The first validation / out-of-memory error wgpu reported since the last `read`.
    pub error: Arc<Mutex<Option<String>>>,
}

impl Context {
    pub async fn new(opts: &WgpuOptions) -> Result<Context> {
        let inst = instance();
        let adapter = pick_adapter(&inst, opts).await?;
        let info = adapter.get_info();
        // The adapter's own limits: the defaults cap storage bindings at 128 MiB, and browsers at
        // even less, whatever the hardware can do. No optional features (f16, subgroups), except
        // timestamp queries when profiling.
        let limits = adapter.limits();
        let mut required_features = wgpu::Features::empty();
        if opts.profile {
            if !adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
                return Err(Error::Backend(format!(
                    "{} has no timestamp queries (TIMESTAMP_QUERY), which timing each kernel on the device needs",
                    describe_info(&info)
                )));
            }
            required_features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        let wanted = super::coop::wanted(opts.precision, opts.cooperative_matrices && opts.gemm_tile.is_none());
        let unsupported = super::coop::unsupported(&adapter);
        let coop = match (wanted, &unsupported) {
            (false, _) => None,
            (true, None) => Some(Ok(())),
            (true, Some(_)) if opts.check_cooperative_matrices_anyway => Some(Ok(())),
            (true, Some(why)) => Some(Err(why.clone())),
        };
        let mut experimental_features = wgpu::ExperimentalFeatures::disabled();
        if wanted && unsupported.is_none() {
            required_features |= super::coop::FEATURES;
            // SAFETY: wgpu's experimental cooperative matrices may have bugs; the kernel that
            // uses them is checked against the plain kernel before any product runs on it, and
            // nothing else uses them.
            experimental_features = unsafe { wgpu::ExperimentalFeatures::enabled() };
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("carve"),
            required_features,
            required_limits: limits.clone(),
            experimental_features,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = adapter
            .request_device(&desc)
            .await
            .map_err(|e| Error::Backend(format!("wgpu request_device on {}: {e}", describe_info(&info))))?;

        let lost = Arc::new(AtomicBool::new(false));
        let lost_reason = Arc::new(Mutex::new(None));
        {
            let (lost, reason) = (lost.clone(), lost_reason.clone());
            device.set_device_lost_callback(move |r, msg| {
                lost.store(true, Ordering::SeqCst);
                if let Ok(mut g) = reason.lock() {
                    *g = Some(format!("{r:?}: {msg}"));
                }
            });
        }
        let error = Arc::new(Mutex::new(None));
        {
            let error = error.clone();
            // wgpu's default handler panics; keep the first message for `read` to return.
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                if let Ok(mut g) = error.lock() {
                    g.get_or_insert_with(|| e.to_string());
                }
            }));
        }

        let mut max_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        if let Some(o) = opts.max_binding_bytes {
            max_binding = max_binding.min(o as u64);
        }
        Ok(Context { device, queue, info, limits, max_binding, coop, lost, lost_reason, error })
    }

    /// `Err` if the device is gone or wgpu reported an error since the last check.
    pub fn check_health(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            let why = self.lost_reason.lock().ok().and_then(|g| g.clone()).unwrap_or_default();
            return Err(Error::Backend(format!("wgpu device lost ({why})")));
        }
        if let Some(e) = self.error.lock().ok().and_then(|mut g| g.take()) {
            return Err(Error::Backend(format!("wgpu error: {e}")));
        }
        Ok(())
    }

    /// Workgroup counts for a 1-D launch of `n` groups, folded into 2-D when over the per-dimension
    /// limit (65535 on most adapters); kernels rebuild the index as `wg.x + wg.y · nwg.x`.
    pub fn grid(&self, n: u64) -> Result<[u32; 3]> {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1) as u64;
        if n <= max {
            return Ok([n as u32, 1, 1]);
        }
        let y = n.div_ceil(max);
        if y > max {
            return Err(Error::Backend(format!("dispatch of {n} workgroups exceeds {max}²")));
        }
        Ok([max as u32, y as u32, 1])
    }
}
