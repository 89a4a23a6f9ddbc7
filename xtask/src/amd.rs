//! Reading AMD code objects: `llvm-readobj --notes` (kernel resources), `llvm-objdump -d`
//! (matrix-instruction counts) and `llc -pass-remarks-analysis=kernel-resource-usage`
//! (occupancy).

use crate::manifest::AmdResources;
use std::collections::BTreeMap;

/// Matrix-instruction mnemonic prefixes counted in AMD disassembly.
pub const MATRIX_MNEMONICS: [&str; 4] = ["v_mfma", "v_smfmac", "v_wmma", "v_swmmac"];

/// One kernel's entry from the `amdhsa.kernels` metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelNote {
    /// Kernel name (`.name`).
    pub name: String,
    /// The resources read from the note.
    pub resources: AmdResources,
}

/// Parses the YAML that `llvm-readobj --notes` prints for `NT_AMDGPU_METADATA`.
pub fn parse_notes(text: &str) -> Result<Vec<KernelNote>, String> {
    let mut kernels: Vec<BTreeMap<String, String>> = Vec::new();
    let mut in_kernels = false;
    for line in text.lines() {
        if line.starts_with("amdhsa.kernels:") {
            in_kernels = true;
            continue;
        }
        if !in_kernels {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 0 && !line.trim().is_empty() {
            in_kernels = false;
            continue;
        }
        // `  - .key: value` opens a kernel; `    .key: value` continues it (deeper lines are args).
        let kv = if let Some(rest) = line.strip_prefix("  - ") {
            kernels.push(BTreeMap::new());
            rest
        } else if indent == 4 {
            line.trim_start()
        } else {
            continue;
        };
        let Some(kernel) = kernels.last_mut() else {
            continue;
        };
        if let Some((k, v)) = kv.split_once(':')
            && let Some(key) = k.trim().strip_prefix('.')
        {
            kernel.insert(key.to_string(), v.trim().to_string());
        }
    }
    kernels
        .into_iter()
        .map(|k| {
            let name = k
                .get("name")
                .cloned()
                .ok_or("a kernel in amdhsa.kernels has no .name")?;
            let num = |key: &str| -> Result<u32, String> {
                match k.get(key) {
                    None => Ok(0),
                    Some(v) => v
                        .parse()
                        .map_err(|_| format!("kernel {name}: .{key} is not a number: {v}")),
                }
            };
            let resources = AmdResources {
                vgpr: num("vgpr_count")?,
                agpr: num("agpr_count")?,
                sgpr: num("sgpr_count")?,
                lds_bytes: num("group_segment_fixed_size")?,
                scratch_bytes: num("private_segment_fixed_size")?,
                vgpr_spills: num("vgpr_spill_count")?,
                sgpr_spills: num("sgpr_spill_count")?,
                dynamic_stack: k.get("uses_dynamic_stack").is_some_and(|v| v == "true"),
                max_flat_workgroup_size: num("max_flat_workgroup_size")?,
                wavefront_size: num("wavefront_size")?,
                // Not in the note: filled in from the llc remarks ([`parse_occupancy_remarks`]).
                occupancy_waves_per_simd: None,
            };
            Ok(KernelNote { name, resources })
        })
        .collect()
}

/// The `llc` option that makes the AMDGPU backend print every function's resource usage
/// (including its occupancy) as remarks on stderr.
pub const RESOURCE_REMARKS_ARG: &str = "-pass-remarks-analysis=kernel-resource-usage";

/// Whether a line of `llc` output is one of the remarks that [`RESOURCE_REMARKS_ARG`] asks for
/// (so that it is not shown as a warning).
pub fn is_remark(line: &str) -> bool {
    line.trim_start().starts_with("remark: ")
}

/// Parses the `kernel-resource-usage` remarks that `llc` prints with [`RESOURCE_REMARKS_ARG`]
/// into each function's `Occupancy [waves/SIMD]`. The remarks look like
/// ```text
/// remark: <unknown>:0:0: Function Name: attn_fwd_f16_d64
/// remark: <unknown>:0:0:     VGPRs: 218
/// remark: <unknown>:0:0:     Occupancy [waves/SIMD]: 2
/// ```
/// Functions without an occupancy line (LLVM prints it for kernels only) are left out.
pub fn parse_occupancy_remarks(text: &str) -> Result<BTreeMap<String, u32>, String> {
    const NAME: &str = "Function Name:";
    const OCCUPANCY: &str = "Occupancy [waves/SIMD]:";
    let mut out = BTreeMap::new();
    let mut current: Option<&str> = None;
    for line in text.lines().filter(|l| is_remark(l)) {
        if let Some((_, name)) = line.split_once(NAME) {
            current = Some(name.trim());
        } else if let Some((_, value)) = line.split_once(OCCUPANCY) {
            let name = current.ok_or_else(|| format!("llc remark without a function: {line}"))?;
            let waves: u32 = value
                .trim()
                .parse()
                .map_err(|_| format!("{name}: occupancy is not a number: {line}"))?;
            if out.insert(name.to_string(), waves).is_some() {
                return Err(format!("llc reported the occupancy of {name} twice"));
            }
        }
    }
    Ok(out)
}

/// Counts matrix instructions per function symbol in `llvm-objdump -d` output.
pub fn count_matrix_ops(disasm: &str) -> BTreeMap<String, BTreeMap<String, u32>> {
    let mut out: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in disasm.lines() {
        // `0000000000001900 <attn_fwd_f16_d32>:`
        if let Some(open) = line.find(" <")
            && line.ends_with(">:")
            && line[..open].bytes().all(|b| b.is_ascii_hexdigit())
        {
            let name = line[open + 2..line.len() - 2].to_string();
            out.entry(name.clone()).or_insert_with(|| {
                MATRIX_MNEMONICS
                    .iter()
                    .map(|m| (m.to_string(), 0))
                    .collect()
            });
            current = Some(name);
            continue;
        }
        let Some(cur) = &current else { continue };
        let mnemonic = line.split_whitespace().next().unwrap_or("");
        if let Some(m) = MATRIX_MNEMONICS.iter().find(|m| mnemonic.starts_with(**m))
            && let Some(counts) = out.get_mut(cur)
        {
            *counts.entry(m.to_string()).or_default() += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTES: &str = "\
File: k.hsaco
    Notes [
      {
        Owner: AMDGPU
        AMDGPU Metadata: ---
amdhsa.kernels:
  - .agpr_count:     4
    .args:
      - .name:           w0
        .offset:         0
        .size:           8
        .value_kind:     by_value
    .group_segment_fixed_size: 16384
    .max_flat_workgroup_size: 128
    .name:           attn_fwd_f16_d64
    .private_segment_fixed_size: 484
    .sgpr_count:     106
    .sgpr_spill_count: 57
    .symbol:         attn_fwd_f16_d64.kd
    .uses_dynamic_stack: false
    .vgpr_count:     128
    .vgpr_spill_count: 8
    .wavefront_size: 64
  - .agpr_count:     0
    .args:           []
    .name:           echo
    .vgpr_count:     6
amdhsa.target:   amdgcn-amd-amdhsa--gfx942
amdhsa.version:
  - 1
  - 2
...
";

    #[test]
    fn notes_parse() {
        let k = parse_notes(NOTES).unwrap();
        assert_eq!(k.len(), 2);
        assert_eq!(k[0].name, "attn_fwd_f16_d64");
        let r = &k[0].resources;
        assert_eq!((r.vgpr, r.agpr, r.sgpr), (128, 4, 106));
        assert_eq!((r.lds_bytes, r.scratch_bytes), (16384, 484));
        assert_eq!((r.vgpr_spills, r.sgpr_spills), (8, 57));
        assert_eq!((r.max_flat_workgroup_size, r.wavefront_size), (128, 64));
        assert!(!r.dynamic_stack);
        assert_eq!(k[1].name, "echo");
        assert_eq!(k[1].resources.vgpr, 6);
    }

    #[test]
    fn occupancy_remarks_parse() {
        let text = "\
remark: <unknown>:0:0: Function Name: attn_abi_echo
remark: <unknown>:0:0:     TotalSGPRs: 74
remark: <unknown>:0:0:     VGPRs: 6
remark: <unknown>:0:0:     Occupancy [waves/SIMD]: 8
remark: <unknown>:0:0:     LDS Size [bytes/block]: 0
remark: <unknown>:0:0: Function Name: helper
remark: <unknown>:0:0:     VGPRs: 40
remark: k.rs:3:1: Function Name: attn_fwd_f16_d64
remark: k.rs:3:1:     Occupancy [waves/SIMD]: 2
llc: warning: something else
";
        let o = parse_occupancy_remarks(text).unwrap();
        assert_eq!(o.len(), 2, "{o:?}");
        assert_eq!(o["attn_abi_echo"], 8);
        assert_eq!(o["attn_fwd_f16_d64"], 2);
        assert!(!o.contains_key("helper"));
        assert!(is_remark("remark: <unknown>:0:0: Function Name: x"));
        assert!(!is_remark("llc: warning: something else"));
        assert!(parse_occupancy_remarks("remark: x:0:0:     Occupancy [waves/SIMD]: 2").is_err());
        assert!(
            parse_occupancy_remarks(
                "remark: x: Function Name: k\nremark: x:     Occupancy [waves/SIMD]: many"
            )
            .is_err()
        );
    }

    #[test]
    fn matrix_ops_counted_per_symbol() {
        let d = "\
k.hsaco:\tfile format elf64-amdgpu

0000000000001900 <a>:
\tv_mfma_f32_32x32x8_f16 a[0:15], v[0:1], v[2:3], a[0:15]   // 000000001900: D3D48000
\tv_add_f32_e32 v0, v1, v2
\tv_mfma_f32_32x32x8_f16 a[0:15], v[0:1], v[2:3], a[0:15]
0000000000002000 <b>:
\tv_wmma_f32_16x16x16_f16 v[0:7], v[8:15], v[16:23], v[0:7]
";
        let c = count_matrix_ops(d);
        assert_eq!(c["a"]["v_mfma"], 2);
        assert_eq!(c["a"]["v_wmma"], 0);
        assert_eq!(c["b"]["v_wmma"], 1);
    }
}
