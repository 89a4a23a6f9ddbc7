//! `attn check`: random forward cases (each followed by its backward) and random decode cases
//! against the CPU reference, as one pass/fail table.
//!
//! The decode cases ([`random_decode_case`]) go through the inference path of the same harness
//! as the GPU tests (`attn_tests::run_fwd` with [`DecodeOpts`]): one to four new query tokens per
//! sequence against a long KV cache, contiguous or paged, with forced split-KV counts or the
//! plan's, GQA packing on, off or automatic, now and then partial attentions over key ranges
//! merged. Their `features` cell starts with `decode` and names these options.
use attn_host::{Packing, Route, Splits};
use attn_ref::paged::{PagedConfig, PagedKv};
use attn_ref::{Align, Dtype, Inputs, Mask, Problem, SplitMix64};
use attn_tests::{DecodeOpts, FwdCase, Layout, run_fwd};
use comfy_table::Table;

#[derive(clap::Args, Default)]
pub(crate) struct Args {
    /// Random cases per (dtype, head dim) pair, forward and decode each.
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
        p = with_random_seqused_k(p, rng);
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

pub(crate) fn run(a: &Args) -> attn_host::Result<bool> {
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
                        deterministic: false,
                    }),
                };
                let outcome = match &dev {
                    Some(dev) => run_fwd(dev, &case, rng.next_u64()),
                    None => cpu_case(&p, rng.next_u64()),
                };
                let features = match &case.decode.paged {
                    Some(c) => format!(
                        "{} paged{}",
                        features(&p, dev.is_some() && case.device_rng),
                        c.page_size
                    ),
                    None => features(&p, dev.is_some() && case.device_rng),
                };
                total += 1;
                pass += usize::from(add_row(&mut table, &case, features, &outcome));
            }
        }
    }
    // Decode: a few new query tokens per sequence against a long KV cache, paged or not, split
    // or not, through the same harness.
    for dtype in [Dtype::F16, Dtype::Bf16, Dtype::F32] {
        for d in [64, 128] {
            for _ in 0..a.cases {
                let max_k = if dev.is_none() { 2048 } else { 8192 };
                let case = random_decode_case(&mut rng, dtype, d, max_k);
                let seed = rng.next_u64();
                let outcome = match &dev {
                    Some(dev) => run_fwd(dev, &case, seed),
                    None => cpu_decode_case(&case, seed),
                };
                let features = decode_features(&case);
                total += 1;
                pass += usize::from(add_row(&mut table, &case, features, &outcome));
            }
        }
    }
    println!("{table}");
    println!("{pass} passed, {} failed", total - pass);
    Ok(pass == total)
}

/// Adds the table row of `case` (its `features` cell given) and its outcome; prints the case and
/// the outcome on stderr when it failed. Returns whether it passed.
fn add_row(
    table: &mut Table,
    case: &FwdCase,
    features: String,
    outcome: &Result<attn_tests::FwdOutcome, String>,
) -> bool {
    let p = &case.problem;
    let (oe, le, ge, ok) = match outcome {
        Ok(o) => (
            format!("{:.2e}", o.out.max_abs_err),
            format!("{:.2e}", o.lse.max_abs_err),
            grads_cell(o),
            o.passed(),
        ),
        Err(e) => (format!("error: {e}"), String::new(), String::new(), false),
    };
    if let (false, Ok(o)) = (ok, outcome) {
        eprintln!("FAILED {case:?}\n{o}");
    }
    table.add_row([
        format!("{:?}", p.dtype),
        p.head_dim.to_string(),
        mask_name(&p.mask),
        features,
        p.nseq().to_string(),
        format!("{}/{}", p.heads_q, p.heads_k),
        p.seqlen_q.to_string(),
        p.seqlen_k.to_string(),
        format!("{:?}", case.layout),
        oe,
        le,
        ge,
        if ok { "pass" } else { "FAIL" }.to_string(),
    ]);
    ok
}

/// Picks one of `xs`.
/// `p` with `seqused_k`: each sequence uses a random 0-100% of its keys.
fn with_random_seqused_k(p: Problem, rng: &mut SplitMix64) -> Problem {
    let used = p
        .seqs()
        .iter()
        .map(|s| (s.sk_total as u64 * (rng.next_u64() % 101) / 100) as i32)
        .collect();
    p.with_seqused_k(used)
}

fn pick<T: Copy>(rng: &mut SplitMix64, xs: &[T]) -> T {
    xs[(rng.next_u64() % xs.len() as u64) as usize]
}

/// True with probability `percent` / 100.
fn coin(rng: &mut SplitMix64, percent: u64) -> bool {
    rng.next_u64() % 100 < percent
}

/// A random decode case: 1 to 4 sequences of one to four new query tokens (varlen now and then,
/// as in chunked prefill, empty sequences included) against a KV cache of up to `max_k` keys,
/// GQA ratios 1 to 8, one of the masks, now and then a ragged cache (`seqused_k`), softcap or
/// ALiBi. Half the caches are paged (shuffled, repeated and partly used pages, out-of-range
/// entries past the used length, page sizes 16 / 48 / 64 / 256); the split-KV count is the
/// plan's, 1 or forced; GQA packing is automatic, on (when `Hq > Hk` and without ALiBi) or off;
/// a sixth of the contiguous caches run as partial attentions over key ranges, merged. Always
/// on the decode kernels.
pub(crate) fn random_decode_case(
    rng: &mut SplitMix64,
    dtype: Dtype,
    d: usize,
    max_k: usize,
) -> FwdCase {
    let hk = pick(rng, &[1, 2, 4]);
    let group = pick(rng, &[1, 2, 4, 8]);
    let hq = hk * group;
    let masks = [
        Mask::None,
        Mask::Causal {
            align: Align::BottomRight,
        },
        Mask::Window {
            left: Some(pick(rng, &[64, 300])),
            right: Some(0),
            align: Align::BottomRight,
        },
        Mask::Causal {
            align: Align::TopLeft,
        },
    ];
    let mask = masks[pick(rng, &[0, 0, 1, 1, 2, 3])];
    let lengths = [1, 64, 333, 1000, 2048, 4099, 8192];
    let mut p = if coin(rng, 20) {
        let n = pick(rng, &[2, 3, 4]);
        let lens: Vec<(usize, usize)> = (0..n)
            .map(|_| (pick(rng, &[0, 1, 1, 2, 4]), pick(rng, &lengths).min(max_k)))
            .collect();
        Problem::varlen(dtype, &lens, hq, hk, d, d)
    } else {
        let b = pick(rng, &[1, 2, 3, 4]);
        let sq = pick(rng, &[1, 1, 1, 2, 4]);
        let sk = pick(rng, &lengths).min(max_k);
        Problem::new(dtype, b, sq, sk, hq, hk, d, d)
    }
    .with_mask(mask);
    if coin(rng, 40) {
        p = with_random_seqused_k(p, rng);
    }
    if coin(rng, 15) {
        p = p.with_softcap(if coin(rng, 50) { 5.0 } else { 30.0 });
    }
    let alibi = coin(rng, 15);
    if alibi {
        let slopes = (0..hq)
            .map(|i| 2f32.powf(-8.0 * (i + 1) as f32 / hq as f32))
            .collect();
        p = p.with_alibi(slopes, false);
    }
    let paged = coin(rng, 50).then(|| {
        let page_size = pick(rng, &[16, 48, 64, 256]);
        // A table needs a column: with every cache empty, at least one extra.
        let any_used = p.seqs().iter().any(|s| s.sk > 0);
        let extra_pages = pick(rng, &[0, 1, 2]).max(usize::from(!any_used));
        let longest = p.seqs().iter().map(|s| s.sk_total).max().unwrap_or(0);
        PagedConfig {
            page_size,
            extra_pages,
            repeat: 0.3,
            bad_past_used: true,
            table_stride: coin(rng, 50)
                .then(|| longest.div_ceil(page_size) + extra_pages + pick(rng, &[1, 5])),
            ..PagedConfig::default()
        }
    });
    let splits = match rng.next_u64() % 3 {
        0 => Splits::Auto,
        1 => Splits::Fixed(1),
        _ => Splits::Fixed(pick(rng, &[2, 3, 5, 9, 16])),
    };
    let packing = match rng.next_u64() % 3 {
        0 if hq > hk && !alibi => Packing::On,
        1 => Packing::Off,
        _ => Packing::Auto,
    };
    let key_ranges = if paged.is_none() && coin(rng, 17) {
        // Two or three ranges covering every key, the last one past the end.
        let sk = p.seqlen_k.max(1);
        let a = (rng.next_u64() % sk as u64) as usize;
        if coin(rng, 50) {
            vec![(0, a), (a, sk + 7)]
        } else {
            let b = a + (rng.next_u64() % (sk - a) as u64) as usize;
            vec![(0, a), (a, b), (b, sk + 7)]
        }
    } else {
        Vec::new()
    };
    let layout = if paged.is_none() && coin(rng, 50) {
        Layout::Bhmk
    } else {
        Layout::Bmhk
    };
    FwdCase::new(p, layout).with_decode(DecodeOpts {
        route: Route::Decode,
        splits,
        packing,
        paged,
        key_ranges,
    })
}

/// The `features` cell of a decode case: `decode`, the problem's features, then the cache
/// (`paged<page size>`), the split count, packing and key ranges.
fn decode_features(case: &FwdCase) -> String {
    let o = &case.decode;
    let mut f = vec!["decode".to_string()];
    let base = features(&case.problem, false);
    if base != "-" {
        f.push(base);
    }
    if let Some(c) = &o.paged {
        f.push(format!("paged{}", c.page_size));
    }
    f.push(match o.splits {
        Splits::Auto => "split=auto".into(),
        Splits::Fixed(n) => format!("split={n}"),
    });
    f.push(
        match o.packing {
            Packing::Auto => "pack=auto",
            Packing::On => "pack=on",
            Packing::Off => "pack=off",
        }
        .into(),
    );
    if !o.key_ranges.is_empty() {
        f.push(format!("ranges({})", o.key_ranges.len()));
    }
    f.join(" ")
}

/// The CPU fallback of a decode case: [`cpu_case`] on the problem, or on the contiguous
/// equivalent of its random paged cache.
fn cpu_decode_case(case: &FwdCase, seed: u64) -> Result<attn_tests::FwdOutcome, String> {
    let p = &case.problem;
    match &case.decode.paged {
        None => cpu_case(p, seed),
        Some(cfg) => {
            let e = |e: attn_ref::Error| e.to_string();
            let kv = PagedKv::random(p, cfg, seed).map_err(e)?;
            cpu_case(&kv.problem(p).map_err(e)?, seed ^ 0x9E37_79B9_7F4A_7C15)
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use attn_tests::{Family, plan_fwd};

    fn decode_cases(n: usize, max_k: usize) -> Vec<FwdCase> {
        let mut rng = SplitMix64(0xDEC0_DE00);
        let mut v = Vec::new();
        for i in 0..n {
            let dtype = [Dtype::F16, Dtype::Bf16, Dtype::F32][i % 3];
            v.push(random_decode_case(
                &mut rng,
                dtype,
                [64, 128][i / 3 % 2],
                max_k,
            ));
        }
        v
    }

    /// Every random decode case is one the host API accepts, on the decode kernels, for NVIDIA
    /// and CDNA tiles; together they cover paged and contiguous caches, forced and automatic
    /// splits, each packing, key ranges, varlen and a ragged cache.
    #[test]
    fn decode_cases_plan_on_the_decode_kernels_and_cover_the_options() {
        let cases = decode_cases(300, 8192);
        for (i, case) in cases.iter().enumerate() {
            for family in [Family::Sm90, Family::Cdna] {
                let plan = plan_fwd(case, i as u64, family)
                    .unwrap_or_else(|e| panic!("case {i} {case:?} on {family:?}: {e}"));
                assert!(
                    matches!(
                        plan.kernel,
                        attn_host::KernelId::Fwd {
                            variant: attn_abi::FwdVariant::Decode,
                            ..
                        }
                    ),
                    "case {i}: {:?}",
                    plan.kernel
                );
            }
            assert!(case.problem.max_seqlens().0 <= 4 && case.backward.is_none());
        }
        let count = |f: &dyn Fn(&FwdCase) -> bool| cases.iter().filter(|c| f(c)).count();
        assert!(count(&|c| c.decode.paged.is_some()) > 100);
        assert!(count(&|c| c.decode.paged.is_none()) > 100);
        assert!(count(&|c| matches!(c.decode.splits, Splits::Fixed(n) if n > 1)) > 50);
        assert!(count(&|c| c.decode.splits == Splits::Fixed(1)) > 50);
        assert!(count(&|c| c.decode.splits == Splits::Auto) > 50);
        assert!(count(&|c| c.decode.packing == Packing::On) > 30);
        assert!(count(&|c| c.decode.packing == Packing::Off) > 30);
        assert!(count(&|c| !c.decode.key_ranges.is_empty()) > 10);
        assert!(count(&|c| c.problem.varlen.is_some()) > 20);
        assert!(count(&|c| c.problem.seqused_k.is_some()) > 50);
        assert!(count(&|c| c.problem.heads_q > c.problem.heads_k) > 100);
        assert!(count(&|c| c.problem.seqlen_k >= 4096) > 30);
    }

    /// Without a GPU, decode cases check the CPU reference (paged ones on their contiguous
    /// equivalent), and pass; the row names the decode options.
    #[test]
    fn decode_cases_pass_on_the_cpu_fallback() {
        for (i, case) in decode_cases(12, 2048).iter().enumerate() {
            let o = cpu_decode_case(case, i as u64).unwrap_or_else(|e| panic!("{case:?}: {e}"));
            assert!(o.passed(), "{case:?}\n{o}");
            let f = decode_features(case);
            assert!(f.starts_with("decode ") && f.contains("split=") && f.contains("pack="));
            assert_eq!(f.contains("paged"), case.decode.paged.is_some(), "{f}");
        }
    }
}
