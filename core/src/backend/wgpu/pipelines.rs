//! Kernels, and the lazily built cache of shader modules, bind group layouts and pipelines
//! (each created once, on first use).
//!
//! One binding convention for every kernel: @0 the output (storage, read_write), @1 the
//! parameters (uniform), @2.. read-only storage inputs in order. So a layout depends only on the
//! number of inputs, and five layouts serve every kernel.

use std::collections::HashMap;
use std::sync::Mutex;

use super::recorder::lock_err;
use crate::backend::Precision;
use crate::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Shader {
    Matmul,
    MatmulVec4,
    Matmul128,
    Matmul128Vec4,
    MatmulSmallM,
    MatmulCoop,
    Norms,
    Attention,
    AttentionFused,
    Elementwise,
    Embedding,
    Upload,
    Reductions,
    BackwardElementwise,
    BackwardMix,
    BackwardNorms,
    BackwardAttention,
    BackwardEmbedding,
    KlHingeRows,
    KlHingeGrad,
    GatedSum,
    GatedSumDgates,
}

impl Shader {
    fn source(self) -> &'static str {
        match self {
            Shader::Matmul => concat!(
                include_str!("../../../../shaders/precision.wgsl"),
                include_str!("../../../../shaders/matmul_params.wgsl"),
                include_str!("../../../../shaders/matmul_operands.wgsl"),
                include_str!("../../../../shaders/matmul_stage.wgsl"),
                include_str!("../../../../shaders/matmul_slice.wgsl"),
                include_str!("../../../../shaders/matmul.wgsl")
            ),
            Shader::MatmulVec4 => concat!(
                include_str!("../../../../shaders/precision.wgsl"),
                include_str!("../../../../shaders/matmul_params.wgsl"),
                include_str!("../../../../shaders/matmul_stage_vec4.wgsl"),
                include_str!("../../../../shaders/matmul_slice.wgsl"),
                include_str!("../../../../shaders/matmul.wgsl")
            ),
            Shader::Matmul128 => concat!(
                include_str!("../../../../shaders/precision.wgsl"),
                include_str!("../../../../shaders/matmul_params.wgsl"),
                include_str!("../../../../shaders/matmul_operands.wgsl"),
                include_str!("../../../../shaders/matmul_stage.wgsl"),
                include_str!("../../../../shaders/matmul_slice.wgsl"),
                include_str!("../../../../shaders/matmul_128.wgsl")
            ),
            Shader::Matmul128Vec4 => concat!(
                include_str!("../../../../shaders/precision.wgsl"),
                include_str!("../../../../shaders/matmul_params.wgsl"),
                include_str!("../../../../shaders/matmul_stage_vec4.wgsl"),
                include_str!("../../../../shaders/matmul_slice.wgsl"),
                include_str!("../../../../shaders/matmul_128.wgsl")
            ),
            Shader::MatmulSmallM => concat!(
                include_str!("../../../../shaders/precision.wgsl"),
                include_str!("../../../../shaders/matmul_params.wgsl"),
                include_str!("../../../../shaders/matmul_operands.wgsl"),
                include_str!("../../../../shaders/matmul_small_m.wgsl")
            ),
            Shader::MatmulCoop => coop_source(),
            Shader::Norms => include_str!("../../../../shaders/norms.wgsl"),
            Shader::Attention => include_str!("../../../../shaders/attention.wgsl"),
            Shader::AttentionFused => concat!(
                include_str!("../../../../shaders/precision.wgsl"),
                include_str!("../../../../shaders/attention_fused.wgsl")
            ),
            Shader::Elementwise => include_str!("../../../../shaders/elementwise.wgsl"),
            Shader::Embedding => include_str!("../../../../shaders/embedding.wgsl"),
            Shader::Upload => include_str!("../../../../shaders/upload.wgsl"),
            Shader::Reductions => include_str!("../../../../shaders/reductions.wgsl"),
            Shader::BackwardElementwise => include_str!("../../../../shaders/backward_elementwise.wgsl"),
            Shader::BackwardMix => include_str!("../../../../shaders/backward_mix.wgsl"),
            Shader::BackwardNorms => include_str!("../../../../shaders/backward_norms.wgsl"),
            Shader::BackwardAttention => include_str!("../../../../shaders/backward_attention.wgsl"),
            Shader::BackwardEmbedding => include_str!("../../../../shaders/backward_embedding.wgsl"),
            Shader::KlHingeRows => include_str!("../../../../shaders/kl_hinge_rows.wgsl"),
            Shader::KlHingeGrad => include_str!("../../../../shaders/kl_hinge_grad.wgsl"),
            Shader::GatedSum => include_str!("../../../../shaders/gated_sum.wgsl"),
            Shader::GatedSumDgates => include_str!("../../../../shaders/gated_sum_dgates.wgsl"),
        }
    }
}

/// matmul_coop.wgsl as compiled: its enables, then the shared declarations.
pub(crate) fn coop_source() -> &'static str {
    concat!(
        "enable f16;\nenable wgpu_cooperative_matrix;\n",
        include_str!("../../../../shaders/precision.wgsl"),
        include_str!("../../../../shaders/matmul_params.wgsl"),
        include_str!("../../../../shaders/matmul_operands.wgsl"),
        include_str!("../../../../shaders/matmul_coop.wgsl")
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    Fill,
    Add,
    Gelu,
    SiluMul,
    Mix,
    Rope,
    LayerNorm,
    RmsNorm,
    LogSoftmax,
    CausalSoftmax,
    /// Scores, causal softmax and apply in one pass (attention_fused.wgsl), for heads of
    /// `head_dim` ≤ `FUSED_MAX_HEAD_DIM`, a multiple of 4.
    AttentionFused { head_dim: u32 },
    Gather,
    /// A small upload: the host's values staged in the arena, copied into a pooled buffer.
    Upload,
    /// The register-blocked GEMM: 64×64 tiles, or 128×128 (`Gemm::wide`).
    Matmul(Gemm),
    /// M ≤ 8 rows: the matrix–vector style kernel.
    MatmulSmallM,
    GeluBackward,
    SiluMulBackwardGate,
    SiluMulBackwardUp,
    MixBackwardX,
    MixBackwardMask,
    LayerNormBackward,
    RmsNormBackward,
    /// The causal softmax's input gradient, from the probabilities and their gradient.
    SoftmaxBackward,
    /// Zeroes the upper triangle of `[rows, seq]` causal blocks, in place.
    CausalZero,
    ScatterRows,
    /// The training loss's terms per row (KL, hinge, the two log-sum-exps).
    KlHingeRows,
    /// The training loss's logit gradient, from those terms.
    KlHingeGrad,
    /// The edge mixing of one group of writers: `out = base + z·s` (also the backward's dstacks).
    GatedSum,
    /// The gates' gradient per chunk of columns, then the sum of the chunks.
    DgatesPart,
    DgatesSum,
}

/// The tiled GEMM's variants: WGSL pipeline-overridable constants (matmul_params.wgsl) and the tile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Gemm {
    /// `w` stored `[K, N]` rather than `[N, K]`.
    pub w_kn: bool,
    /// `x` stored `[K, M]` rather than `[M, K]`.
    pub x_km: bool,
    /// Output tiles above the diagonal are skipped (left unwritten).
    pub causal_skip: bool,
    /// The product is added to the output instead of overwriting it.
    pub accumulate: bool,
    /// 128×128 output tiles, 8×8 per thread (matmul_128.wgsl) instead of 64×64, 4×4 (matmul.wgsl).
    pub wide: bool,
    /// The operands read a vec4 at a time (matmul_stage_vec4.wgsl), for products that are aligned
    /// for it (`MmParams::vec4_fits`); not with `coop`.
    pub vec4: bool,
    /// 64×64 tiles on cooperative matrices (matmul_coop.wgsl; `--precision mixed` only).
    pub coop: bool,
}

pub(crate) const SMALL_M: usize = 8;
/// attention_fused.wgsl's MAX_D.
pub(crate) const FUSED_MAX_HEAD_DIM: usize = 128;

impl Kernel {
    /// Its name in profiles: snake case (`gated_sum`, `matmul_small_m`); the GEMM with its
    /// variant (`matmul (w [K,N], +=)`).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // profiles are read natively
    pub fn name(self) -> String {
        if let Kernel::Matmul(g) = self {
            let flags: Vec<&str> = [(g.w_kn, "w [K,N]"), (g.x_km, "x [K,M]"), (g.causal_skip, "causal"), (g.accumulate, "+=")]
                .into_iter()
                .filter_map(|(on, f)| on.then_some(f))
                .collect();
            let base = if g.coop {
                "matmul_coop".to_string()
            } else {
                format!("{}{}", if g.wide { "matmul_128" } else { "matmul" }, if g.vec4 { "_vec4" } else { "" })
            };
            return if flags.is_empty() { base } else { format!("{base} ({})", flags.join(", ")) };
        }
        if let Kernel::AttentionFused { .. } = self {
            return "attention_fused".into();
        }
        let mut s = String::new();
        for (i, c) in format!("{self:?}").chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        }
        s
    }

    fn shader(self) -> Shader {
        use Kernel::*;
        match self {
            Fill | Add | Gelu | SiluMul | Mix | Rope => Shader::Elementwise,
            LayerNorm | RmsNorm => Shader::Norms,
            LogSoftmax => Shader::Reductions,
            CausalSoftmax => Shader::Attention,
            AttentionFused { .. } => Shader::AttentionFused,
            Gather => Shader::Embedding,
            Upload => Shader::Upload,
            Matmul(g) if g.coop => Shader::MatmulCoop,
            Matmul(g) if g.wide && g.vec4 => Shader::Matmul128Vec4,
            Matmul(g) if g.wide => Shader::Matmul128,
            Matmul(g) if g.vec4 => Shader::MatmulVec4,
            Matmul(_) => Shader::Matmul,
            MatmulSmallM => Shader::MatmulSmallM,
            GeluBackward | SiluMulBackwardGate | SiluMulBackwardUp => Shader::BackwardElementwise,
            MixBackwardX | MixBackwardMask => Shader::BackwardMix,
            LayerNormBackward | RmsNormBackward => Shader::BackwardNorms,
            SoftmaxBackward | CausalZero => Shader::BackwardAttention,
            ScatterRows => Shader::BackwardEmbedding,
            KlHingeRows => Shader::KlHingeRows,
            KlHingeGrad => Shader::KlHingeGrad,
            GatedSum => Shader::GatedSum,
            DgatesPart | DgatesSum => Shader::GatedSumDgates,
        }
    }

    fn entry(self) -> &'static str {
        use Kernel::*;
        match self {
            Fill => "fill",
            Add => "add",
            Gelu => "gelu_new",
            SiluMul => "silu_mul",
            Mix => "mix_rows",
            Rope => "rope",
            LayerNorm => "layer_norm",
            RmsNorm => "rms_norm",
            LogSoftmax => "log_softmax",
            CausalSoftmax => "causal_softmax",
            AttentionFused { .. } => "attention_fused",
            Gather => "gather_rows",
            Upload => "upload",
            Matmul(g) if g.coop => "matmul_coop",
            Matmul(g) if g.wide => "matmul_128",
            Matmul(_) => "matmul_tiled",
            MatmulSmallM => "matmul_small_m",
            GeluBackward => "gelu_new_backward",
            SiluMulBackwardGate => "silu_mul_backward_gate",
            SiluMulBackwardUp => "silu_mul_backward_up",
            MixBackwardX => "mix_backward_x",
            MixBackwardMask => "mix_backward_mask",
            LayerNormBackward => "layer_norm_backward",
            RmsNormBackward => "rms_norm_backward",
            SoftmaxBackward => "causal_softmax_backward",
            CausalZero => "causal_zero",
            ScatterRows => "scatter_rows",
            KlHingeRows => "kl_hinge_rows",
            KlHingeGrad => "kl_hinge_grad",
            GatedSum => "gated_sum",
            DgatesPart => "dgates_part",
            DgatesSum => "dgates_sum",
        }
    }

    /// Read-only inputs, bound at @2.. .
    pub fn inputs(self) -> usize {
        use Kernel::*;
        match self {
            Fill | CausalSoftmax | CausalZero => 0,
            Gelu | LogSoftmax | DgatesSum | Upload => 1,
            Add | SiluMul | Rope | RmsNorm | Gather | DgatesPart => 2,
            GeluBackward | SiluMulBackwardUp | MixBackwardX | SoftmaxBackward | ScatterRows => 2,
            Mix | LayerNorm | Matmul(_) | MatmulSmallM | GatedSum | AttentionFused { .. } => 3,
            SiluMulBackwardGate | MixBackwardMask | LayerNormBackward | RmsNormBackward | KlHingeRows => 3,
            KlHingeGrad => 4,
        }
    }

    /// Its pipeline constants; the products' `INPUTS` rounding (shaders/precision.wgsl) for the
    /// kernels that multiply matrices.
    fn constants(self, precision: Precision) -> Vec<(&'static str, f64)> {
        let inputs = ("INPUTS", precision.shader_code() as f64);
        match self {
            Kernel::Matmul(g) => vec![
                ("W_KN", g.w_kn as u8 as f64),
                ("X_KM", g.x_km as u8 as f64),
                ("CAUSAL_SKIP", g.causal_skip as u8 as f64),
                ("ACCUMULATE", g.accumulate as u8 as f64),
                inputs,
            ],
            Kernel::MatmulSmallM => vec![inputs],
            Kernel::AttentionFused { head_dim } => vec![("HEAD_DIM", head_dim as f64), inputs],
            _ => Vec::new(),
        }
    }
}

const MAX_INPUTS: usize = 4;

pub(crate) struct Pipelines {
    modules: Mutex<HashMap<Shader, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<Kernel, wgpu::ComputePipeline>>,
    /// Indexed by input count.
    layouts: Vec<(wgpu::BindGroupLayout, wgpu::PipelineLayout)>,
    precision: Precision,
}

fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl Pipelines {
    pub fn new(device: &wgpu::Device, precision: Precision) -> Pipelines {
        let layouts = (0..=MAX_INPUTS)
            .map(|n| {
                let mut entries = vec![
                    storage(0, false),
                    wgpu::BindGroupLayoutEntry {
                        binding: 1,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Uniform,
                            // At an offset given per dispatch, so that a bind group does not
                            // depend on where the params were staged (recorder::BindGroups).
                            has_dynamic_offset: true,
                            min_binding_size: None,
                        },
                        count: None,
                    },
                ];
                entries.extend((0..n).map(|i| storage(2 + i as u32, true)));
                let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some("carve layout"),
                    entries: &entries,
                });
                let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some("carve pipeline layout"),
                    bind_group_layouts: &[Some(&bgl)],
                    immediate_size: 0,
                });
                (bgl, pl)
            })
            .collect();
        Pipelines { modules: Mutex::new(HashMap::new()), pipelines: Mutex::new(HashMap::new()), layouts, precision }
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn bind_group_layout(&self, k: Kernel) -> &wgpu::BindGroupLayout {
        &self.layouts[k.inputs()].0
    }

    /// The pipeline for `k`, compiled on first use.
    pub fn get(&self, device: &wgpu::Device, k: Kernel) -> Result<wgpu::ComputePipeline> {
        if let Some(p) = self.pipelines.lock().map_err(lock_err)?.get(&k) {
            return Ok(p.clone());
        }
        let module = {
            let mut mods = self.modules.lock().map_err(lock_err)?;
            match mods.get(&k.shader()) {
                Some(m) => m.clone(),
                None => {
                    let m = checked(device, &format!("{:?}.wgsl", k.shader()), || {
                        device.create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(k.entry()),
                            source: wgpu::ShaderSource::Wgsl(k.shader().source().into()),
                        })
                    })?;
                    mods.insert(k.shader(), m.clone());
                    m
                }
            }
        };
        let constants = k.constants(self.precision);
        let pipeline = checked(device, k.entry(), || {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.entry()),
                layout: Some(&self.layouts[k.inputs()].1),
                module: &module,
                entry_point: Some(k.entry()),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    // Every kernel writes its workgroup memory before reading it.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        })?;
        self.pipelines.lock().map_err(lock_err)?.insert(k, pipeline.clone());
        Ok(pipeline)
    }
}

/// Runs `f` in a validation error scope so a shader or pipeline error comes back as an `Err`
/// naming the kernel. Natively the scope is popped synchronously; in the browser popping is
/// async, so errors there surface through the device's error handler at the next `read`.
#[cfg(not(target_arch = "wasm32"))]
fn checked<T>(device: &wgpu::Device, what: &str, f: impl FnOnce() -> T) -> Result<T> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let out = f();
    match pollster::block_on(scope.pop()) {
        Some(e) => Err(crate::Error::Backend(format!("wgpu: building `{what}` failed: {e}"))),
        None => Ok(out),
    }
}

#[cfg(target_arch = "wasm32")]
fn checked<T>(_device: &wgpu::Device, _what: &str, f: impl FnOnce() -> T) -> Result<T> {
    Ok(f())
}
