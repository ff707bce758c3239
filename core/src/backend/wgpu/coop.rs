//! The GEMM on cooperative matrices (shaders/matmul_coop.wgsl) for `--precision mixed`: when an
//! adapter can run it, and the check it passes before any product uses it.
//!
//! wgpu's cooperative matrices are experimental (`EXPERIMENTAL_COOPERATIVE_MATRIX`, native only),
//! so the kernel is used only where every condition below holds, and only after it has matched
//! the plain tiled kernel (which rounds the same inputs the same way) on a product with ragged
//! edges. Otherwise mixed precision runs on the plain kernels and `describe()` says why.

use crate::backend::Precision;

/// The kernel's workgroup memory: 2 × 2048 f16 + 4096 f32.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
const WORKGROUP_BYTES: u32 = 2 * 2048 * 2 + 4096 * 4;

/// The features the kernel needs.
pub(crate) const FEATURES: wgpu::Features =
    wgpu::Features::SHADER_F16.union(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);

/// Why `adapter` cannot run matmul_coop.wgsl, or None when it can: f16 shaders and cooperative
/// matrices of 16×16×16 with f16 inputs and an f32 accumulator at subgroup scope, a fixed
/// subgroup size of 32 (the kernel splits its 128 invocations into 4 subgroups by index), and
/// 24 KiB of workgroup memory.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn unsupported(adapter: &wgpu::Adapter) -> Option<String> {
    let info = adapter.get_info();
    let have = adapter.features();
    let missing: Vec<&str> = [(wgpu::Features::SHADER_F16, "f16 shaders (SHADER_F16)"), (wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX, "cooperative matrices (EXPERIMENTAL_COOPERATIVE_MATRIX)")]
        .into_iter()
        .filter(|(f, _)| !have.contains(*f))
        .map(|(_, name)| name)
        .collect();
    if !missing.is_empty() {
        return Some(format!("the adapter has no {}", missing.join(" and no ")));
    }
    let shape = adapter.cooperative_matrix_properties().iter().any(|p| {
        (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
            && p.ab_type == wgpu::CooperativeScalarType::F16
            && p.cr_type == wgpu::CooperativeScalarType::F32
    });
    if !shape {
        return Some("no 16×16×16 f16 × f16 + f32 cooperative matrices".into());
    }
    if (info.subgroup_min_size, info.subgroup_max_size) != (32, 32) {
        return Some(format!("subgroups of {}..{} invocations, not exactly 32", info.subgroup_min_size, info.subgroup_max_size));
    }
    let limits = adapter.limits();
    if limits.max_compute_workgroup_storage_size < WORKGROUP_BYTES || limits.max_compute_invocations_per_workgroup < 128 {
        return Some(format!("{} bytes of workgroup memory (the kernel needs {WORKGROUP_BYTES})", limits.max_compute_workgroup_storage_size));
    }
    None
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn unsupported(_adapter: &wgpu::Adapter) -> Option<String> {
    Some("cooperative matrices are native only".into())
}

/// Whether to ask for the kernel at all: mixed (f16) precision, and not turned off.
pub(crate) fn wanted(precision: Precision, allowed: bool) -> bool {
    allowed && precision == Precision::Mixed
}

/// Largest relative difference (max |coop − plain| / max(1, max |plain|)) the check accepts: both
/// multiply the same f16 values, whose products are exact in f32; only the order and width of the
/// sums differ (matrix units may sum in blocks).
pub(crate) const CHECK_TOLERANCE: f64 = 1e-4;

#[cfg(test)]
mod tests {
    /// The kernel as the host builds it parses, validates with the capabilities it needs, and
    /// compiles to SPIR-V (what a Vulkan driver receives). No adapter here has cooperative
    /// matrices, so running it is left to a GPU (bench/device_check.sh), where the backend's own
    /// check compares it with the plain kernel before use.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn the_kernel_validates_and_compiles_to_spirv() {
        use wgpu::naga;
        let src = super::super::pipelines::coop_source();
        let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{}", e.emit_to_string(src)));
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string(src)));
        // Every variant the host builds, its overrides resolved as pipeline creation does.
        for flags in 0..16u32 {
            let mut constants = naga::back::PipelineConstants::default();
            for (i, name) in ["W_KN", "X_KM", "CAUSAL_SKIP", "ACCUMULATE"].into_iter().enumerate() {
                constants.insert(name.to_string(), (flags >> i & 1) as f64);
            }
            constants.insert("INPUTS".to_string(), 1.0);
            let ep = Some((naga::ShaderStage::Compute, "matmul_coop"));
            let (m, i) = naga::back::pipeline_constants::process_overrides(&module, &info, ep, &constants).expect("overrides");
            let opts = naga::back::spv::Options { lang_version: (1, 3), ..naga::back::spv::Options::default() };
            let pipe = naga::back::spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: "matmul_coop".into() };
            let words = naga::back::spv::write_vec(&m, &i, &opts, Some(&pipe)).unwrap_or_else(|e| panic!("SPIR-V, flags {flags:#b}: {e}"));
            assert!(words.len() > 100);
        }
        assert!(module.entry_points.iter().any(|e| e.name == "matmul_coop"));
    }
}
