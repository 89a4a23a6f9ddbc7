//! `attn info`.
use attn_host::driver::{cuda, hip};
use attn_host::{Device, Result, code_objects};
use comfy_table::Table;

pub(crate) fn run() -> Result<()> {
    println!("runtimes:");
    match cuda::device_count() {
        Ok(n) => println!("  CUDA: {n} device(s)"),
        Err(e) => println!("  CUDA: unavailable: {e}"),
    }
    match hip::HipDevice::count() {
        Ok(n) => println!("  HIP:  {n} device(s)"),
        Err(e) => println!("  HIP:  unavailable: {e}"),
    }
    let mut devs = Vec::new();
    for i in 0..cuda::device_count().unwrap_or(0) {
        devs.push(Device::cuda(i));
    }
    for i in 0..hip::HipDevice::count().unwrap_or(0) {
        devs.push(Device::hip(i));
    }
    if !devs.is_empty() {
        let mut t = Table::new();
        t.set_header([
            "api",
            "#",
            "name",
            "arch",
            "SMs/CUs",
            "memory GiB",
            "code object",
        ]);
        for d in devs {
            match d {
                Ok(d) => {
                    let i = d.info();
                    let co = d
                        .code_object_target()
                        .unwrap_or_else(|e| format!("none: {e}"));
                    t.add_row([
                        i.api.name().to_string(),
                        i.ordinal.to_string(),
                        i.name.clone(),
                        i.arch.clone(),
                        i.multiprocessors.to_string(),
                        format!("{:.1}", i.total_memory as f64 / (1u64 << 30) as f64),
                        co,
                    ]);
                }
                Err(e) => {
                    t.add_row(["?", "?", &e.to_string(), "", "", "", ""]);
                }
            }
        }
        println!("{t}");
    }
    match code_objects::try_manifest() {
        Ok(m) => {
            println!(
                "embedded kernels (built by {}, ptxas {}):",
                m.rustc, m.ptxas
            );
            println!("{}", resource_table(m));
        }
        Err(e) => println!("embedded kernel manifest unreadable: {e}"),
    }
    Ok(())
}

/// One row per (target, kernel) with its registers, shared memory and spills.
fn resource_table(m: &code_objects::Manifest) -> Table {
    use code_objects::Resources;
    let mut t = Table::new();
    t.set_header([
        "target",
        "kernel",
        "threads",
        "regs (v/a/s)",
        "LDS/smem B",
        "scratch/stack B",
        "spills",
        "waves/SIMD",
        "matrix ops",
    ]);
    for target in &m.targets {
        for k in &target.kernels {
            let mma: u32 = k.matrix_instructions.values().sum();
            let (regs, lds, scratch, spills, occupancy) = match &k.resources {
                Resources::Amd(r) => (
                    format!("{}/{}/{}", r.vgpr, r.agpr, r.sgpr),
                    r.lds_bytes,
                    r.scratch_bytes,
                    format!("{} v, {} s", r.vgpr_spills, r.sgpr_spills),
                    r.occupancy_waves_per_simd
                        .map_or("-".into(), |o| o.to_string()),
                ),
                Resources::Nvidia(r) => (
                    r.registers.to_string(),
                    r.smem_bytes,
                    r.stack_bytes,
                    format!("{} st, {} ld", r.spill_stores, r.spill_loads),
                    "-".to_string(),
                ),
            };
            t.add_row([
                target.target.clone(),
                k.name.clone(),
                k.threads.to_string(),
                regs,
                lds.to_string(),
                scratch.to_string(),
                spills,
                occupancy,
                mma.to_string(),
            ]);
        }
    }
    t
}
