//! Finding (and, for ptxas, fetching) the tools the kernel build needs.

use crate::Exit;
use std::path::{Path, PathBuf};
use std::process::Command;

/// rustup toolchain used for the kernels; override with `ATTN_KERNEL_TOOLCHAIN`.
pub const DEFAULT_TOOLCHAIN: &str = "nightly";
/// The pinned ptxas: PyPI wheel `nvidia-cuda-nvcc-cu12` at this version.
pub const PTXAS_WHEEL: &str = "nvidia-cuda-nvcc-cu12";
/// Version of [`PTXAS_WHEEL`]; cubins are only reproducible with exactly this ptxas.
pub const PTXAS_VERSION: &str = "12.9.86";

/// The nightly toolchain and its LLVM tools.
#[derive(Clone, Debug)]
pub struct Toolchain {
    /// rustup toolchain name (`nightly`).
    pub name: String,
    /// `rustc --version` output, e.g. `rustc 1.97.0-nightly (e50aa6fba 2026-05-19)`.
    pub rustc_version: String,
    /// Folder with `llc`, `rust-lld`, `llvm-objdump`, `llvm-readobj`.
    pub bin: PathBuf,
}

impl Toolchain {
    /// Path of an LLVM tool from the `llvm-tools` component.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }
}

fn install_hint(tc: &str) -> String {
    format!(
        "install it with:\n    rustup toolchain install {tc} --profile minimal --component rust-src,llvm-tools\n\
         (or, for an existing toolchain: rustup component add rust-src llvm-tools --toolchain {tc})"
    )
}

fn capture(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Finds the kernel toolchain, or says exactly what to install (exit code 3).
pub fn detect() -> Result<Toolchain, Exit> {
    let name =
        std::env::var("ATTN_KERNEL_TOOLCHAIN").unwrap_or_else(|_| DEFAULT_TOOLCHAIN.to_string());
    let rustc = |args: &[&str]| {
        let mut c = Command::new("rustc");
        c.arg(format!("+{name}"))
            .args(args)
            .env_remove("RUSTUP_TOOLCHAIN");
        capture(&mut c)
    };
    let Some(version) = rustc(&["--version"]) else {
        return Err(Exit::toolchain(format!(
            "the `{name}` Rust toolchain is not available (`rustc +{name} --version` failed);\n{}",
            install_hint(&name)
        )));
    };
    let verbose = rustc(&["-vV"]).unwrap_or_default();
    let host = verbose
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or("x86_64-unknown-linux-gnu")
        .to_string();
    let sysroot = PathBuf::from(rustc(&["--print", "sysroot"]).unwrap_or_default());
    let src = sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !src.is_file() {
        return Err(Exit::toolchain(format!(
            "the `rust-src` component of `{name}` is missing (no {});\n{}",
            src.display(),
            install_hint(&name)
        )));
    }
    let bin = sysroot.join("lib/rustlib").join(&host).join("bin");
    for tool in ["llc", "rust-lld", "llvm-objdump", "llvm-readobj"] {
        if !bin.join(tool).is_file() {
            return Err(Exit::toolchain(format!(
                "`{tool}` is missing from {} (the `llvm-tools` component of `{name}`);\n{}",
                bin.display(),
                install_hint(&name)
            )));
        }
    }
    Ok(Toolchain {
        name,
        rustc_version: version,
        bin,
    })
}

/// A usable ptxas and its version line.
#[derive(Clone, Debug)]
pub struct Ptxas {
    /// The executable.
    pub path: PathBuf,
    /// `V12.9.86`.
    pub version: String,
}

fn ptxas_version(path: &Path) -> Option<String> {
    let text = capture(Command::new(path).arg("--version"))?;
    text.split_whitespace()
        .find(|w| w.starts_with('V') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
}

/// Finds the pinned ptxas (`ATTN_PTXAS`, or `.tools/` in the workspace), downloading the wheel
/// with pip when it is not there yet. `log` reports what happens.
pub fn ptxas(root: &Path, log: &dyn Fn(&str)) -> Result<Ptxas, Exit> {
    let want = format!("V{PTXAS_VERSION}");
    if let Ok(p) = std::env::var("ATTN_PTXAS") {
        let path = PathBuf::from(p);
        return match ptxas_version(&path) {
            Some(v) if v == want => Ok(Ptxas { path, version: v }),
            Some(v) => Err(Exit::toolchain(format!(
                "ATTN_PTXAS={} is ptxas {v}, but the committed cubins are built with {want}",
                path.display()
            ))),
            None => Err(Exit::toolchain(format!(
                "ATTN_PTXAS={} does not run",
                path.display()
            ))),
        };
    }
    let tools = root.join(".tools");
    let dir = tools.join(format!("{PTXAS_WHEEL}-{PTXAS_VERSION}"));
    let path = dir.join("nvidia/cuda_nvcc/bin/ptxas");
    if let Some(v) = ptxas_version(&path)
        && v == want
    {
        return Ok(Ptxas { path, version: v });
    }
    let hint = format!(
        "ptxas {want} is needed for the cubins. Either let xtask fetch it (needs python3 with pip, \
         network, and `unzip` or python3's zipfile), i.e.\n    python3 -m pip download --no-deps \
         --only-binary=:all: {PTXAS_WHEEL}=={PTXAS_VERSION} -d .tools/wheels\n    unzip -o \
         .tools/wheels/nvidia_cuda_nvcc_cu12-{PTXAS_VERSION}-*.whl 'nvidia/cuda_nvcc/bin/ptxas' -d {}\n\
         or point ATTN_PTXAS at a ptxas {want}.",
        dir.display()
    );
    let wheels = tools.join("wheels");
    log(&format!(
        "fetching ptxas: pip download {PTXAS_WHEEL}=={PTXAS_VERSION}"
    ));
    let out = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .arg(format!("{PTXAS_WHEEL}=={PTXAS_VERSION}"))
        .arg("-d")
        .arg(&wheels)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(Exit::toolchain(format!(
                "pip download failed:\n{}\n{hint}",
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        Err(e) => return Err(Exit::toolchain(format!("cannot run python3: {e}\n{hint}"))),
    }
    let prefix = format!("{}-{PTXAS_VERSION}-", PTXAS_WHEEL.replace('-', "_"));
    let whl = std::fs::read_dir(&wheels)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
        .ok_or_else(|| Exit::toolchain(format!("no wheel in {}\n{hint}", wheels.display())))?;
    log("unpacking ptxas");
    let unzip_ok = Command::new("unzip")
        .args(["-o", "-q"])
        .arg(&whl)
        .arg("nvidia/cuda_nvcc/bin/ptxas")
        .arg("-d")
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !unzip_ok {
        let ok = Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&whl)
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(Exit::toolchain(format!(
                "could not unpack {}\n{hint}",
                whl.display()
            )));
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
    }
    match ptxas_version(&path) {
        Some(v) if v == want => Ok(Ptxas { path, version: v }),
        other => Err(Exit::toolchain(format!(
            "{} does not report {want} (got {other:?})\n{hint}",
            path.display()
        ))),
    }
}
