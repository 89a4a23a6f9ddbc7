//! The manifest written next to the prebuilt kernels (`crates/attn-host/kernels/manifest.json`):
//! one schema, serialised by `cargo xtask build-kernels` and deserialised by `attn-host`, plus the
//! rules that judge a kernel's resources ([`Resources::problems`]) and code
//! ([`Kernel::code_problems`]).
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Format of an artifact file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// AMDGPU ELF code object.
    Hsaco,
    /// NVIDIA SASS binary for one architecture family.
    Cubin,
    /// NVIDIA PTX, JIT-compiled by the driver.
    Ptx,
}

impl Format {
    /// The file extension / manifest name.
    pub const fn name(self) -> &'static str {
        match self {
            Format::Hsaco => "hsaco",
            Format::Cubin => "cubin",
            Format::Ptx => "ptx",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Manifest schema version.
pub const SCHEMA: u32 = 1;

/// The whole manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Schema version ([`SCHEMA`]).
    pub schema: u32,
    /// What wrote this file (`cargo xtask build-kernels`): do not edit by hand.
    pub generated_by: String,
    /// `rustc +nightly --version` of the compiler that built the kernels.
    pub rustc: String,
    /// `ptxas --version` release (e.g. `V12.9.86`).
    pub ptxas: String,
    /// One entry per GPU target, in build order.
    pub targets: Vec<Target>,
}

impl Manifest {
    /// The entry of target `name` (`"gfx942"`, `"sm_90a"`, …).
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.target == name)
    }
}

/// One GPU target (a code object, or a PTX/cubin pair).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Target CPU name: `gfx942`, `sm_90a`, ...
    pub target: String,
    /// LLVM target triple.
    pub triple: String,
    /// PTX ISA version (NVIDIA only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ptx_version: Option<String>,
    /// Files of this target, relative to the manifest's folder.
    pub files: Vec<File>,
    /// Matrix-instruction counts over the whole object (including non-kernel functions).
    pub matrix_instructions: BTreeMap<String, u32>,
    /// Kernels, sorted by name.
    pub kernels: Vec<Kernel>,
}

impl Target {
    /// The kernel named `name`.
    pub fn kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.name == name)
    }
}

/// One artifact file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct File {
    /// File name relative to the manifest's folder.
    pub path: String,
    /// `hsaco`, `cubin` or `ptx`.
    pub format: Format,
    /// Size in bytes.
    pub size: u64,
}

/// One kernel of one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    /// Symbol name.
    pub name: String,
    /// Threads per block (`#[kernel(threads = N)]`), applied as the launch bound.
    pub threads: u32,
    /// Resource usage reported by the backend.
    pub resources: Resources,
    /// Matrix-instruction counts inside the kernel's own code.
    pub matrix_instructions: BTreeMap<String, u32>,
}

/// Per-vendor resource usage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "vendor", rename_all = "lowercase")]
pub enum Resources {
    /// From the AMDGPU code-object metadata note.
    Amd(AmdResources),
    /// From `ptxas -v`.
    Nvidia(NvidiaResources),
}

/// AMD kernel resources (`llvm-readobj --notes`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmdResources {
    /// `.vgpr_count`.
    pub vgpr: u32,
    /// `.agpr_count`.
    pub agpr: u32,
    /// `.sgpr_count`.
    pub sgpr: u32,
    /// `.group_segment_fixed_size`: static LDS bytes per block.
    pub lds_bytes: u32,
    /// `.private_segment_fixed_size`: scratch bytes per lane.
    pub scratch_bytes: u32,
    /// `.vgpr_spill_count`.
    pub vgpr_spills: u32,
    /// `.sgpr_spill_count`.
    pub sgpr_spills: u32,
    /// `.uses_dynamic_stack`.
    pub dynamic_stack: bool,
    /// `.max_flat_workgroup_size` (the applied launch bound).
    pub max_flat_workgroup_size: u32,
    /// `.wavefront_size`.
    pub wavefront_size: u32,
    /// Waves per SIMD that can be resident at once, as LLVM computes it for the kernel
    /// (`Occupancy [waves/SIMD]` of `llc -pass-remarks-analysis=kernel-resource-usage`): limited
    /// by the VGPR/AGPR and SGPR counts and the launch bound.
    ///
    /// It is **register-limited only**: the kernels' LDS is dynamic (sized at launch, so
    /// [`AmdResources::lds_bytes`], the static size, is 0) and LLVM's occupancy ignores it. The
    /// launch's LDS bytes per block can lower the real occupancy further. `None` in manifests
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occupancy_waves_per_simd: Option<u32>,
}

/// NVIDIA kernel resources (`ptxas -v`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvidiaResources {
    /// Registers per thread.
    pub registers: u32,
    /// Bytes of spill stores.
    pub spill_stores: u32,
    /// Bytes of spill loads.
    pub spill_loads: u32,
    /// Stack frame bytes per thread (local memory), including callees.
    pub stack_bytes: u32,
    /// Static shared memory bytes per block.
    pub smem_bytes: u32,
    /// Named barriers used.
    pub barriers: u32,
}

/// The matrix instruction (a key of [`Kernel::matrix_instructions`]) that kernel `kernel` must
/// contain on `target`, or `None` when it needs none.
///
/// The 16-bit forward and backward kernels (`attn_fwd_f16_*`, `attn_bwd_dq_bf16_*`, …) must use
/// the target's
/// matrix unit: `v_mfma` on gfx90a and gfx942, `v_wmma` on gfx1100, `mma.sync` on sm_80 and
/// sm_90a. A kernel without it has fallen back to scalar code, which is correct but an order of
/// magnitude slower. f32 kernels and `attn_abi_echo` have no matrix instructions and need none;
/// so do 16-bit kernels on targets not listed here, and the stubs of kernels that are not built
/// for a target (`attn_kernels::fwd::policy::instantiated`).
pub fn required_matrix_instruction(target: &str, kernel: &str) -> Option<&'static str> {
    let sixteen_bit = [
        "attn_fwd_f16_",
        "attn_fwd_bf16_",
        "attn_bwd_dq_f16_",
        "attn_bwd_dq_bf16_",
        "attn_bwd_dkdv_f16_",
        "attn_bwd_dkdv_bf16_",
        "attn_bwd_fused_f16_",
        "attn_bwd_fused_bf16_",
    ]
    .iter()
    .any(|p| kernel.starts_with(p));
    if !sixteen_bit || is_stub(target, kernel) {
        return None;
    }
    match target {
        "gfx90a" | "gfx942" => Some("v_mfma"),
        "gfx1100" => Some("v_wmma"),
        "sm_80" | "sm_90a" => Some("mma.sync"),
        _ => None,
    }
}

/// `(family, dtype, head-dim bucket, variant)` of forward kernel `kernel` on `target`.
fn forward_kernel(
    target: &str,
    kernel: &str,
) -> Option<(
    attn_kernels::fwd::policy::Family,
    attn_abi::DType,
    usize,
    attn_abi::FwdVariant,
)> {
    use attn_abi::FwdVariant;
    let family = attn_kernels::fwd::policy::Family::of_arch(target)?;
    let mut parts = kernel.strip_prefix("attn_fwd_")?.split('_');
    let (dtype, d) = dtype_and_dim(&mut parts)?;
    let variant = match parts.next() {
        None => FwdVariant::Plain,
        Some("varlen") => FwdVariant::Varlen,
        Some("pieces") => FwdVariant::Pieces,
        Some("decode") => FwdVariant::Decode,
        _ => return None,
    };
    Some((family, dtype, d, variant))
}

/// `(family, dtype, head-dim bucket, kernel, variant)` of backward kernel `kernel` on `target`.
fn backward_kernel(
    target: &str,
    kernel: &str,
) -> Option<(
    attn_kernels::fwd::policy::Family,
    attn_abi::DType,
    usize,
    attn_kernels::bwd::policy::BwdKernel,
    attn_abi::BwdVariant,
)> {
    use attn_abi::BwdVariant;
    use attn_kernels::bwd::policy::BwdKernel;
    let family = attn_kernels::fwd::policy::Family::of_arch(target)?;
    let (which, rest) = if let Some(r) = kernel.strip_prefix("attn_bwd_dq_") {
        (BwdKernel::Dq, r)
    } else if let Some(r) = kernel.strip_prefix("attn_bwd_fused_") {
        (BwdKernel::Fused, r)
    } else {
        (BwdKernel::Dkdv, kernel.strip_prefix("attn_bwd_dkdv_")?)
    };
    let mut parts = rest.split('_');
    let (dtype, d) = dtype_and_dim(&mut parts)?;
    let variant = match parts.next() {
        None => BwdVariant::Plain,
        Some("pieces") => BwdVariant::Pieces,
        Some(_) => return None,
    };
    Some((family, dtype, d, which, variant))
}

/// The `{dtype}_d{D}` part of a kernel name (`attn_abi::KernelId`'s grammar), from `parts`.
fn dtype_and_dim<'a>(
    parts: &mut impl Iterator<Item = &'a str>,
) -> Option<(attn_abi::DType, usize)> {
    let name = parts.next()?;
    let dtype = attn_abi::DType::ALL
        .into_iter()
        .find(|t| t.name() == name)?;
    let d = parts.next()?.strip_prefix('d')?.parse().ok()?;
    Some((dtype, d))
}

/// Whether `kernel` is a forward or backward kernel that is only a stub on `target` (never
/// launched).
fn is_stub(target: &str, kernel: &str) -> bool {
    forward_kernel(target, kernel)
        .is_some_and(|(f, t, d, v)| !attn_kernels::fwd::policy::instantiated(f, t, d, v))
        || backward_kernel(target, kernel).is_some_and(|(f, t, d, k, v)| {
            !attn_kernels::bwd::policy::bwd_instantiated(f, t, d, k, v)
        })
}

impl Kernel {
    /// Everything that makes this kernel unacceptable on `target`: its resources
    /// ([`Resources::problems`]) and its code ([`Kernel::code_problems`]). Notes that are not
    /// errors are [`Resources::notes`].
    pub fn problems(&self, target: &str) -> Vec<String> {
        let mut p = if forward_kernel(target, &self.name)
            .is_some_and(|(f, t, d, v)| attn_kernels::fwd::policy::spills_allowed(f, t, d, v))
        {
            Vec::new() // reported by `Kernel::notes` instead
        } else {
            self.resources.problems()
        };
        p.extend(self.code_problems(target));
        p
    }

    /// What is worth knowing about this kernel on `target` without being an error: the
    /// resources' notes, and the spills of a kernel allowed to spill
    /// (`attn_kernels::fwd::policy::spills_allowed`).
    pub fn notes(&self, target: &str) -> Vec<String> {
        let mut n = self.resources.notes();
        if forward_kernel(target, &self.name)
            .is_some_and(|(f, t, d, v)| attn_kernels::fwd::policy::spills_allowed(f, t, d, v))
        {
            n.extend(
                self.resources
                    .problems()
                    .into_iter()
                    .map(|p| format!("{p} (allowed)")),
            );
        }
        n
    }

    /// Why this kernel's code is unacceptable on `target` beyond its resources: a missing
    /// matrix instruction (see [`required_matrix_instruction`]).
    pub fn code_problems(&self, target: &str) -> Vec<String> {
        match required_matrix_instruction(target, &self.name) {
            Some(m) if self.matrix_instructions.get(m).copied().unwrap_or(0) == 0 => {
                vec![format!("no {m} (matrix instruction) in its code")]
            }
            _ => Vec::new(),
        }
    }
}

impl Resources {
    /// Why this kernel's resources are unacceptable (spills to memory or scratch), if they are.
    ///
    /// AMD SGPR spills are not among them: LLVM spills scalar registers into lanes of a VGPR
    /// (`v_writelane`/`v_readlane`), which costs instructions but no memory traffic and no
    /// scratch. They are listed in the table and the manifest (`sgpr_spills`) and reported by
    /// [`Resources::notes`].
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        match self {
            Resources::Amd(r) => {
                if r.vgpr_spills > 0 {
                    p.push(format!("{} VGPR spills", r.vgpr_spills));
                }
                if r.scratch_bytes > 0 {
                    p.push(format!("{} B/lane scratch", r.scratch_bytes));
                }
                if r.dynamic_stack {
                    p.push("dynamic stack".to_string());
                }
            }
            Resources::Nvidia(r) => {
                if r.spill_stores > 0 || r.spill_loads > 0 {
                    p.push(format!(
                        "{} B spill stores, {} B spill loads",
                        r.spill_stores, r.spill_loads
                    ));
                }
                if r.stack_bytes > 0 {
                    p.push(format!("{} B stack (local memory)", r.stack_bytes));
                }
            }
        }
        p
    }

    /// Costs worth knowing that are not errors (see [`Resources::problems`]).
    pub fn notes(&self) -> Vec<String> {
        match self {
            Resources::Amd(r) if r.sgpr_spills > 0 => {
                vec![format!(
                    "{} SGPR spills into VGPR lanes (no scratch)",
                    r.sgpr_spills
                )]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(name: &str, counts: &[(&str, u32)]) -> Kernel {
        Kernel {
            name: name.to_string(),
            threads: 128,
            resources: Resources::Amd(AmdResources::default()),
            matrix_instructions: counts.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn matrix_instruction_rule() {
        let r = required_matrix_instruction;
        // Backward kernels: 16-bit ones need the matrix unit, f32 ones and stubs do not.
        assert_eq!(r("sm_90a", "attn_bwd_dq_bf16_d128"), Some("mma.sync"));
        assert_eq!(r("gfx942", "attn_bwd_dkdv_f16_d64"), Some("v_mfma"));
        assert_eq!(r("sm_80", "attn_bwd_dkdv_f32_d64"), None);
        assert_eq!(r("gfx1100", "attn_bwd_dkdv_f16_d64"), Some("v_wmma")); // in head-dim slices
        assert_eq!(r("gfx1100", "attn_bwd_dkdv_bf16_d256"), None); // an AMD D = 256 stub
        assert_eq!(r("gfx1100", "attn_bwd_dq_f16_d64"), Some("v_wmma"));
        assert_eq!(r("gfx90a", "attn_bwd_dq_bf16_d256"), None); // an AMD D = 256 stub
        assert_eq!(r("sm_90a", "attn_bwd_fused_bf16_d128"), Some("mma.sync"));
        assert_eq!(r("sm_80", "attn_bwd_fused_f16_d32"), Some("mma.sync"));
        assert_eq!(r("gfx942", "attn_bwd_fused_f16_d64"), None); // fused: NVIDIA only, a stub
        assert_eq!(r("sm_90a", "attn_bwd_post_bf16"), None);
        for t in ["gfx90a", "gfx942"] {
            assert_eq!(r(t, "attn_fwd_f16_d64"), Some("v_mfma"));
            assert_eq!(r(t, "attn_fwd_bf16_d256"), Some("v_mfma"));
        }
        assert_eq!(r("gfx1100", "attn_fwd_f16_d32"), Some("v_wmma"));
        assert_eq!(r("gfx1100", "attn_fwd_bf16_d128"), Some("v_wmma"));
        // Stubs (not built for the target) need none; the same kernel elsewhere does.
        assert_eq!(r("gfx1100", "attn_fwd_bf16_d256_pieces"), None);
        assert_eq!(r("sm_80", "attn_fwd_f16_d256_pieces"), Some("mma.sync"));
        assert_eq!(r("sm_90a", "attn_fwd_f16_d256_pieces"), Some("mma.sync"));
        assert_eq!(r("sm_90a", "attn_fwd_f16_d128_pieces"), Some("mma.sync"));
        assert_eq!(r("gfx942", "attn_fwd_f16_d64_varlen"), Some("v_mfma"));
        for t in ["sm_80", "sm_90a"] {
            assert_eq!(r(t, "attn_fwd_f16_d128"), Some("mma.sync"));
            assert_eq!(r(t, "attn_fwd_bf16_d64"), Some("mma.sync"));
        }
        for t in ["gfx90a", "gfx942", "gfx1100", "sm_80", "sm_90a"] {
            assert_eq!(r(t, "attn_fwd_f32_d64"), None);
            assert_eq!(r(t, "attn_abi_echo"), None);
        }
        assert_eq!(r("gfx1030", "attn_fwd_f16_d64"), None);
    }

    #[test]
    fn missing_matrix_instruction_is_a_problem() {
        // No v_mfma on gfx942: a problem; the wrong unit's count does not help.
        let k = kernel("attn_fwd_bf16_d64", &[("v_mfma", 0), ("v_wmma", 12)]);
        let p = k.code_problems("gfx942");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("v_mfma"), "{p:?}");
        // A missing key counts as zero.
        assert_eq!(
            kernel("attn_fwd_f16_d32", &[]).code_problems("sm_80").len(),
            1
        );
        assert_eq!(
            kernel("attn_fwd_f16_d32", &[("v_mfma", 3)]).code_problems("gfx1100"),
            ["no v_wmma (matrix instruction) in its code"]
        );
        // Present: fine.
        assert!(k.code_problems("gfx1100").is_empty());
        assert!(
            kernel("attn_fwd_f16_d128", &[("mma.sync", 72)])
                .code_problems("sm_90a")
                .is_empty()
        );
        // f32 and the ABI probe need none.
        assert!(
            kernel("attn_fwd_f32_d64", &[("v_mfma", 0)])
                .code_problems("gfx942")
                .is_empty()
        );
        assert!(
            kernel("attn_abi_echo", &[])
                .code_problems("sm_80")
                .is_empty()
        );
    }
}

#[cfg(test)]
mod round_trip {
    /// The committed manifest parses and re-serialises to the same bytes (as `build-kernels`
    /// writes it: pretty JSON plus a final newline), so writer and reader agree on every field.
    #[test]
    fn committed_manifest_round_trips_byte_for_byte() {
        let text = include_str!("../../attn-host/kernels/manifest.json");
        let m: super::Manifest = serde_json::from_str(text).expect("manifest parses");
        assert!(!m.targets.is_empty());
        let again = serde_json::to_string_pretty(&m).expect("serialises") + "\n";
        assert!(
            again == text,
            "re-serialised manifest differs from the committed one"
        );
    }
}
