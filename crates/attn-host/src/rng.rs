//! The Philox generator: hands each dropout call its range of counter bases and advances by what
//! the call consumes (semantics.md §4: a call on `nb` sequences and `Hq` heads uses the bases
//! `offset .. offset + nb·Hq`).
//!
//! Two kinds of state:
//! - **host** ([`PhiloxGenerator::host`]): seed and offset live here; each call gets them by
//!   value ([`Philox::Host`]). Simple, but a captured graph would replay the same mask.
//! - **device** ([`PhiloxGenerator::device`]): seed and offset live in a 16-byte device buffer.
//!   [`PhiloxGenerator::draw`] enqueues the tiny `attn_philox_advance` kernel, which copies the
//!   current `(seed, offset)` into the call's *snapshot* (a [`PhiloxState`] the caller brings)
//!   and adds the call's consumption to the device offset; the call reads its key and base from
//!   the snapshot ([`Philox::Device`]). Captured into a graph, every replay advances the device
//!   offset, so every replay draws a fresh mask, and the snapshot tells afterwards which
//!   `(seed, offset)` that replay used. The backward of a call takes the same [`Philox`] (the
//!   same snapshot), so it sees its forward's mask however far the generator has moved on.
use crate::device::{Device, DeviceBuffer, Stream};
use crate::error::{Error, Result};
use crate::ops::{Forward, Philox};
use attn_abi::{KernArgs, KernelId, PhiloxAdvanceParams};

/// A device-resident `(seed, offset)` pair: two u64 in a 16-byte buffer. A generator's state,
/// or the snapshot one call reads its key and counter base from.
#[derive(Debug)]
pub struct PhiloxState {
    buf: DeviceBuffer<u64>,
}

impl PhiloxState {
    /// A pair holding `(seed, offset)` (the copy completes before this returns).
    pub fn new(device: &Device, seed: u64, offset: u64) -> Result<Self> {
        Ok(PhiloxState {
            buf: device.clone_htod(&[seed, offset])?,
        })
    }

    /// Device address of the seed (the offset follows 8 bytes later).
    pub fn ptr(&self) -> u64 {
        self.buf.ptr()
    }

    /// The [`Philox`] a call uses to read its key and counter base from this pair.
    pub fn philox(&self) -> Philox {
        Philox::Device {
            seed_ptr: self.buf.ptr(),
            offset_ptr: self.buf.ptr() + 8,
            offset: 0,
        }
    }

    /// Reads `(seed, offset)` back (waits for `stream` first).
    pub fn read(&self, stream: &Stream) -> Result<(u64, u64)> {
        let v = self.buf.to_host(stream)?;
        Ok((v[0], v[1]))
    }
}

enum State {
    Host { seed: u64, offset: u64 },
    Device(PhiloxState),
}

/// A Philox generator: `(seed, offset)` on the host or in device memory (graph-safe); see the
/// [module docs](self).
///
/// ```no_run
/// # use attn_host::*;
/// # fn f(stream: &Stream, call: Forward, p: f64) -> Result<()> {
/// // Graph-safe: state and per-call snapshot in device memory.
/// let mut rng = PhiloxGenerator::device(stream.device(), 42, 0)?;
/// let snapshot = PhiloxState::new(stream.device(), 0, 0)?;
/// let philox = rng.draw(stream, call.dropout_counters()?, Some(&snapshot))?;
/// let call = call.dropout(Dropout { p, rng: philox });
/// // SAFETY (of this example): the call's buffers are live device memory.
/// unsafe { call.launch(stream)? };
/// # Ok(()) }
/// ```
pub struct PhiloxGenerator {
    state: State,
}

impl std::fmt::Debug for PhiloxGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            State::Host { seed, offset } => f
                .debug_struct("PhiloxGenerator::Host")
                .field("seed", seed)
                .field("offset", offset)
                .finish(),
            State::Device(s) => f
                .debug_struct("PhiloxGenerator::Device")
                .field("state", &format_args!("{:#x}", s.ptr()))
                .finish(),
        }
    }
}

/// PyTorch's default generator seed, the seed of [`PhiloxGenerator::default`].
pub const DEFAULT_SEED: u64 = 67_280_421_310_721;

impl Default for PhiloxGenerator {
    /// A host generator at [`DEFAULT_SEED`], offset 0.
    fn default() -> Self {
        PhiloxGenerator::host(DEFAULT_SEED, 0)
    }
}

impl PhiloxGenerator {
    /// A generator whose state lives on the host: calls get `(seed, offset)` by value.
    pub const fn host(seed: u64, offset: u64) -> Self {
        PhiloxGenerator {
            state: State::Host { seed, offset },
        }
    }

    /// A generator whose state lives in device memory of `device` (graph-safe).
    pub fn device(device: &Device, seed: u64, offset: u64) -> Result<Self> {
        Ok(PhiloxGenerator {
            state: State::Device(PhiloxState::new(device, seed, offset)?),
        })
    }

    /// The device state, for a device generator.
    pub fn device_state(&self) -> Option<&PhiloxState> {
        match &self.state {
            State::Device(s) => Some(s),
            State::Host { .. } => None,
        }
    }

    /// The current `(seed, offset)`: a device generator reads its state (waiting for `stream`).
    pub fn current(&self, stream: &Stream) -> Result<(u64, u64)> {
        match &self.state {
            State::Host { seed, offset } => Ok((*seed, *offset)),
            State::Device(s) => s.read(stream),
        }
    }

    /// What [`PhiloxGenerator::draw`] does for a host generator, without a stream: returns
    /// [`Philox::Host`] at the current offset and advances it by `count` (wrapping). A device
    /// generator needs the stream: this is an error for it.
    pub fn next_host(&mut self, count: u64) -> Result<Philox> {
        match &mut self.state {
            State::Host { seed, offset } => {
                let rng = Philox::Host {
                    seed: *seed,
                    offset: *offset,
                };
                *offset = offset.wrapping_add(count);
                Ok(rng)
            }
            State::Device(_) => Err(Error::invalid(
                "generator",
                "a host generator (a device generator draws on a stream: `draw`)",
                "a device generator",
            )),
        }
    }

    /// Hands one call the counter bases `offset .. offset + count` and advances past them
    /// (wrapping, as the counters do).
    ///
    /// A host generator returns [`Philox::Host`] and needs no `snapshot`. A device generator
    /// needs one: it enqueues on `stream` the copy of its current state into `snapshot` and the
    /// advance, and returns the [`Philox::Device`] that reads `snapshot`; the snapshot must
    /// stay alive (and unused by other calls' draws) until the call and its backward are done.
    /// Enqueues no allocation, so it can be captured into a graph.
    pub fn draw(
        &mut self,
        stream: &Stream,
        count: u64,
        snapshot: Option<&PhiloxState>,
    ) -> Result<Philox> {
        match &mut self.state {
            State::Host { .. } => self.next_host(count),
            State::Device(state) => {
                let snap = snapshot.ok_or_else(|| {
                    Error::invalid(
                        "snapshot",
                        "a PhiloxState for a device generator's draw",
                        "None",
                    )
                })?;
                if snap.ptr() == state.ptr() {
                    return Err(Error::invalid(
                        "snapshot",
                        "a PhiloxState other than the generator's own state",
                        "the generator's state",
                    ));
                }
                let args = KernArgs::new(&PhiloxAdvanceParams {
                    state: state.ptr(),
                    snapshot: snap.ptr(),
                    increment: count,
                    _pad: 0,
                });
                // SAFETY: both pairs are live 16-byte allocations of this crate; the kernel
                // touches exactly those 32 bytes with one thread.
                unsafe {
                    stream.device().launch(
                        KernelId::PhiloxAdvance,
                        [1, 1, 1],
                        64,
                        0,
                        stream,
                        &args,
                    )?
                };
                Ok(snap.philox())
            }
        }
    }
}

impl Forward {
    /// The Philox counter bases one dropout call consumes: `nb · Hq`, with `nb` the batch size
    /// or, in varlen mode, the number of sequences (semantics.md §4).
    pub fn dropout_counters(&self) -> Result<u64> {
        let nb = match self.varlen {
            Some(v) => v.cu_seqlens_q.len.saturating_sub(1),
            None => self.q.shape[0],
        };
        (nb as u64)
            .checked_mul(self.q.shape[2] as u64)
            .ok_or_else(|| Error::invalid("q.shape", "nb · Hq that fits in u64", nb))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::TensorRef;
    use attn_abi::DType;

    #[test]
    fn host_generator_hands_out_consecutive_ranges_and_wraps() {
        let mut g = PhiloxGenerator::host(7, u64::MAX - 1);
        let at = |offset| Philox::Host { seed: 7, offset };
        assert_eq!(g.next_host(3).unwrap(), at(u64::MAX - 1));
        assert_eq!(g.next_host(5).unwrap(), at(1));
        assert_eq!(g.next_host(0).unwrap(), at(6));
        assert_eq!(g.next_host(2).unwrap(), at(6));
        assert_eq!(
            PhiloxGenerator::default().next_host(1).unwrap(),
            Philox::Host {
                seed: DEFAULT_SEED,
                offset: 0
            }
        );
    }

    #[test]
    fn a_call_consumes_batch_times_heads_or_sequences_times_heads() {
        let t = |shape| TensorRef::contiguous(0x1000, DType::F16, shape);
        let call = Forward::new(
            t([3, 17, 8, 64]),
            t([3, 9, 2, 64]),
            t([3, 9, 2, 64]),
            t([3, 17, 8, 64]),
        );
        assert_eq!(call.dropout_counters().unwrap(), 24);
        let cu = crate::ops::I32Ref {
            ptr: 0x2000,
            len: 5,
        };
        let call = call.varlen(crate::ops::Varlen {
            cu_seqlens_q: cu,
            cu_seqlens_k: cu,
            max_seqlen_q: 4,
            max_seqlen_k: 4,
        });
        assert_eq!(call.dropout_counters().unwrap(), 32);
    }
}
