//! `attn bench`: forward TFLOP/s on the canonical shape table, optionally beside PyTorch SDPA's
//! backends timed in the same run on the same GPU.
//!
//! Shapes: bf16 and f16; D = 64 and 128; causal and not; B·S = 16384 tokens, Hq·D = 2048,
//! S = 512 … 16384. FLOPs: `4·B·Hq·Sq·Sk·D`, halved when causal. Timing: device events around
//! each launch, 3 warm-up launches, then the median of `--iters` launches rotating over three
//! input sets (so the inputs are not all L2-resident).
use attn_abi::DType;
use attn_host::{Align, Device, DeviceBuffer, Forward, LseRef, Mask, Result, TensorRef};
use comfy_table::Table;
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args, Default)]
pub(crate) struct Args {
    /// Timed launches per shape (median reported).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Only sequence lengths up to this.
    #[arg(long, default_value_t = 16384)]
    max_seqlen: usize,
    /// Only this head dim.
    #[arg(long)]
    d: Option<usize>,
    /// Only this dtype (f16, bf16).
    #[arg(long)]
    dtype: Option<String>,
    /// Also time PyTorch SDPA (flash, efficient, cudnn) through `python3 bench/torch_peers.py`.
    #[arg(long, value_name = "torch")]
    compare: Option<String>,
    /// Path of the peers script.
    #[arg(long, default_value = "bench/torch_peers.py")]
    peers_script: PathBuf,
    /// Write all rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One shape of the canonical table.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Shape {
    dtype: &'static str,
    d: usize,
    causal: bool,
    seqlen: usize,
    batch: usize,
    heads: usize,
}

impl Shape {
    fn flops(&self) -> f64 {
        let f =
            4.0 * (self.batch * self.heads) as f64 * (self.seqlen * self.seqlen * self.d) as f64;
        if self.causal { f / 2.0 } else { f }
    }
}

/// The canonical shape table.
pub(crate) fn shapes(a: &Args) -> Vec<Shape> {
    let mut v = Vec::new();
    for dtype in ["bf16", "f16"] {
        for d in [64, 128] {
            for causal in [false, true] {
                for s in [512, 1024, 2048, 4096, 8192, 16384] {
                    if s > a.max_seqlen
                        || a.d.is_some_and(|x| x != d)
                        || a.dtype.as_deref().is_some_and(|x| x != dtype)
                    {
                        continue;
                    }
                    v.push(Shape {
                        dtype,
                        d,
                        causal,
                        seqlen: s,
                        batch: (16384 / s).max(1),
                        heads: 2048 / d,
                    });
                }
            }
        }
    }
    v
}

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    shape: Shape,
    ms: f64,
    tflops: f64,
    peers: serde_json::Map<String, serde_json::Value>,
}

fn median(mut x: Vec<f32>) -> f64 {
    x.sort_by(f32::total_cmp);
    x[x.len() / 2] as f64
}

fn time_shape(dev: &Device, s: &Shape, iters: usize) -> Result<f64> {
    let dtype = if s.dtype == "bf16" {
        DType::Bf16
    } else {
        DType::F16
    };
    let shape = [s.batch, s.seqlen, s.heads, s.d];
    let n: usize = shape.iter().product();
    let stream = dev.new_stream()?;
    let mut sets: Vec<[DeviceBuffer<u16>; 3]> = Vec::new();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..3 {
        let mut gen_ = || -> Result<DeviceBuffer<u16>> {
            let v: Vec<u16> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let f = (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                    match dtype {
                        DType::Bf16 => half::bf16::from_f32(f).to_bits(),
                        _ => half::f16::from_f32(f).to_bits(),
                    }
                })
                .collect();
            dev.clone_htod(&v)
        };
        sets.push([gen_()?, gen_()?, gen_()?]);
    }
    let out = dev.alloc::<u16>(n)?;
    let lse = dev.alloc::<f32>(s.batch * s.heads * s.seqlen)?;
    let t = |b: &DeviceBuffer<u16>| TensorRef {
        len: b.len(),
        ..TensorRef::contiguous(b.ptr(), dtype, shape)
    };
    let mask = if s.causal {
        Mask::Causal(Align::BottomRight)
    } else {
        Mask::None
    };
    let call = |i: usize| {
        let [q, k, v] = &sets[i % sets.len()];
        Forward::new(t(q), t(k), t(v), t(&out))
            .lse(LseRef {
                len: lse.len(),
                ..LseRef::contiguous(lse.ptr(), [s.batch, s.heads, s.seqlen])
            })
            .mask(mask)
    };
    let mut times = Vec::new();
    for i in 0..iters + 3 {
        let c = call(i);
        // SAFETY: all buffers are live allocations on `dev` sized for `shape`.
        let ms = stream.time_ms(|st| unsafe { c.launch(st) })?;
        if i >= 3 {
            times.push(ms);
        }
    }
    Ok(median(times))
}

fn peers(a: &Args, shapes: &[Shape]) -> Vec<serde_json::Value> {
    if a.compare.as_deref() != Some("torch") {
        return Vec::new();
    }
    let dir = std::env::temp_dir();
    let (inp, outp) = (
        dir.join("attn_bench_shapes.json"),
        dir.join("attn_bench_peers.json"),
    );
    let run = || -> std::io::Result<Vec<serde_json::Value>> {
        std::fs::write(&inp, serde_json::to_vec(shapes)?)?;
        let st = std::process::Command::new("python3")
            .arg(&a.peers_script)
            .arg(&inp)
            .arg(&outp)
            .status()?;
        if !st.success() {
            return Err(std::io::Error::other(format!(
                "peers script exited with {st}"
            )));
        }
        Ok(serde_json::from_slice(&std::fs::read(&outp)?)?)
    };
    run().unwrap_or_else(|e| {
        println!("torch peers not available: {e}");
        Vec::new()
    })
}

pub(crate) fn run(a: &Args) -> Result<()> {
    let Some(dev) = crate::best_device() else {
        return cpu_bench();
    };
    let shapes = shapes(a);
    let peer_rows = peers(a, &shapes);
    let mut table = Table::new();
    let mut header = vec!["dtype", "D", "causal", "S", "B", "H", "ms", "TFLOP/s"];
    if !peer_rows.is_empty() {
        header.extend([
            "flash",
            "efficient",
            "cudnn",
            "/flash",
            "/efficient",
            "/cudnn",
        ]);
    }
    table.set_header(header);
    let mut rows = Vec::new();
    for s in shapes {
        let ms = time_shape(&dev, &s, a.iters)?;
        let tflops = s.flops() / ms / 1e9;
        let mut peers = serde_json::Map::new();
        for p in &peer_rows {
            let same = p["dtype"] == s.dtype
                && p["d"] == s.d
                && p["causal"] == s.causal
                && p["seqlen"] == s.seqlen;
            if let (true, Some(name)) = (same, p["backend"].as_str()) {
                peers.insert(name.to_string(), p["tflops"].clone());
            }
        }
        let mut cells = vec![
            s.dtype.to_string(),
            s.d.to_string(),
            s.causal.to_string(),
            s.seqlen.to_string(),
            s.batch.to_string(),
            s.heads.to_string(),
            format!("{ms:.3}"),
            format!("{tflops:.1}"),
        ];
        if !peer_rows.is_empty() {
            let get = |k: &str| peers.get(k).and_then(|v| v.as_f64());
            for k in ["flash", "efficient", "cudnn"] {
                cells.push(get(k).map_or("-".into(), |x| format!("{x:.1}")));
            }
            for k in ["flash", "efficient", "cudnn"] {
                cells.push(get(k).map_or("-".into(), |x| format!("{:.2}", tflops / x)));
            }
        }
        table.add_row(cells);
        rows.push(Row {
            shape: s,
            ms,
            tflops,
            peers,
        });
    }
    println!("{table}");
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&rows).unwrap_or_default())
            .map_err(|e| attn_host::Error::invalid("--json", "a writable path", e))?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// Without a GPU: time the CPU reference (f64 truth) on one small shape.
fn cpu_bench() -> Result<()> {
    use attn_ref::{Dtype, Inputs, Problem};
    let p = Problem::new(Dtype::Bf16, 1, 512, 512, 8, 8, 64, 64);
    let x = Inputs::random(&p, 1, 1.0);
    let t0 = std::time::Instant::now();
    attn_ref::forward(&p, &x).map_err(|e| attn_host::Error::unsupported(e.to_string()))?;
    let dt = t0.elapsed().as_secs_f64();
    let flops = 4.0 * 8.0 * 512.0 * 512.0 * 64.0;
    println!(
        "CPU reference (f64, rayon): B=1 H=8 S=512 D=64 forward in {:.3} s = {:.2} GFLOP/s",
        dt,
        flops / dt / 1e9
    );
    Ok(())
}
