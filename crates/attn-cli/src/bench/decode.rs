//! `attn bench --decode`: decoding, i.e. one or a few new query tokens per sequence against a
//! long KV cache (a memory-bound problem), beside PyTorch SDPA's backends and a device-to-device
//! copy timed in the same run on the same GPU through `python3 bench/torch_decode_peers.py`.
//!
//! # Rows
//!
//! All bf16, D = 128, Hq = 32, non-causal unless noted. Ours gets q `[B, Sq, Hq, D]`, k and v
//! `[B, Sk, Hk, D]`, out `[B, Sq, Hq, D]` and an f32 lse `[B, Hq, Sq]` (requested, as engines
//! do), through the plain [`Forward`]: the library picks its own decode strategy (split-KV, GQA
//! packing).
//!
//! | # | row | B | Sq | Sk | Hq/Hk | mask |
//! |---|---|---|---|---|---|---|
//! | 1 | `b1-sk32768-hk8` | 1 | 1 | 32768 | 32/8 | none |
//! | 2 | `b16-sk8192-hk8` | 16 | 1 | 8192 | 32/8 | none |
//! | 3 | `b8-sk8192` | 8 | 1 | 8192 | 32/32 | none |
//! | 4 | `b32-sk4096` | 32 | 1 | 4096 | 32/32 | none |
//! | 5 | `b16-sq4-sk8192-hk8-causal` | 16 | 4 | 8192 | 32/8 | causal bottom-right (speculative decoding) |
//! | 6 | `b8-sk32768` | 8 | 1 | 32768 | 32/32 | none |
//! | 7 | `b64-sk2048` | 64 | 1 | 2048 | 32/32 | none |
//!
//! A name reads `b<B>[-sq<Sq>]-sk<Sk>[-hk<Hk>][-causal]` (Sq = 1 and Hk = 32 unless given).
//! `--decode` alone runs every row; `--decode 1,b16,b8-sk32768` picks rows by number, by name, or
//! by a name's prefix up to a `-` (`b16` = rows 2 and 5), always in table order.
//!
//! # Metrics
//!
//! - bytes moved: `bytes = 2 · (2·B·Sk·Hk·D + 2·B·Sq·Hq·D)`, i.e. K and V read once, Q read once
//!   and O written once, 2 bytes per bf16 element (the f32 lse, `4·B·Hq·Sq` bytes, is not
//!   counted; the peers do not write one);
//! - `GB/s = bytes / (ms · 10⁶)`, the same bytes for ours and every peer;
//! - `% of copy = 100 · GB/s / copy GB/s`, where the copy is measured in the same run by the peers
//!   script: `y.copy_(x)` of a 2 GiB `torch` buffer, `copy GB/s = 2 · 2 GiB / (ms · 10⁶)`
//!   (read and write, as the anchors' `copy` entry). Without PyTorch the column is left out and
//!   the table says so: `attn_host::Device` has no device-to-device copy to time instead;
//! - `ours/peer = peer ms / ours ms`, a speed ratio: > 1 means ours is faster.
//!
//! # Timing
//!
//! Each row rotates over `sets = max(2, ceil(200 MB / K+V bytes))` input sets (q, k, v each), so
//! that the 200 MB of K/V in rotation is 4× the H200's 50 MB L2 and a launch never finds its KV
//! cache L2-resident. Each of 3 warm-up and `--iters` timed rounds launches the call on the
//! previous set untimed, then on set `i % sets` between two device events; the result is the
//! median of the timed rounds. The untimed launch keeps the GPU busy while the host enqueues the
//! timed one, so that the host's launch overhead is not in a decode kernel's tens of
//! microseconds. The peers script times each backend the same way (same sets, same rounds, CUDA
//! events, median), checks each backend's output once against an fp32 reference of batch 0, and
//! turns a mismatch into an error. A row of ours or a peer that fails becomes an error in the
//! table and the JSON, never an abort.
//!
//! [`Forward`]: attn_host::Forward
use super::features::{command_line, random_bf16, short};
use super::{Args, median};
use attn_abi::DType;
use attn_host::{
    Align, Device, DeviceBuffer, Error, Forward, LseRef, Mask, Result, Stream, TensorRef,
};
use comfy_table::Table;
use serde::Serialize;
use serde_json::{Map, Value};

/// Query heads of every row.
const HEADS_Q: usize = 32;
/// Head dim of every row.
const HEAD_DIM: usize = 128;
/// Bytes of one bf16 element.
const ELEM_BYTES: u64 = 2;
/// Untimed rounds before the timed ones.
const WARMUP: usize = 3;
/// The K/V bytes a row's input sets add up to at least (decimal MB): 4× the H200's 50 MB L2.
const ROTATE_BYTES: u64 = 200_000_000;
/// The fewest input sets a row rotates over.
const MIN_SETS: usize = 2;
/// Bytes of each of the two buffers of the peers' device-to-device copy (as the anchors').
const COPY_BYTES: u64 = 2 << 30;
/// Peer columns (ms), in table order.
const PEERS: [&str; 3] = ["flash", "efficient", "cudnn"];
/// Peers that also get a speed-ratio column.
const RATIO_PEERS: [&str; 2] = ["flash", "cudnn"];
/// Elements in the random block that the host inputs repeat (odd, so inputs at different
/// offsets into the pattern never line up).
const CHUNK: usize = (1 << 22) + 13;
/// Peers' output check, as the peers script applies it (shown in the notes).
const CHECK_NOTE: &str = "each peer's output on input set 0 is checked against an fp32 reference \
                          of batch 0 (max |err| <= 2e-2, else an error)";

/// One row as listed in the source (the rest of the shape is fixed).
struct Spec {
    row: &'static str,
    batch: usize,
    seq_q: usize,
    seq_k: usize,
    heads_k: usize,
    /// Causal bottom-right.
    causal: bool,
}

/// The decode rows, in table order (see the module docs).
const SPECS: [Spec; 7] = [
    Spec {
        row: "b1-sk32768-hk8",
        batch: 1,
        seq_q: 1,
        seq_k: 32768,
        heads_k: 8,
        causal: false,
    },
    Spec {
        row: "b16-sk8192-hk8",
        batch: 16,
        seq_q: 1,
        seq_k: 8192,
        heads_k: 8,
        causal: false,
    },
    Spec {
        row: "b8-sk8192",
        batch: 8,
        seq_q: 1,
        seq_k: 8192,
        heads_k: 32,
        causal: false,
    },
    Spec {
        row: "b32-sk4096",
        batch: 32,
        seq_q: 1,
        seq_k: 4096,
        heads_k: 32,
        causal: false,
    },
    Spec {
        row: "b16-sq4-sk8192-hk8-causal",
        batch: 16,
        seq_q: 4,
        seq_k: 8192,
        heads_k: 8,
        causal: true,
    },
    Spec {
        row: "b8-sk32768",
        batch: 8,
        seq_q: 1,
        seq_k: 32768,
        heads_k: 32,
        causal: false,
    },
    Spec {
        row: "b64-sk2048",
        batch: 64,
        seq_q: 1,
        seq_k: 2048,
        heads_k: 32,
        causal: false,
    },
];

/// One decode row, as sent to the peers script (and written to `--json`).
#[derive(Clone, Debug, Serialize, PartialEq)]
struct Row {
    /// 1-based number in the table (what `--decode 3` picks).
    index: usize,
    row: &'static str,
    dtype: &'static str,
    d: usize,
    batch: usize,
    seq_q: usize,
    seq_k: usize,
    heads_q: usize,
    heads_k: usize,
    /// Causal bottom-right (the last query sees the last key).
    causal: bool,
    /// Bytes moved: K + V + Q + O once each (see the module docs).
    bytes: u64,
    /// K + V bytes of one input set.
    kv_bytes: u64,
    /// Input sets rotated over.
    sets: usize,
}

impl Row {
    fn new(index: usize, s: &Spec) -> Row {
        let (b, d) = (s.batch as u64, HEAD_DIM as u64);
        let kv_bytes = ELEM_BYTES * 2 * b * s.seq_k as u64 * s.heads_k as u64 * d;
        let qo_bytes = ELEM_BYTES * 2 * b * s.seq_q as u64 * HEADS_Q as u64 * d;
        Row {
            index,
            row: s.row,
            dtype: "bf16",
            d: HEAD_DIM,
            batch: s.batch,
            seq_q: s.seq_q,
            seq_k: s.seq_k,
            heads_q: HEADS_Q,
            heads_k: s.heads_k,
            causal: s.causal,
            bytes: kv_bytes + qo_bytes,
            kv_bytes,
            sets: MIN_SETS.max(ROTATE_BYTES.div_ceil(kv_bytes.max(1)) as usize),
        }
    }

    /// Elements of q (and out).
    fn q_elems(&self) -> usize {
        self.batch * self.seq_q * self.heads_q * self.d
    }

    /// Elements of k (and v).
    fn kv_elems(&self) -> usize {
        self.batch * self.seq_k * self.heads_k * self.d
    }

    /// `# name`.
    fn label(&self) -> String {
        format!("{} {}", self.index, self.row)
    }

    /// The row in words: shape, mask, bytes moved and the rotation.
    fn describe(&self) -> String {
        format!(
            "{}: B={} Sq={} Sk={} Hq/Hk={}/{} D={} {}, {}; {:.1} MB moved, {} input sets ({:.0} \
             MB of K/V)",
            self.label(),
            self.batch,
            self.seq_q,
            self.seq_k,
            self.heads_q,
            self.heads_k,
            self.d,
            self.dtype,
            if self.causal {
                "causal bottom-right (peers: attn_mask=causal_lower_right(Sq, Sk))"
            } else {
                "non-causal"
            },
            self.bytes as f64 / 1e6,
            self.sets,
            (self.sets as u64 * self.kv_bytes) as f64 / 1e6,
        )
    }
}

/// The rows `sel` picks (the `--decode` value), in table order: a comma-separated list of `all`,
/// row numbers (1-based), row names, and prefixes of names up to a `-`. An empty list is `all`.
fn select(sel: &str) -> Result<Vec<Row>> {
    let rows: Vec<Row> = SPECS
        .iter()
        .enumerate()
        .map(|(i, s)| Row::new(i + 1, s))
        .collect();
    let items: Vec<&str> = sel
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .collect();
    let mut want = vec![items.is_empty(); rows.len()];
    for it in &items {
        let hits: Vec<usize> = match it.parse::<usize>() {
            // Row numbers are 1-based: 0 and numbers past the table pick nothing.
            Ok(n) => n
                .checked_sub(1)
                .filter(|&i| i < rows.len())
                .into_iter()
                .collect(),
            Err(_) => (0..rows.len())
                .filter(|&i| {
                    let r = rows[i].row;
                    *it == "all" || r == *it || r.starts_with(&format!("{it}-"))
                })
                .collect(),
        };
        if hits.is_empty() {
            return Err(Error::invalid(
                "--decode",
                format!(
                    "a comma-separated list of: all, row numbers 1..={}, row names or their \
                     prefixes up to a '-' ({})",
                    rows.len(),
                    rows.iter().map(|r| r.row).collect::<Vec<_>>().join(", ")
                ),
                it,
            ));
        }
        for h in hits {
            want[h] = true;
        }
    }
    Ok(rows
        .into_iter()
        .zip(want)
        .filter_map(|(r, w)| w.then_some(r))
        .collect())
}

/// Whether `--compare` asks for the PyTorch peers: yes by default and with `torch`, no with
/// `none`; anything else is an error.
fn wants_peers(compare: Option<&str>) -> Result<bool> {
    match compare {
        None | Some("torch") => Ok(true),
        Some("none") => Ok(false),
        Some(x) => Err(Error::invalid(
            "--compare",
            "torch or none (with --decode)",
            x,
        )),
    }
}

/// Host data for every input of the rows: a random bf16 block of [`CHUNK`] values repeated to
/// `n + CHUNK` elements, for inputs of up to `n` elements (the values do not change a decode
/// kernel's time; generating gigabytes element by element would take long).
fn host_pattern(n: usize) -> Vec<u16> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let chunk = random_bf16(CHUNK, &mut x);
    let total = n + CHUNK;
    let mut v = Vec::with_capacity(total);
    while v.len() < total {
        let take = chunk.len().min(total - v.len());
        v.extend_from_slice(&chunk[..take]);
    }
    v
}

/// The `n` host elements of input number `j` (`pattern` from [`host_pattern`]): a window at an
/// offset of its own, so that no two inputs hold the same bytes.
fn host_input(pattern: &[u16], j: usize, n: usize) -> Result<&[u16]> {
    let off = (j * 104_729) % CHUNK;
    pattern.get(off..off + n).ok_or_else(|| {
        Error::invalid(
            "decode host pattern",
            format!("at least {} elements", off + n),
            pattern.len(),
        )
    })
}

/// Our median launch time of row `r`, in ms (see the module docs for the rounds).
fn time_row(
    dev: &Device,
    stream: &Stream,
    r: &Row,
    iters: usize,
    pattern: &[u16],
    splits: Option<u32>,
    log: &dyn Fn(String),
) -> Result<f64> {
    let (nq, nkv) = (r.q_elems(), r.kv_elems());
    let mut sets: Vec<[DeviceBuffer<u16>; 3]> = Vec::with_capacity(r.sets);
    for s in 0..r.sets {
        let up = |j: usize, n: usize| dev.clone_htod(host_input(pattern, 3 * s + j, n)?);
        sets.push([up(0, nq)?, up(1, nkv)?, up(2, nkv)?]);
    }
    let out = dev.alloc::<u16>(nq)?;
    let lse = dev.alloc::<f32>(r.batch * r.heads_q * r.seq_q)?;
    let q_shape = [r.batch, r.seq_q, r.heads_q, r.d];
    let kv_shape = [r.batch, r.seq_k, r.heads_k, r.d];
    let t = |buf: &DeviceBuffer<u16>, shape| TensorRef {
        len: buf.len(),
        ..TensorRef::contiguous(buf.ptr(), DType::Bf16, shape)
    };
    let mask = if r.causal {
        Mask::Causal(Align::BottomRight)
    } else {
        Mask::None
    };
    let n = sets.len();
    let base = |i: usize| {
        let [q, k, v] = &sets[i % n];
        Forward::new(
            t(q, q_shape),
            t(k, kv_shape),
            t(v, kv_shape),
            t(&out, q_shape),
        )
        .lse(LseRef {
            len: lse.len(),
            ..LseRef::contiguous(lse.ptr(), [r.batch, r.heads_q, r.seq_q])
        })
        .mask(mask)
        .splits(splits.map_or(attn_host::Splits::Auto, attn_host::Splits::Fixed))
    };
    // Engines preallocate split-KV's workspace: so does the bench (a per-call allocation would
    // time cudaMalloc/cudaFree).
    let plan = base(0).plan_on(dev.tile_family()?, dev.info().multiprocessors)?;
    let ws = dev.alloc::<u8>(plan.workspace_bytes.max(16))?;
    log(format!(
        "{}: {}, {} split(s), GQA pack {}, workspace {} B",
        r.row, plan.kernel, plan.splits, plan.pack, plan.workspace_bytes
    ));
    let call = |i: usize| {
        base(i).workspace(attn_host::Workspace {
            ptr: ws.ptr(),
            bytes: ws.len(),
        })
    };
    let mut times = Vec::with_capacity(iters);
    for i in 0..WARMUP + iters {
        let (filler, timed) = (call(i + n - 1), call(i));
        // SAFETY: q/k/v/out/lse are live allocations on `dev` of exactly the row's shapes (the
        // tensors' `len` is the allocation's); out and lse overlap nothing else.
        unsafe { filler.launch(stream)? };
        // SAFETY: as above.
        let ms = stream.time_ms(|st| unsafe { timed.launch(st) })?;
        if i >= WARMUP {
            times.push(ms);
        }
    }
    stream.synchronize()?;
    Ok(median(times))
}

/// What the peers script is sent.
#[derive(Serialize)]
struct PeerRequest<'a> {
    iters: usize,
    warmup: usize,
    copy_bytes: u64,
    rows: &'a [Row],
}

/// Runs the peers script on `rows`: its entries (possibly partial when it failed part-way), and
/// what went wrong, if anything.
fn peers(a: &Args, rows: &[Row], iters: usize) -> (Vec<Value>, Option<String>) {
    let req = PeerRequest {
        iters,
        warmup: WARMUP,
        copy_bytes: COPY_BYTES,
        rows,
    };
    super::run_peers_script(&a.decode_peers_script, "decode", &req)
}

/// The copy bandwidth (GB/s) in the peers' entries, or why there is none.
fn copy_bandwidth(entries: &[Value]) -> std::result::Result<f64, String> {
    let Some(c) = entries.iter().find(|p| p["kind"] == "copy") else {
        return Err("the peers script reported no copy".into());
    };
    match c.get("gbps").and_then(Value::as_f64) {
        Some(g) if g > 0.0 && g.is_finite() => Ok(g),
        _ => Err(format!(
            "the peers' copy failed: {}",
            short(
                c.get("error").and_then(Value::as_str).unwrap_or("no gbps"),
                200
            )
        )),
    }
}

/// The peer entries of row `r` (`kind` = `decode`, same `row`), keyed by peer, with
/// `ours_over_peer = peer ms / ours ms` added where both timed.
fn peers_of(entries: &[Value], r: &Row, ours_ms: Option<f64>) -> Map<String, Value> {
    let mut m = Map::new();
    for p in entries {
        let same = p["kind"] == "decode" && p["row"] == r.row;
        if let (true, Some(name)) = (same, p["peer"].as_str()) {
            let mut o = p.as_object().cloned().unwrap_or_default();
            for k in ["kind", "row", "peer"] {
                o.remove(k);
            }
            let peer_ms = o.get("ms").and_then(Value::as_f64);
            if let (Some(x), Some(y), false) = (ours_ms, peer_ms, o.contains_key("error")) {
                o.insert("ours_over_peer".into(), Value::from(y / x));
            }
            m.insert(name.to_string(), Value::Object(o));
        }
    }
    m
}

/// One timed row (written to `--json`).
#[derive(Serialize)]
struct Timed {
    #[serde(flatten)]
    row: Row,
    ms: Option<f64>,
    gbps: Option<f64>,
    /// `100 · gbps / copy GB/s`, when the copy was measured.
    pct_of_copy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Peer name → the peers script's entry (`ms`, `gbps`, `construct`, `max_abs_err`,
    /// `ours_over_peer`) or `{error}`.
    peers: Map<String, Value>,
}

/// The `--json` document.
#[derive(Serialize)]
struct Report<'a> {
    command: String,
    device: String,
    bytes_formula: &'static str,
    /// The copy bandwidth of the same run (GB/s, read + write), when measured.
    copy_gbps: Option<f64>,
    /// How the copy was measured, or why it was not.
    copy_note: String,
    rows: &'a [Timed],
}

/// The bytes formula, as the notes and the JSON state it.
const BYTES_FORMULA: &str = "bytes = 2 * (2*B*Sk*Hk*D + 2*B*Sq*Hq*D) (K, V, Q read once, O \
                             written once, bf16; lse not counted); GB/s = bytes / ms / 1e6";

pub(crate) fn run(a: &Args) -> Result<()> {
    println!("command: {}", command_line());
    let rows = select(a.decode.as_deref().unwrap_or("all"))?;
    let want_peers = wants_peers(a.compare.as_deref())?;
    if a.d.is_some() || a.dtype.is_some() {
        println!("note: --decode rows are bf16, D = 128; --d and --dtype are ignored");
    }
    let Some(dev) = crate::best_device() else {
        println!("--decode needs a GPU; nothing timed. The rows would be:");
        for r in &rows {
            println!("  {}", r.describe());
        }
        return Ok(());
    };
    let iters = a.iters.max(1);
    let (entries, problem) = if want_peers {
        eprintln!(
            "peers: python3 {} ({} rows, {iters} iters)",
            a.decode_peers_script.display(),
            rows.len()
        );
        let sp = super::spinner(&format!("torch decode peers ({} rows)", rows.len()));
        let r = peers(a, &rows, iters);
        sp.finish_and_clear();
        r
    } else {
        (Vec::new(), None)
    };
    if let Some(p) = &problem {
        println!("torch peers: {p}");
    }
    let (copy, copy_note) = if want_peers {
        match copy_bandwidth(&entries) {
            Ok(g) => (
                Some(g),
                format!(
                    "copy: {g:.0} GB/s, torch y.copy_(x) of {} GiB, read + write, this run",
                    COPY_BYTES >> 30
                ),
            ),
            Err(e) => (None, no_copy_note(&e)),
        }
    } else {
        (None, no_copy_note("--compare none"))
    };
    let stream = dev.new_stream()?;
    let most = rows
        .iter()
        .map(|r| r.q_elems().max(r.kv_elems()))
        .max()
        .unwrap_or(0);
    let pattern = host_pattern(most);
    let mut out = Vec::new();
    let n = rows.len();
    let bar = super::progress(n, "decode");
    let log = |line: String| bar.suspend(|| eprintln!("{line}"));
    for (i, r) in rows.into_iter().enumerate() {
        bar.set_message(r.label());
        let timed = time_row(&dev, &stream, &r, iters, &pattern, a.splits, &log);
        bar.inc(1);
        let (ms, error) = match timed {
            Ok(ms) => (Some(ms), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let gbps = ms.map(|ms| r.bytes as f64 / ms / 1e6);
        let pct_of_copy = gbps.zip(copy).map(|(g, c)| 100.0 * g / c);
        log(format!(
            "[{}/{n}] {}: {}",
            i + 1,
            r.label(),
            match (ms, gbps, &error) {
                (Some(ms), Some(g), _) => format!("{ms:.4} ms, {g:.0} GB/s"),
                (_, _, e) => format!("error: {}", short(e.as_deref().unwrap_or(""), 200)),
            }
        ));
        let peers = peers_of(&entries, &r, ms);
        out.push(Timed {
            row: r,
            ms,
            gbps,
            pct_of_copy,
            error,
            peers,
        });
    }
    bar.finish_and_clear();
    println!("{}", render(&out, copy.is_some(), &copy_note));
    if let Some(p) = &a.json {
        let report = Report {
            command: command_line(),
            device: dev.info().name.clone(),
            bytes_formula: BYTES_FORMULA,
            copy_gbps: copy,
            copy_note,
            rows: &out,
        };
        std::fs::write(p, serde_json::to_vec_pretty(&report).unwrap_or_default())
            .map_err(|e| Error::invalid("--json", "a writable path", e))?;
        println!("wrote {}", p.display());
        super::write_plot(p, &report)?;
    }
    Ok(())
}

/// The note that replaces the copy bandwidth when there is none (`why`).
fn no_copy_note(why: &str) -> String {
    format!(
        "% of copy omitted: no copy bandwidth from PyTorch ({why}), and attn_host::Device has no \
         device-to-device copy to time instead"
    )
}

/// The table and its notes. `with_copy`: whether the `% copy` column has numbers.
fn render(rows: &[Timed], with_copy: bool, copy_note: &str) -> String {
    let cols: Vec<&str> = PEERS
        .into_iter()
        .filter(|p| rows.iter().any(|r| r.peers.contains_key(*p)))
        .collect();
    let ratios: Vec<&str> = RATIO_PEERS
        .into_iter()
        .filter(|p| cols.contains(p))
        .collect();
    let mut table = Table::new();
    let mut header: Vec<String> = ["#", "row", "ms", "GB/s"].map(String::from).to_vec();
    if with_copy {
        header.push("% copy".into());
    }
    header.extend(cols.iter().map(|p| format!("{p} ms")));
    header.extend(ratios.iter().map(|p| format!("ours/{p}")));
    table.set_header(header);
    let peer_ms = |r: &Timed, p: &str| -> Option<std::result::Result<f64, ()>> {
        let v = r.peers.get(p)?;
        Some(
            match (v.get("error"), v.get("ms").and_then(Value::as_f64)) {
                (None, Some(ms)) => Ok(ms),
                _ => Err(()),
            },
        )
    };
    for r in rows {
        let mut cells = vec![
            r.row.index.to_string(),
            r.row.row.to_string(),
            r.ms.map_or("err".into(), |x| format!("{x:.4}")),
            r.gbps.map_or("err".into(), |x| format!("{x:.0}")),
        ];
        if with_copy {
            cells.push(r.pct_of_copy.map_or("-".into(), |x| format!("{x:.1}")));
        }
        for p in &cols {
            cells.push(match peer_ms(r, p) {
                None => "-".into(),
                Some(Err(())) => "err".into(),
                Some(Ok(ms)) => format!("{ms:.4}"),
            });
        }
        for p in &ratios {
            cells.push(match (peer_ms(r, p), r.ms) {
                (Some(Ok(y)), Some(x)) => format!("{:.2}", y / x),
                _ => "-".into(),
            });
        }
        table.add_row(cells);
    }
    let mut s = format!("{table}\n");
    s += &format!("{BYTES_FORMULA}; ours/peer = peer ms / ours ms (> 1: ours is faster).\n");
    s += &format!("{copy_note}\n");
    if !cols.is_empty() {
        s += &format!("peers: torch SDPA under sdpa_kernel(backend); {CHECK_NOTE}.\n");
    }
    s += "rows:\n";
    for r in rows {
        s += &format!("  {}\n", r.row.describe());
    }
    // Errors, grouped by (who, message) with the rows they occurred in.
    let mut errs: Vec<(String, String, Vec<String>)> = Vec::new();
    let mut add = |who: &str, msg: &str, row: &Row| {
        let msg = short(msg, 240);
        match errs.iter_mut().find(|e| e.0 == who && e.1 == msg) {
            Some(e) => e.2.push(row.index.to_string()),
            None => errs.push((who.into(), msg, vec![row.index.to_string()])),
        }
    };
    for r in rows {
        if let Some(e) = &r.error {
            add("ours", e, &r.row);
        }
        for (name, v) in &r.peers {
            if let Some(e) = v.get("error").and_then(Value::as_str) {
                add(name, e, &r.row);
            }
        }
    }
    if !errs.is_empty() {
        s += "errors:\n";
        for (who, msg, at) in errs {
            s += &format!("  row {} {who}: {msg}\n", at.join(","));
        }
    }
    s.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(rows: &[Row]) -> Vec<&'static str> {
        rows.iter().map(|r| r.row).collect()
    }

    #[test]
    fn names_spell_their_shapes() {
        for s in &SPECS {
            let mut n = format!("b{}", s.batch);
            if s.seq_q != 1 {
                n += &format!("-sq{}", s.seq_q);
            }
            n += &format!("-sk{}", s.seq_k);
            if s.heads_k != HEADS_Q {
                n += &format!("-hk{}", s.heads_k);
            }
            if s.causal {
                n += "-causal";
            }
            assert_eq!(n, s.row);
        }
    }

    #[test]
    fn bytes_and_sets() {
        let r = Row::new(1, &SPECS[0]);
        // K + V: 2 · 1 · 32768 · 8 · 128 · 2 bytes; Q + O: 2 · 1 · 1 · 32 · 128 · 2 bytes.
        assert_eq!(r.kv_bytes, 134_217_728);
        assert_eq!(r.bytes, 134_217_728 + 16_384);
        assert_eq!(r.sets, 2);
        let r = Row::new(5, &SPECS[4]);
        assert_eq!(
            r.bytes,
            2 * (2 * 16 * 8192 * 8 * 128 + 2 * 16 * 4 * 32 * 128)
        );
        assert_eq!((r.seq_q, r.heads_k, r.causal), (4, 8, true));
        for (i, s) in SPECS.iter().enumerate() {
            let r = Row::new(i + 1, s);
            assert!(r.sets >= MIN_SETS);
            assert!(r.sets as u64 * r.kv_bytes >= ROTATE_BYTES);
            assert_eq!(r.q_elems(), s.batch * s.seq_q * HEADS_Q * HEAD_DIM);
        }
        // A small cache gets more sets: 200 MB / 64 MiB → 3.
        let small = Spec {
            row: "x",
            batch: 1,
            seq_q: 1,
            seq_k: 16384,
            heads_k: 8,
            causal: false,
        };
        assert_eq!(Row::new(1, &small).sets, 3);
    }

    #[test]
    fn selection() {
        let all = names(&select("all").unwrap());
        assert_eq!(all.len(), 7);
        assert_eq!(names(&select("").unwrap()), all);
        assert_eq!(names(&select(" , ").unwrap()), all);
        assert_eq!(
            names(&select("b16").unwrap()),
            ["b16-sk8192-hk8", "b16-sq4-sk8192-hk8-causal"]
        );
        assert_eq!(names(&select("b1-sk32768").unwrap()), ["b1-sk32768-hk8"]);
        // Numbers, names and prefixes mix; the order is the table's, without repeats.
        assert_eq!(
            names(&select("7, 3,b8-sk8192,b1").unwrap()),
            ["b1-sk32768-hk8", "b8-sk8192", "b64-sk2048"]
        );
        let r = select("5").unwrap();
        assert_eq!(r[0].index, 5);
        assert!(r[0].causal);
    }

    #[test]
    fn bad_selection_is_an_error() {
        for bad in ["0", "8", "b2", "b1-sk", "sk8192", "-1", "all,nope"] {
            let e = select(bad).unwrap_err().to_string();
            assert!(e.contains("--decode"), "{bad}: {e}");
        }
        assert!(wants_peers(None).unwrap());
        assert!(wants_peers(Some("torch")).unwrap());
        assert!(!wants_peers(Some("none")).unwrap());
        assert!(wants_peers(Some("jax")).is_err());
    }

    #[test]
    fn host_inputs_are_distinct_windows() {
        let p = host_pattern(1000);
        assert_eq!(p.len(), 1000 + CHUNK);
        let a = host_input(&p, 0, 1000).unwrap();
        let b = host_input(&p, 1, 1000).unwrap();
        assert_eq!(a.len(), 1000);
        assert_ne!(a, b);
        assert!(host_input(&p, 0, 1001 + CHUNK).is_err());
    }

    #[test]
    fn request_has_the_fields_the_script_reads() {
        let rows = select("5").unwrap();
        let v = serde_json::to_value(PeerRequest {
            iters: 7,
            warmup: WARMUP,
            copy_bytes: COPY_BYTES,
            rows: &rows,
        })
        .unwrap();
        assert_eq!(v["iters"], 7);
        assert_eq!(v["warmup"], 3);
        assert_eq!(v["copy_bytes"], 2u64 << 30);
        let r = &v["rows"][0];
        for k in [
            "row", "batch", "seq_q", "seq_k", "heads_q", "heads_k", "d", "dtype", "causal",
            "bytes", "sets",
        ] {
            assert!(!r[k].is_null(), "{k}");
        }
        assert_eq!(r["causal"], true);
    }

    fn entries() -> Vec<Value> {
        vec![
            json!({"kind": "copy", "bytes": 1, "ms": 1.0, "gbps": 4000.0}),
            json!({"kind": "decode", "row": "b16-sk8192-hk8", "peer": "flash", "ms": 0.2,
                   "gbps": 2700.0}),
            json!({"kind": "decode", "row": "b16-sk8192-hk8", "peer": "efficient",
                   "error": "RuntimeError: No available kernel. Aborting execution."}),
            json!({"kind": "decode", "row": "b16-sk8192-hk8", "peer": "cudnn", "ms": 0.1,
                   "error": "output differs"}),
            json!({"kind": "decode", "row": "b8-sk8192", "peer": "flash", "ms": 0.4}),
        ]
    }

    #[test]
    fn peers_merge_and_copy() {
        let e = entries();
        assert_eq!(copy_bandwidth(&e), Ok(4000.0));
        assert!(copy_bandwidth(&e[1..]).is_err());
        assert!(copy_bandwidth(&[json!({"kind": "copy", "error": "OOM"})]).is_err());
        let r = select("2").unwrap().remove(0);
        let m = peers_of(&e, &r, Some(0.1));
        assert_eq!(m.len(), 3);
        assert!((m["flash"]["ours_over_peer"].as_f64().unwrap() - 2.0).abs() < 1e-12);
        assert!(m["flash"].get("row").is_none());
        assert!(m["efficient"].get("ours_over_peer").is_none());
        assert!(m["cudnn"].get("ours_over_peer").is_none());
        assert!(
            peers_of(&e, &r, None)["flash"]
                .get("ours_over_peer")
                .is_none()
        );
    }

    /// The `--json` document of a decode run plots: a panel per (Sq, Hq/Hk, causal) with ours and
    /// each peer that timed, in GB/s against Sk, the batch in the ticks, the copy as a line.
    #[test]
    fn report_plots() {
        let e = entries();
        let timed: Vec<Timed> = select("1,2,3,5")
            .unwrap()
            .into_iter()
            .map(|r| {
                let ms = Some(0.1 * r.index as f64);
                Timed {
                    peers: peers_of(&e, &r, ms),
                    gbps: ms.map(|ms| r.bytes as f64 / ms / 1e6),
                    pct_of_copy: None,
                    error: None,
                    ms,
                    row: r,
                }
            })
            .collect();
        let report = Report {
            command: "attn bench --pass decode".into(),
            device: "a GPU".into(),
            bytes_formula: BYTES_FORMULA,
            copy_gbps: Some(4000.0),
            copy_note: String::new(),
            rows: &timed,
        };
        let doc = serde_json::to_value(&report).unwrap();
        let f = crate::plot::Figure::from_bench_json(&doc).unwrap();
        assert!(f.title.contains("decode on a GPU"), "{}", f.title);
        assert_eq!(f.y_label, "GB/s");
        let titles: Vec<&str> = f.panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "bf16 D=128 Sq=1 Hq/Hk=32/8",
                "bf16 D=128 Sq=1 Hq/Hk=32/32",
                "bf16 D=128 Sq=4 Hq/Hk=32/8 causal"
            ]
        );
        let ours = &f.panels[0].series[0];
        assert_eq!(ours.name, crate::plot::OURS);
        let xy: Vec<(f64, f64)> = ours.points.iter().map(|q| (q.x, q.y)).collect();
        assert_eq!(
            xy,
            [
                (8192.0, timed[1].gbps.unwrap()),
                (32768.0, timed[0].gbps.unwrap())
            ]
        );
        assert_eq!(ours.points[0].label.as_deref(), Some("B=16"));
        // Row 2's flash timed (2700 GB/s); its efficient and cudnn entries are errors: left out.
        let names: Vec<&str> = f.panels[0].series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [crate::plot::OURS, "torch flash"]);
        assert_eq!(f.panels[0].series[1].points[0].y, 2700.0);
        // Row 3's flash entry has ms but no gbps: nothing to plot.
        assert_eq!(f.panels[1].series.len(), 1);
        assert_eq!(f.panels[0].refs[0].1, 4000.0);
        let svg = f.render_svg().unwrap();
        for t in [
            "8k, B=16",
            "32k, B=1",
            "GB/s",
            "KV cache length Sk",
            "torch flash",
        ] {
            assert!(svg.contains(t), "{t}");
        }
    }

    #[test]
    fn table_shows_errors_and_ratios() {
        let e = entries();
        let timed: Vec<Timed> = select("2,3,4")
            .unwrap()
            .into_iter()
            .map(|r| {
                let ms = (r.index != 4).then_some(0.1);
                Timed {
                    peers: peers_of(&e, &r, ms),
                    gbps: ms.map(|ms| r.bytes as f64 / ms / 1e6),
                    pct_of_copy: ms.map(|_| 50.0),
                    error: (r.index == 4).then(|| "unsupported: no\nsecond line".to_string()),
                    ms,
                    row: r,
                }
            })
            .collect();
        let s = render(&timed, true, "copy: 4000 GB/s");
        assert!(s.contains("% copy"));
        assert!(s.contains("flash ms") && s.contains("ours/flash") && s.contains("ours/cudnn"));
        assert!(s.contains("2.00"), "{s}");
        assert!(s.contains("row 2 efficient: RuntimeError: No available kernel"));
        assert!(s.contains("row 2 cudnn: output differs"));
        assert!(s.contains("row 4 ours: unsupported: no") && !s.contains("second line"));
        // Without peers or copy: only our columns.
        let bare: Vec<Timed> = select("3")
            .unwrap()
            .into_iter()
            .map(|r| Timed {
                peers: Map::new(),
                ms: Some(0.5),
                gbps: Some(1.0),
                pct_of_copy: None,
                error: None,
                row: r,
            })
            .collect();
        let s = render(&bare, false, &no_copy_note("--compare none"));
        assert!(!s.contains("% copy") && !s.contains("flash"));
        assert!(s.contains("% of copy omitted"));
    }
}
