//! `attn check`: random forward cases against the CPU reference, as a pass/fail table.
use attn_host::Result;
use attn_ref::{Align, Dtype, Inputs, Mask, Problem, SplitMix64};
use attn_tests::{FwdCase, Layout, run_fwd};
use comfy_table::Table;

#[derive(clap::Args, Default)]
pub(crate) struct Args {
    /// Random cases per (dtype, head dim) pair.
    #[arg(long, default_value_t = 4)]
    cases: usize,
    /// Seed of the case generator (inputs are fresh per case).
    #[arg(long)]
    seed: Option<u64>,
    /// Run on the CPU even if a GPU works.
    #[arg(long)]
    cpu: bool,
}

fn mask_name(m: &Mask) -> String {
    match m {
        Mask::None => "none".into(),
        Mask::Causal {
            align: Align::TopLeft,
        } => "causal-tl".into(),
        Mask::Causal {
            align: Align::BottomRight,
        } => "causal-br".into(),
        Mask::Window { left, right, align } => format!(
            "win({},{}){}",
            left.map_or("-".into(), |x| x.to_string()),
            right.map_or("-".into(), |x| x.to_string()),
            if *align == Align::TopLeft { "tl" } else { "br" }
        ),
    }
}

/// A random problem: ragged lengths, GQA ratio, one of the masks, and now and then each optional
/// feature (varlen with empty sequences, `seqused_k`, a broadcast bias, ALiBi, softcap, dropout).
/// Sequence lengths are at most `max_len`.
fn random_problem(rng: &mut SplitMix64, dtype: Dtype, d: usize, max_len: usize) -> Problem {
    let pick = |rng: &mut SplitMix64, xs: &[usize]| xs[(rng.next_u64() % xs.len() as u64) as usize];
    let coin = |rng: &mut SplitMix64, percent: u64| rng.next_u64() % 100 < percent;
    let hk = pick(rng, &[1, 2]);
    let hq = hk * pick(rng, &[1, 2, 3]);
    let masks = [
        Mask::None,
        Mask::Causal {
            align: Align::TopLeft,
        },
        Mask::Causal {
            align: Align::BottomRight,
        },
        Mask::Window {
            left: Some(pick(rng, &[0, 16, 100])),
            right: Some(pick(rng, &[0, 8])),
            align: Align::BottomRight,
        },
    ];
    let mask = masks[(rng.next_u64() % 4) as usize];
    let mut p = if coin(rng, 25) {
        let n = pick(rng, &[1, 2, 3, 5]);
        let lens: Vec<(usize, usize)> = (0..n)
            .map(|_| {
                let sq = pick(rng, &[0, 1, 17, 100, 257, 1000]).min(max_len);
                let sk = pick(rng, &[0, 7, 33, 129, 640, 1000]).min(max_len);
                (sq, sk)
            })
            .collect();
        Problem::varlen(dtype, &lens, hq, hk, d, d)
    } else {
        let sq = pick(rng, &[1, 3, 17, 55, 100, 257, 1000]).min(max_len);
        let sk = pick(rng, &[1, 7, 33, 100, 129, 640, 1000]).min(max_len);
        Problem::new(dtype, pick(rng, &[1, 2]), sq, sk, hq, hk, d, d)
    }
    .with_mask(mask);
    let nb = p.nseq();
    if coin(rng, 20) {
        let used = p
            .seqs()
            .iter()
            .map(|s| (s.sk_total as u64 * (rng.next_u64() % 101) / 100) as i32)
            .collect();
        p = p.with_seqused_k(used);
    }
    if coin(rng, 25) {
        let bias_dtype = if coin(rng, 50) { dtype } else { Dtype::F32 };
        let broadcast = std::array::from_fn(|_| coin(rng, 40));
        p = p.with_bias(bias_dtype, broadcast);
    }
    if coin(rng, 20) {
        let per_batch = coin(rng, 50);
        let n = if per_batch { nb * hq } else { hq };
        let slopes = (0..n)
            .map(|i| 2f32.powf(-8.0 * ((i % hq) + 1) as f32 / hq as f32))
            .collect();
        p = p.with_alibi(slopes, per_batch);
    }
    if coin(rng, 20) {
        p = p.with_softcap(if coin(rng, 50) { 5.0 } else { 30.0 });
    }
    if coin(rng, 25) {
        let pd = if coin(rng, 50) { 0.1 } else { 0.5 };
        p = p.with_dropout(pd, rng.next_u64(), rng.next_u64());
    }
    p
}

/// A short name of the optional features of `p` for the table.
fn features(p: &Problem, device_rng: bool) -> String {
    let mut f = Vec::new();
    if let Some(v) = &p.varlen {
        f.push(format!("varlen({})", v.cu_seqlens_q.len() - 1));
    }
    if p.seqused_k.is_some() {
        f.push("used_k".into());
    }
    if let Some(b) = &p.bias {
        let bc: String = b
            .broadcast
            .iter()
            .map(|&x| if x { '0' } else { '.' })
            .collect();
        f.push(format!("bias({},{bc})", b.dtype));
    }
    if let Some(a) = &p.alibi {
        f.push(
            if a.per_batch {
                "alibi(b,h)"
            } else {
                "alibi(h)"
            }
            .into(),
        );
    }
    if p.softcap > 0.0 {
        f.push(format!("cap{}", p.softcap));
    }
    if let Some(d) = &p.dropout {
        f.push(format!(
            "drop{}{}",
            d.p,
            if device_rng { "(dev)" } else { "" }
        ));
    }
    if f.is_empty() {
        "-".into()
    } else {
        f.join(" ")
    }
}

pub(crate) fn run(a: &Args) -> Result<bool> {
    let dev = if a.cpu { None } else { crate::best_device() };
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("case seed {seed}");
    let mut rng = SplitMix64(seed);
    let mut table = Table::new();
    table.set_header([
        "dtype",
        "D",
        "mask",
        "features",
        "B",
        "Hq/Hk",
        "Sq",
        "Sk",
        "layout",
        "max|out err|",
        "max|lse err|",
        "grads (err / bound)",
        "result",
    ]);
    let (mut pass, mut total) = (0, 0);
    if dev.is_none() {
        println!(
            "running the CPU reference instead: its blocked low-precision path (tiles 32x32) against its f64 truth"
        );
    }
    for dtype in [Dtype::F16, Dtype::Bf16, Dtype::F32] {
        for d in [64, 128] {
            for n in 0..a.cases {
                let max_len = if dev.is_none() { 257 } else { usize::MAX };
                let p = random_problem(&mut rng, dtype, d, max_len);
                let layout = if n % 2 == 0 {
                    Layout::Bmhk
                } else {
                    Layout::Bhmk
                };
                // On a GPU, a third of the cases without bias or dropout read their keys from a
                // random paged KV cache (shuffled, repeated, partly used pages), which runs on the
                // decode kernels.
                let pageable = p.bias.is_none() && p.dropout.is_none_or(|d| d.p == 0.0);
                let page_size = [16, 48, 64, 256][(rng.next_u64() % 4) as usize];
                let paged = dev.is_some() && pageable && rng.next_u64().is_multiple_of(3);
                let case = FwdCase {
                    problem: p.clone(),
                    layout,
                    device_rng: rng.next_u64().is_multiple_of(2),
                    decode: attn_tests::DecodeOpts {
                        paged: paged.then(|| attn_ref::paged::PagedConfig {
                            page_size,
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    // Every contiguous-KV case also runs its backward (dbias with a bias;
                    // zero_tensors in varlen mode, where rows outside every sequence exist).
                    backward: (!paged).then_some(attn_tests::BwdOpts {
                        dbias: p.bias.is_some(),
                        zero_tensors: p.varlen.is_some(),
                        repeats: 0,
                    }),
                };
                let outcome = match &dev {
                    Some(dev) => run_fwd(dev, &case, rng.next_u64()),
                    None => cpu_case(&p, rng.next_u64()),
                };
                total += 1;
                let (oe, le, ge, ok) = match &outcome {
                    Ok(o) => (
                        format!("{:.2e}", o.out.max_abs_err),
                        format!("{:.2e}", o.lse.max_abs_err),
                        grads_cell(o),
                        o.passed(),
                    ),
                    Err(e) => (format!("error: {e}"), String::new(), String::new(), false),
                };
                if ok {
                    pass += 1;
                } else if let Ok(o) = &outcome {
                    eprintln!("FAILED {case:?}\n{o}");
                }
                table.add_row([
                    format!("{dtype:?}"),
                    d.to_string(),
                    mask_name(&p.mask),
                    match &case.decode.paged {
                        Some(c) => format!(
                            "{} paged{}",
                            features(&p, dev.is_some() && case.device_rng),
                            c.page_size
                        ),
                        None => features(&p, dev.is_some() && case.device_rng),
                    },
                    p.nseq().to_string(),
                    format!("{}/{}", p.heads_q, p.heads_k),
                    p.seqlen_q.to_string(),
                    p.seqlen_k.to_string(),
                    format!("{layout:?}"),
                    oe,
                    le,
                    ge,
                    if ok { "pass" } else { "FAIL" }.to_string(),
                ]);
            }
        }
    }
    println!("{table}");
    println!("{pass} passed, {} failed", total - pass);
    Ok(pass == total)
}

/// The CPU fallback: the reference's blocked path against its truth, under the pass rule with
/// a second blocking as the noise baseline.
fn cpu_case(p: &Problem, seed: u64) -> Result<attn_tests::FwdOutcome, String> {
    let x = Inputs::random(p, seed, 1.0);
    let e = |e: attn_ref::Error| e.to_string();
    let truth = attn_ref::forward(p, &x).map_err(e)?;
    let got = attn_ref::forward_blocked(p, &x, 32, 32).map_err(e)?;
    let base = attn_ref::forward_blocked(p, &x, 64, 16).map_err(e)?;
    Ok(attn_tests::FwdOutcome {
        out: attn_ref::check(&got.out, &truth.out, &base.out).named("out"),
        lse: attn_ref::check_lse(&got.lse, &truth.lse, &base.lse).named("lse"),
        mask_mismatches: None,
        grads: Vec::new(),
        nondeterministic: None,
    })
}

/// The backward's worst gradient: `name err/bound` (the pass rule's bound), or `-`.
fn grads_cell(o: &attn_tests::FwdOutcome) -> String {
    o.grads
        .iter()
        .max_by(|a, b| ratio(a).total_cmp(&ratio(b)))
        .map_or("-".to_string(), |r| format!("{} {:.2}", r.name, ratio(r)))
}

/// `max|err| / tolerance` of a report (above 1 fails; infinite with non-finite mismatches).
fn ratio(r: &attn_ref::Report) -> f64 {
    if r.nonfinite_mismatches > 0 || !r.lengths_match {
        f64::INFINITY
    } else {
        r.max_abs_err / r.tolerance.max(f64::MIN_POSITIVE)
    }
}
