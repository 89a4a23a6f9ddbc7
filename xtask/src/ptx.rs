//! Reading PTX text and `ptxas -v` output.

use crate::manifest::NvidiaResources;
use std::collections::BTreeMap;

/// Matrix-instruction prefixes counted in PTX.
pub const MATRIX_MNEMONICS: [&str; 2] = ["mma.sync", "wgmma.mma_async"];

/// The `.version` and `.target` directives of a PTX module.
pub fn version_and_target(ptx: &str) -> Option<(String, String)> {
    let mut version = None;
    let mut target = None;
    for line in ptx.lines().take(64) {
        let mut it = line.split_whitespace();
        match it.next() {
            Some(".version") => version = it.next().map(str::to_string),
            Some(".target") => target = it.next().map(|t| t.trim_end_matches(',').to_string()),
            _ => {}
        }
    }
    Some((version?, target?))
}

/// The text of each `.entry` (kernel) in a PTX module, up to the next top-level function.
pub fn entries(ptx: &str) -> BTreeMap<String, &str> {
    let mut starts: Vec<(usize, Option<String>)> = Vec::new();
    let mut pos = 0;
    for line in ptx.split_inclusive('\n') {
        let t = line.trim_start();
        let is_fn = t.starts_with(".visible .entry ")
            || t.starts_with(".entry ")
            || t.starts_with(".weak .entry ")
            || t.starts_with(".func ")
            || t.starts_with(".visible .func ")
            || t.starts_with(".weak .func ");
        if is_fn {
            let name = t.contains(".entry ").then(|| {
                let after = &t[t.find(".entry ").unwrap_or(0) + ".entry ".len()..];
                after
                    .split(|c: char| c == '(' || c.is_whitespace())
                    .next()
                    .unwrap_or("")
                    .to_string()
            });
            starts.push((pos, name));
        }
        pos += line.len();
    }
    let mut out = BTreeMap::new();
    for (i, (start, name)) in starts.iter().enumerate() {
        if let Some(name) = name {
            let end = starts.get(i + 1).map_or(ptx.len(), |s| s.0);
            out.insert(name.clone(), &ptx[*start..end]);
        }
    }
    out
}

/// The `.maxntid` x-dimension declared for an entry (its text from [`entries`]).
pub fn maxntid(entry: &str) -> Option<u32> {
    let body = entry.find('{').map_or(entry, |b| &entry[..b]);
    let at = body.find(".maxntid")?;
    body[at + ".maxntid".len()..]
        .trim_start()
        .split(|c: char| c == ',' || c.is_whitespace())
        .next()?
        .parse()
        .ok()
}

/// Counts matrix instructions in a piece of PTX.
pub fn count_matrix_ops(ptx: &str) -> BTreeMap<String, u32> {
    let mut counts: BTreeMap<String, u32> = MATRIX_MNEMONICS
        .iter()
        .map(|m| (m.to_string(), 0))
        .collect();
    for line in ptx.lines() {
        let t = line.trim_start();
        // Skip predicates such as `@%p1 mma.sync...`.
        let t = if t.starts_with('@') {
            t.split_once(char::is_whitespace)
                .map_or("", |x| x.1.trim_start())
        } else {
            t
        };
        if let Some(m) = MATRIX_MNEMONICS.iter().find(|m| t.starts_with(**m)) {
            *counts.entry(m.to_string()).or_default() += 1;
        }
    }
    counts
}

/// What `ptxas -v` says about one function.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionInfo {
    /// Whether it is a kernel (`Compiling entry function`).
    pub entry: bool,
    /// Resources.
    pub resources: NvidiaResources,
}

fn number_before(s: &str, suffix: &str) -> Option<u32> {
    let at = s.find(suffix)?;
    s[..at].split_whitespace().last()?.parse().ok()
}

fn quoted(s: &str) -> Option<&str> {
    let a = s.find('\'')? + 1;
    let b = a + s[a..].find('\'')?;
    Some(&s[a..b])
}

/// Parses `ptxas -v` output into per-function resources. Lines look like
/// ```text
/// ptxas info    : Compiling entry function 'k' for 'sm_90a'
/// ptxas info    : Function properties for k
///     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 58 registers, used 1 barriers, 16384 bytes smem, 400 bytes cmem[0]
/// ```
pub fn parse_ptxas_verbose(text: &str) -> BTreeMap<String, FunctionInfo> {
    let mut out: BTreeMap<String, FunctionInfo> = BTreeMap::new();
    let mut entry: Option<String> = None;
    let mut props: Option<String> = None;
    for line in text.lines() {
        let info = line
            .split_once("ptxas info")
            .and_then(|(_, r)| r.split_once(':'))
            .map(|(_, r)| r.trim());
        match info {
            Some(r) if r.starts_with("Compiling entry function") => {
                if let Some(name) = quoted(r) {
                    out.entry(name.to_string()).or_default().entry = true;
                    entry = Some(name.to_string());
                }
            }
            Some(r) if r.starts_with("Function properties for") => {
                let name = r["Function properties for".len()..].trim().to_string();
                out.entry(name.clone()).or_default();
                props = Some(name);
            }
            Some(r) if r.starts_with("Used") => {
                if let Some(f) = entry.as_ref().and_then(|e| out.get_mut(e)) {
                    let res = &mut f.resources;
                    res.registers = number_before(r, "registers").unwrap_or(0);
                    res.barriers = number_before(r, "barriers").unwrap_or(0);
                    res.smem_bytes = number_before(r, "bytes smem").unwrap_or(0);
                    let cumulative = number_before(r, "bytes cumulative stack size").unwrap_or(0);
                    res.stack_bytes = res.stack_bytes.max(cumulative);
                }
            }
            Some(_) => {}
            None if line.contains("bytes stack frame") => {
                if let Some(f) = props.as_ref().and_then(|p| out.get_mut(p)) {
                    let res = &mut f.resources;
                    res.stack_bytes = res
                        .stack_bytes
                        .max(number_before(line, "bytes stack frame").unwrap_or(0));
                    res.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                    res.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
                }
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERBOSE: &str = "\
ptxas info    : 52 bytes gmem
ptxas info    : Compiling entry function 'attn_fwd_f32_d64' for 'sm_90a'
ptxas info    : Function properties for attn_fwd_f32_d64
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 96 registers, used 1 barriers, 16384 bytes smem, 400 bytes cmem[0]
ptxas info    : Compile time = 97.011 ms
ptxas info    : Compiling entry function 'attn_fwd_f32_d32' for 'sm_90a'
ptxas info    : Function properties for attn_fwd_f32_d32
    576 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 72 registers, used 1 barriers, 640 bytes cumulative stack size
ptxas info    : Function properties for _RNCINvhelper
    0 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
";

    #[test]
    fn ptxas_verbose_parses() {
        let f = parse_ptxas_verbose(VERBOSE);
        let a = &f["attn_fwd_f32_d64"];
        assert!(a.entry);
        assert_eq!(a.resources.registers, 96);
        assert_eq!(a.resources.barriers, 1);
        assert_eq!(a.resources.smem_bytes, 16384);
        assert_eq!(a.resources.stack_bytes, 0);
        let b = &f["attn_fwd_f32_d32"].resources;
        assert_eq!((b.registers, b.stack_bytes), (72, 640));
        assert_eq!((b.spill_stores, b.spill_loads), (8, 12));
        let h = &f["_RNCINvhelper"];
        assert!(!h.entry);
        assert_eq!(h.resources.spill_stores, 4);
    }

    const PTX: &str = "\
//
.version 8.0
.target sm_90a
.address_size 64

.func _helper(
\t.param .b64 p
)
{
\tmma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%f1}, {%r1}, {%r2}, {%f1};
}
.visible .entry k1(
\t.param .u64 k1_param_0
)
.maxntid 128, 1, 1
{
\t@%p1 mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%f1}, {%r1}, {%r2}, {%f1};
\tret;
}
.visible .entry k2(
\t.param .u64 k2_param_0
)
.maxntid 32
{
\tret;
}
";

    #[test]
    fn ptx_entries_and_bounds() {
        assert_eq!(
            version_and_target(PTX),
            Some(("8.0".to_string(), "sm_90a".to_string()))
        );
        let e = entries(PTX);
        assert_eq!(e.keys().collect::<Vec<_>>(), ["k1", "k2"]);
        assert_eq!(maxntid(e["k1"]), Some(128));
        assert_eq!(maxntid(e["k2"]), Some(32));
        assert_eq!(count_matrix_ops(e["k1"])["mma.sync"], 1);
        assert_eq!(count_matrix_ops(e["k2"])["mma.sync"], 0);
        assert_eq!(count_matrix_ops(PTX)["mma.sync"], 2);
    }
}
