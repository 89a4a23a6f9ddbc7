//! Textual LLVM IR surgery on the post-LTO module: launch bounds from the `#[kernel]` markers.
//!
//! rustc cannot express `amdgpu-flat-work-group-size` or `nvvm.maxntid`, so `attn-macros` emits
//! a `#[used]` static `ATTN_KERNEL__<name>__threads_<N>[__blocks_<M>]` per kernel. This module finds those
//! markers, gives every marked kernel its own attribute group carrying the launch bounds, drops
//! the markers (and their `@llvm.used` entries) and the embedded-bitcode `module asm` lines.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Symbol prefix of the marker statics emitted by `#[kernel(threads = N)]`.
pub const MARKER_PREFIX: &str = "ATTN_KERNEL__";
const MARKER_THREADS: &str = "__threads_";
const MARKER_BLOCKS: &str = "__blocks_";

/// Which GPU vendor's attributes to add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// `amdgcn-amd-amdhsa`: `amdgpu_kernel` functions.
    Amd,
    /// `nvptx64-nvidia-cuda`: `ptx_kernel` functions.
    Nvidia,
}

impl Vendor {
    fn calling_convention(self) -> &'static str {
        match self {
            Vendor::Amd => "amdgpu_kernel",
            Vendor::Nvidia => "ptx_kernel",
        }
    }

    /// The string attributes that bound a kernel to `threads` threads per block and (NVIDIA)
    /// ask for `blocks` resident blocks per SM.
    fn bound_attrs(self, threads: u32, blocks: u32) -> Vec<(&'static str, String)> {
        match self {
            Vendor::Amd => vec![
                ("amdgpu-flat-work-group-size", format!("1,{threads}")),
                ("amdgpu-ieee", "false".to_string()),
            ],
            // `minctasm` 1 (the default): one block per SM is acceptable, so ptxas may use up to
            // 255 registers instead of trading spills for occupancy; a memory-bound kernel asks
            // for more (`#[kernel(blocks = M)]`), which caps its registers at 65536 / (M · threads).
            Vendor::Nvidia => vec![
                ("nvvm.maxntid", threads.to_string()),
                ("nvvm.minctasm", blocks.to_string()),
            ],
        }
    }
}

/// A kernel and its block size, as declared by `#[kernel(threads = N)]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Marker {
    /// Kernel symbol.
    pub name: String,
    /// Threads per block.
    pub threads: u32,
    /// Resident blocks per SM asked for (NVIDIA's `minctasm`; 1 by default).
    pub blocks: u32,
}

/// Parses a marker symbol name `ATTN_KERNEL__<name>__threads_<N>[__blocks_<M>]`.
pub fn parse_marker_symbol(sym: &str) -> Option<Marker> {
    let rest = sym.strip_prefix(MARKER_PREFIX)?;
    let (name, tail) = rest.rsplit_once(MARKER_THREADS)?;
    let (threads, blocks) = match tail.split_once(MARKER_BLOCKS) {
        Some((t, b)) => (t, b.parse().ok()?),
        None => (tail, 1),
    };
    let threads: u32 = threads.parse().ok()?;
    if name.is_empty() || threads == 0 || blocks == 0 {
        return None;
    }
    Some(Marker {
        name: name.to_string(),
        threads,
        blocks,
    })
}

/// The global symbol defined by a top-level line `@sym = ...`, if any.
fn defined_global(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('@')?;
    let end = rest.find(' ')?;
    rest[end..]
        .trim_start()
        .starts_with('=')
        .then(|| &rest[..end])
}

/// The function name of a `define ... @name(` line.
fn defined_function(line: &str) -> Option<&str> {
    if !line.starts_with("define ") {
        return None;
    }
    let at = line.find(" @")? + 2;
    let rest = &line[at..];
    let end = rest.find('(')?;
    Some(rest[..end].trim_matches('"'))
}

/// Splits `s` at top-level occurrences of `sep`, ignoring separators inside `()`, `[]`, `{}`, `<>`
/// and double-quoted strings.
fn split_top_level(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut in_str, mut start) = (0i32, false, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '(' | '[' | '{' | '<' if !in_str => depth += 1,
            ')' | ']' | '}' | '>' if !in_str => depth -= 1,
            c if c == sep && !in_str && depth == 0 => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// Rewrites an `@llvm.used` / `@llvm.compiler.used` line without the marker entries. Returns
/// `None` when no entry is left (the line is then dropped).
fn strip_used_markers(line: &str) -> Result<Option<String>, String> {
    // `@llvm.used = appending [addrspace(1)] global [13 x ptr] [ptr @a, ...], section "llvm.metadata"`
    let bad = || format!("unrecognised @llvm.used line: {}", truncate(line));
    let g = line.find(" global [").ok_or_else(bad)? + " global ".len();
    let ty_end = g + line[g..].find(']').ok_or_else(bad)? + 1;
    let list_start = ty_end + line[ty_end..].find('[').ok_or_else(bad)?;
    let mut depth = 0i32;
    let mut list_end = None;
    for (i, c) in line[list_start..].char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    list_end = Some(list_start + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let list_end = list_end.ok_or_else(bad)?;
    let entries = split_top_level(&line[list_start + 1..list_end], ',');
    let kept: Vec<&str> = entries
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.contains(&format!("@{MARKER_PREFIX}")))
        .collect();
    if kept.is_empty() {
        return Ok(None);
    }
    let elem_ty = line[g + 1..ty_end - 1]
        .split_once(" x ")
        .map(|(_, t)| t)
        .ok_or_else(bad)?;
    Ok(Some(format!(
        "{}[{} x {}] [{}]{}",
        &line[..g],
        kept.len(),
        elem_ty,
        kept.join(", "),
        &line[list_end + 1..]
    )))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(160) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The key of one attribute inside an attribute group (`"a"="b"` → `a`, `nounwind` → `nounwind`).
fn attr_key(attr: &str) -> &str {
    let a = attr.trim();
    if let Some(rest) = a.strip_prefix('"') {
        return rest.split('"').next().unwrap_or("");
    }
    a.split(['(', '=']).next().unwrap_or(a)
}

/// Result of [`patch_module`].
#[derive(Debug)]
pub struct Patched {
    /// The patched module text.
    pub ir: String,
    /// Kernels found, in definition order, with their block size.
    pub kernels: Vec<Marker>,
}

/// Patches a post-LTO module: drops `module asm` lines and the marker globals, and gives each
/// marked kernel a fresh attribute group with its launch bounds.
///
/// Errors when a kernel has no marker, a marker has no kernel, or the text is not as expected.
pub fn patch_module(ir: &str, vendor: Vendor) -> Result<Patched, String> {
    // Pass 1: markers, attribute groups and the highest group id.
    let mut markers: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut groups: BTreeMap<u32, String> = BTreeMap::new();
    for line in ir.lines() {
        if let Some(sym) = defined_global(line)
            && sym.starts_with(MARKER_PREFIX)
        {
            let m = parse_marker_symbol(sym)
                .ok_or_else(|| format!("malformed kernel marker `{sym}`"))?;
            if markers
                .insert(m.name.clone(), (m.threads, m.blocks))
                .is_some()
            {
                return Err(format!("two markers for kernel `{}`", m.name));
            }
        } else if let Some(rest) = line.strip_prefix("attributes #") {
            let (id, body) = rest
                .split_once(" = { ")
                .ok_or_else(|| format!("unrecognised attribute group: {}", truncate(line)))?;
            let id: u32 = id
                .parse()
                .map_err(|_| format!("bad attribute group id: {}", truncate(line)))?;
            let body = body
                .strip_suffix(" }")
                .or_else(|| body.strip_suffix('}'))
                .ok_or_else(|| format!("unrecognised attribute group: {}", truncate(line)))?;
            groups.insert(id, body.to_string());
        }
    }
    let mut next_id = groups.keys().next_back().map_or(0, |m| m + 1);

    // Pass 2: rewrite.
    let cc = format!(" {} ", vendor.calling_convention());
    let mut out = String::with_capacity(ir.len() + 4096);
    let mut new_groups: Vec<(u32, String)> = Vec::new();
    let mut kernels: Vec<Marker> = Vec::new();
    let mut last_attr_line_end = None;
    for line in ir.lines() {
        if line.starts_with("module asm ") {
            continue;
        }
        if let Some(sym) = defined_global(line) {
            if sym.starts_with(MARKER_PREFIX) {
                continue;
            }
            if sym == "llvm.used" || sym == "llvm.compiler.used" {
                if let Some(l) = strip_used_markers(line)? {
                    out.push_str(&l);
                    out.push('\n');
                }
                continue;
            }
        }
        if let Some(name) = defined_function(line)
            && line.contains(&cc)
        {
            let (threads, blocks) = *markers
                .get(name)
                .ok_or_else(|| format!("kernel `{name}` has no `#[kernel(threads = N)]` marker"))?;
            let tokens: Vec<&str> = line.split(' ').collect();
            let group_pos: Vec<usize> = (0..tokens.len())
                .filter(|&i| {
                    tokens[i].len() > 1
                        && tokens[i].starts_with('#')
                        && tokens[i][1..].bytes().all(|b| b.is_ascii_digit())
                })
                .collect();
            let base = match group_pos.as_slice() {
                [] => String::new(),
                [i] => {
                    let id: u32 = tokens[*i][1..].parse().map_err(|_| "bad group id")?;
                    groups
                        .get(&id)
                        .ok_or_else(|| format!("kernel `{name}` uses undefined group #{id}"))?
                        .clone()
                }
                _ => {
                    return Err(format!(
                        "kernel `{name}`: several attribute groups on define"
                    ));
                }
            };
            let bounds = vendor.bound_attrs(threads, blocks);
            let mut attrs: Vec<String> = split_top_level(&base, ' ')
                .into_iter()
                .filter(|a| !bounds.iter().any(|(k, _)| attr_key(a) == *k))
                .map(str::to_string)
                .collect();
            attrs.extend(bounds.iter().map(|(k, v)| format!("\"{k}\"=\"{v}\"")));
            let id = next_id;
            next_id += 1;
            new_groups.push((id, attrs.join(" ")));
            let new_line = match group_pos.as_slice() {
                [i] => {
                    let mut t = tokens.clone();
                    let tag = format!("#{id}");
                    t[*i] = &tag;
                    t.join(" ")
                }
                _ => {
                    let brace = line
                        .rfind(" {")
                        .ok_or_else(|| format!("kernel `{name}`: no body on define line"))?;
                    format!("{} #{id}{}", &line[..brace], &line[brace..])
                }
            };
            out.push_str(&new_line);
            out.push('\n');
            kernels.push(Marker {
                name: name.to_string(),
                threads,
                blocks,
            });
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.starts_with("attributes #") {
            last_attr_line_end = Some(out.len());
        }
    }
    let defined: BTreeSet<&str> = kernels.iter().map(|k| k.name.as_str()).collect();
    let orphans: Vec<&str> = markers
        .keys()
        .map(String::as_str)
        .filter(|m| !defined.contains(m))
        .collect();
    if !orphans.is_empty() {
        return Err(format!(
            "markers without a `{}` definition: {}",
            vendor.calling_convention(),
            orphans.join(", ")
        ));
    }
    if kernels.is_empty() {
        return Err("no kernels found in the module".to_string());
    }
    let mut text = String::new();
    for (id, body) in &new_groups {
        let _ = writeln!(text, "attributes #{id} = {{ {body} }}");
    }
    match last_attr_line_end {
        Some(pos) => out.insert_str(pos, &text),
        None => {
            out.push('\n');
            out.push_str(&text);
        }
    }
    Ok(Patched { ir: out, kernels })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMD: &str = r#"; ModuleID = 'x'
target triple = "amdgcn-amd-amdhsa"

module asm ".section .llvmbc,\22e\22"
module asm ".ascii \22BC\22"
@ATTN_KERNEL__echo__threads_32 = addrspace(1) constant [4 x i8] c" \00\00\00", align 4
@ATTN_KERNEL__fwd_a__threads_128 = addrspace(1) constant [4 x i8] c"\80\00\00\00", align 4
@ATTN_KERNEL__fwd_b__threads_256 = addrspace(1) constant [4 x i8] c"\00\01\00\00", align 4
@keep = addrspace(1) global i32 0
@llvm.used = appending addrspace(1) global [4 x ptr] [ptr addrspacecast (ptr addrspace(1) @ATTN_KERNEL__echo__threads_32 to ptr), ptr addrspacecast (ptr addrspace(1) @keep to ptr), ptr addrspacecast (ptr addrspace(1) @ATTN_KERNEL__fwd_a__threads_128 to ptr), ptr addrspacecast (ptr addrspace(1) @ATTN_KERNEL__fwd_b__threads_256 to ptr)], section "llvm.metadata"

define amdgpu_kernel void @echo(i64 noundef %w0) unnamed_addr #0 {
  ret void
}
define internal fastcc void @helper(ptr %p) unnamed_addr #2 {
  ret void
}
define amdgpu_kernel void @fwd_a(i64 noundef %w0) unnamed_addr #1 {
  call void @helper(ptr null) #3
  ret void
}
define amdgpu_kernel void @fwd_b(i64 noundef %w0) unnamed_addr #1 {
  ret void
}
attributes #0 = { nounwind "target-cpu"="gfx942" }
attributes #1 = { convergent memory(write, inaccessiblemem: none) "amdgpu-flat-work-group-size"="1,1024" "target-cpu"="gfx942" }
attributes #2 = { nounwind }
attributes #3 = { nounwind }

!0 = !{}
"#;

    #[test]
    fn marker_symbols_parse() {
        let m = parse_marker_symbol("ATTN_KERNEL__attn_fwd_f16_d64__threads_128").unwrap();
        assert_eq!(m.name, "attn_fwd_f16_d64");
        assert_eq!(m.threads, 128);
        assert!(parse_marker_symbol("ATTN_KERNEL__x__threads_").is_none());
        let m = parse_marker_symbol("ATTN_KERNEL__attn_fwd_f16_d64_decode__threads_128__blocks_3")
            .unwrap();
        assert_eq!(
            (m.name.as_str(), m.threads, m.blocks),
            ("attn_fwd_f16_d64_decode", 128, 3)
        );
        assert_eq!(m.blocks, 3);
        assert!(parse_marker_symbol("ATTN_KERNEL__x__threads_128__blocks_0").is_none());
        assert!(parse_marker_symbol("ATTN_KERNEL__x__threads_128__blocks_").is_none());
        assert!(parse_marker_symbol("ATTN_KERNEL____threads_4").is_none());
        assert!(parse_marker_symbol("OTHER__x__threads_4").is_none());
    }

    #[test]
    fn amd_kernels_get_their_own_groups() {
        let p = patch_module(AMD, Vendor::Amd).unwrap();
        let names: Vec<_> = p
            .kernels
            .iter()
            .map(|k| (k.name.as_str(), k.threads))
            .collect();
        assert_eq!(names, [("echo", 32), ("fwd_a", 128), ("fwd_b", 256)]);
        let ir = &p.ir;
        assert!(!ir.contains("module asm"));
        assert!(!ir.contains("@ATTN_KERNEL__"));
        assert!(ir.contains(
            "@llvm.used = appending addrspace(1) global [1 x ptr] [ptr addrspacecast (ptr addrspace(1) @keep to ptr)], section \"llvm.metadata\"\n"
        ));
        assert!(ir.contains("define amdgpu_kernel void @echo(i64 noundef %w0) unnamed_addr #4 {"));
        assert!(ir.contains("define amdgpu_kernel void @fwd_a(i64 noundef %w0) unnamed_addr #5 {"));
        assert!(ir.contains("define amdgpu_kernel void @fwd_b(i64 noundef %w0) unnamed_addr #6 {"));
        // Non-kernels and call sites keep their groups; old groups stay.
        assert!(ir.contains("@helper(ptr %p) unnamed_addr #2 {"));
        assert!(ir.contains("call void @helper(ptr null) #3"));
        assert!(ir.contains("attributes #1 = { convergent"));
        assert!(ir.contains(
            "attributes #3 = { nounwind }\nattributes #4 = { nounwind \"target-cpu\"=\"gfx942\" \"amdgpu-flat-work-group-size\"=\"1,32\" \"amdgpu-ieee\"=\"false\" }\n"
        ));
        // The pre-existing flat-work-group-size is replaced, not duplicated.
        assert!(ir.contains(
            "attributes #5 = { convergent memory(write, inaccessiblemem: none) \"target-cpu\"=\"gfx942\" \"amdgpu-flat-work-group-size\"=\"1,128\" \"amdgpu-ieee\"=\"false\" }"
        ));
        assert!(ir.contains("\"amdgpu-flat-work-group-size\"=\"1,256\""));
        assert!(ir.ends_with("!0 = !{}\n"));
    }

    #[test]
    fn nvptx_bounds_and_used_dropped_entirely() {
        let ir = "@ATTN_KERNEL__k__threads_64 = constant [4 x i8] c\"@\\00\\00\\00\", align 4\n\
                  @llvm.used = appending global [1 x ptr] [ptr @ATTN_KERNEL__k__threads_64], section \"llvm.metadata\"\n\
                  define ptx_kernel void @k(i64 %w0) {\n  ret void\n}\n";
        let p = patch_module(ir, Vendor::Nvidia).unwrap();
        assert!(!p.ir.contains("llvm.used"));
        assert!(p.ir.contains("define ptx_kernel void @k(i64 %w0) #0 {"));
        assert!(
            p.ir.contains("attributes #0 = { \"nvvm.maxntid\"=\"64\" \"nvvm.minctasm\"=\"1\" }")
        );
    }

    #[test]
    fn missing_or_orphan_markers_are_errors() {
        let unmarked =
            "define ptx_kernel void @k(i64 %w0) #0 {\n ret void\n}\nattributes #0 = { nounwind }\n";
        assert!(
            patch_module(unmarked, Vendor::Nvidia)
                .unwrap_err()
                .contains("no `#[kernel")
        );
        let orphan = "@ATTN_KERNEL__gone__threads_64 = constant i32 64\n";
        assert!(
            patch_module(orphan, Vendor::Nvidia)
                .unwrap_err()
                .contains("gone")
        );
    }

    #[test]
    fn attribute_keys() {
        assert_eq!(attr_key("\"amdgpu-ieee\"=\"true\""), "amdgpu-ieee");
        assert_eq!(attr_key("memory(none)"), "memory");
        assert_eq!(attr_key("nounwind"), "nounwind");
        assert_eq!(
            split_top_level("a memory(write, x: none) \"k\"=\"v w\"", ' '),
            ["a", "memory(write, x: none)", "\"k\"=\"v w\""]
        );
    }
}
