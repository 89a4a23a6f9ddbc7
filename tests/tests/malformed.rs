//! Device arrays the host cannot read (`cu_seqlens_q/k`, `seqused_k`, the Philox seed and offset
//! pointers' contents) are clamped in the kernels: malformed ones may give wrong numbers but never
//! an access outside the validated tensors. This test feeds malformed arrays to every forward
//! variant, and to the decode kernels with a paged cache whose block table is out of range
//! everywhere; `tools/gpu-suite.sh` runs it under `compute-sanitizer --tool memcheck`, which must
//! report 0 errors. Skips (printing why) without a GPU.
use attn_abi::DType;
use attn_host::{
    AlibiRef, BiasRef, Dropout, Forward, I32Ref, LseRef, MaskRef, Paged, Philox, Route, Splits,
    TensorRef, Varlen,
};
use attn_tests::device_or_skip;

#[test]
fn malformed_device_arrays_never_fault() {
    let Some(dev) = device_or_skip("malformed device arrays") else {
        return;
    };
    let stream = dev.default_stream();
    let (tq, tk, hq, hk, d) = (300usize, 200usize, 4usize, 2usize, 64usize);
    let (mq, mk) = (128usize, 96usize);
    let fill = |n: usize| -> Vec<u16> {
        (0..n)
            .map(|i| half::bf16::from_f32(((i * 7919) % 113) as f32 / 113.0 - 0.5).to_bits())
            .collect()
    };
    let q = dev.clone_htod(&fill(tq * hq * d)).unwrap();
    let k = dev.clone_htod(&fill(tk * hk * d)).unwrap();
    let v = dev.clone_htod(&fill(tk * hk * d)).unwrap();
    let out = dev.alloc::<u16>(tq * hq * d).unwrap();
    let lse = dev.alloc::<f32>(hq * tq).unwrap();
    let nseq = 6;
    let bias = dev.clone_htod(&vec![0.25f32; nseq * hq * mq * mk]).unwrap();
    let slopes = dev.clone_htod(&vec![0.1f32; nseq * hq]).unwrap();
    let mask = dev.alloc::<u8>(nseq * hq * mq * mk).unwrap();
    // Negative, decreasing, past the totals, i32 extremes.
    let bad_q: [i32; 7] = [-5, 400, 100, 90, i32::MAX, i32::MIN, 299];
    let bad_k: [i32; 7] = [7, -1, 500, 150, 10, i32::MAX, 0];
    let bad_used: [i32; 6] = [-3, 1000, i32::MAX, 50, i32::MIN, 7];
    let cq = dev.clone_htod(&bad_q).unwrap();
    let ck = dev.clone_htod(&bad_k).unwrap();
    let used = dev.clone_htod(&bad_used).unwrap();
    let seed = dev.clone_htod(&[u64::MAX]).unwrap();
    let offset = dev.clone_htod(&[u64::MAX - 3]).unwrap();
    let t = |ptr: u64, len: usize, rows: usize, heads: usize| TensorRef {
        len,
        ..TensorRef::contiguous(ptr, DType::Bf16, [1, rows, heads, d])
    };
    // One varlen call with malformed arrays, over keys `k`/`v` with `cu_seqlens_k` at `cu_k`.
    let call = |k: TensorRef, v: TensorRef, cu_k: u64, max_k: usize| {
        Forward::new(
            t(q.ptr(), q.len(), tq, hq),
            k,
            v,
            t(out.ptr(), out.len(), tq, hq),
        )
        .lse(LseRef {
            len: lse.len(),
            ..LseRef::contiguous(lse.ptr(), [1, hq, tq])
        })
        .varlen(Varlen {
            cu_seqlens_q: I32Ref {
                ptr: cq.ptr(),
                len: nseq + 1,
            },
            cu_seqlens_k: I32Ref {
                ptr: cu_k,
                len: nseq + 1,
            },
            max_seqlen_q: mq,
            max_seqlen_k: max_k,
        })
        .seqused_k(I32Ref {
            ptr: used.ptr(),
            len: nseq,
        })
        .mask(attn_host::Mask::Causal(attn_host::Align::BottomRight))
    };
    let base = || {
        call(
            t(k.ptr(), k.len(), tk, hk),
            t(v.ptr(), v.len(), tk, hk),
            ck.ptr(),
            mk,
        )
    };
    // The varlen variant, then every piece with dropout from device memory and its mask.
    let calls = [
        base(),
        base()
            .bias(BiasRef {
                ptr: bias.ptr(),
                len: bias.len(),
                dtype: DType::F32,
                shape: [nseq, hq, mq, mk],
                strides: [(hq * mq * mk) as i64, (mq * mk) as i64, mk as i64, 1],
            })
            .alibi(AlibiRef {
                ptr: slopes.ptr(),
                len: slopes.len(),
                per_batch: true,
            })
            .softcap(20.0)
            .dropout(Dropout {
                p: 0.2,
                rng: Philox::Device {
                    seed_ptr: seed.ptr(),
                    offset_ptr: offset.ptr(),
                    offset: 9,
                },
            })
            .dropout_mask(MaskRef {
                len: mask.len(),
                ..MaskRef::contiguous(mask.ptr(), [nseq, hq, mq, mk])
            }),
    ];
    for (n, call) in calls.iter().enumerate() {
        // SAFETY: every buffer is a live allocation on `dev` whose length the plan checks.
        unsafe { call.launch(&stream) }.unwrap_or_else(|e| panic!("call {n}: {e}"));
        stream
            .synchronize()
            .unwrap_or_else(|e| panic!("call {n}: {e}"));
    }

    // The decode kernels: a paged cache of 10 pages of 16 keys (k/v hold 160 keys of Hk = 2),
    // a block table full of out-of-range entries, the same malformed cu_seqlens / seqused_k,
    // split-KV with a key range.
    let pages = 10usize;
    let kp = dev.clone_htod(&fill(pages * 16 * hk * d)).unwrap();
    let vp = dev.clone_htod(&fill(pages * 16 * hk * d)).unwrap();
    let max_pages = 12usize;
    let table: Vec<i32> = (0..nseq * max_pages)
        .map(|i| [-1, 10, i32::MAX, i32::MIN, 3, 11, 9][i % 7])
        .collect();
    let table = dev.clone_htod(&table).unwrap();
    let paged = |splits: u32| {
        let page_t = |ptr: u64, len: usize| TensorRef {
            len,
            ..TensorRef::contiguous(ptr, DType::Bf16, [pages, 16, hk, d])
        };
        // (cu_seqlens_k is not read with paged KV.)
        call(
            page_t(kp.ptr(), kp.len()),
            page_t(vp.ptr(), vp.len()),
            cq.ptr(),
            max_pages * 16,
        )
        .paged(Paged {
            block_table: I32Ref {
                ptr: table.ptr(),
                len: table.len(),
            },
            max_pages,
            table_stride: max_pages,
        })
        .splits(Splits::Fixed(splits))
        .softcap(10.0)
    };
    let decode_calls = [
        paged(1),
        paged(5),
        paged(3).key_range(17, 90),
        base().splits(Splits::Fixed(4)).route(Route::Decode),
    ];
    for (n, call) in decode_calls.iter().enumerate() {
        // SAFETY: as above.
        unsafe { call.launch(&stream) }.unwrap_or_else(|e| panic!("decode call {n}: {e}"));
        stream
            .synchronize()
            .unwrap_or_else(|e| panic!("decode call {n}: {e}"));
    }
    eprintln!(
        "malformed device arrays: {} launches completed (run under memcheck for the proof)",
        calls.len() + decode_calls.len()
    );
}
