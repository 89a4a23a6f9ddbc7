//! Host emulation of the GPU execution model, so that kernel bodies run unchanged in `cargo test`.
//!
//! [`launch`] runs every block of a grid; each block runs its threads as OS threads that share a
//! dynamic shared-memory buffer, a block barrier, and per-wave barriers plus an exchange array for
//! the shuffles. It is slow (every shuffle is two barrier crossings) but it executes the exact
//! index maths, barriers and lane exchanges of the GPU code, which is what the tests are after.
use std::cell::Cell;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU32, Ordering};

/// Lanes per emulated wave (32, like NVIDIA and RDNA3; 64, like CDNA, with the `host-wave64`
/// feature).
#[cfg(not(feature = "host-wave64"))]
pub const WAVE: u32 = 32;
/// Lanes per emulated wave (32, like NVIDIA and RDNA3; 64, like CDNA, with the `host-wave64`
/// feature).
#[cfg(feature = "host-wave64")]
pub const WAVE: u32 = 64;

struct Block {
    barrier: Barrier,
    wave_barriers: Vec<Barrier>,
    exchange: Vec<AtomicU32>,
    smem: *mut u8,
    block_idx: (u32, u32, u32),
}

// SAFETY: `smem` points to a buffer that outlives every thread of the block (see `launch`), and
// all accesses to it are ordered by the block barrier exactly as on a GPU.
unsafe impl Sync for Block {}

thread_local! {
    static CTX: Cell<(*const Block, u32)> = const { Cell::new((core::ptr::null(), 0)) };
}

fn ctx() -> (&'static Block, u32) {
    let (b, t) = CTX.with(|c| c.get());
    assert!(
        !b.is_null(),
        "GPU intrinsic called outside arch::host::launch"
    );
    // SAFETY: the pointer was set by `launch` for this thread and the block outlives the thread.
    (unsafe { &*b }, t)
}

/// Runs `kernel` on every block of `grid` with `threads` threads per block and `smem_bytes`
/// bytes of dynamic shared memory, which starts filled with `0xFF` bytes (NaN poison).
pub fn launch(grid: (u32, u32, u32), threads: u32, smem_bytes: usize, kernel: impl Fn() + Sync) {
    assert!(threads.is_multiple_of(WAVE) && threads > 0);
    for z in 0..grid.2 {
        for y in 0..grid.1 {
            for x in 0..grid.0 {
                let mut smem = vec![u128::MAX; smem_bytes.div_ceil(16)];
                let block = Block {
                    barrier: Barrier::new(threads as usize),
                    wave_barriers: (0..threads / WAVE)
                        .map(|_| Barrier::new(WAVE as usize))
                        .collect(),
                    exchange: (0..threads).map(|_| AtomicU32::new(0)).collect(),
                    smem: smem.as_mut_ptr().cast(),
                    block_idx: (x, y, z),
                };
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let (block, kernel) = (&block, &kernel);
                        std::thread::Builder::new()
                            .stack_size(1 << 20)
                            .spawn_scoped(s, move || {
                                CTX.with(|c| c.set((block as *const Block, t)));
                                kernel();
                                CTX.with(|c| c.set((core::ptr::null(), 0)));
                            })
                            .expect("spawn emulated GPU thread");
                    }
                });
                drop(smem);
            }
        }
    }
}

/// Thread index in the block.
pub fn thread_idx() -> u32 {
    ctx().1
}

/// Block index `(x, y, z)`.
pub fn block_idx() -> (u32, u32, u32) {
    ctx().0.block_idx
}

/// Block barrier.
pub fn sync_threads() {
    ctx().0.barrier.wait();
}

/// Butterfly shuffle within the emulated wave.
pub fn shfl_xor_f32(v: f32, mask: u32) -> f32 {
    let (b, t) = ctx();
    let wave = (t / WAVE) as usize;
    b.exchange[t as usize].store(v.to_bits(), Ordering::Relaxed);
    b.wave_barriers[wave].wait();
    let src = (t / WAVE) * WAVE + ((t % WAVE) ^ mask);
    let r = b.exchange[src as usize].load(Ordering::Relaxed);
    b.wave_barriers[wave].wait();
    f32::from_bits(r)
}

/// Indexed shuffle within the emulated wave: the value of `v` held by lane `src` (`< WAVE`).
pub fn shfl_idx_u32(v: u32, src: u32) -> u32 {
    let (b, t) = ctx();
    assert!(
        src < WAVE,
        "shfl_idx_u32: source lane {src} outside the wave"
    );
    let wave = (t / WAVE) as usize;
    b.exchange[t as usize].store(v, Ordering::Relaxed);
    b.wave_barriers[wave].wait();
    let r = b.exchange[((t / WAVE) * WAVE + src) as usize].load(Ordering::Relaxed);
    b.wave_barriers[wave].wait();
    r
}

/// `2^x`.
pub fn exp2(x: f32) -> f32 {
    x.exp2()
}

/// `log2(x)`.
pub fn log2(x: f32) -> f32 {
    x.log2()
}

/// `1/x`.
pub fn rcp(x: f32) -> f32 {
    1.0 / x
}

/// Base of the block's dynamic shared memory.
pub fn dyn_smem() -> *mut u8 {
    ctx().0.smem
}

/// f16 bits to `f32`.
pub fn f16_to_f32(x: u16) -> f32 {
    half::f16::from_bits(x).to_f32()
}

/// `f32` to f16 bits (round to nearest even).
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// Fused multiply-add `a * b + c`, rounded once.
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

pub use super::soft::{
    BULK_REDUCE, async_commit, async_wait_all, async_wait_prior, atomic_add_f32, bulk_commit,
    bulk_reduce_add_f32, bulk_wait_all, bulk_wait_read, copy4_async, copy16_async,
    copy16_async_part, fence_proxy_async, pack_bf16x2, pack_f16x2,
};
