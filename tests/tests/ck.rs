//! The seed's entry points on a GPU: `mem_eff_forward_ck` and `mem_eff_backward_ck` with each
//! argument present and absent, judged against `attn-ref` under the pass rule (outputs, lse,
//! gradients, the dropout mask byte for byte); their typed errors; and the graph-safe Philox
//! generator: a captured graph replayed twice draws two different masks, each equal to
//! `attn-ref`'s mask for the `(seed, offset)` its replay's snapshot holds. Skips (printing why)
//! without a GPU.
use attn_host::{
    BiasRef, Dropout, Error, Forward, I32Ref, LseRef, MaskRef, PhiloxGenerator, PhiloxState,
    Splits, TensorRef,
};
use attn_ref::{Align, Dtype, Mask, Problem};
use attn_tests::{BwdOpts, CkGenerator, CkOpts, FwdCase, Layout, SeqNames, check_ck_cases};

const CAUSAL: Mask = Mask::Causal {
    align: Align::BottomRight,
};

fn with_bwd(p: Problem, layout: Layout, dbias: bool, zero_tensors: bool) -> FwdCase {
    FwdCase::new(p, layout).with_backward(BwdOpts {
        dbias,
        zero_tensors,
        repeats: 0,
        deterministic: false,
    })
}

fn ck(give_outputs: bool, seq_names: SeqNames, generator: CkGenerator, randval: bool) -> CkOpts {
    CkOpts {
        give_outputs,
        seq_names,
        generator,
        randval,
    }
}

#[test]
fn ck_entry_points_with_each_argument_present_and_absent() {
    use CkGenerator::{Default as DefaultGen, Device, Host};
    use SeqNames::{Both, CuSeqlens, Seqstart};
    let dts = [Dtype::F16, Dtype::Bf16, Dtype::F32];
    let mut cases = Vec::new();
    for (n, dt) in dts.into_iter().enumerate() {
        // Batch mode, GQA, no mask, everything allocated, the default generator.
        cases.push((
            with_bwd(
                Problem::new(dt, 2, 77, 129, 8, 2, 64, 64).with_dropout(0.25, 0, 0),
                Layout::Bmhk,
                false,
                false,
            ),
            ck(false, CuSeqlens, DefaultGen, true),
        ));
        // Bottom-right causal, a full f32 bias with dbias into given buffers, a given scale,
        // outputs given in the BHMK layout, D != Dv.
        cases.push((
            with_bwd(
                Problem::new(dt, 2, 100, 33, 4, 4, 32, 48)
                    .with_mask(CAUSAL)
                    .with_scale(0.3)
                    .with_bias(Dtype::F32, [false; 4]),
                Layout::Bhmk,
                true,
                false,
            ),
            ck(true, CuSeqlens, DefaultGen, false),
        ));
        // A bias broadcast over batch and heads, in q's dtype, dbias allocated; dropout from a
        // host generator.
        cases.push((
            with_bwd(
                Problem::new(dt, 3, 17, 64, 4, 1, 128, 128)
                    .with_bias(dt, [true, true, false, false])
                    .with_dropout(0.125, 1 + n as u64, 1 << 33),
                Layout::Bmhk,
                true,
                false,
            ),
            ck(false, CuSeqlens, Host, true),
        ));
        // Varlen with an empty sequence, `cu_seqlens`, causal, a device generator, zero_tensors.
        cases.push((
            with_bwd(
                Problem::varlen(dt, &[(17, 40), (0, 5), (64, 64), (1, 100)], 4, 2, 64, 64)
                    .with_mask(CAUSAL)
                    .with_dropout(0.5, 99, 7),
                Layout::Bmhk,
                false,
                true,
            ),
            ck(n % 2 == 0, CuSeqlens, Device, true),
        ));
        // Varlen under the seed's other name, no mask, no dropout but randval asked (none).
        cases.push((
            with_bwd(
                Problem::varlen(dt, &[(33, 17), (100, 129)], 2, 2, 32, 32),
                Layout::Bmhk,
                false,
                false,
            ),
            ck(true, Seqstart, Host, true),
        ));
        // Varlen under both names with a varlen bias and dbias, and dropout.
        cases.push((
            with_bwd(
                Problem::varlen(dt, &[(40, 64), (9, 3)], 4, 4, 64, 64)
                    .with_bias(Dtype::F32, [false; 4])
                    .with_dropout(0.25, 5, 11),
                Layout::Bmhk,
                true,
                false,
            ),
            ck(false, Both, Host, true),
        ));
        // seqused_k (forward only: the seed's backward has no seqused_k), causal bottom-right
        // on the used length, with seqstart naming.
        cases.push((
            FwdCase::new(
                Problem::varlen(dt, &[(5, 100), (64, 64)], 4, 1, 64, 64)
                    .with_mask(CAUSAL)
                    .with_seqused_k(vec![37, 64]),
                Layout::Bmhk,
            ),
            ck(false, Seqstart, DefaultGen, false),
        ));
        cases.push((
            FwdCase::new(
                Problem::new(dt, 2, 1, 1000, 8, 8, 64, 64).with_seqused_k(vec![1000, 513]),
                Layout::Bhmk,
            ),
            ck(true, CuSeqlens, DefaultGen, false),
        ));
    }
    check_ck_cases(
        "ck_entry_points_with_each_argument_present_and_absent",
        0xc0,
        &cases,
    );
}

/// Owned device buffers for the error cases.
struct Bufs {
    _keep: Vec<attn_host::DeviceBuffer<u16>>,
    q: TensorRef,
    kv: TensorRef,
    out: TensorRef,
    lse: LseRef,
    _lse: attn_host::DeviceBuffer<f32>,
    cu: I32Ref,
    _cu: attn_host::DeviceBuffer<i32>,
    bias: BiasRef,
}

fn bufs(dev: &attn_host::Device) -> Bufs {
    let shape = [2, 16, 4, 32];
    let n: usize = shape.iter().product();
    let data: Vec<u16> = (0..n)
        .map(|i| half::f16::from_f32((i % 13) as f32 * 0.05).to_bits())
        .collect();
    let make = || dev.clone_htod(&data).expect("upload");
    let (q, k, o, b) = (
        make(),
        make(),
        make(),
        dev.clone_htod(&vec![0u16; 2 * 4 * 16 * 16]).unwrap(),
    );
    let t = |buf: &attn_host::DeviceBuffer<u16>| TensorRef {
        len: buf.len(),
        ..TensorRef::contiguous(buf.ptr(), attn_host::DType::F16, shape)
    };
    let lse = dev.alloc::<f32>(2 * 4 * 16).unwrap();
    let cu = dev.clone_htod(&[0i32, 16, 32]).unwrap();
    Bufs {
        q: t(&q),
        kv: t(&k),
        out: t(&o),
        lse: LseRef {
            len: lse.len(),
            ..LseRef::contiguous(lse.ptr(), [2, 4, 16])
        },
        bias: BiasRef {
            ptr: b.ptr(),
            len: b.len(),
            dtype: attn_host::DType::F16,
            shape: [2, 4, 16, 16],
            strides: [4 * 256, 256, 16, 1],
        },
        cu: I32Ref {
            ptr: cu.ptr(),
            len: 3,
        },
        _keep: vec![q, k, o, b],
        _lse: lse,
        _cu: cu,
    }
}

fn what<T: std::fmt::Debug>(r: attn_host::Result<T>) -> String {
    match r {
        Err(Error::InvalidArgument { what, .. }) => what,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn ck_entry_points_reject_bad_arguments_with_typed_errors() {
    let Some(dev) = attn_tests::device_or_skip("ck_entry_points_reject_bad_arguments") else {
        return;
    };
    let s = dev.default_stream();
    let b = bufs(&dev);
    let fwd = |p: f32, cu_q: Option<I32Ref>, cu_k: Option<I32Ref>, bias: Option<BiasRef>| {
        // SAFETY: every view is of a live buffer above, sized for its shape.
        unsafe {
            attn_host::mem_eff_forward_ck(
                &s, b.q, b.kv, b.kv, p, false, None, None, bias, None, cu_q, cu_k, None, None,
                None, None,
            )
        }
    };
    assert_eq!(what(fwd(1.5, None, None, None)), "dropout.p");
    assert_eq!(what(fwd(f32::NAN, None, None, None)), "dropout.p");
    assert_eq!(what(fwd(0.0, Some(b.cu), None, None)), "cu_seqlens_k");
    // A bias of the wrong shape.
    let bad_bias = BiasRef {
        shape: [2, 4, 16, 15],
        ..b.bias
    };
    assert!(what(fwd(0.0, None, None, Some(bad_bias))).starts_with("bias"));
    // The good call works, and its philox is None without dropout.
    let ok = fwd(0.0, None, None, Some(b.bias)).expect("a valid call");
    assert!(ok.philox.is_none() && ok.dropout_randval.is_none());
    let bwd = |p: f32,
               bias: Option<BiasRef>,
               requires_grad: bool,
               grad_bias: Option<BiasRef>,
               philox: Option<attn_host::Philox>| {
        // SAFETY: as above.
        unsafe {
            attn_host::mem_eff_backward_ck(
                &s,
                b.out,
                b.q,
                b.kv,
                b.kv,
                b.out,
                b.lse,
                None,
                None,
                None,
                bias,
                requires_grad,
                grad_bias,
                None,
                None,
                16,
                16,
                p,
                0.2,
                false,
                false,
                false,
                philox,
            )
        }
    };
    assert_eq!(what(bwd(0.25, None, false, None, None)), "philox");
    assert_eq!(what(bwd(0.0, None, true, None, None)), "attn_bias");
    assert_eq!(
        what(bwd(0.0, Some(b.bias), false, Some(b.bias), None)),
        "grad_bias"
    );
    let broadcast_grad = BiasRef {
        strides: [0, 256, 16, 1],
        ..b.bias
    };
    assert!(what(bwd(0.0, Some(b.bias), true, Some(broadcast_grad), None)).starts_with("dbias"));
    s.synchronize().expect("sync");
}

/// A captured forward with dropout drawn from a device generator: each replay advances the
/// device counter, so the two replays' masks differ, and each equals attn-ref's mask for the
/// `(seed, offset)` its snapshot holds.
#[test]
fn graph_replays_draw_fresh_masks_from_the_device_generator() {
    let Some(dev) = attn_tests::device_or_skip("graph_replays_draw_fresh_masks") else {
        return;
    };
    let stream = dev.new_stream().expect("stream");
    let (b, s, hq, hk, d) = (2, 70, 4, 2, 32);
    let (p, seed, offset0) = (0.25, 0x5eed_1234_u64, 1000u64);
    let problem = Problem::new(Dtype::F16, b, s, s, hq, hk, d, d);
    let fill = |n: usize, k: u32| -> Vec<half::f16> {
        (0..n)
            .map(|i| {
                half::f16::from_f32(
                    (((i as u32).wrapping_mul(2_654_435_761) ^ k) % 997) as f32 / 997.0 - 0.5,
                )
            })
            .collect()
    };
    let q = dev.clone_htod(&fill(b * s * hq * d, 1)).unwrap();
    let k = dev.clone_htod(&fill(b * s * hk * d, 2)).unwrap();
    let v = dev.clone_htod(&fill(b * s * hk * d, 3)).unwrap();
    let out = dev.alloc::<half::f16>(b * s * hq * d).unwrap();
    let mut mask = dev.alloc::<u8>(b * hq * s * s).unwrap();
    let t = |buf: &attn_host::DeviceBuffer<half::f16>, h| TensorRef {
        len: buf.len(),
        ..TensorRef::contiguous(buf.ptr(), attn_host::DType::F16, [b, s, h, d])
    };
    let call = Forward::new(t(&q, hq), t(&k, hk), t(&v, hk), t(&out, hq))
        .splits(Splits::Fixed(1))
        .dropout_mask(MaskRef {
            len: mask.len(),
            ..MaskRef::contiguous(mask.ptr(), [b, hq, s, s])
        });
    let n = call.dropout_counters().unwrap();
    assert_eq!(n, (b * hq) as u64);
    let mut rng = PhiloxGenerator::device(&dev, seed, offset0).unwrap();
    let snapshot = PhiloxState::new(&dev, 0, 0).unwrap();
    let run = |rng: &mut PhiloxGenerator, st: &attn_host::Stream| -> attn_host::Result<()> {
        let philox = rng.draw(st, n, Some(&snapshot))?;
        // SAFETY: every buffer is live for the test and sized for its view.
        unsafe { call.dropout(Dropout { p, rng: philox }).launch(st) }
    };
    // Once outside the capture, so the kernels are loaded.
    run(&mut rng, &stream).unwrap();
    stream.synchronize().unwrap();
    assert_eq!(snapshot.read(&stream).unwrap(), (seed, offset0));
    let graph = stream.capture(|st| run(&mut rng, st)).expect("capture");
    let mut masks = Vec::new();
    for replay in 0..2u64 {
        mask.fill_bytes(0xFF, &stream).unwrap();
        // SAFETY: every buffer the captured calls use is still alive.
        unsafe { graph.launch(&stream) }.unwrap();
        stream.synchronize().unwrap();
        let (s_seed, s_off) = snapshot.read(&stream).unwrap();
        assert_eq!(s_seed, seed);
        assert_eq!(
            s_off,
            offset0 + (2 + replay) * n - n,
            "replay {replay}'s counter base"
        );
        let got = mask.to_host(&stream).unwrap();
        let want = attn_ref::dropout::mask_tensor(&problem.clone().with_dropout(p, seed, s_off))
            .expect("a mask");
        assert_eq!(
            attn_tests::mask_mismatches(&problem.clone().with_dropout(p, seed, s_off), &got, &want),
            0,
            "replay {replay}: the mask differs from attn-ref's for offset {s_off}"
        );
        masks.push(got);
    }
    assert_ne!(masks[0], masks[1], "two replays drew the same mask");
    // Capture enqueued nothing: the generator moved by the warm-up and two replays only.
    assert_eq!(rng.current(&stream).unwrap(), (seed, offset0 + 3 * n));
    eprintln!(
        "graph_replays_draw_fresh_masks: 2 replays, offsets {} and {}, on {}",
        offset0 + n,
        offset0 + 2 * n,
        dev.info().name
    );
}
