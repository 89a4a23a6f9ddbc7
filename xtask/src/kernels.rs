//! `cargo xtask build-kernels`: `attn-kernels` → post-LTO LLVM IR → launch bounds → `llc` →
//! `.hsaco` (AMD, linked by `rust-lld`) or `.ptx` + `.cubin` (NVIDIA, `ptxas`), plus
//! `manifest.json` with every kernel's resources, in `crates/attn-host/kernels/`.
//!
//! Per target the cargo build uses its own `target/kernels/<cpu>/` folder (kept between runs);
//! intermediates (patched IR, objects, disassembly, notes, ptxas log) go to
//! `target/kernels/<cpu>/xtask/` for inspection.

use crate::ir::{self, Vendor};
use crate::manifest::{self, Manifest, Resources};
use crate::toolchain::{self, Ptxas, Toolchain};
use crate::{Exit, amd, ptx};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Options of `cargo xtask build-kernels`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Rebuild into a temporary folder and fail if the committed artifacts differ.
    #[arg(long)]
    pub check: bool,
    /// Targets built at the same time (each cargo build also uses its own jobs).
    #[arg(short, long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub jobs: u32,
    /// Build only these targets (e.g. `--only gfx1100`) and print their resource table: a
    /// quick look at a policy change. Writes and compares no artifact; the code objects are
    /// left in `target/kernels/only/` (for `attn --code-object`).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// One GPU target.
struct Spec {
    cpu: &'static str,
    triple: &'static str,
    vendor: Vendor,
    /// Extra `--cfg` flags for the kernels.
    cfgs: &'static [&'static str],
    /// Extra `llc -mattr`.
    mattr: Option<&'static str>,
    /// Extra LLVM options for rustc's optimisation pipeline.
    llvm_args: &'static [&'static str],
}

/// Unroll every constant-trip loop over register tiles, as FlashAttention's CUDA code does with
/// `#pragma unroll`: a rolled loop over accumulator fragments indexes them at run time, which
/// puts them in local memory / scratch. (LLVM's NVPTX default leaves such loops rolled; AMDGPU's
/// private-array heuristic misses the larger bodies.) Loops that must stay rolled, like the
/// reduction over the head dim, have run-time trip counts in the kernel source.
const UNROLL_ARGS: &[&str] = &["-unroll-threshold=8000"];

const TARGETS: [Spec; 5] = [
    Spec {
        cpu: "gfx90a",
        triple: "amdgcn-amd-amdhsa",
        vendor: Vendor::Amd,
        cfgs: &["gfx9"],
        mattr: None,
        llvm_args: UNROLL_ARGS,
    },
    Spec {
        cpu: "gfx942",
        triple: "amdgcn-amd-amdhsa",
        vendor: Vendor::Amd,
        cfgs: &["gfx9"],
        mattr: None,
        llvm_args: UNROLL_ARGS,
    },
    Spec {
        cpu: "gfx1100",
        triple: "amdgcn-amd-amdhsa",
        vendor: Vendor::Amd,
        cfgs: &["gfx11"],
        mattr: None,
        llvm_args: UNROLL_ARGS,
    },
    Spec {
        cpu: "sm_80",
        triple: "nvptx64-nvidia-cuda",
        vendor: Vendor::Nvidia,
        cfgs: &[],
        mattr: None,
        llvm_args: UNROLL_ARGS,
    },
    Spec {
        cpu: "sm_90a",
        triple: "nvptx64-nvidia-cuda",
        vendor: Vendor::Nvidia,
        cfgs: &[],
        mattr: Some("+ptx80"),
        llvm_args: UNROLL_ARGS,
    },
];

/// Folder of the committed artifacts, relative to the workspace root.
pub const ARTIFACT_DIR: &str = "crates/attn-host/kernels";
/// File name of the manifest.
pub const MANIFEST: &str = "manifest.json";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// Progress display: bars on a terminal, plain log lines otherwise (CI).
struct Ui {
    multi: MultiProgress,
    tty: bool,
}

impl Ui {
    fn new() -> Self {
        let tty = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Self { multi, tty }
    }

    fn log(&self, line: &str) {
        if self.tty {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    fn spinner(&self, prefix: &str) -> ProgressBar {
        let pb = self.multi.add(ProgressBar::new_spinner());
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner:.cyan} {prefix:>8.bold} {wide_msg} {elapsed:>4}",
            )
            .expect("valid template"),
        );
        pb.set_prefix(prefix.to_string());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    }
}

/// Everything one target produced.
struct Built {
    target: manifest::Target,
    /// Problems outside the kernels themselves (e.g. spilling device functions).
    extra_problems: Vec<String>,
    seconds: f64,
}

/// Runs a command, returning stdout+stderr, or a failure naming the command and its output.
fn run_tool(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!(
            "{what} failed ({}):\n{}",
            out.status,
            tail.join("\n")
        ))
    }
}

/// Shows what a normally silent tool printed (warnings), one line each.
fn show_output(ui: &Ui, cpu: &str, tool: &str, text: &str) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        ui.log(&format!("[{cpu}] {tool}: {line}"));
    }
}

fn newest_ll(deps: &Path) -> Result<PathBuf, String> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in std::fs::read_dir(deps).map_err(|e| format!("{}: {e}", deps.display()))? {
        let Ok(e) = e else { continue };
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("attn_kernels") && name.ends_with(".ll") {
            let t = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                best = Some((t, p));
            }
        }
    }
    best.map(|b| b.1)
        .ok_or_else(|| format!("no attn_kernels*.ll in {}", deps.display()))
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

fn file_entry(out: &Path, name: &str, format: manifest::Format) -> Result<manifest::File, String> {
    let size = std::fs::metadata(out.join(name))
        .map_err(|e| format!("{name}: {e}"))?
        .len();
    Ok(manifest::File {
        path: name.to_string(),
        format,
        size,
    })
}

fn build_target(
    spec: &Spec,
    root: &Path,
    out: &Path,
    tc: &Toolchain,
    ptxas: &Ptxas,
    pb: &ProgressBar,
    ui: &Ui,
) -> Result<Built, String> {
    let start = Instant::now();
    let step = |msg: &str| {
        pb.set_message(msg.to_string());
        if !ui.tty {
            eprintln!("[{}] {msg}", spec.cpu);
        }
    };
    let target_dir = root.join("target/kernels").join(spec.cpu);
    let work = target_dir.join("xtask");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;

    // 1. cargo: fully optimised, LTO'd LLVM IR of the kernel crate.
    step("cargo rustc (LLVM IR)");
    let mut rustflags = format!(
        "-Ctarget-cpu={} -Zunstable-options -Cpanic=immediate-abort",
        spec.cpu
    );
    for cfg in spec.cfgs {
        rustflags.push_str(" --cfg ");
        rustflags.push_str(cfg);
    }
    for arg in spec.llvm_args {
        rustflags.push_str(" -Cllvm-args=");
        rustflags.push_str(arg);
    }
    let crate_type = match spec.vendor {
        Vendor::Amd => "cdylib",
        Vendor::Nvidia => "staticlib",
    };
    let mut cargo = Command::new("cargo");
    cargo
        .arg(format!("+{}", tc.name))
        .args(["rustc", "-p", "attn-kernels", "--profile", "kernels"])
        .args(["--target", spec.triple, "-Zbuild-std=core"])
        .args(["--crate-type", crate_type, "--", "--emit=llvm-ir"])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", &rustflags)
        .env("CARGO_TERM_COLOR", "never");
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "CARGO",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cargo.env_remove(var);
    }
    run_tool(
        &mut cargo,
        &format!("cargo build of attn-kernels for {}", spec.cpu),
    )?;
    let ll = newest_ll(&target_dir.join(spec.triple).join("kernels/deps"))?;

    // 2. Launch bounds.
    step("patching IR (launch bounds)");
    let patched = ir::patch_module(&read(&ll)?, spec.vendor)
        .map_err(|e| format!("{}: {}: {e}", spec.cpu, ll.display()))?;
    let patched_ll = work.join(format!("{}.patched.ll", spec.cpu));
    write(&patched_ll, &patched.ir)?;
    let threads: BTreeMap<&str, u32> = patched
        .kernels
        .iter()
        .map(|k| (k.name.as_str(), k.threads))
        .collect();

    // Runs llc on the patched IR. What it prints is shown as warnings, except the remarks
    // (AMD: per-kernel resource usage, asked for to get the occupancy), which it returns.
    let llc = |filetype: &str, dst: &Path| -> Result<String, String> {
        let mut c = Command::new(tc.tool("llc"));
        c.arg("-O3")
            .arg(format!("-mtriple={}", spec.triple))
            .arg(format!("-mcpu={}", spec.cpu))
            .arg(format!("-filetype={filetype}"));
        if let Some(m) = spec.mattr {
            c.arg(format!("-mattr={m}"));
        }
        if spec.vendor == Vendor::Amd {
            c.arg(amd::RESOURCE_REMARKS_ARG);
        }
        c.arg(&patched_ll).arg("-o").arg(dst);
        let text = run_tool(&mut c, &format!("llc for {}", spec.cpu))?;
        let (remarks, other): (Vec<&str>, Vec<&str>) =
            text.lines().partition(|l| amd::is_remark(l));
        show_output(ui, spec.cpu, "llc", &other.join("\n"));
        let mut remarks = remarks.join("\n");
        remarks.push('\n');
        Ok(remarks)
    };

    let mut kernels = Vec::new();
    let mut extra_problems = Vec::new();
    let (files, ptx_version, totals) = match spec.vendor {
        Vendor::Amd => {
            step("llc (object)");
            let obj = work.join(format!("{}.o", spec.cpu));
            let remarks = llc("obj", &obj)?;
            write(&work.join(format!("{}.remarks.txt", spec.cpu)), &remarks)?;
            let occupancy =
                amd::parse_occupancy_remarks(&remarks).map_err(|e| format!("{}: {e}", spec.cpu))?;
            step("rust-lld");
            let name = format!("{}.hsaco", spec.cpu);
            let hsaco = out.join(&name);
            let mut lld = Command::new(tc.tool("rust-lld"));
            lld.args(["-flavor", "gnu", "-shared", "--no-undefined"])
                .arg(&obj)
                .arg("-o")
                .arg(&hsaco);
            show_output(ui, spec.cpu, "rust-lld", &run_tool(&mut lld, "rust-lld")?);

            step("reading notes and disassembly");
            let mut readobj = Command::new(tc.tool("llvm-readobj"));
            readobj.arg("--notes").arg(&hsaco);
            let notes = run_tool(&mut readobj, "llvm-readobj --notes")?;
            write(&work.join(format!("{}.notes.txt", spec.cpu)), &notes)?;
            let mut objdump = Command::new(tc.tool("llvm-objdump"));
            objdump
                .arg("-d")
                .arg(format!("--mcpu={}", spec.cpu))
                .arg(&hsaco);
            let disasm = run_tool(&mut objdump, "llvm-objdump -d")?;
            write(&work.join(format!("{}.s", spec.cpu)), &disasm)?;
            let counts = amd::count_matrix_ops(&disasm);
            let mut totals: BTreeMap<String, u32> = amd::MATRIX_MNEMONICS
                .iter()
                .map(|m| (m.to_string(), 0))
                .collect();
            for c in counts.values() {
                for (k, v) in c {
                    *totals.entry(k.clone()).or_default() += v;
                }
            }
            let notes = amd::parse_notes(&notes).map_err(|e| format!("{}: {e}", spec.cpu))?;
            for mut n in notes {
                let t = *threads.get(n.name.as_str()).ok_or_else(|| {
                    format!("{}: code object has unexpected kernel {}", spec.cpu, n.name)
                })?;
                if n.resources.max_flat_workgroup_size != t {
                    return Err(format!(
                        "{}: {} has max_flat_workgroup_size {} but threads = {t}: the launch bound \
                         was not applied",
                        spec.cpu, n.name, n.resources.max_flat_workgroup_size
                    ));
                }
                n.resources.occupancy_waves_per_simd =
                    Some(*occupancy.get(&n.name).ok_or_else(|| {
                        format!(
                            "{}: llc printed no occupancy remark for kernel {}",
                            spec.cpu, n.name
                        )
                    })?);
                kernels.push(manifest::Kernel {
                    matrix_instructions: counts.get(&n.name).cloned().unwrap_or_default(),
                    name: n.name,
                    threads: t,
                    resources: Resources::Amd(n.resources),
                });
            }
            (
                vec![file_entry(out, &name, manifest::Format::Hsaco)?],
                None,
                totals,
            )
        }
        Vendor::Nvidia => {
            step("llc (PTX)");
            let ptx_name = format!("{}.ptx", spec.cpu);
            let ptx_path = out.join(&ptx_name);
            llc("asm", &ptx_path)?;
            let text = read(&ptx_path)?;
            let (version, target) = ptx::version_and_target(&text)
                .ok_or_else(|| format!("{}: no .version/.target in the PTX", spec.cpu))?;
            if target != spec.cpu {
                return Err(format!("{}: PTX says .target {target}", spec.cpu));
            }
            let entries = ptx::entries(&text);
            for (name, t) in &threads {
                let body = entries
                    .get(*name)
                    .ok_or_else(|| format!("{}: kernel {name} missing from PTX", spec.cpu))?;
                if ptx::maxntid(body) != Some(*t) {
                    return Err(format!(
                        "{}: {name} has .maxntid {:?}, expected {t}: the launch bound was not \
                         applied",
                        spec.cpu,
                        ptx::maxntid(body)
                    ));
                }
            }

            step("ptxas");
            let cubin_name = format!("{}.cubin", spec.cpu);
            let mut c = Command::new(&ptxas.path);
            c.arg(format!("-arch={}", spec.cpu))
                .args(["-O3", "-v"])
                .arg(&ptx_path)
                .arg("-o")
                .arg(out.join(&cubin_name));
            let log = run_tool(&mut c, "ptxas")?;
            write(&work.join(format!("{}.ptxas.txt", spec.cpu)), &log)?;
            for w in log.lines().filter(|l| l.contains("ptxas warning")) {
                ui.log(&format!("[{}] {w}", spec.cpu));
            }
            let infos = ptx::parse_ptxas_verbose(&log);
            for (name, info) in &infos {
                if info.entry {
                    continue;
                }
                let r = &info.resources;
                if r.spill_stores > 0 || r.spill_loads > 0 {
                    extra_problems.push(format!(
                        "{}: device function {name}: {} B spill stores, {} B spill loads",
                        spec.cpu, r.spill_stores, r.spill_loads
                    ));
                }
            }
            for (name, t) in &threads {
                let info = infos.get(*name).filter(|i| i.entry).ok_or_else(|| {
                    format!("{}: ptxas -v says nothing about kernel {name}", spec.cpu)
                })?;
                kernels.push(manifest::Kernel {
                    name: name.to_string(),
                    threads: *t,
                    resources: Resources::Nvidia(info.resources.clone()),
                    matrix_instructions: ptx::count_matrix_ops(entries[*name]),
                });
            }
            let files = vec![
                file_entry(out, &cubin_name, manifest::Format::Cubin)?,
                file_entry(out, &ptx_name, manifest::Format::Ptx)?,
            ];
            (files, Some(version), ptx::count_matrix_ops(&text))
        }
    };
    kernels.sort_by(|a, b| a.name.cmp(&b.name));
    if kernels.len() != threads.len() {
        return Err(format!(
            "{}: {} kernels in the IR but {} in the output",
            spec.cpu,
            threads.len(),
            kernels.len()
        ));
    }
    Ok(Built {
        target: manifest::Target {
            target: spec.cpu.to_string(),
            triple: spec.triple.to_string(),
            ptx_version,
            files,
            matrix_instructions: totals,
            kernels,
        },
        extra_problems,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Builds every target into `out`, writing the artifacts and the manifest there.
fn build_all(
    root: &Path,
    out: &Path,
    tc: &Toolchain,
    ptxas: &Ptxas,
    specs: &[&Spec],
    jobs: usize,
    ui: &Ui,
) -> Result<(Manifest, Vec<String>), Exit> {
    let total = ui.multi.add(ProgressBar::new(specs.len() as u64));
    total.set_style(
        ProgressStyle::with_template("{prefix:>10.bold} [{bar:30}] {pos}/{len} targets {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    total.set_prefix("kernels");
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Built, String>>>> =
        Mutex::new((0..specs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(specs.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&spec) = specs.get(i) else { break };
                    let pb = ui.spinner(spec.cpu);
                    let r = build_target(spec, root, out, tc, ptxas, &pb, ui);
                    match &r {
                        Ok(b) => {
                            pb.finish_with_message(format!("done in {:.0} s", b.seconds));
                            if !ui.tty {
                                eprintln!("[{}] done in {:.0} s", spec.cpu, b.seconds);
                            }
                        }
                        Err(_) => pb.finish_with_message("FAILED"),
                    }
                    total.inc(1);
                    results.lock().expect("no panics while holding the lock")[i] = Some(r);
                }
            });
        }
    });
    total.finish();
    let mut targets = Vec::new();
    let mut errors = Vec::new();
    let mut extra = Vec::new();
    for r in results.into_inner().expect("threads joined") {
        match r {
            Some(Ok(b)) => {
                targets.push(b.target);
                extra.extend(b.extra_problems);
            }
            Some(Err(e)) => errors.push(e),
            None => errors.push("a target was not built".to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(Exit::failed(errors.join("\n\n")));
    }
    let manifest = Manifest {
        schema: manifest::SCHEMA,
        generated_by: "cargo xtask build-kernels".to_string(),
        rustc: tc.rustc_version.clone(),
        ptxas: ptxas.version.clone(),
        targets,
    };
    let mut json = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Exit::failed(format!("serialising the manifest: {e}")))?;
    json.push('\n');
    write(&out.join(MANIFEST), json).map_err(Exit::failed)?;
    Ok((manifest, extra))
}

/// Prints the resource table; returns the list of problems: resource problems (spills,
/// scratch/stack use) and 16-bit forward kernels without their target's matrix instruction
/// ([`manifest::required_matrix_instruction`]).
fn report(manifest: &Manifest, extra: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    println!();
    println!(
        "{:<8} {:<20} {:>4} {:>5} {:>5} {:>5} {:>7} {:>8} {:>11} {:>11} {:>4}  problems",
        "target",
        "kernel",
        "thr",
        "vgpr",
        "agpr",
        "sgpr",
        "lds",
        "scratch",
        "spill v/s",
        "mfma/wmma",
        "occ"
    );
    for t in manifest
        .targets
        .iter()
        .filter(|t| t.triple.starts_with("amdgcn"))
    {
        for k in &t.kernels {
            let Resources::Amd(r) = &k.resources else {
                continue;
            };
            let errors = k.problems(&t.target);
            let cell = problem_cell(&errors, &k.notes(&t.target));
            let m = &k.matrix_instructions;
            let mfma =
                m.get("v_mfma").copied().unwrap_or(0) + m.get("v_smfmac").copied().unwrap_or(0);
            let wmma =
                m.get("v_wmma").copied().unwrap_or(0) + m.get("v_swmmac").copied().unwrap_or(0);
            println!(
                "{:<8} {:<20} {:>4} {:>5} {:>5} {:>5} {:>7} {:>8} {:>11} {:>11} {:>4}  {}",
                t.target,
                k.name,
                k.threads,
                r.vgpr,
                r.agpr,
                r.sgpr,
                r.lds_bytes,
                r.scratch_bytes,
                format!("{}/{}", r.vgpr_spills, r.sgpr_spills),
                format!("{mfma}/{wmma}"),
                r.occupancy_waves_per_simd
                    .map_or_else(|| "-".to_string(), |o| o.to_string()),
                cell
            );
            problems.extend(
                errors
                    .into_iter()
                    .map(|p| format!("{} {}: {p}", t.target, k.name)),
            );
        }
    }
    println!(
        "occ: waves per SIMD (LLVM's occupancy, register-limited only: the kernels' LDS is \
         dynamic, sized at launch)"
    );
    println!();
    println!(
        "{:<8} {:<20} {:>4} {:>5} {:>7} {:>8} {:>11} {:>8} {:>9}  problems",
        "target", "kernel", "thr", "regs", "smem", "stack", "spill st/ld", "barriers", "mma/wgmma"
    );
    for t in manifest
        .targets
        .iter()
        .filter(|t| t.triple.starts_with("nvptx"))
    {
        for k in &t.kernels {
            let Resources::Nvidia(r) = &k.resources else {
                continue;
            };
            let errors = k.problems(&t.target);
            let cell = problem_cell(&errors, &k.notes(&t.target));
            let m = &k.matrix_instructions;
            println!(
                "{:<8} {:<20} {:>4} {:>5} {:>7} {:>8} {:>11} {:>8} {:>9}  {}",
                t.target,
                k.name,
                k.threads,
                r.registers,
                r.smem_bytes,
                r.stack_bytes,
                format!("{}/{}", r.spill_stores, r.spill_loads),
                r.barriers,
                format!(
                    "{}/{}",
                    m.get("mma.sync").copied().unwrap_or(0),
                    m.get("wgmma.mma_async").copied().unwrap_or(0)
                ),
                cell
            );
            problems.extend(
                errors
                    .into_iter()
                    .map(|p| format!("{} {}: {p}", t.target, k.name)),
            );
        }
    }
    println!();
    for t in &manifest.targets {
        let files: Vec<String> = t
            .files
            .iter()
            .map(|f| format!("{} ({} B)", f.path, f.size))
            .collect();
        let m: Vec<String> = t
            .matrix_instructions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!(
            "{:<8} {}{}; matrix instructions: {}",
            t.target,
            files.join(", "),
            t.ptx_version
                .as_ref()
                .map(|v| format!(", PTX ISA {v}"))
                .unwrap_or_default(),
            m.join(", ")
        );
    }
    problems.extend(extra.iter().cloned());
    problems
}

fn generated_files(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut files = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            let generated = name == MANIFEST
                || [".hsaco", ".cubin", ".ptx"]
                    .iter()
                    .any(|ext| name.ends_with(ext));
            if generated && p.is_file() {
                files.insert(name, p);
            }
        }
    }
    files
}

/// Compares the generated files of two folders; returns one line per difference.
fn compare(committed: &Path, rebuilt: &Path) -> Vec<String> {
    let a = generated_files(committed);
    let b = generated_files(rebuilt);
    let mut diffs = Vec::new();
    for (name, pb) in &b {
        match a.get(name) {
            None => diffs.push(format!("{name}: not committed (new)")),
            Some(pa) => {
                let (x, y) = (std::fs::read(pa).ok(), std::fs::read(pb).ok());
                if x != y {
                    diffs.push(format!(
                        "{name}: differs (committed {} B, rebuilt {} B)",
                        x.map_or(0, |v| v.len()),
                        y.map_or(0, |v| v.len())
                    ));
                }
            }
        }
    }
    for name in a.keys().filter(|n| !b.contains_key(*n)) {
        diffs.push(format!("{name}: committed but no longer produced"));
    }
    diffs
}

/// The recorded `rustc` version in a committed manifest, if readable.
fn committed_rustc(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("rustc")?.as_str().map(str::to_string)
}

/// Entry point of `cargo xtask build-kernels`.
pub fn run(args: &Args) -> Result<(), Exit> {
    let start = Instant::now();
    let root = workspace_root();
    let dest = root.join(ARTIFACT_DIR);
    let tc = toolchain::detect()?;
    if args.check
        && let Some(recorded) = committed_rustc(&dest)
        && recorded != tc.rustc_version
    {
        return Err(Exit::toolchain(format!(
            "the committed kernels were built by `{recorded}` but `+{}` is `{}`; the artifacts \
             are only reproducible with the same compiler. Install that nightly (its channel \
             date is usually the commit date + 1 day, e.g. `rustup toolchain install \
             nightly-YYYY-MM-DD --component rust-src,llvm-tools`) and set \
             ATTN_KERNEL_TOOLCHAIN to it.",
            tc.name, tc.rustc_version
        )));
    }
    let ui = Ui::new();
    ui.log(&format!(
        "building kernels with {} ({} target(s) at a time)",
        tc.rustc_version, args.jobs
    ));
    let ptxas = toolchain::ptxas(&root, &|m| ui.log(m))?;
    let tmp = tempfile::Builder::new()
        .prefix("attn-kernels-")
        .tempdir()
        .map_err(|e| Exit::failed(format!("creating a temporary folder: {e}")))?;
    let specs: Vec<&Spec> = TARGETS
        .iter()
        .filter(|t| args.only.is_empty() || args.only.iter().any(|o| o == t.cpu))
        .collect();
    if specs.is_empty() {
        return Err(Exit::failed(format!(
            "--only {:?} names no target (targets: {})",
            args.only,
            TARGETS.map(|t| t.cpu).join(", ")
        )));
    }
    let (manifest, extra) = build_all(
        &root,
        tmp.path(),
        &tc,
        &ptxas,
        &specs,
        args.jobs as usize,
        &ui,
    )?;
    ui.multi.clear().ok();

    let problems = report(&manifest, &extra);
    let elapsed = start.elapsed().as_secs_f64();
    if !args.only.is_empty() {
        // The code objects stay under target/ (for `attn --code-object`), not in the artifacts.
        let keep = root.join("target/kernels/only");
        std::fs::create_dir_all(&keep)
            .map_err(|e| Exit::failed(format!("creating {}: {e}", keep.display())))?;
        let entries = std::fs::read_dir(tmp.path())
            .map_err(|e| Exit::failed(format!("reading the build folder: {e}")))?;
        for e in entries.flatten() {
            let to = keep.join(e.file_name());
            std::fs::copy(e.path(), &to)
                .map_err(|err| Exit::failed(format!("copying to {}: {err}", to.display())))?;
        }
        println!(
            "
--only: built {} target(s) in {elapsed:.0} s; artifacts not written (the code objects are \
             in {})",
            specs.len(),
            keep.display()
        );
        return if problems.is_empty() {
            Ok(())
        } else {
            Err(Exit {
                code: Exit::RESOURCES,
                message: format!(
                    "{} kernel problem(s):\n  {}",
                    problems.len(),
                    problems.join("\n  ")
                ),
            })
        };
    }
    let mut mismatch = Vec::new();
    if args.check {
        mismatch = compare(&dest, tmp.path());
        if mismatch.is_empty() {
            println!("\ncheck: {ARTIFACT_DIR}/ matches a fresh rebuild ({elapsed:.0} s)");
        } else {
            println!("\ncheck: {ARTIFACT_DIR}/ differs from a fresh rebuild:");
            for d in &mismatch {
                println!("  {d}");
            }
            println!("run `cargo xtask build-kernels` and commit the result");
        }
    } else {
        std::fs::create_dir_all(&dest)
            .map_err(|e| Exit::failed(format!("{}: {e}", dest.display())))?;
        for (name, path) in generated_files(&dest) {
            if !tmp.path().join(&name).exists() {
                std::fs::remove_file(&path)
                    .map_err(|e| Exit::failed(format!("removing {}: {e}", path.display())))?;
            }
        }
        for (name, path) in generated_files(tmp.path()) {
            // Read and write (not copy) so that the committed files are plain 0644 files even
            // though the linker marks the code objects executable.
            let bytes = std::fs::read(&path)
                .map_err(|e| Exit::failed(format!("reading {}: {e}", path.display())))?;
            let to = dest.join(&name);
            write(&to, bytes).map_err(Exit::failed)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644))
                    .map_err(|e| Exit::failed(format!("{}: {e}", to.display())))?;
            }
        }
        println!("\nwrote {ARTIFACT_DIR}/ in {elapsed:.0} s");
    }
    if !mismatch.is_empty() {
        return Err(Exit::failed(format!(
            "{} committed artifact(s) differ: {}",
            mismatch.len(),
            mismatch
                .iter()
                .map(|d| d.split(':').next().unwrap_or(d))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if !problems.is_empty() {
        return Err(Exit {
            code: Exit::RESOURCES,
            message: format!(
                "{} kernel problem(s) (spills, scratch/stack use, or a 16-bit forward kernel \
                 without matrix instructions):\n  {}",
                problems.len(),
                problems.join("\n  ")
            ),
        });
    }
    Ok(())
}

/// The problems column of a resource-table row: the errors, then the notes (marked as such), or
/// `-` when there are neither.
fn problem_cell(errors: &[String], notes: &[String]) -> String {
    let cells: Vec<String> = errors
        .iter()
        .cloned()
        .chain(notes.iter().map(|n| format!("note: {n}")))
        .collect();
    if cells.is_empty() {
        "-".to_string()
    } else {
        cells.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_matrix_instruction_rule() {
        for spec in &TARGETS {
            for k in ["attn_fwd_f16_d64", "attn_fwd_bf16_d128"] {
                assert!(
                    manifest::required_matrix_instruction(spec.cpu, k).is_some(),
                    "{} {k}",
                    spec.cpu
                );
            }
        }
    }

    #[test]
    fn compare_names_differences() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("x.ptx"), "1").unwrap();
        std::fs::write(b.path().join("x.ptx"), "2").unwrap();
        std::fs::write(a.path().join("old.cubin"), "").unwrap();
        std::fs::write(b.path().join("new.hsaco"), "").unwrap();
        std::fs::write(a.path().join(MANIFEST), "{}").unwrap();
        std::fs::write(b.path().join(MANIFEST), "{}").unwrap();
        std::fs::write(a.path().join("README.md"), "not generated").unwrap();
        let d = compare(a.path(), b.path());
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d.iter().any(|l| l.starts_with("x.ptx: differs")));
        assert!(d.iter().any(|l| l.starts_with("new.hsaco: not committed")));
        assert!(d.iter().any(|l| l.starts_with("old.cubin: committed but")));
    }
}
