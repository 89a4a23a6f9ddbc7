//! Software forms of operations NVIDIA has instructions for (`cp.async`, `cvt.rn.*x2`), shared
//! by the AMD backend and the host emulation.

/// Copies 16 bytes from global `src` to shared `dst` (one 16-byte load and store; this target
/// has no asynchronous copy), or writes 16 zero bytes when `valid` is false.
///
/// # Safety
/// `dst` is 16-byte aligned shared memory; when `valid`, `src` is 16-byte aligned and readable.
#[inline(always)]
pub unsafe fn copy16_async(dst: *mut u8, src: *const u8, valid: bool) {
    // Two direct stores, not a select between arrays: an aggregate select goes through a
    // stack slot (scratch).
    let dst = dst.cast::<[u32; 4]>();
    if valid {
        // SAFETY: the caller guarantees `src` is aligned and readable when `valid`, and `dst`
        // aligned shared memory.
        unsafe { *dst = *src.cast::<[u32; 4]>() };
    } else {
        // SAFETY: as above.
        unsafe { *dst = [0; 4] };
    }
}

/// Copies 4 bytes from `src` to `dst` (one load and store), or writes 4 zero bytes when `valid`
/// is false.
///
/// # Safety
/// `dst` is 4-byte aligned shared memory; when `valid`, `src` is 4-byte aligned and readable.
#[inline(always)]
pub unsafe fn copy4_async(dst: *mut u8, src: *const u8, valid: bool) {
    let dst = dst.cast::<u32>();
    if valid {
        // SAFETY: the caller's contract.
        unsafe { *dst = *src.cast::<u32>() };
    } else {
        // SAFETY: as above.
        unsafe { *dst = 0 };
    }
}

/// Copies the first `bytes` (0..=16, a multiple of 2) of a 16-byte chunk from `src` to `dst` and
/// zero-fills the rest (synchronously).
///
/// # Safety
/// `dst` and `src` are 16-byte aligned; `src` is readable for `bytes` bytes; `bytes <= 16`.
#[inline(always)]
pub unsafe fn copy16_async_part(dst: *mut u8, src: *const u8, bytes: u32) {
    if bytes >= 16 {
        // SAFETY: the whole chunk is readable (the caller's contract).
        unsafe { copy16_async(dst, src, true) };
        return;
    }
    let (d, s) = (dst.cast::<u16>(), src.cast::<u16>());
    for h in 0..8 {
        // SAFETY: half-word h is read only when it lies within `bytes`; dst is a 16-byte chunk.
        unsafe { *d.add(h) = if 2 * (h as u32) < bytes { *s.add(h) } else { 0 } };
    }
}

/// Closes a group of copies (nothing to do: copies here are synchronous).
#[inline(always)]
pub fn async_commit() {}

/// Waits for all but the latest group of this thread's copies (they are synchronous here).
#[inline(always)]
pub fn async_wait_prior() {}

/// Waits for this thread's copies (they are synchronous here).
#[inline(always)]
pub fn async_wait_all() {}

/// Rounds `lo`, `hi` to f16 (nearest even) and packs them, `lo` in bits 0..16.
#[inline(always)]
pub fn pack_f16x2(lo: f32, hi: f32) -> u32 {
    super::cvt::f32_to_f16(lo) as u32 | (super::cvt::f32_to_f16(hi) as u32) << 16
}

/// Rounds `lo`, `hi` to bf16 (nearest even) and packs them, `lo` in bits 0..16.
#[inline(always)]
pub fn pack_bf16x2(lo: f32, hi: f32) -> u32 {
    super::cvt::f32_to_bf16(lo) as u32 | (super::cvt::f32_to_bf16(hi) as u32) << 16
}

/// `*p += v` as one atomic read-modify-write of device memory (a compare-and-swap loop: no
/// float-add atomic is reachable from Rust here; relaxed, as every order of the additions is
/// acceptable to its callers).
///
/// # Safety
/// `p` is a 4-byte aligned, writable f32 of device (global) memory.
#[inline(always)]
pub unsafe fn atomic_add_f32(p: *mut f32, v: f32) {
    use core::sync::atomic::{AtomicU32, Ordering};
    // SAFETY: the caller's contract; an aligned f32 has the size and alignment of an AtomicU32.
    let a = unsafe { &*p.cast::<AtomicU32>() };
    let mut old = a.load(Ordering::Relaxed);
    loop {
        let new = (f32::from_bits(old) + v).to_bits();
        match a.compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => old = now,
        }
    }
}

/// No bulk copy engine here: callers add element by element.
pub const BULK_REDUCE: bool = false;

/// `dst[i] += src[i]` for the `bytes / 4` f32 of `src`, element by element by the calling thread
/// (the form of NVIDIA's bulk reduction without its engine).
///
/// # Safety
/// `src` and `dst` hold `bytes / 4` f32; `dst` is device memory.
#[inline(always)]
pub unsafe fn bulk_reduce_add_f32(dst: *mut f32, src: *const f32, bytes: u32) {
    for i in 0..bytes as usize / 4 {
        // SAFETY: the caller's contract (element i < bytes / 4 of both).
        unsafe { atomic_add_f32(dst.add(i), *src.add(i)) };
    }
}

/// Nothing to close: [`bulk_reduce_add_f32`] is synchronous here.
#[inline(always)]
pub fn bulk_commit() {}

/// Nothing to wait for: [`bulk_reduce_add_f32`] is synchronous here.
#[inline(always)]
pub fn bulk_wait_read() {}

/// Nothing to wait for: [`bulk_reduce_add_f32`] is synchronous here.
#[inline(always)]
pub fn bulk_wait_all() {}

/// Nothing to order: there is one memory proxy here.
#[inline(always)]
pub fn fence_proxy_async() {}
