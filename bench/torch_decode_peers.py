"""Peer decode timings for `attn bench --decode`: PyTorch SDPA's flash (FA2), efficient and cuDNN
backends on the decode rows, and a device-to-device copy, in the same run on the same GPU.

usage: python3 torch_decode_peers.py DECODE_JSON OUT_JSON

DECODE_JSON is what `attn bench --decode` times, e.g.
  {"iters": 20, "warmup": 3, "copy_bytes": 2147483648,
   "rows": [{"index": 5, "row": "b16-sq4-sk8192-hk8-causal", "dtype": "bf16", "d": 128,
             "batch": 16, "seq_q": 4, "seq_k": 8192, "heads_q": 32, "heads_k": 8,
             "causal": true, "bytes": 537919488, "kv_bytes": 536870912, "sets": 2}, ...]}
"bytes" (K + V + Q + O once each) and "sets" (input sets rotated over) come from the caller, so
both sides divide by the same number and rotate over as many sets.

OUT_JSON gets a list, rewritten after every entry (a crash part-way keeps what was timed):
  {"kind": "copy", "bytes", "ms", "gbps", "timer"}                    (or {"kind": "copy", "error"})
  {"kind": "decode", "row", "peer", "ms", "gbps", "timer", "construct", "max_abs_err"}
  {"kind": "decode", "row", "peer", "construct", "error", "warnings"}  (when it fails)
Every backend call is in try/except: an unsupported case is an "error" string, never an abort.

Peers. q [B,Sq,Hq,D] and k, v [B,Sk,Hk,D] are BSHD like ours, given to SDPA as the BHSD views
`.transpose(1, 2)` (the layout cuDNN wants). Each backend runs
  F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=(Hq != Hk))
inside `sdpa_kernel([SDPBackend.FLASH_ATTENTION | EFFICIENT_ATTENTION | CUDNN_ATTENTION])`, with
mask = None, or for causal rows (ours: causal bottom-right, the last query sees the last key)
mask = torch.nn.attention.bias.causal_lower_right(Sq, Sk). SDPA's own `is_causal` is top-left,
and flash refuses it when Sq != Sk. The CausalBias dispatches by itself (torch/nn/attention/
bias.py): with flash enabled, aten._scaled_dot_product_flash_attention(is_causal=True), whose
FA2 causal mask is bottom-right; with efficient, aten._efficient_attention_forward with
custom_mask_type=2 (no GQA there: an error on GQA rows); otherwise, as under the cuDNN backend,
SDPA with the materialised [Sq, Sk] boolean mask (cuDNN reads that mask as a bias). Each peer's
output on input set 0 is checked once against an fp32 reference of batch 0 with ours' mask; a
max |err| above 2e-2 makes the entry an error (its ms kept), so that a construct computing another
mask is never compared.

Copy: y.copy_(x) of two copy_bytes uint8 buffers; gbps = 2 * copy_bytes / ms / 1e6 (read + write).

Timing, as ours: `warmup` + `iters` rounds, each an untimed call on the previous input set (it
keeps the GPU busy while the host enqueues, so Python's dispatch overhead is not timed) and then
the call on set i % sets between two CUDA events; the result is the median of the last `iters`
rounds (the upper one of two when even, as ours)."""
import gc
import json
import math
import sys
import time
import warnings

from peers_common import Results, log, short

PEERS = ["flash", "efficient", "cudnn"]
TOLERANCE = 2e-2


def main():
    spec = json.load(open(sys.argv[1]))
    out_path = sys.argv[2]
    emit = Results(out_path).emit

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    iters = max(1, int(spec.get("iters", 20)))
    warmup = max(0, int(spec.get("warmup", 3)))
    copy_bytes = int(spec.get("copy_bytes", 2 << 30))
    rows = spec.get("rows", [])
    backend_names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                     "cudnn": "CUDNN_ATTENTION"}
    backends = {p: getattr(SDPBackend, n) for p, n in backend_names.items()}
    dtypes = {"bf16": torch.bfloat16, "f16": torch.float16}
    dev = "cuda"
    timer = "cuda-events"
    log(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, cudnn "
        f"{torch.backends.cudnn.version()}, {warmup} warm-up + {iters} timed rounds")

    def bench(fn, nsets):
        """Median ms of fn(i % nsets) over the timed rounds (see the module docs)."""
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for i in range(warmup + iters):
            fn((i + nsets - 1) % nsets)  # untimed: keeps the GPU ahead of the host
            j = i - warmup
            if j >= 0:
                starts[j].record()
            fn(i % nsets)
            if j >= 0:
                ends[j].record()
        torch.cuda.synchronize()
        times = sorted(s.elapsed_time(e) for s, e in zip(starts, ends))
        ms = times[len(times) // 2]
        if not ms > 0:
            raise RuntimeError(f"timer returned {ms}")
        return ms

    def cleanup():
        try:
            gc.collect()
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        except Exception as e:
            log(f"  cleanup: {short(e)}")

    # The copy bandwidth of this run.
    try:
        x = torch.empty(copy_bytes, dtype=torch.uint8, device=dev)
        y = torch.empty_like(x)
        x.fill_(1)
        ms = bench(lambda i: y.copy_(x), 1)
        gbps = 2 * copy_bytes / ms / 1e6
        emit(dict(kind="copy", bytes=copy_bytes, ms=ms, gbps=gbps, timer=timer))
        log(f"d2d copy: {gbps:.0f} GB/s (read + write, {copy_bytes / 2**30:.1f} GiB)")
        del x, y
    except Exception as e:
        emit(dict(kind="copy", error=short(e)))
        log(f"d2d copy: {short(e)[:200]}")
    cleanup()

    def reference(q, k, v, causal):
        """fp32 attention of batch 0 (BHSD views), the mask bottom-right aligned as ours."""
        q0, k0, v0 = (t[0].float() for t in (q, k, v))
        hq, hk = q0.shape[0], k0.shape[0]
        if hq != hk:  # query head h reads KV head h // (hq // hk)
            k0 = k0.repeat_interleave(hq // hk, dim=0)
            v0 = v0.repeat_interleave(hq // hk, dim=0)
        s = (q0 @ k0.transpose(-1, -2)) / math.sqrt(q0.shape[-1])
        if causal:
            sq, sk = s.shape[-2], s.shape[-1]
            i = torch.arange(sq, device=s.device).unsqueeze(1)
            j = torch.arange(sk, device=s.device).unsqueeze(0)
            s = s.masked_fill(j > i + (sk - sq), float("-inf"))
        return torch.softmax(s, dim=-1) @ v0

    for idx, r in enumerate(rows):
        name = r["row"]
        b, sq, sk, hq, hk, d = (int(r[k]) for k in ("batch", "seq_q", "seq_k", "heads_q",
                                                     "heads_k", "d"))
        nsets = max(1, int(r.get("sets", 2)))
        causal = bool(r.get("causal", False))
        gqa = hq != hk
        key = dict(kind="decode", row=name)
        mask_txt = f"attn_mask=causal_lower_right({sq}, {sk})" if causal else "attn_mask=None"
        construct = (f"F.scaled_dot_product_attention(q, k, v, {mask_txt}, enable_gqa={gqa}) "
                     f"in sdpa_kernel([SDPBackend.{{}}])")
        log(f"peers [{idx + 1}/{len(rows)}] {name}: B={b} Sq={sq} Sk={sk} Hq/Hk={hq}/{hk}, "
            f"{nsets} sets")
        try:
            dt = dtypes[r.get("dtype", "bf16")]
            sets = []
            for _ in range(nsets):
                q = torch.randn(b, sq, hq, d, device=dev, dtype=dt).transpose(1, 2)
                k = torch.randn(b, sk, hk, d, device=dev, dtype=dt).transpose(1, 2)
                v = torch.randn(b, sk, hk, d, device=dev, dtype=dt).transpose(1, 2)
                sets.append((q, k, v))
            mask = None
            if causal:
                from torch.nn.attention.bias import causal_lower_right
                mask = causal_lower_right(sq, sk)
            ref = reference(*sets[0], causal)
        except Exception as e:
            for p in PEERS:
                emit(dict(key, peer=p, error="setup: " + short(e)))
            sets, ref = [], None
            cleanup()
            continue

        def fn(i):
            q, k, v = sets[i]
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)

        for p in PEERS:
            e = dict(key, peer=p, construct=construct.format(backend_names[p]))
            t0 = time.time()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    with sdpa_kernel([backends[p]]):
                        o = fn(0)  # support check, and the output check
                        torch.cuda.synchronize()
                        err = (o[0].float() - ref).abs().max().item()
                        del o
                        ms = bench(fn, nsets)
                    e.update(ms=ms, gbps=r["bytes"] / ms / 1e6, timer=timer, max_abs_err=err)
                    if not err <= TOLERANCE:
                        e["error"] = (f"output differs from the fp32 reference (max |err| = "
                                      f"{err:.3g} > {TOLERANCE}): this construct does not compute "
                                      f"the row's mask")
                except Exception as ex:
                    e["error"] = short(ex)
            if "error" in e and caught:
                e["warnings"] = [str(w.message).replace("\n", " ")[:300] for w in caught[:8]]
            if "error" in e:
                log(f"  {p}: {e['error'][:200]}")
                cleanup()
            else:
                log(f"  {p}: {e['ms']:.4f} ms, {e['gbps']:.0f} GB/s, max |err| "
                    f"{e['max_abs_err']:.2e} ({time.time() - t0:.1f} s)")
            emit(e)
        del sets, ref, fn
        cleanup()


if __name__ == "__main__":
    main()
