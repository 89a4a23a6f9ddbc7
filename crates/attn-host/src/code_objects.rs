//! The prebuilt GPU code objects, embedded at compile time, and their manifest.
//!
//! `cargo xtask build-kernels` compiles `attn-kernels` for every supported target and writes the
//! results to `crates/attn-host/kernels/` (committed; `cargo xtask build-kernels --check` verifies
//! that they match the sources):
//!
//! | target | file | runs on |
//! |---|---|---|
//! | `gfx90a`, `gfx942`, `gfx1100` | `<gfx>.hsaco` (AMDGPU ELF code object) | exactly that ISA |
//! | `sm_80` | `sm_80.cubin` | compute capability 8.x |
//! | `sm_90a` | `sm_90a.cubin` | compute capability 9.0 only (`a`: arch-specific) |
//! | `sm_80` | `sm_80.ptx` | 8.0 and newer, JIT-compiled by the driver (forward-compatible fallback) |
//! | `sm_90a` | `sm_90a.ptx` | 9.0 only |
//!
//! `manifest.json` records, per target, the files and every kernel's block size and resource
//! usage (registers, LDS/shared memory, scratch/stack, spills, matrix-instruction counts); see
//! [`manifest`].

use std::sync::OnceLock;

pub use attn_manifest::{
    AmdResources, File as FileInfo, Format, Kernel as KernelInfo, Manifest, NvidiaResources,
    Resources, Target as TargetInfo,
};

/// One embedded code object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeObject {
    /// Target name: `gfx90a`, `gfx942`, `gfx1100`, `sm_80` or `sm_90a`.
    pub target: &'static str,
    /// Container format.
    pub format: Format,
    /// The bytes to hand to the driver's module loader: ELF objects (hsaco, cubin) are 64-byte
    /// aligned, PTX is NUL-terminated.
    pub bytes: &'static [u8],
}

/// Forces 64-byte alignment on embedded bytes (`include_bytes!` only guarantees 1), so that
/// loaders that read ELF headers in place see aligned data.
#[repr(C, align(64))]
struct Aligned<B: ?Sized>(B);

macro_rules! embed {
    ($file:literal) => {{
        static A: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!("../kernels/", $file)));
        &A.0
    }};
}

macro_rules! embed_ptx {
    ($file:literal) => {
        concat!(include_str!(concat!("../kernels/", $file)), "\0").as_bytes()
    };
}

/// Every embedded code object, in build order.
pub static CODE_OBJECTS: [CodeObject; 7] = [
    CodeObject {
        target: "gfx90a",
        format: Format::Hsaco,
        bytes: embed!("gfx90a.hsaco"),
    },
    CodeObject {
        target: "gfx942",
        format: Format::Hsaco,
        bytes: embed!("gfx942.hsaco"),
    },
    CodeObject {
        target: "gfx1100",
        format: Format::Hsaco,
        bytes: embed!("gfx1100.hsaco"),
    },
    CodeObject {
        target: "sm_80",
        format: Format::Cubin,
        bytes: embed!("sm_80.cubin"),
    },
    CodeObject {
        target: "sm_80",
        format: Format::Ptx,
        bytes: embed_ptx!("sm_80.ptx"),
    },
    CodeObject {
        target: "sm_90a",
        format: Format::Cubin,
        bytes: embed!("sm_90a.cubin"),
    },
    CodeObject {
        target: "sm_90a",
        format: Format::Ptx,
        bytes: embed_ptx!("sm_90a.ptx"),
    },
];

/// The embedded `manifest.json`.
pub const MANIFEST_JSON: &str = include_str!("../kernels/manifest.json");

/// A CUDA target name split into its compute capability: `sm_90a` → `(9, 0, true)`; the `a`
/// suffix marks arch-specific code that runs on exactly that capability.
fn cuda_arch(target: &str) -> Option<(u32, u32, bool)> {
    let digits = target.strip_prefix("sm_")?;
    let (digits, specific) = match digits.strip_suffix('a') {
        Some(d) => (d, true),
        None => (digits, false),
    };
    let n: u32 = digits.parse().ok()?;
    Some((n / 10, n % 10, specific))
}

/// Whether code for `target` in `format` runs on compute capability `cc`.
fn runs_on_cuda(target: &str, format: Format, cc: (u32, u32)) -> bool {
    let Some((major, minor, specific)) = cuda_arch(target) else {
        return false;
    };
    if specific {
        return (major, minor) == cc;
    }
    match format {
        // SASS runs within its major version, on equal or higher minor versions.
        Format::Cubin => major == cc.0 && minor <= cc.1,
        // PTX is JIT-compiled for any equal or newer capability.
        Format::Ptx => (major, minor) <= cc,
        Format::Hsaco => false,
    }
}

/// The code objects to try, best first, on a CUDA device of compute capability
/// `major.minor`: every cubin that runs there (highest architecture first; `sm_80` runs on 8.x,
/// `sm_90a` only on 9.0), then every PTX that the driver can JIT for it (highest architecture
/// first). Empty when the device is older than every target (e.g. 7.5).
pub fn cuda_candidates(major: u32, minor: u32) -> Vec<CodeObject> {
    let cc = (major, minor);
    let arch_key = |c: &CodeObject| cuda_arch(c.target).map(|(a, b, _)| (a, b));
    let mut out = Vec::new();
    for format in [Format::Cubin, Format::Ptx] {
        let mut objs: Vec<CodeObject> = CODE_OBJECTS
            .iter()
            .filter(|c| c.format == format && runs_on_cuda(c.target, format, cc))
            .copied()
            .collect();
        objs.sort_by_key(|c| std::cmp::Reverse(arch_key(c)));
        out.extend(objs);
    }
    out
}

/// The processor part of a HIP `gcnArchName`: `"gfx942:sramecc+:xnack-"` → `"gfx942"`.
pub fn gcn_processor(gcn_arch_name: &str) -> &str {
    gcn_arch_name
        .split(':')
        .next()
        .unwrap_or("")
        .trim()
        .trim_end_matches('\0')
}

/// The code object for a HIP device, given its `gcnArchName` (e.g. `"gfx942:sramecc+:xnack-"`).
///
/// The code objects are built with `xnack` and `sramecc` left at "any" (rustc sets neither
/// feature), so they load whatever those device modes are; only the processor must match
/// exactly. `None` for processors without an embedded code object.
pub fn hip_code_object(gcn_arch_name: &str) -> Option<CodeObject> {
    let proc = gcn_processor(gcn_arch_name);
    CODE_OBJECTS
        .iter()
        .find(|c| c.format == Format::Hsaco && c.target == proc)
        .copied()
}

/// Parses a manifest (the embedded one is [`manifest`]).
pub fn parse_manifest(json: &str) -> Result<Manifest, serde_json::Error> {
    serde_json::from_str(json)
}

/// The embedded manifest, parsed once; an error names what is wrong with it.
pub fn try_manifest() -> Result<&'static Manifest, &'static str> {
    static PARSED: OnceLock<Result<Manifest, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| {
            parse_manifest(MANIFEST_JSON).map_err(|e| {
                format!("the embedded kernels/manifest.json does not parse ({e}); regenerate it with `cargo xtask build-kernels`")
            })
        })
        .as_ref()
        .map_err(String::as_str)
}

/// The embedded manifest, parsed once.
///
/// # Panics
///
/// If the embedded `manifest.json` does not parse. It is generated by `cargo xtask
/// build-kernels` and checked by this module's tests, so this cannot happen in a tested build;
/// use [`try_manifest`] to get the error instead.
pub fn manifest() -> &'static Manifest {
    match try_manifest() {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(v: &[CodeObject]) -> Vec<String> {
        v.iter()
            .map(|c| format!("{}.{}", c.target, c.format))
            .collect()
    }

    #[test]
    fn cuda_preference_order() {
        assert_eq!(
            targets(&cuda_candidates(8, 0)),
            ["sm_80.cubin", "sm_80.ptx"]
        );
        assert_eq!(
            targets(&cuda_candidates(8, 6)),
            ["sm_80.cubin", "sm_80.ptx"]
        );
        assert_eq!(
            targets(&cuda_candidates(8, 9)),
            ["sm_80.cubin", "sm_80.ptx"]
        );
        assert_eq!(
            targets(&cuda_candidates(9, 0)),
            ["sm_90a.cubin", "sm_90a.ptx", "sm_80.ptx"]
        );
        assert_eq!(targets(&cuda_candidates(10, 0)), ["sm_80.ptx"]);
        assert_eq!(targets(&cuda_candidates(12, 0)), ["sm_80.ptx"]);
        assert!(cuda_candidates(7, 5).is_empty());
    }

    #[test]
    fn hip_arch_names() {
        assert_eq!(gcn_processor("gfx942:sramecc+:xnack-"), "gfx942");
        assert_eq!(gcn_processor("gfx1100"), "gfx1100");
        assert_eq!(gcn_processor(""), "");
        assert_eq!(
            hip_code_object("gfx942:sramecc+:xnack-").unwrap().target,
            "gfx942"
        );
        assert_eq!(hip_code_object("gfx90a:xnack+").unwrap().target, "gfx90a");
        assert_eq!(hip_code_object("gfx1100").unwrap().format, Format::Hsaco);
        assert!(hip_code_object("gfx1101").is_none());
        assert!(hip_code_object("gfx9").is_none());
        assert!(hip_code_object("sm_80").is_none());
    }

    #[test]
    fn embedded_objects_look_right() {
        for c in &CODE_OBJECTS {
            match c.format {
                Format::Hsaco | Format::Cubin => {
                    assert_eq!(&c.bytes[..4], b"\x7fELF", "{}", c.target);
                    assert_eq!(c.bytes.as_ptr() as usize % 64, 0, "{} alignment", c.target);
                }
                Format::Ptx => {
                    assert_eq!(c.bytes.last(), Some(&0), "{} NUL", c.target);
                    let text = std::str::from_utf8(&c.bytes[..c.bytes.len() - 1]).unwrap();
                    assert!(text.contains(&format!(".target {}", c.target)));
                }
            }
        }
    }

    #[test]
    fn embedded_manifest_matches_the_embedded_files() {
        let m = try_manifest().unwrap();
        assert_eq!(m.schema, 1);
        let mut listed = 0;
        for t in &m.targets {
            assert!(!t.kernels.is_empty(), "{}", t.target);
            for f in &t.files {
                let c = CODE_OBJECTS
                    .iter()
                    .find(|c| c.target == t.target && c.format == f.format)
                    .unwrap_or_else(|| panic!("{} is not embedded", f.path));
                let nul = u64::from(f.format == Format::Ptx);
                assert_eq!(c.bytes.len() as u64, f.size + nul, "{}", f.path);
                listed += 1;
            }
            for k in &t.kernels {
                match (&k.resources, t.triple.as_str()) {
                    (Resources::Amd(r), "amdgcn-amd-amdhsa") => {
                        assert_eq!(r.max_flat_workgroup_size, k.threads);
                        let occ = r.occupancy_waves_per_simd.expect("occupancy recorded");
                        assert!((1..=16).contains(&occ), "{}: occupancy {occ}", k.name);
                    }
                    (Resources::Nvidia(_), "nvptx64-nvidia-cuda") => {}
                    other => panic!("{}: unexpected resources {other:?}", k.name),
                }
            }
        }
        assert_eq!(listed, CODE_OBJECTS.len());
        assert!(
            m.target("gfx942")
                .and_then(|t| t.kernel("attn_abi_echo"))
                .is_some()
        );
    }

    #[test]
    fn manifest_without_occupancy_parses() {
        let json = r#"{"schema": 1, "generated_by": "x", "rustc": "r", "ptxas": "p",
            "targets": [{"target": "gfx942", "triple": "amdgcn-amd-amdhsa", "files": [],
            "matrix_instructions": {}, "kernels": [{"name": "k", "threads": 64,
            "matrix_instructions": {}, "resources": {"vendor": "amd", "vgpr": 8, "agpr": 0,
            "sgpr": 16, "lds_bytes": 0, "scratch_bytes": 0, "vgpr_spills": 0,
            "sgpr_spills": 0, "dynamic_stack": false, "max_flat_workgroup_size": 64,
            "wavefront_size": 64}}]}]}"#;
        let m = parse_manifest(json).unwrap();
        let k = m.target("gfx942").unwrap().kernel("k").unwrap();
        match &k.resources {
            Resources::Amd(r) => assert_eq!(r.occupancy_waves_per_simd, None),
            other => panic!("{other:?}"),
        }
        let json = json.replace(
            r#""wavefront_size": 64}"#,
            r#""wavefront_size": 64, "occupancy_waves_per_simd": 5}"#,
        );
        let m = parse_manifest(&json).unwrap();
        match &m.targets[0].kernels[0].resources {
            Resources::Amd(r) => assert_eq!(r.occupancy_waves_per_simd, Some(5)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_manifest_is_an_error() {
        assert!(parse_manifest("{").is_err());
        assert!(parse_manifest(r#"{"schema": 1}"#).is_err());
    }
}
