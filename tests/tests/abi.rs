//! The GPU sees exactly the bytes of the host's parameter struct (the `attn_abi_echo` kernel).
use attn_abi::{FwdParams, KernArgs, MASK_WINDOW, WINDOW_UNBOUNDED};
use attn_tests::device_or_skip;

#[test]
fn kernel_receives_the_exact_parameter_bytes() {
    let Some(dev) = device_or_skip("abi echo") else {
        return;
    };
    let stream = dev.default_stream();
    for seed in 1..4u64 {
        // Every field distinct and non-zero, so a shifted or truncated field shows.
        let w = |i: u64| {
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(i as u32)
                | 1
        };
        let p = FwdParams {
            q: w(1),
            k: w(2),
            v: w(3),
            out: w(4),
            lse: w(5),
            q_strides: [w(6) as i64, -(w(7) as i64 >> 4), 3],
            k_strides: [4, 5, 6],
            v_strides: [7, 8, 9],
            o_strides: [10, 11, 12],
            lse_strides: [13, 14],
            batch: 15,
            heads_q: 16,
            heads_k: 17,
            seqlen_q: w(8) as u32,
            seqlen_k: 19,
            head_dim: 20,
            head_dim_v: 21,
            scale_log2: 0.1 * seed as f32,
            window_left: WINDOW_UNBOUNDED,
            window_right: -3,
            flags: MASK_WINDOW,
            _pad: 0,
            cu_seqlens_q: w(9),
            cu_seqlens_k: w(10),
            seqused_k: w(11),
            max_seqlen_q: w(12) as u32,
            max_seqlen_k: 22,
            bias: w(13),
            bias_strides: [23, 0, -(w(14) as i64 >> 4), 24],
            alibi: w(15),
            alibi_stride: 25,
            softcap: 0.5 * seed as f32,
            dropout_threshold: w(16) as u32,
            dropout_rescale: 1.25,
            scale_log2_lo: -1.25e-9,
            seed: w(17),
            offset: w(18),
            seed_ptr: w(19),
            offset_ptr: w(20),
            randval: w(21),
            randval_strides: [26, 27, w(22) as i64 >> 4],
            pack_gqa: w(23) as u32,
            num_splits: 28,
            ws_o: w(24),
            ws_lse: w(25),
            ws_o_strides: [29, -(w(26) as i64 >> 4), 30, 31],
            ws_lse_strides: [32, 33, w(27) as i64 >> 4],
            block_table: w(28),
            block_table_stride: -34,
            page_size: w(29) as u32,
            num_pages: 35,
            key_lo: w(30) as u32,
            key_hi: 36,
        };
        let got = attn_host::abi_echo(&stream, &p).expect("echo kernel");
        let want = KernArgs::new(&attn_abi::EchoParams {
            out: got.0[0],
            payload: p,
        });
        assert_eq!(got, want, "argument image differs (seed {seed})");
        assert_eq!(got.params::<attn_abi::EchoParams>().payload, p);
    }
}
