//! Project chores.
//!
//! `cargo xtask build-kernels [--check] [-j N]` builds the GPU code objects of `attn-kernels`
//! into `crates/attn-host/kernels/` (see [`kernels`]).
//!
//! Exit codes: 0 success; 1 build failure or, with `--check`, committed artifacts that differ;
//! 3 the toolchain (nightly, rust-src, llvm-tools, or ptxas) is missing and cannot be obtained;
//! 4 a kernel spills or uses scratch/stack memory, or a 16-bit forward kernel lacks its target's
//! matrix instruction (everything is still written and printed).

mod amd;
mod ir;
mod kernels;
mod manifest;
mod ptx;
mod toolchain;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// A failure with its process exit code.
#[derive(Debug)]
pub struct Exit {
    /// Process exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl Exit {
    /// Exit code for a missing toolchain: CI prints that the kernel check was skipped.
    pub const TOOLCHAIN: u8 = 3;
    /// Exit code for spills, scratch use, or missing matrix instructions.
    pub const RESOURCES: u8 = 4;

    /// A build or check failure (exit code 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }

    /// A missing toolchain (exit code [`Exit::TOOLCHAIN`]).
    pub fn toolchain(message: impl Into<String>) -> Self {
        Self {
            code: Self::TOOLCHAIN,
            message: message.into(),
        }
    }
}

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project chores")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the GPU kernels (gfx90a, gfx942, gfx1100, sm_80, sm_90a) into
    /// crates/attn-host/kernels/ with a manifest of their resources.
    BuildKernels(kernels::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::BuildKernels(args) => kernels::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            if e.code == Exit::TOOLCHAIN {
                eprintln!(
                    "(the kernel build was not run: exit code {})",
                    Exit::TOOLCHAIN
                );
            }
            ExitCode::from(e.code)
        }
    }
}
