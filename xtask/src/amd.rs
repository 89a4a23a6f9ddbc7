//! Reading AMD code objects: `llvm-readobj --notes` (kernel resources) and `llvm-objdump -d`
//! (matrix-instruction counts).

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
            };
            Ok(KernelNote { name, resources })
        })
        .collect()
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
