//! `attn`: the command line of the attention kernels.
//!
//! - `attn info`: runtimes found, devices, embedded code objects and each kernel's resources;
//! - `attn check`: random forward cases (each followed by its backward) and decode cases (paged
//!   and contiguous KV caches, split-KV, GQA packing) on the best device against the CPU
//!   reference, as a pass/fail table (without a GPU: says why, and checks the CPU reference's low-precision path
//!   against its f64 truth instead);
//! - `attn bench`: forward TFLOP/s on the canonical shape table (without a GPU: says so, and
//!   times the CPU reference on a small shape); `--pass bwd` the backward, `--pass decode` decode
//!   steps; with `--json`, also an SVG plot beside the JSON;
//! - `attn plot BENCH.json [-o OUT.svg]`: that plot again, from a JSON the bench wrote (no GPU).
use attn_host::Device;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod bench;
mod check;
mod info;
mod plot;

#[derive(Parser)]
#[command(
    name = "attn",
    version,
    about = "Fused attention kernels: info, correctness check, benchmark"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Run this code object instead of the embedded one: a cubin, PTX or hsaco built from this
    /// version's kernels, named after its target (`sm_90a.cubin`, `gfx942.hsaco`, or
    /// `sm_90a.anything.cubin`): for trying a retuned build without rebuilding the CLI.
    #[arg(long, global = true, value_name = "FILE")]
    code_object: Option<std::path::PathBuf>,
    /// Run the embedded code object of this target instead of the device's own (e.g. `sm_80`
    /// on a Hopper GPU).
    #[arg(
        long,
        global = true,
        value_name = "TARGET",
        conflicts_with = "code_object"
    )]
    target: Option<String>,
}

/// The code object the command line asked for, if not the device's own.
enum CodeObject {
    /// `--code-object FILE`: its target and bytes.
    File(String, Vec<u8>),
    /// `--target NAME`: an embedded one.
    Embedded(String),
}

static CODE_OBJECT: std::sync::OnceLock<Option<CodeObject>> = std::sync::OnceLock::new();

/// The target a code object's file name starts with: `sm_90a` for `dir/sm_90a.v2.cubin`.
fn target_of(path: &std::path::Path) -> Option<&str> {
    path.file_name()?
        .to_str()?
        .split('.')
        .next()
        .filter(|t| !t.is_empty())
}

/// Reads `--code-object` / `--target` into [`CODE_OBJECT`].
fn choose_code_object(cli: &Cli) -> Result<(), String> {
    let choice = match (&cli.code_object, &cli.target) {
        (Some(path), _) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("--code-object {}: {e}", path.display()))?;
            let target = target_of(path).ok_or_else(|| {
                format!(
                    "--code-object {}: the file name must start with its target (sm_90a.cubin)",
                    path.display()
                )
            })?;
            Some(CodeObject::File(target.to_string(), bytes))
        }
        (None, Some(t)) => Some(CodeObject::Embedded(t.clone())),
        (None, None) => None,
    };
    CODE_OBJECT.get_or_init(|| choice);
    Ok(())
}

#[derive(Subcommand)]
enum Cmd {
    /// Runtimes, devices, embedded kernels and their resources.
    Info,
    /// Random forward cases, each followed by its backward, and decode cases on the best device
    /// against the CPU reference.
    Check(check::Args),
    /// Forward (or `--pass bwd` backward, `--pass decode` decode) throughput beside PyTorch.
    Bench(Box<bench::Args>),
    /// Plot a JSON written by `attn bench --json` (SVG; no GPU needed).
    Plot(plot::Args),
}

/// The best device, or why there is none (printed).
fn best_device() -> Option<Device> {
    let dev = match CODE_OBJECT.get().and_then(Option::as_ref) {
        None => Device::best(),
        Some(choice) => Device::cuda(0).or_else(|_| Device::hip(0)).and_then(|d| {
            match choice {
                CodeObject::File(target, bytes) => d.load_code_object(target, bytes)?,
                CodeObject::Embedded(target) => d.load_embedded(target)?,
            }
            Ok(d)
        }),
    };
    match dev {
        Ok(d) => {
            let i = d.info();
            let target = d.code_object_target().unwrap_or_default();
            println!(
                "device: {} ({}, {}, code object {target})",
                i.name,
                i.api.name(),
                i.arch
            );
            Some(d)
        }
        Err(e) => {
            println!("no GPU: {e}");
            None
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = choose_code_object(&cli) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let r: Result<bool, Box<dyn std::error::Error>> =
        match cli.cmd.unwrap_or(Cmd::Check(check::Args::default())) {
            Cmd::Info => info::run().map(|_| true).map_err(Into::into),
            Cmd::Check(a) => check::run(&a).map_err(Into::into),
            Cmd::Bench(a) => bench::run(&a).map(|_| true).map_err(Into::into),
            Cmd::Plot(a) => plot::run(&a).map(|_| true).map_err(Into::into),
        };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::target_of;
    use std::path::Path;

    #[test]
    fn code_object_target_comes_from_the_file_name() {
        assert_eq!(target_of(Path::new("sm_90a.cubin")), Some("sm_90a"));
        assert_eq!(target_of(Path::new("/x/y.z/gfx942.hsaco")), Some("gfx942"));
        assert_eq!(
            target_of(Path::new("target/sm_80.v3-n2.ptx")),
            Some("sm_80")
        );
        assert_eq!(target_of(Path::new(".cubin")), None);
        assert_eq!(target_of(Path::new("/")), None);
    }
}
