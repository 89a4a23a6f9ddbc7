//! `attn bench`: forward TFLOP/s on the canonical shape table, optionally beside PyTorch SDPA's
//! backends timed in the same run on the same GPU.
//!
//! Shapes: bf16 and f16; D = 64 and 128; causal and not; B·S = 16384 tokens, Hq·D = 2048,
//! S = 512 … 16384. FLOPs: `4·B·Hq·Sq·Sk·D`, halved when causal. Timing: device events around
//! each launch, 3 warm-up launches, then the median of `--iters` launches rotating over three
//! input sets (so the inputs are not all L2-resident).
//!
//! `--features` times the feature rows instead (see [`features`]): dropout, additive bias
//! (broadcast and full), ALiBi, softcap and varlen, each beside PyTorch through
//! `python3 bench/torch_feature_peers.py`.
//!
//! `--decode` times the decode rows instead (see [`decode`]): one or four new query tokens against
//! a KV cache of 2048 … 32768 keys, in GB/s and percent of a device-to-device copy of the same run,
//! beside PyTorch SDPA's flash, efficient and cuDNN backends through
//! `python3 bench/torch_decode_peers.py`.
use attn_abi::DType;
use attn_host::{Align, Device, DeviceBuffer, Forward, LseRef, Mask, Result, TensorRef};
use comfy_table::Table;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
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
    /// With `--features` or `--decode` PyTorch runs unless this is `none`.
    #[arg(long, value_name = "torch")]
    compare: Option<String>,
    /// Path of the peers script.
    #[arg(long, default_value = "bench/torch_peers.py")]
    peers_script: PathBuf,
    /// Write all rows as JSON here, and their plot beside it (same stem, `.svg`; `attn plot`
    /// draws it again from the JSON).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Time the feature rows instead of the canonical table (bf16, D = 128, Hq = Hk = 16:
    /// dropout, bias-bcast, bias-full, alibi, softcap, varlen, varlen-causal), each beside
    /// PyTorch (`--compare none` leaves PyTorch out). A comma-separated list picks rows; an item
    /// also picks the rows it prefixes (`bias` = bias-bcast and bias-full).
    #[arg(long, value_name = "ROWS", num_args = 0..=1, default_missing_value = "all")]
    features: Option<String>,
    /// Path of the feature peers script (`--features`).
    #[arg(long, default_value = "bench/torch_feature_peers.py")]
    feature_peers_script: PathBuf,
    /// Time the decode rows instead (bf16, D = 128, Hq = 32, K/V caches rotated out of L2): ms,
    /// GB/s (K + V + Q + O once) and % of a d2d copy of the same run, beside PyTorch SDPA flash,
    /// efficient and cudnn (`--compare none` leaves PyTorch out). Rows: 1 b1-sk32768-hk8,
    /// 2 b16-sk8192-hk8, 3 b8-sk8192, 4 b32-sk4096, 5 b16-sq4-sk8192-hk8-causal (causal
    /// bottom-right), 6 b8-sk32768, 7 b64-sk2048, named b<B>[-sq<Sq>]-sk<Sk>[-hk<Hk>] (Sq = 1,
    /// Hk = 32 unless given). A comma-separated list picks rows by number or name; an item also
    /// picks the rows it prefixes (`b16` = rows 2 and 5). `--max-seqlen`, `--d`, `--dtype` do not
    /// apply.
    #[arg(
        long,
        value_name = "ROWS",
        num_args = 0..=1,
        default_missing_value = "all",
        conflicts_with = "features"
    )]
    decode: Option<String>,
    /// Path of the decode peers script (`--decode`).
    #[arg(long, default_value = "bench/torch_decode_peers.py")]
    decode_peers_script: PathBuf,
    /// `--decode`: force this split-KV count on our calls (tuning; default: the plan's choice).
    #[arg(long)]
    splits: Option<u32>,
    /// Which pass the canonical table times: `fwd`, or `bwd` (the backward of the same shapes,
    /// FLOPs counted as 2.5x the forward's, the FlashAttention convention; the peers time
    /// `torch.autograd.grad` of SDPA's output). `decode` is `--decode`.
    #[arg(long = "pass", value_name = "PASS", default_value = "fwd")]
    pass: String,
    /// `--pass bwd`: time the deterministic backward (`Backward::deterministic(true)`: two
    /// kernels, no atomics) instead of the default (fused where built: dQ by f32 atomics).
    #[arg(long)]
    deterministic: bool,
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
    /// `fwd` or `bwd`.
    pass: &'static str,
}

impl Shape {
    fn flops(&self) -> f64 {
        let f =
            4.0 * (self.batch * self.heads) as f64 * (self.seqlen * self.seqlen * self.d) as f64;
        let f = if self.causal { f / 2.0 } else { f };
        if self.pass == "bwd" { 2.5 * f } else { f }
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
                        pass: if a.pass == "bwd" { "bwd" } else { "fwd" },
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
    /// Device memory the call needs beyond its inputs and outputs, bytes (the backward's
    /// `delta`; 0 for the forward).
    extra_bytes: usize,
    peers: serde_json::Map<String, serde_json::Value>,
}

fn median(mut x: Vec<f32>) -> f64 {
    x.sort_by(f32::total_cmp);
    x[x.len() / 2] as f64
}

/// Times one shape: the median milliseconds, and the extra device memory the call needs (bytes).
fn time_shape(dev: &Device, s: &Shape, iters: usize, deterministic: bool) -> Result<(f64, usize)> {
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
    if s.pass == "bwd" {
        // The backward of set 0's forward (run once), into gradients of the same shape.
        let c = call(0);
        // SAFETY: as below.
        unsafe { c.launch(&stream)? };
        let [dout, dq, dk] = &sets[1];
        let dv = dev.alloc::<u16>(n)?;
        // Preallocated workspaces (delta; the fused kernel's dQ): the timed launches allocate
        // nothing.
        let delta = dev.alloc::<f32>(lse.len())?;
        let b = attn_host::Backward::new(c, t(dout), t(dq), t(dk), t(&dv))
            .delta_workspace(delta.ptr(), delta.len() * 4)
            .deterministic(deterministic);
        let plan = b.plan(dev.tile_family()?)?;
        let dq_accum = dev.alloc::<f32>((plan.dq_accum_bytes / 4).max(1))?;
        let b = b.dq_workspace(dq_accum.ptr(), dq_accum.len() * 4);
        let extra = plan.delta_bytes + plan.dq_accum_bytes;
        for i in 0..iters + 3 {
            // SAFETY: all buffers are live allocations on `dev` sized for `shape`; the
            // gradients (set 1 and `dv`) do not overlap the forward's buffers.
            let ms = stream.time_ms(|st| unsafe { b.launch(st) })?;
            if i >= 3 {
                times.push(ms);
            }
        }
        return Ok((median(times), extra));
    }
    for i in 0..iters + 3 {
        let c = call(i);
        // SAFETY: all buffers are live allocations on `dev` sized for `shape`.
        let ms = stream.time_ms(|st| unsafe { c.launch(st) })?;
        if i >= 3 {
            times.push(ms);
        }
    }
    Ok((median(times), 0))
}

/// Runs a peers script (`python3 SCRIPT IN OUT`) on `request` (JSON in a temporary file named by
/// `tag` and the process id) and reads the JSON list it writes back: its object entries, and why
/// the list is missing or partial (the script failed to start, exited non-zero, or wrote
/// nothing). Never fails: a table without peers is still a table.
pub(crate) fn run_peers_script(
    script: &std::path::Path,
    tag: &str,
    request: &impl Serialize,
) -> (Vec<serde_json::Value>, Option<String>) {
    use serde_json::Value;
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let (inp, outp) = (
        dir.join(format!("attn_bench_{tag}_{pid}.json")),
        dir.join(format!("attn_bench_{tag}_peers_{pid}.json")),
    );
    let _ = std::fs::remove_file(&outp);
    let status = (|| -> std::io::Result<std::process::ExitStatus> {
        std::fs::write(&inp, serde_json::to_vec(request)?)?;
        std::process::Command::new("python3")
            .arg(script)
            .arg(&inp)
            .arg(&outp)
            .status()
    })();
    let read =
        || -> std::io::Result<Vec<Value>> { Ok(serde_json::from_slice(&std::fs::read(&outp)?)?) };
    let (got, problem) = match status {
        Err(e) => (
            Vec::new(),
            Some(format!("could not run the peers script: {e}")),
        ),
        Ok(st) => {
            let exit = (!st.success()).then(|| format!("the peers script exited with {st}"));
            match read() {
                Ok(v) => (v, exit),
                Err(e) => (
                    Vec::new(),
                    Some(format!(
                        "{}no peer results ({e})",
                        exit.map(|x| x + "; ").unwrap_or_default()
                    )),
                ),
            }
        }
    };
    let _ = std::fs::remove_file(&inp);
    let _ = std::fs::remove_file(&outp);
    (got.into_iter().filter(Value::is_object).collect(), problem)
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
    if a.features.is_some() {
        return features::run(a);
    }
    if a.decode.is_some() || a.pass == "decode" {
        return decode::run(a);
    }
    if a.pass != "fwd" && a.pass != "bwd" {
        return Err(attn_host::Error::invalid(
            "--pass",
            "fwd, bwd or decode",
            &a.pass,
        ));
    }
    let Some(dev) = crate::best_device() else {
        return cpu_bench();
    };
    let shapes = shapes(a);
    if a.pass == "bwd" {
        println!(
            "backward: {}",
            if a.deterministic {
                "deterministic (dq and dk + dv kernels, no atomics)"
            } else {
                "default, deterministic = false (fused dk + dv + atomic dq where built)"
            }
        );
    }
    let peer_rows = {
        let sp = spinner(&format!("torch peers ({} shapes)", shapes.len()));
        let r = peers(a, &shapes);
        sp.finish_and_clear();
        r
    };
    let mut table = Table::new();
    let mut header = vec![
        "pass",
        "dtype",
        "D",
        "causal",
        "S",
        "B",
        "H",
        "ms",
        "TFLOP/s",
        "extra MiB",
    ];
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
    let bar = progress(shapes.len(), pass_name(a));
    for s in shapes {
        bar.set_message(format!(
            "{} D={} {}S={}",
            s.dtype,
            s.d,
            if s.causal { "causal " } else { "" },
            s.seqlen
        ));
        let (ms, extra_bytes) = time_shape(&dev, &s, a.iters, a.deterministic)?;
        bar.inc(1);
        let tflops = s.flops() / ms / 1e9;
        let mut peers = serde_json::Map::new();
        for p in &peer_rows {
            let same = p["dtype"] == s.dtype
                && p["pass"].as_str().unwrap_or("fwd") == s.pass
                && p["d"] == s.d
                && p["causal"] == s.causal
                && p["seqlen"] == s.seqlen;
            if let (true, Some(name)) = (same, p["backend"].as_str()) {
                peers.insert(name.to_string(), p["tflops"].clone());
            }
        }
        let mut cells = vec![
            s.pass.to_string(),
            s.dtype.to_string(),
            s.d.to_string(),
            s.causal.to_string(),
            s.seqlen.to_string(),
            s.batch.to_string(),
            s.heads.to_string(),
            format!("{ms:.3}"),
            format!("{tflops:.1}"),
            format!("{:.1}", extra_bytes as f64 / (1 << 20) as f64),
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
            extra_bytes,
            peers,
        });
    }
    bar.finish_and_clear();
    println!("{table}");
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&rows).unwrap_or_default())
            .map_err(|e| attn_host::Error::invalid("--json", "a writable path", e))?;
        println!("wrote {}", p.display());
        write_plot(p, &rows)?;
    }
    Ok(())
}

/// The canonical table's pass, as the progress bar names it.
fn pass_name(a: &Args) -> &'static str {
    if a.pass == "bwd" { "bwd" } else { "fwd" }
}

/// The template of [`progress`]: what, bar, done/all, elapsed, estimate, the current row.
const PROGRESS_TEMPLATE: &str = "{prefix} [{bar:32}] {pos}/{len} {elapsed} (eta {eta}) {msg}";

/// A progress bar over `n` rows, drawn on stderr (hidden when stderr is not a terminal, so that
/// logs stay clean). Lines printed while it runs go through [`ProgressBar::suspend`].
pub(crate) fn progress(n: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(PROGRESS_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// A spinner on stderr while `what` runs outside our control (the peers script); hidden when
/// stderr is not a terminal.
pub(crate) fn spinner(what: &str) -> ProgressBar {
    let sp = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    sp.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    sp.set_message(what.to_string());
    sp.enable_steady_tick(std::time::Duration::from_millis(120));
    sp
}

/// Plots `doc` (what was just written to the `--json` path `json`) beside it and prints the
/// plot's path.
pub(crate) fn write_plot(json: &std::path::Path, doc: &impl Serialize) -> Result<()> {
    let svg = crate::plot::write_beside(json, doc).map_err(|e| {
        attn_host::Error::invalid("--json", "a path beside which the plot can be written", e)
    })?;
    println!("wrote {}", svg.display());
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

mod decode;

/// `attn bench --features`: the forward with each optional feature, beside PyTorch.
///
/// All rows are bf16, D = 128, Hq = Hk = 16, B·S = 16384 tokens, non-causal unless noted, S in
/// {1024, 2048, 4096, 8192} (up to `--max-seqlen`) with B = 16384 / S:
///
/// | row | ours | PyTorch peers |
/// |---|---|---|
/// | `dropout` | p = 0.1, [`Philox::Host`] (the counter base advances by B·H per launch) | SDPA flash, efficient, cudnn with `dropout_p = 0.1` |
/// | `bias-bcast` | bf16 bias, logical `[B, H, S, S]`, memory `[1, H, S, S]` (batch stride 0) | SDPA efficient, cudnn with that tensor as `attn_mask` (expanded view) |
/// | `bias-full` | bf16 bias `[B, H, S, S]` (a row above 8 GiB of bias is skipped) | SDPA efficient, cudnn with it as `attn_mask` |
/// | `alibi` | f32 slopes `2^(-8(h+1)/H)`, causal bottom-right | SDPA efficient reading a materialised bf16 bias `[1, H, S, S]` (ALiBi, `-inf` above the diagonal); flash: `aten._flash_attention_forward(alibi_slopes, is_causal)` |
/// | `softcap` | cap = 30 | `torch.compile(flex_attention)` with a tanh `score_mod` (no SDPA backend has softcap) |
/// | `varlen`, `varlen-causal` | 16 packed sequences of [`VARLEN_SEQLENS`](features::VARLEN_SEQLENS), `cu_seqlens` on the device; causal is bottom-right | `aten._efficient_attention_forward` (`[1, total, H, D]`, mask type 0 / 2) and `aten._flash_attention_forward` (`[total, H, D]`) |
///
/// FLOPs: `4·B·H·S²·D`, halved for the causal `alibi` row; varlen counts the visible pairs
/// exactly, `Σ 4·H·D·L²` (non-causal) or `Σ 4·H·D·L(L+1)/2` (causal). Ours is timed as the
/// canonical table (events, 3 warm-ups, median of `--iters`, three q/k/v sets rotated; the bias
/// is a single tensor); the peers with `triton.testing.do_bench` (median). A row of ours or a
/// peer that fails becomes an error in the table and the JSON, never an abort.
///
/// [`Philox::Host`]: attn_host::Philox::Host
mod features {
    use super::{Args, median};
    use attn_abi::DType;
    use attn_host::{
        AlibiRef, Align, BiasRef, Device, DeviceBuffer, Dropout, Error, Forward, I32Ref, LseRef,
        Mask, Philox, Result, Stream, TensorRef, Varlen,
    };
    use comfy_table::Table;
    use serde::Serialize;
    use serde_json::{Map, Value};

    /// Tokens per row (B·S, or the packed total in varlen).
    const TOKENS: usize = 16384;
    const HEADS: usize = 16;
    const HEAD_DIM: usize = 128;
    const SEQLENS: [usize; 4] = [1024, 2048, 4096, 8192];
    const DROPOUT_P: f64 = 0.1;
    const DROPOUT_SEED: u64 = 0x5EED_0000_D0D0_0001;
    const SOFTCAP: f32 = 30.0;
    /// The largest full bias timed, bytes.
    const BIAS_FULL_LIMIT: usize = 8 << 30;
    /// The varlen rows' sequence lengths: 16 sequences in 128 ..= 4096, 16384 tokens in all (the
    /// two extremes and 14 drawn once with Python's `random.seed(0)`, uniform in [128, 4096] and
    /// rescaled). Fixed here, and sent to the peers, so that every run packs the same ones.
    pub(crate) const VARLEN_SEQLENS: [usize; 16] = [
        1292, 1165, 668, 429, 801, 4096, 645, 1203, 495, 750, 908, 128, 1387, 792, 463, 1162,
    ];
    /// Every row name, in table order.
    const ROWS: [&str; 7] = [
        "dropout",
        "bias-bcast",
        "bias-full",
        "alibi",
        "softcap",
        "varlen",
        "varlen-causal",
    ];
    /// Peer columns, in table order (only those that some peer row names are shown).
    const PEERS: [&str; 4] = ["flash", "efficient", "cudnn", "flex"];

    /// What a row adds to the plain forward.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Kind {
        Dropout,
        BiasBcast,
        BiasFull,
        Alibi,
        Softcap,
        Varlen,
    }

    /// One feature row, as sent to the peers script (and written to `--json`).
    #[derive(Clone, Debug, Serialize)]
    struct Feature {
        row: &'static str,
        #[serde(skip)]
        kind: Kind,
        dtype: &'static str,
        d: usize,
        heads: usize,
        /// S; in varlen, the longest sequence (`max_seqlen`).
        seqlen: usize,
        /// B; in varlen, the number of sequences.
        batch: usize,
        /// Causal bottom-right.
        causal: bool,
        flops: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        dropout_p: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        softcap: Option<f32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        alibi_slopes: Option<Vec<f32>>,
        /// Varlen: the packed sequences' lengths.
        #[serde(skip_serializing_if = "Option::is_none")]
        seqlens: Option<Vec<usize>>,
        note: &'static str,
    }

    fn note(kind: Kind) -> &'static str {
        match kind {
            Kind::Dropout => {
                "p = 0.1. ours: Philox dropout, host seed, counter base advanced by B*H per \
                 launch. peers: SDPA flash / efficient / cudnn with dropout_p = 0.1"
            }
            Kind::BiasBcast => {
                "bf16 bias, logical [B,H,S,S], memory [1,H,S,S]. ours: BiasRef with batch \
                 stride 0. peers: SDPA efficient / cudnn, attn_mask = the [1,H,S,S] tensor \
                 expanded to [B,H,S,S] (stride-0 view)"
            }
            Kind::BiasFull => {
                "bf16 bias [B,H,S,S], contiguous. ours: BiasRef. peers: SDPA efficient / cudnn \
                 with it as attn_mask"
            }
            Kind::Alibi => {
                "ALiBi slopes 2^(-8(h+1)/H), causal bottom-right. ours: AlibiRef, f32 [H], no \
                 bias tensor. efficient: SDPA efficient reading a MATERIALISED bf16 bias \
                 [1,H,S,S] (slope*(j-i), -inf above the diagonal), as a PyTorch user must. \
                 flash: aten._flash_attention_forward with alibi_slopes and is_causal (PyTorch \
                 2.11's FA2 build rejects ALiBi: an error there)"
            }
            Kind::Softcap => {
                "cap = 30: s = cap*tanh(s/cap). ours: softcap(30). no SDPA backend has softcap; \
                 flex: torch.compile(flex_attention) with a tanh score_mod, when it imports \
                 and runs"
            }
            Kind::Varlen => {
                "16 packed sequences (lengths below), 16384 tokens; S shows the longest. ours: \
                 Varlen with device cu_seqlens, q/k/v [1,16384,16,128] (causal: bottom-right). \
                 efficient: aten._efficient_attention_forward, q [1,total,H,D], custom_mask_type \
                 0 (causal: 2, from bottom right). flash: aten._flash_attention_forward, q \
                 [total,H,D], is_causal"
            }
        }
    }

    /// The ALiBi slopes `2^(-8(h+1)/H)`.
    fn alibi_slopes(h: usize) -> Vec<f32> {
        (0..h)
            .map(|i| (-8.0 * (i + 1) as f64 / h as f64).exp2() as f32)
            .collect()
    }

    /// The rows `--features` selects (after `--max-seqlen`), and the ones skipped with why.
    fn rows(a: &Args) -> Result<(Vec<Feature>, Vec<String>)> {
        let sel = a.features.as_deref().unwrap_or("all");
        let items: Vec<&str> = sel
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .collect();
        for it in &items {
            let known = *it == "all"
                || ROWS
                    .iter()
                    .any(|r| r == it || r.starts_with(&format!("{it}-")));
            if !known {
                return Err(Error::invalid(
                    "--features",
                    format!("a comma-separated list of: all, {}", ROWS.join(", ")),
                    it,
                ));
            }
        }
        let wanted = |row: &str| {
            items.is_empty()
                || items
                    .iter()
                    .any(|it| *it == "all" || *it == row || row.starts_with(&format!("{it}-")))
        };
        let (h, d) = (HEADS, HEAD_DIM);
        let base = |row, kind, s: usize, causal: bool| Feature {
            row,
            kind,
            dtype: "bf16",
            d,
            heads: h,
            seqlen: s,
            batch: TOKENS / s,
            causal,
            flops: 4.0 * ((TOKENS / s) * h) as f64 * (s * s * d) as f64
                / if causal { 2.0 } else { 1.0 },
            dropout_p: None,
            softcap: None,
            alibi_slopes: None,
            seqlens: None,
            note: note(kind),
        };
        let (mut v, mut skipped) = (Vec::new(), Vec::new());
        for (row, kind) in [
            ("dropout", Kind::Dropout),
            ("bias-bcast", Kind::BiasBcast),
            ("bias-full", Kind::BiasFull),
            ("alibi", Kind::Alibi),
            ("softcap", Kind::Softcap),
        ] {
            if !wanted(row) {
                continue;
            }
            for s in SEQLENS.into_iter().filter(|&s| s <= a.max_seqlen) {
                let b = TOKENS / s;
                let bytes = b * h * s * s * 2;
                if kind == Kind::BiasFull && bytes > BIAS_FULL_LIMIT {
                    skipped.push(format!(
                        "{row} S={s}: the bias would be {:.1} GiB (> 8 GiB)",
                        bytes as f64 / (1u64 << 30) as f64
                    ));
                    continue;
                }
                let mut f = base(row, kind, s, kind == Kind::Alibi);
                match kind {
                    Kind::Dropout => f.dropout_p = Some(DROPOUT_P),
                    Kind::Softcap => f.softcap = Some(SOFTCAP),
                    Kind::Alibi => f.alibi_slopes = Some(alibi_slopes(h)),
                    _ => {}
                }
                v.push(f);
            }
        }
        for (row, causal) in [("varlen", false), ("varlen-causal", true)] {
            if !wanted(row) {
                continue;
            }
            let max = VARLEN_SEQLENS.iter().copied().max().unwrap_or(0);
            let pairs: f64 = VARLEN_SEQLENS
                .iter()
                .map(|&l| {
                    let l = l as f64;
                    if causal { l * (l + 1.0) / 2.0 } else { l * l }
                })
                .sum();
            v.push(Feature {
                batch: VARLEN_SEQLENS.len(),
                flops: 4.0 * (h * d) as f64 * pairs,
                seqlens: Some(VARLEN_SEQLENS.to_vec()),
                ..base(row, Kind::Varlen, max, causal)
            });
        }
        Ok((v, skipped))
    }

    /// Uniform bf16 values in [-1, 1) (xorshift64, as the canonical table's inputs).
    pub(super) fn random_bf16(n: usize, x: &mut u64) -> Vec<u16> {
        (0..n)
            .map(|_| {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                let f = (*x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                half::bf16::from_f32(f).to_bits()
            })
            .collect()
    }

    /// `n` bf16 bias values: a random block of about 4 Mi values repeated (the values do not
    /// change the kernel's time; generating gigabytes element by element would).
    fn bias_host(n: usize) -> Vec<u16> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let chunk = random_bf16(n.min((1 << 22) + 13), &mut x);
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            let take = chunk.len().min(n - v.len());
            v.extend_from_slice(&chunk[..take]);
        }
        v
    }

    /// The inputs shared by every row: each row has TOKENS·H·D elements of q, k, v and out and
    /// H·TOKENS of lse, whatever its split into batch and sequence.
    struct Io {
        sets: Vec<[DeviceBuffer<u16>; 3]>,
        out: DeviceBuffer<u16>,
        lse: DeviceBuffer<f32>,
    }

    impl Io {
        fn new(dev: &Device) -> Result<Io> {
            let n = TOKENS * HEADS * HEAD_DIM;
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            let mut sets = Vec::new();
            for _ in 0..3 {
                let mut g = || dev.clone_htod(&random_bf16(n, &mut x));
                sets.push([g()?, g()?, g()?]);
            }
            Ok(Io {
                sets,
                out: dev.alloc::<u16>(n)?,
                lse: dev.alloc::<f32>(HEADS * TOKENS)?,
            })
        }
    }

    /// Our median launch time of row `f`, in ms.
    fn time_row(dev: &Device, stream: &Stream, io: &Io, f: &Feature, iters: usize) -> Result<f64> {
        let (h, d) = (f.heads, f.d);
        let (b, s) = match &f.seqlens {
            Some(l) => (1, l.iter().sum::<usize>()),
            None => (f.batch, f.seqlen),
        };
        let shape = [b, s, h, d];
        let n: usize = shape.iter().product();
        if n > io.out.len() || b * h * s > io.lse.len() {
            return Err(Error::invalid(
                "feature row",
                format!("at most {} elements", io.out.len()),
                n,
            ));
        }
        let t = |buf: &DeviceBuffer<u16>| TensorRef {
            len: buf.len(),
            ..TensorRef::contiguous(buf.ptr(), DType::Bf16, shape)
        };
        let (ss, s_) = ((s * s) as i64, s as i64);
        let bias = match f.kind {
            Kind::BiasBcast => Some((dev.clone_htod(&bias_host(h * s * s))?, [0, ss, s_, 1])),
            Kind::BiasFull => Some((
                dev.clone_htod(&bias_host(b * h * s * s))?,
                [h as i64 * ss, ss, s_, 1],
            )),
            _ => None,
        };
        let slopes = match &f.alibi_slopes {
            Some(v) => Some(dev.clone_htod(v)?),
            None => None,
        };
        let cu = match &f.seqlens {
            Some(l) => {
                let mut c = vec![0i32];
                for &x in l {
                    c.push(c[c.len() - 1] + x as i32);
                }
                Some(dev.clone_htod(&c)?)
            }
            None => None,
        };
        let mask = if f.causal {
            Mask::Causal(Align::BottomRight)
        } else {
            Mask::None
        };
        let call = |i: usize| {
            let [q, k, v] = &io.sets[i % io.sets.len()];
            let mut c = Forward::new(t(q), t(k), t(v), t(&io.out))
                .lse(LseRef {
                    len: io.lse.len(),
                    ..LseRef::contiguous(io.lse.ptr(), [b, h, s])
                })
                .mask(mask);
            if let Some((buf, strides)) = &bias {
                c = c.bias(BiasRef {
                    ptr: buf.ptr(),
                    len: buf.len(),
                    dtype: DType::Bf16,
                    shape: [b, h, s, s],
                    strides: *strides,
                });
            }
            if let Some(sl) = &slopes {
                c = c.alibi(AlibiRef {
                    ptr: sl.ptr(),
                    len: sl.len(),
                    per_batch: false,
                });
            }
            if let Some(cap) = f.softcap {
                c = c.softcap(cap);
            }
            if let Some(p) = f.dropout_p {
                c = c.dropout(Dropout {
                    p,
                    rng: Philox::Host {
                        seed: DROPOUT_SEED,
                        offset: (i * b * h) as u64,
                    },
                });
            }
            if let Some(cu) = &cu {
                let r = I32Ref {
                    ptr: cu.ptr(),
                    len: cu.len(),
                };
                c = c.varlen(Varlen {
                    cu_seqlens_q: r,
                    cu_seqlens_k: r,
                    max_seqlen_q: f.seqlen,
                    max_seqlen_k: f.seqlen,
                });
            }
            c
        };
        let mut times = Vec::new();
        for i in 0..iters.max(1) + 3 {
            let c = call(i);
            // SAFETY: q/k/v/out/lse are live allocations of at least the row's extent (checked
            // above), and the bias, slopes and cu_seqlens buffers live until the end of this
            // function, sized for the row; out and lse overlap nothing else.
            let ms = stream.time_ms(|st| unsafe { c.launch(st) })?;
            if i >= 3 {
                times.push(ms);
            }
        }
        Ok(median(times))
    }

    /// The command line, quoted for a POSIX shell where needed.
    pub(super) fn command_line() -> String {
        std::env::args()
            .map(|x| {
                let plain = !x.is_empty()
                    && x.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c));
                if plain {
                    x
                } else {
                    format!("'{}'", x.replace('\'', r"'\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs the peers script on `rows`: its rows (possibly partial when it failed part-way),
    /// and what went wrong, if anything.
    fn peers(a: &Args, rows: &[Feature]) -> (Vec<Value>, Option<String>) {
        super::run_peers_script(&a.feature_peers_script, "features", &rows)
    }

    #[derive(Serialize)]
    struct Row {
        #[serde(flatten)]
        feature: Feature,
        ms: Option<f64>,
        tflops: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Peer name → `{ms, tflops, ours_over_peer}` or `{error}`, as the peers script wrote it.
        peers: Map<String, Value>,
    }

    fn cell_s(f: &Feature) -> String {
        if f.seqlens.is_some() {
            format!("<={}", f.seqlen)
        } else {
            f.seqlen.to_string()
        }
    }

    /// `row S=…` (`S<=…` in varlen, where S is the longest sequence).
    fn label(f: &Feature) -> String {
        if f.seqlens.is_some() {
            format!("{} S<={}", f.row, f.seqlen)
        } else {
            format!("{} S={}", f.row, f.seqlen)
        }
    }

    /// The first line of `e`, at most `n` characters.
    pub(super) fn short(e: &str, n: usize) -> String {
        let line = e.lines().next().unwrap_or("");
        if line.chars().count() > n {
            format!("{}...", line.chars().take(n).collect::<String>())
        } else {
            line.to_string()
        }
    }

    pub(crate) fn run(a: &Args) -> Result<()> {
        println!("command: {}", command_line());
        let (rows, skipped) = rows(a)?;
        if a.d.is_some() || a.dtype.is_some() {
            println!("note: --features rows are bf16, D = 128; --d and --dtype are ignored");
        }
        let want_peers = a.compare.as_deref().is_none_or(|c| c == "torch");
        let Some(dev) = crate::best_device() else {
            println!(
                "--features needs a GPU; nothing timed. The rows would be: {}",
                rows.iter().map(label).collect::<Vec<_>>().join(", ")
            );
            return Ok(());
        };
        let (peer_rows, problem) = if want_peers {
            eprintln!(
                "peers: python3 {} ({} rows)",
                a.feature_peers_script.display(),
                rows.len()
            );
            let sp = super::spinner(&format!("torch feature peers ({} rows)", rows.len()));
            let r = peers(a, &rows);
            sp.finish_and_clear();
            r
        } else {
            (Vec::new(), None)
        };
        if let Some(p) = &problem {
            println!("torch peers: {p}");
        }
        let stream = dev.new_stream()?;
        let io = Io::new(&dev)?;
        let mut out = Vec::new();
        let n = rows.len();
        let bar = super::progress(n, "features");
        for (i, f) in rows.into_iter().enumerate() {
            bar.set_message(label(&f));
            let r = time_row(&dev, &stream, &io, &f, a.iters);
            bar.inc(1);
            let (ms, error) = match r {
                Ok(ms) => (Some(ms), None),
                Err(e) => (None, Some(e.to_string())),
            };
            let tflops = ms.map(|ms| f.flops / ms / 1e9);
            let mut peers = Map::new();
            for p in &peer_rows {
                let same = p["row"] == f.row && p["seqlen"] == f.seqlen;
                if let (true, Some(name)) = (same, p["peer"].as_str()) {
                    let mut o = p.as_object().cloned().unwrap_or_default();
                    for k in ["row", "seqlen", "peer"] {
                        o.remove(k);
                    }
                    if let (Some(x), Some(y)) = (tflops, o.get("tflops").and_then(Value::as_f64)) {
                        o.insert("ours_over_peer".into(), Value::from(x / y));
                    }
                    peers.insert(name.to_string(), Value::Object(o));
                }
            }
            bar.suspend(|| {
                eprintln!(
                    "[{}/{n}] {}: {}",
                    i + 1,
                    label(&f),
                    match (ms, tflops, &error) {
                        (Some(ms), Some(t), _) => format!("{ms:.3} ms, {t:.1} TFLOP/s"),
                        (_, _, e) => format!("error: {}", short(e.as_deref().unwrap_or(""), 200)),
                    }
                )
            });
            out.push(Row {
                feature: f,
                ms,
                tflops,
                error,
                peers,
            });
        }
        bar.finish_and_clear();
        print_table(&out, &skipped);
        if let Some(p) = &a.json {
            std::fs::write(p, serde_json::to_vec_pretty(&out).unwrap_or_default())
                .map_err(|e| Error::invalid("--json", "a writable path", e))?;
            println!("wrote {}", p.display());
            super::write_plot(p, &out)?;
        }
        Ok(())
    }

    fn print_table(rows: &[Row], skipped: &[String]) {
        let cols: Vec<&str> = PEERS
            .into_iter()
            .filter(|p| rows.iter().any(|r| r.peers.contains_key(*p)))
            .collect();
        let mut table = Table::new();
        let mut header: Vec<String> = ["row", "S", "ms", "TFLOP/s"].map(String::from).to_vec();
        for p in &cols {
            header.push(p.to_string());
            header.push(format!("ours/{p}"));
        }
        table.set_header(header);
        for r in rows {
            let mut cells = vec![
                r.feature.row.to_string(),
                cell_s(&r.feature),
                r.ms.map_or("err".into(), |x| format!("{x:.3}")),
                r.tflops.map_or("err".into(), |x| format!("{x:.1}")),
            ];
            for p in &cols {
                let (t, ratio) = match r.peers.get(*p) {
                    None => ("-".into(), "-".into()),
                    Some(v) => match v.get("tflops").and_then(Value::as_f64) {
                        None => ("err".into(), "-".into()),
                        Some(t) => (
                            format!("{t:.1}"),
                            r.tflops.map_or("-".into(), |x| format!("{:.2}", x / t)),
                        ),
                    },
                };
                cells.push(t);
                cells.push(ratio);
            }
            table.add_row(cells);
        }
        println!("{table}");
        println!("TFLOP/s from the FLOPs of each row; ours/peer > 1 means ours is faster.");
        let mut seen = Vec::new();
        for r in rows {
            if !seen.contains(&r.feature.row) {
                seen.push(r.feature.row);
                println!("{}: {}", r.feature.row, r.feature.note);
            }
        }
        if rows.iter().any(|r| r.feature.seqlens.is_some()) {
            println!(
                "varlen sequence lengths ({}, {} tokens): {:?}",
                VARLEN_SEQLENS.len(),
                VARLEN_SEQLENS.iter().sum::<usize>(),
                VARLEN_SEQLENS
            );
        }
        for s in skipped {
            println!("skipped: {s}");
        }
        // Errors, grouped by (row, who, message) with the sequence lengths they occurred at.
        let mut errs: Vec<(String, String, String, Vec<String>)> = Vec::new();
        let mut add = |row: &str, who: &str, msg: &str, s: String| {
            let msg = short(msg, 240);
            match errs
                .iter_mut()
                .find(|e| e.0 == row && e.1 == who && e.2 == msg)
            {
                Some(e) => e.3.push(s),
                None => errs.push((row.into(), who.into(), msg, vec![s])),
            }
        };
        for r in rows {
            if let Some(e) = &r.error {
                add(r.feature.row, "ours", e, cell_s(&r.feature));
            }
            for (name, v) in &r.peers {
                if let Some(e) = v.get("error").and_then(Value::as_str) {
                    add(r.feature.row, name, e, cell_s(&r.feature));
                }
            }
        }
        if !errs.is_empty() {
            println!("errors:");
            for (row, who, msg, s) in errs {
                println!("  {row} S {} {who}: {msg}", s.join(","));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::{Figure, OURS};

    /// The rows the canonical table writes to `--json` plot beside it: a panel per (dtype, D,
    /// causal), ours and the peers in TFLOP/s against S, and `attn plot` reads the file back to
    /// the same figure.
    #[test]
    fn canonical_rows_plot_beside_the_json() {
        let a = Args {
            max_seqlen: 2048,
            d: Some(64),
            pass: "bwd".into(),
            ..Default::default()
        };
        let rows: Vec<Row> = shapes(&a)
            .into_iter()
            .map(|s| {
                let ms = s.seqlen as f64 / 1000.0;
                let mut peers = serde_json::Map::new();
                peers.insert("flash".into(), serde_json::json!(123.0));
                peers.insert("cudnn".into(), serde_json::Value::Null);
                Row {
                    tflops: s.flops() / ms / 1e9,
                    ms,
                    extra_bytes: 0,
                    peers,
                    shape: s,
                }
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("attn_bench_plot_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("bwd.json");
        std::fs::write(&json, serde_json::to_vec_pretty(&rows).unwrap()).unwrap();
        write_plot(&json, &rows).unwrap();
        let svg = std::fs::read_to_string(dir.join("bwd.svg")).unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let f = Figure::from_bench_json(&doc).unwrap();
        assert_eq!(svg, f.render_svg().unwrap());
        assert!(f.title.contains("backward"), "{}", f.title);
        let titles: Vec<&str> = f.panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "bf16 D=64 non-causal",
                "bf16 D=64 causal",
                "f16 D=64 non-causal",
                "f16 D=64 causal"
            ]
        );
        for p in &f.panels {
            let names: Vec<&str> = p.series.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, [OURS, "torch flash"]);
            let xs: Vec<f64> = p.series[0].points.iter().map(|q| q.x).collect();
            assert_eq!(xs, [512.0, 1024.0, 2048.0]);
        }
        let q = &f.panels[0].series[0].points[1];
        assert!((q.y - rows[1].tflops).abs() < 1e-9);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
