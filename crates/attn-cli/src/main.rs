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
    match Device::best() {
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
