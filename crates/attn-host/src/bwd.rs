//! The backward call (semantics.md §5): `dq`, `dk`, `dv` and `dbias` of a [`Forward`] call, on
//! caller memory.
//!
//! ```text
//! D_i    = dot(dout_i, out_i)
//! dV_j   = Σ_i P_ij Z_ij dout_i,            dP_ij = Z_ij dot(dout_i, v_j)
//! dS_ij  = P_ij (dP_ij - D_i)  (= dbias_ij), dS'_ij = dS_ij (1 - tanh²) with softcap
//! dQ_i   = scale Σ_j dS'_ij k_j,            dK_j  = scale Σ_i dS'_ij q_i
//! ```
//!
//! `P` is recomputed from the forward's `lse` with the forward's own score pieces, mask and
//! dropout mask (the same Philox counters), so the call describes the forward exactly as it ran:
//! [`Backward::new`] takes that [`Forward`] (with its `lse`) and the gradients.
//!
//! Launches, in stream order: zero fills (`dbias` always, every gradient with
//! [`Backward::zero_tensors`]), `delta` (`attn_bwd_pre_*`), then either
//!
//! - **deterministic** ([`Backward::deterministic`], and wherever the fused kernel is not built):
//!   `dq` + `dbias` (`attn_bwd_dq_*`, one block per query block) and `dk` + `dv`
//!   (`attn_bwd_dkdv_*`, one block per key block, summing a kv head's query heads in registers).
//!   Each gradient element is written by one thread of one block, with no atomics: runs are
//!   bit-identical. 7 matrix products (`S` and `dP` are computed twice).
//! - **fused** (the default where built: the plain variant on NVIDIA's 16-bit atom, D <= 128):
//!   `attn_bwd_fused_*` walks as `dkdv` and also adds each step's `dS·K` to an f32 `dQ`
//!   workspace by atomic adds (zeroed by `attn_bwd_pre_*`), then `attn_bwd_post_*` scales and
//!   rounds it into `dq`. 5 matrix products; `dq`'s rounding depends on the order of the adds,
//!   so runs may differ in the last bits (both pass semantics.md's rule).
//!
//! No O(S²) memory: the workspaces are `delta` (f32 in `lse`'s layout) and, fused, `dQ`
//! (f32 `[B, Hq, Sq, bucket]`, the head-dim bucket of the kernel).
use crate::error::{Error, Result};
use crate::ops::{
    BiasRef, Forward, FwdOptions, HostElement, LseRef, TensorRef, check_extent, check_no_broadcast,
    head_dim_bucket, tensor_ref,
};
use crate::{DeviceBuffer, Route, Stream};
use attn_abi::{
    BWD_DBIAS, BWD_DBIAS_F32, BwdParams, BwdVariant, DType, FLAG_VEC16, FwdVariant, KernArgs,
    KernelId, ZeroParams,
};
use attn_kernels::bwd::policy::{
    BWD_THREADS, BwdKernel, POST_ROWS, bwd_instantiated, bwd_smem_bytes, bwd_tile, pre_rows,
    pre_smem_bytes,
};
use attn_kernels::fwd::policy::Family;

/// The largest grid y / z extent (CUDA's).
const GRID_LIMIT: usize = 65_535;
/// Blocks along x of a zero fill (each loops over its share of rows).
const ZERO_BLOCKS: u64 = 1 << 16;

/// One kernel launch of a backward plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BwdLaunch {
    /// The kernel.
    pub kernel: KernelId,
    /// Its grid.
    pub grid: [u32; 3],
    /// Dynamic shared memory per block, bytes.
    pub shared_bytes: u32,
}

/// A backward call, fully decided: parameters and launches (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct BwdPlan {
    /// The parameters of the `pre`, `dq` and `dkdv` kernels (`delta` is filled in at launch when
    /// the call brought no workspace).
    pub params: BwdParams,
    /// Zero fills launched first (`attn_zero_b16` / `attn_zero_b32`), with their parameters.
    pub zeros: Vec<(BwdLaunch, ZeroParams)>,
    /// The `delta` kernel, when there are query rows.
    pub pre: Option<BwdLaunch>,
    /// The `dq` kernel, when there are query rows.
    pub dq: Option<BwdLaunch>,
    /// The `dkdv` kernel (or the fused one, [`KernelId::BwdFused`]), when there are key rows.
    pub dkdv: Option<BwdLaunch>,
    /// The fused backward's `dq` conversion (`attn_bwd_post_*`), when there are query rows.
    pub post: Option<BwdLaunch>,
    /// Bytes of the `delta` workspace (f32 in `lse`'s extent): the caller's
    /// [`Backward::delta_workspace`], or allocated by `launch`.
    pub delta_bytes: usize,
    /// Bytes of the fused backward's f32 `dQ` workspace (`[B, Hq, Sq, bucket]`, the kernel's
    /// head-dim bucket; 0 when the plan is not fused): the caller's [`Backward::dq_workspace`], or allocated by `launch`.
    pub dq_accum_bytes: usize,
}

/// The backward pass of a [`Forward`] call, on caller memory.
#[derive(Clone, Copy, Debug)]
pub struct Backward {
    fwd: Forward,
    dout: TensorRef,
    dq: TensorRef,
    dk: TensorRef,
    dv: TensorRef,
    dbias: Option<BiasRef>,
    zero_tensors: bool,
    deterministic: bool,
    delta: Option<(u64, usize)>,
    dq_accum: Option<(u64, usize)>,
}

impl Backward {
    /// The backward of `fwd` (which must carry its `lse`, [`Forward::lse`], and `out`, as the
    /// forward wrote them), for the upstream gradient `dout` (`out`'s shape), writing `dq`
    /// (`q`'s shape), `dk` (`k`'s) and `dv` (`v`'s) in place. Any strides with the head dim
    /// contiguous; outputs may not broadcast.
    pub fn new(fwd: Forward, dout: TensorRef, dq: TensorRef, dk: TensorRef, dv: TensorRef) -> Self {
        Backward {
            fwd,
            dout,
            dq,
            dk,
            dv,
            dbias: None,
            zero_tensors: false,
            deterministic: false,
            delta: None,
            dq_accum: None,
        }
    }

    /// Also writes `dbias` (`dS`), in the bias's logical shape `[nb, Hq, max_sq, max_sk]` and
    /// dtype, with strides of its own (no zero stride on a dimension longer than 1: no implicit
    /// reduction, semantics.md §5). Positions no query sees are 0.
    pub fn dbias(mut self, dbias: BiasRef) -> Self {
        self.dbias = Some(dbias);
        self
    }

    /// Zeroes `dq`, `dk` and `dv` first, so that rows outside every sequence (varlen) read 0.
    pub fn zero_tensors(mut self, on: bool) -> Self {
        self.zero_tensors = on;
        self
    }

    /// The seed's `deterministic` (default false). `true` runs the two-kernel backward, whose
    /// every gradient element is written once by one block: bit-identical on every run. `false`
    /// runs the fused kernel where it is built (see the module docs), whose `dq` sums the key
    /// blocks by f32 atomics in whatever order they land; elsewhere it is the same as `true`.
    pub fn deterministic(mut self, on: bool) -> Self {
        self.deterministic = on;
        self
    }

    /// A caller-owned f32 workspace for `delta` (at least [`BwdPlan::delta_bytes`], 16-byte
    /// aligned), so that `launch` allocates nothing (graph capture).
    pub fn delta_workspace(mut self, ptr: u64, bytes: usize) -> Self {
        self.delta = Some((ptr, bytes));
        self
    }

    /// A caller-owned f32 workspace for the fused backward's `dQ` (at least
    /// [`BwdPlan::dq_accum_bytes`], 16-byte aligned; ignored by a plan that is not fused), so that
    /// `launch` allocates nothing (graph capture).
    pub fn dq_workspace(mut self, ptr: u64, bytes: usize) -> Self {
        self.dq_accum = Some((ptr, bytes));
        self
    }

    /// Validates every argument for a device of `family` and decides the launches. Pure.
    pub fn plan(&self, family: Family) -> Result<BwdPlan> {
        let f = &self.fwd;
        if f.paged.is_some() || f.key_range.is_some() {
            return Err(Error::unsupported(
                "the backward of a paged or key-range (partial) forward",
            ));
        }
        let lse = f.lse.ok_or_else(|| {
            Error::invalid("lse", "the forward's lse (the backward needs it)", "none")
        })?;
        let mut call = f.route(Route::Prefill);
        call.dropout_mask = None;
        let fplan = call.plan(family)?;
        let mut fp = fplan.params;
        let (q, k, v, out) = (f.q, f.k, f.v, f.out);
        let dtype = q.dtype;
        let es = dtype.size();
        for (name, t, like) in [
            ("dout", &self.dout, &out),
            ("dq", &self.dq, &q),
            ("dk", &self.dk, &k),
            ("dv", &self.dv, &v),
        ] {
            if t.dtype != dtype {
                return Err(Error::invalid(
                    format!("{name}.dtype"),
                    format!("{dtype:?} (q's dtype)"),
                    format!("{:?}", t.dtype),
                ));
            }
            if t.shape != like.shape {
                return Err(Error::invalid(
                    format!("{name}.shape"),
                    format!("{:?}", like.shape),
                    format!("{:?}", t.shape),
                ));
            }
            if t.strides[3] != 1 {
                return Err(Error::invalid(
                    format!("{name}.strides[3]"),
                    "1 (contiguous head dim)",
                    t.strides[3],
                ));
            }
            check_extent(name, t.ptr, t.len, es, &t.shape, &t.strides)?;
            if name != "dout" {
                check_no_broadcast(name, &t.shape, &t.strides)?;
            }
        }
        let [_, _, hq, d] = q.shape;
        let hk = k.shape[2];
        let dvd = v.shape[3];
        let bucket = head_dim_bucket(d.max(dvd))
            .ok_or_else(|| Error::unsupported(format!("head dims {d}/{dvd} above 256")))?;
        // The plain kernels where the forward needed no feature of the pieces' (and no dbias).
        let plain = matches!(
            fplan.kernel,
            KernelId::Fwd {
                variant: FwdVariant::Plain,
                ..
            }
        ) && self.dbias.is_none();
        let variant = if plain {
            BwdVariant::Plain
        } else {
            BwdVariant::Pieces
        };
        let fused = !self.deterministic
            && bwd_instantiated(family, dtype, bucket as usize, BwdKernel::Fused, variant);
        for kernel in [BwdKernel::Dq, BwdKernel::Dkdv] {
            if !bwd_instantiated(family, dtype, bucket as usize, kernel, variant) {
                return Err(Error::unsupported(format!(
                    "the {dtype:?} backward at head dim {bucket} on {family:?} (its tiles do not \
                     fit the shared memory)"
                )));
            }
        }
        // The dbias output, in the bias's shape and dtype.
        let mut bwd_flags = 0;
        let (mut dbias_ptr, mut dbias_strides) = (0, [0i64; 4]);
        let mut zeros = Vec::new();
        if let Some(db) = self.dbias {
            let Some(bias) = f.bias else {
                return Err(Error::invalid("dbias", "a call with a bias", "no bias"));
            };
            if db.dtype != bias.dtype {
                return Err(Error::invalid(
                    "dbias.dtype",
                    format!("{:?} (the bias's dtype)", bias.dtype),
                    format!("{:?}", db.dtype),
                ));
            }
            if db.shape != bias.shape {
                return Err(Error::invalid(
                    "dbias.shape",
                    format!("{:?} (the bias's shape)", bias.shape),
                    format!("{:?}", db.shape),
                ));
            }
            check_extent(
                "dbias",
                db.ptr,
                db.len,
                db.dtype.size(),
                &db.shape,
                &db.strides,
            )?;
            check_no_broadcast("dbias", &db.shape, &db.strides)?;
            bwd_flags |= BWD_DBIAS;
            if db.dtype == DType::F32 {
                bwd_flags |= BWD_DBIAS_F32;
            }
            dbias_ptr = db.ptr;
            dbias_strides = db.strides;
            zeros.extend(zero_fill("dbias", db.ptr, db.dtype, db.shape, db.strides)?);
        }
        if self.zero_tensors {
            for (name, t) in [("dq", &self.dq), ("dk", &self.dk), ("dv", &self.dv)] {
                // [B, S, H, D] as [B, H, S, D]: the grid's y is the heads.
                let [b, s, h, dd] = t.shape;
                let st = t.strides;
                zeros.extend(zero_fill(
                    name,
                    t.ptr,
                    t.dtype,
                    [b, h, s, dd],
                    [st[0], st[2], st[1], st[3]],
                )?);
            }
        }
        // 16-byte tile copies need every copied row aligned: q, k, v (the forward's test) and dout.
        if !crate::ops::rows_16b_aligned(self.dout.ptr, &self.dout.strides[..3], es) {
            fp.flags &= !FLAG_VEC16;
        }
        let (nb, max_sq, max_sk) = (
            fp.batch as usize,
            fp.max_seqlen_q as usize,
            fp.max_seqlen_k as usize,
        );
        let delta_len = lse.len.max(1);
        let delta_bytes = delta_len.checked_mul(4).ok_or_else(|| {
            Error::invalid(
                "lse.len",
                "at most usize::MAX / 4 elements (delta is f32 in lse's extent)",
                lse.len,
            )
        })?;
        let delta = caller_workspace("delta_workspace", self.delta, delta_bytes)?;
        // The fused dQ workspace: f32 [B, Hq, Sq, bucket] (batch mode: the plain variant; rows
        // as wide as the kernel's head-dim bucket, so that a step's rows are one run for the
        // bulk add).
        let wd = bucket as usize;
        let dq_accum_len = if fused {
            [nb, hq, max_sq, wd]
                .iter()
                .try_fold(1usize, |n, &x| n.checked_mul(x))
        } else {
            Some(0)
        };
        let dq_accum_bytes = dq_accum_len.and_then(|n| n.checked_mul(4)).ok_or_else(|| {
            Error::unsupported("a dQ workspace of more than usize::MAX bytes".to_string())
        })?;
        // (ignored by a plan that is not fused)
        let given = self.dq_accum.filter(|_| dq_accum_bytes > 0);
        let dq_accum = caller_workspace("dq_workspace", given, dq_accum_bytes)?;
        let st3 = |t: &TensorRef| [t.strides[0], t.strides[1], t.strides[2]];
        let params = BwdParams {
            fwd: fp,
            dout: self.dout.ptr,
            do_strides: st3(&self.dout),
            dq: self.dq.ptr,
            dq_strides: st3(&self.dq),
            dk: self.dk.ptr,
            dk_strides: st3(&self.dk),
            dv: self.dv.ptr,
            dv_strides: st3(&self.dv),
            dbias: dbias_ptr,
            dbias_strides,
            bwd_flags,
            slices: bwd_tile(family, dtype, bucket as usize, BwdKernel::Dq, variant).slices as u32,
            delta,
            dq_accum,
            dq_accum_strides: [(hq * max_sq * wd) as i64, wd as i64, (max_sq * wd) as i64],
        };
        let empty = nb == 0 || hq == 0;
        let launch = |kernel: BwdKernel, rows: usize, heads: usize| -> Result<Option<BwdLaunch>> {
            if empty || rows == 0 {
                return Ok(None);
            }
            let t = bwd_tile(family, dtype, bucket as usize, kernel, variant);
            let x = rows.div_ceil(t.block_rows) * t.slices;
            if x > i32::MAX as usize || heads > GRID_LIMIT || nb > GRID_LIMIT {
                return Err(Error::unsupported(format!(
                    "a backward grid of {x} x {heads} x {nb} (grid limit)"
                )));
            }
            let id = match kernel {
                BwdKernel::Fused => KernelId::BwdFused {
                    dtype,
                    head_dim: bucket,
                },
                BwdKernel::Dq => KernelId::BwdDq {
                    dtype,
                    head_dim: bucket,
                    variant,
                },
                BwdKernel::Dkdv => KernelId::BwdDkdv {
                    dtype,
                    head_dim: bucket,
                    variant,
                },
            };
            Ok(Some(BwdLaunch {
                kernel: id,
                grid: [x as u32, heads as u32, nb as u32],
                shared_bytes: bwd_smem_bytes(family, dtype, bucket as usize, kernel, variant)
                    as u32,
            }))
        };
        let pre = (!empty && max_sq > 0).then(|| BwdLaunch {
            kernel: KernelId::BwdPre { dtype },
            grid: [
                max_sq.div_ceil(pre_rows(family, dtype)) as u32,
                hq as u32,
                nb as u32,
            ],
            shared_bytes: pre_smem_bytes(family, dtype) as u32,
        });
        let post = (fused && !empty && max_sq > 0).then(|| BwdLaunch {
            kernel: KernelId::BwdPost { dtype },
            grid: [max_sq.div_ceil(POST_ROWS) as u32, hq as u32, nb as u32],
            shared_bytes: 0,
        });
        Ok(BwdPlan {
            params,
            zeros,
            pre,
            dq: if fused {
                None
            } else {
                launch(BwdKernel::Dq, max_sq, hq)?
            },
            dkdv: if fused {
                launch(BwdKernel::Fused, max_sk, hk)?
            } else {
                launch(BwdKernel::Dkdv, max_sk, hk)?
            },
            post,
            delta_bytes,
            dq_accum_bytes,
        })
    }

    /// Plans for the stream's code object and launches (allocating `delta` unless the call
    /// brought a workspace; the free waits for the kernels).
    ///
    /// # Safety
    /// As [`Forward::launch`]: every address is device memory of the stream's device valid for
    /// its `len`; the gradients (and `dbias`, `delta`) overlap neither the inputs nor each other.
    pub unsafe fn launch(&self, stream: &Stream) -> Result<()> {
        let plan = self.plan(stream.device().tile_family()?)?;
        let mut params = plan.params;
        let _delta = if params.delta == 0 && (plan.pre.is_some()) {
            let buf = stream.device().alloc::<f32>(plan.delta_bytes / 4)?;
            params.delta = buf.ptr();
            Some(buf)
        } else {
            None
        };
        let _dq_accum = if params.dq_accum == 0 && plan.dq_accum_bytes > 0 {
            let buf = stream.device().alloc::<f32>(plan.dq_accum_bytes / 4)?;
            params.dq_accum = buf.ptr();
            Some(buf)
        } else {
            None
        };
        let dev = stream.device();
        for (l, zp) in &plan.zeros {
            // SAFETY: the plan checked the tensor's extent for its shape and strides.
            unsafe {
                dev.launch(l.kernel, l.grid, BWD_THREADS, 0, stream, &KernArgs::new(zp))?;
            }
        }
        let args = KernArgs::new(&params);
        for l in [plan.pre, plan.dq, plan.dkdv, plan.post]
            .into_iter()
            .flatten()
        {
            // SAFETY: the plan checked every extent; `delta` is sized for lse's extent and the
            // dQ workspace for [B, Hq, Sq, bucket]; the caller vouches for the addresses (this
            // function's contract).
            unsafe { dev.launch(l.kernel, l.grid, BWD_THREADS, l.shared_bytes, stream, &args)? };
        }
        Ok(())
    }
}

/// Convenience backward on owned, contiguous BMHK buffers: the gradients of the [`crate::forward`]
/// call with the same inputs and `opts` that produced `out` and `lse`, for the upstream gradient
/// `dout` (`out`'s shape). Allocates and returns `(dq, dk, dv)`.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub fn backward<T: HostElement>(
    stream: &Stream,
    q: (&DeviceBuffer<T>, [usize; 4]),
    k: (&DeviceBuffer<T>, [usize; 4]),
    v: (&DeviceBuffer<T>, [usize; 4]),
    out: &DeviceBuffer<T>,
    lse: &DeviceBuffer<f32>,
    dout: &DeviceBuffer<T>,
    opts: &FwdOptions<'_>,
) -> Result<(DeviceBuffer<T>, DeviceBuffer<T>, DeviceBuffer<T>)> {
    let dev = stream.device();
    let [b, sq, hq, _] = q.1;
    let dv_ = v.1[3];
    let tref = tensor_ref::<T>;
    let count = |s: [usize; 4]| crate::ops::element_count("shape", &s);
    let (dq, dk, dv) = (
        dev.alloc::<T>(count(q.1)?.max(1))?,
        dev.alloc::<T>(count(k.1)?.max(1))?,
        dev.alloc::<T>(count(v.1)?.max(1))?,
    );
    let call = Forward::new(
        tref(q.0, q.1),
        tref(k.0, k.1),
        tref(v.0, v.1),
        tref(out, [b, sq, hq, dv_]),
    )
    .lse(LseRef {
        len: lse.len(),
        ..LseRef::contiguous(lse.ptr(), [b, hq, sq])
    })
    .with_options(opts);
    let bwd = Backward::new(
        call,
        tref(dout, [b, sq, hq, dv_]),
        tref(&dq, q.1),
        tref(&dk, k.1),
        tref(&dv, v.1),
    );
    // SAFETY: every buffer is a live allocation of this crate on this device whose `len` the
    // plan checks against its shape; the gradients are fresh.
    unsafe { bwd.launch(stream)? };
    Ok((dq, dk, dv))
}

/// The address of a caller's workspace `given` as `(ptr, bytes)` (`what` names it in errors):
/// 16-byte aligned and at least `need` bytes; 0 (launch allocates) when none is given.
fn caller_workspace(what: &str, given: Option<(u64, usize)>, need: usize) -> Result<u64> {
    let Some((ptr, bytes)) = given else {
        return Ok(0);
    };
    crate::ops::check_ptr(what, ptr, 16)?;
    if bytes < need {
        return Err(Error::invalid(
            what,
            format!("at least {need} bytes"),
            bytes,
        ));
    }
    Ok(ptr)
}

/// The zero fill of a `[n0, n1, n2, n3]` tensor (none when it is empty).
fn zero_fill(
    what: &str,
    ptr: u64,
    dtype: DType,
    dims: [usize; 4],
    strides: [i64; 4],
) -> Result<Option<(BwdLaunch, ZeroParams)>> {
    if dims.contains(&0) {
        return Ok(None);
    }
    if dims[0] > GRID_LIMIT || dims[1] > GRID_LIMIT || dims.iter().any(|&n| n > u32::MAX as usize) {
        return Err(Error::unsupported(format!(
            "zeroing {what} of shape {dims:?} (grid limit)"
        )));
    }
    let rows = dims[2] as u64 * (dims[3] as u64).div_ceil(BWD_THREADS as u64);
    let grid_x = rows.min(ZERO_BLOCKS) as u32;
    let zp = ZeroParams {
        ptr,
        strides,
        dims: dims.map(|n| n as u32),
        grid_x,
        _pad: 0,
    };
    let kernel = KernelId::Zero {
        bits: 8 * dtype.size() as u32,
    };
    Ok(Some((
        BwdLaunch {
            kernel,
            grid: [grid_x, dims[1] as u32, dims[0] as u32],
            shared_bytes: 0,
        },
        zp,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{I32Ref, Mask, Varlen};
    use crate::{Align, Paged};

    const B: usize = 2;
    const SQ: usize = 100;
    const SK: usize = 300;
    const HQ: usize = 8;
    const HK: usize = 2;
    const D: usize = 64;

    fn t(ptr: u64, dtype: DType, shape: [usize; 4]) -> TensorRef {
        TensorRef::contiguous(ptr, dtype, shape)
    }

    fn fwd(dtype: DType) -> Forward {
        Forward::new(
            t(0x10_0000, dtype, [B, SQ, HQ, D]),
            t(0x20_0000, dtype, [B, SK, HK, D]),
            t(0x30_0000, dtype, [B, SK, HK, D]),
            t(0x40_0000, dtype, [B, SQ, HQ, D]),
        )
        .lse(LseRef::contiguous(0x50_0000, [B, HQ, SQ]))
    }

    fn call(dtype: DType) -> Backward {
        Backward::new(
            fwd(dtype),
            t(0x60_0000, dtype, [B, SQ, HQ, D]),
            t(0x70_0000, dtype, [B, SQ, HQ, D]),
            t(0x80_0000, dtype, [B, SK, HK, D]),
            t(0x90_0000, dtype, [B, SK, HK, D]),
        )
    }

    fn bias(ptr: u64, dtype: DType, strides: [i64; 4]) -> BiasRef {
        BiasRef {
            ptr,
            len: B * HQ * SQ * SK,
            dtype,
            shape: [B, HQ, SQ, SK],
            strides,
        }
    }

    const FULL: [i64; 4] = [(HQ * SQ * SK) as i64, (SQ * SK) as i64, SK as i64, 1];

    fn invalid_what(b: &Backward) -> String {
        match b.plan(Family::Sm90) {
            Err(Error::InvalidArgument { what, .. }) => what,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn plan_grids_follow_the_tiles() {
        for dtype in DType::ALL {
            let p = call(dtype).deterministic(true).plan(Family::Sm90).unwrap();
            assert_eq!((p.post, p.dq_accum_bytes, p.params.dq_accum), (None, 0, 0));
            let tq = bwd_tile(Family::Sm90, dtype, 64, BwdKernel::Dq, BwdVariant::Plain);
            let tk = bwd_tile(Family::Sm90, dtype, 64, BwdKernel::Dkdv, BwdVariant::Plain);
            let dq = p.dq.unwrap();
            assert_eq!(
                dq.grid,
                [SQ.div_ceil(tq.block_rows) as u32, HQ as u32, B as u32]
            );
            let dkdv = p.dkdv.unwrap();
            assert_eq!(
                dkdv.grid,
                [SK.div_ceil(tk.block_rows) as u32, HK as u32, B as u32]
            );
            assert_eq!(
                dkdv.kernel,
                KernelId::BwdDkdv {
                    dtype,
                    head_dim: 64,
                    variant: BwdVariant::Plain,
                }
            );
            assert_eq!(
                p.pre.unwrap().grid[0],
                SQ.div_ceil(pre_rows(Family::Sm90, dtype)) as u32
            );
            assert_eq!(
                p.pre.unwrap().shared_bytes as usize,
                pre_smem_bytes(Family::Sm90, dtype)
            );
            assert!(p.zeros.is_empty());
            assert_eq!(p.delta_bytes, B * HQ * SQ * 4);
            assert_eq!(p.params.fwd.flags & FLAG_VEC16, FLAG_VEC16);
            assert_eq!(p.params.slices, 1);
        }
        // D = 256: two head-dim slices per row block.
        let wide = |d: usize| {
            let dt = DType::Bf16;
            Backward::new(
                Forward::new(
                    t(0x10_0000, dt, [1, 40, 2, d]),
                    t(0x20_0000, dt, [1, 70, 1, d]),
                    t(0x30_0000, dt, [1, 70, 1, d]),
                    t(0x40_0000, dt, [1, 40, 2, d]),
                )
                .lse(LseRef::contiguous(0x50_0000, [1, 2, 40])),
                t(0x60_0000, dt, [1, 40, 2, d]),
                t(0x70_0000, dt, [1, 40, 2, d]),
                t(0x80_0000, dt, [1, 70, 1, d]),
                t(0x90_0000, dt, [1, 70, 1, d]),
            )
        };
        let p = wide(256).deterministic(true).plan(Family::Sm90).unwrap();
        assert_eq!(p.params.slices, 2);
        assert_eq!(p.dq.unwrap().grid[0], 2);
        // AMD's 64 KiB do not hold the D = 256 tiles: a typed refusal.
        assert!(matches!(
            wide(256).plan(Family::Cdna),
            Err(Error::Unsupported { .. })
        ));
        assert!(wide(128).plan(Family::Cdna).is_ok());
    }

    #[test]
    fn plain_kernels_unless_a_feature_of_the_pieces_is_asked_for() {
        let variant = |b: Backward| match b
            .deterministic(true)
            .plan(Family::Sm90)
            .unwrap()
            .dq
            .unwrap()
            .kernel
        {
            KernelId::BwdDq { variant, .. } => variant,
            other => panic!("{other:?}"),
        };
        let dt = DType::Bf16;
        assert_eq!(variant(call(dt)), BwdVariant::Plain);
        // Masks stay run-time in the plain kernels.
        let mut c = call(dt);
        c.fwd = c.fwd.mask(crate::Mask::Causal(crate::Align::BottomRight));
        assert_eq!(variant(c), BwdVariant::Plain);
        let mut c = call(dt);
        c.fwd = c.fwd.softcap(30.0);
        assert_eq!(variant(c), BwdVariant::Pieces);
        let mut c = call(dt);
        c.fwd = c.fwd.bias(bias(0xA0_0000, dt, FULL));
        assert_eq!(variant(c), BwdVariant::Pieces);
        let mut c = call(dt);
        c.fwd = c.fwd.bias(bias(0xA0_0000, dt, FULL));
        assert_eq!(
            variant(c.dbias(bias(0x1000_0000, dt, FULL))),
            BwdVariant::Pieces
        );
    }

    /// `deterministic = false` (the default) takes the fused kernel where it is built: the plain
    /// variant on NVIDIA's 16-bit atom up to D = 128; everything else plans as deterministic.
    #[test]
    fn the_default_backward_is_fused_where_built() {
        for family in [Family::Sm80, Family::Sm90, Family::Cdna, Family::Rdna3] {
            for dtype in DType::ALL {
                let p = call(dtype).plan(family).unwrap();
                let det = call(dtype).deterministic(true).plan(family).unwrap();
                let nv16 = matches!(family, Family::Sm80 | Family::Sm90) && dtype != DType::F32;
                assert_eq!(p.dq.is_none(), nv16, "{family:?} {dtype:?}");
                if !nv16 {
                    assert_eq!(p, det);
                    continue;
                }
                let t = bwd_tile(family, dtype, 64, BwdKernel::Fused, BwdVariant::Plain);
                let fused = p.dkdv.unwrap();
                assert_eq!(
                    fused,
                    BwdLaunch {
                        kernel: KernelId::BwdFused {
                            dtype,
                            head_dim: 64
                        },
                        grid: [SK.div_ceil(t.block_rows) as u32, HK as u32, B as u32],
                        shared_bytes: bwd_smem_bytes(
                            family,
                            dtype,
                            64,
                            BwdKernel::Fused,
                            BwdVariant::Plain
                        ) as u32,
                    }
                );
                assert_eq!(
                    p.post.unwrap(),
                    BwdLaunch {
                        kernel: KernelId::BwdPost { dtype },
                        grid: [SQ.div_ceil(POST_ROWS) as u32, HQ as u32, B as u32],
                        shared_bytes: 0,
                    }
                );
                assert_eq!(p.dq_accum_bytes, B * HQ * SQ * D * 4);
                let w = p.params.dq_accum_strides;
                assert_eq!(w, [(HQ * SQ * D) as i64, D as i64, (SQ * D) as i64]);
                assert_eq!((p.pre, p.delta_bytes), (det.pre, det.delta_bytes));
            }
        }
        let dt = DType::Bf16;
        // A feature of the pieces' or a head dim of 256: the two kernels.
        let mut c = call(dt);
        c.fwd = c.fwd.softcap(30.0);
        assert!(c.plan(Family::Sm90).unwrap().dq.is_some());
        // A caller's dQ workspace: aligned and large enough, then used as is.
        let bytes = B * HQ * SQ * D * 4;
        let ws = |ptr: u64, n: usize| call(dt).dq_workspace(ptr, n).plan(Family::Sm90);
        assert_eq!(ws(0x4000_0000, bytes).unwrap().params.dq_accum, 0x4000_0000);
        assert!(matches!(
            ws(0x4000_0000, bytes - 4),
            Err(Error::InvalidArgument { what, .. }) if what == "dq_workspace"
        ));
        assert!(matches!(
            ws(0x4000_0004, bytes),
            Err(Error::InvalidArgument { what, .. }) if what == "dq_workspace"
        ));
        // Ignored by a deterministic plan.
        let p = call(dt)
            .dq_workspace(0x4000_0004, 0)
            .deterministic(true)
            .plan(Family::Sm90)
            .unwrap();
        assert_eq!(p.params.dq_accum, 0);
    }

    #[test]
    fn dbias_and_zero_tensors_plan_their_fills() {
        let dt = DType::F16;
        let b = bias(0xA0_0000, dt, [0, (SQ * SK) as i64, SK as i64, 1]);
        let mut c = call(dt);
        c.fwd = c.fwd.bias(b);
        let p = c
            .dbias(bias(0x1000_0000, dt, FULL))
            .zero_tensors(true)
            .plan(Family::Sm80)
            .unwrap();
        assert_eq!(p.params.bwd_flags, BWD_DBIAS);
        assert_eq!(p.zeros.len(), 4);
        assert_eq!(p.zeros[0].0.kernel, KernelId::Zero { bits: 16 });
        assert_eq!(
            p.zeros[0].1.dims,
            [B as u32, HQ as u32, SQ as u32, SK as u32]
        );
        // dq as [B, H, S, D]: the heads on the grid's y.
        assert_eq!(
            p.zeros[1].1.dims,
            [B as u32, HQ as u32, SQ as u32, D as u32]
        );
        assert_eq!(p.zeros[1].0.grid[1], HQ as u32);
        // An f32 bias's gradient is f32.
        let mut c = call(dt);
        c.fwd = c.fwd.bias(bias(0xA0_0000, DType::F32, FULL));
        let p = c
            .dbias(bias(0x1000_0000, DType::F32, FULL))
            .plan(Family::Sm80)
            .unwrap();
        assert_eq!(p.params.bwd_flags, BWD_DBIAS | BWD_DBIAS_F32);
        assert_eq!(p.zeros[0].0.kernel, KernelId::Zero { bits: 32 });
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        let dt = DType::Bf16;
        let no_lse = Backward::new(
            Forward::new(
                t(0x10_0000, dt, [B, SQ, HQ, D]),
                t(0x20_0000, dt, [B, SK, HK, D]),
                t(0x30_0000, dt, [B, SK, HK, D]),
                t(0x40_0000, dt, [B, SQ, HQ, D]),
            ),
            t(0x60_0000, dt, [B, SQ, HQ, D]),
            t(0x70_0000, dt, [B, SQ, HQ, D]),
            t(0x80_0000, dt, [B, SK, HK, D]),
            t(0x90_0000, dt, [B, SK, HK, D]),
        );
        assert_eq!(invalid_what(&no_lse), "lse");
        // Shapes, dtypes, strides, extents of each gradient.
        let mut c = call(dt);
        c.dq.shape[1] += 1;
        assert_eq!(invalid_what(&c), "dq.shape");
        let mut c = call(dt);
        c.dk.dtype = DType::F16;
        assert_eq!(invalid_what(&c), "dk.dtype");
        let mut c = call(dt);
        c.dv.strides[3] = 2;
        assert_eq!(invalid_what(&c), "dv.strides[3]");
        let mut c = call(dt);
        c.dout.len -= 1;
        assert_eq!(invalid_what(&c), "dout.len");
        let mut c = call(dt);
        c.dq.strides[2] = 0;
        assert_eq!(invalid_what(&c), "dq.strides[2]");
        let mut c = call(dt);
        c.dout.ptr = 0;
        assert_eq!(invalid_what(&c), "dout.ptr");
        // dbias: needs a bias, its dtype and shape, no broadcast, its extent.
        assert_eq!(
            invalid_what(&call(dt).dbias(bias(0x1000_0000, dt, FULL))),
            "dbias"
        );
        let with_bias = |b: Backward| {
            let mut b = b;
            b.fwd = b.fwd.bias(bias(0xA0_0000, dt, FULL));
            b
        };
        assert_eq!(
            invalid_what(&with_bias(call(dt)).dbias(bias(0x1000_0000, DType::F32, FULL))),
            "dbias.dtype"
        );
        let mut db = bias(0x1000_0000, dt, FULL);
        db.shape[3] -= 1;
        assert_eq!(invalid_what(&with_bias(call(dt)).dbias(db)), "dbias.shape");
        let db = bias(0x1000_0000, dt, [0, (SQ * SK) as i64, SK as i64, 1]);
        assert_eq!(
            invalid_what(&with_bias(call(dt)).dbias(db)),
            "dbias.strides[0]"
        );
        let mut db = bias(0x1000_0000, dt, FULL);
        db.len -= 1;
        assert_eq!(invalid_what(&with_bias(call(dt)).dbias(db)), "dbias.len");
        // The delta workspace: aligned and large enough.
        assert_eq!(
            invalid_what(&call(dt).delta_workspace(0x2000_0000, 16)),
            "delta_workspace"
        );
        assert_eq!(
            invalid_what(&call(dt).delta_workspace(0x2000_0004, 1 << 20)),
            "delta_workspace"
        );
        assert!(
            call(dt)
                .delta_workspace(0x2000_0000, 1 << 20)
                .plan(Family::Sm80)
                .is_ok()
        );
        // The forward's own validation runs too (a bad mask window, say).
        let mut c = call(dt);
        c.fwd = c.fwd.softcap(-1.0);
        assert_eq!(invalid_what(&c), "softcap");
        // Partial and paged forwards have no backward here.
        let mut c = call(dt);
        c.fwd = c.fwd.key_range(0, 10);
        assert!(matches!(
            c.plan(Family::Sm80),
            Err(Error::Unsupported { .. })
        ));
        let mut c = call(dt);
        c.fwd = c.fwd.paged(Paged {
            block_table: I32Ref {
                ptr: 0xB0_0000,
                len: B * 4,
            },
            max_pages: 4,
            table_stride: 4,
        });
        assert!(matches!(
            c.plan(Family::Sm80),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn varlen_and_empty_calls_plan() {
        let dt = DType::F16;
        let cu = |ptr| I32Ref { ptr, len: 4 };
        let f = Forward::new(
            t(0x10_0000, dt, [1, 40, 4, 32]),
            t(0x20_0000, dt, [1, 70, 2, 32]),
            t(0x30_0000, dt, [1, 70, 2, 32]),
            t(0x40_0000, dt, [1, 40, 4, 32]),
        )
        .lse(LseRef::contiguous(0x50_0000, [1, 4, 40]))
        .varlen(Varlen {
            cu_seqlens_q: cu(0x60_0000),
            cu_seqlens_k: cu(0x60_0100),
            max_seqlen_q: 20,
            max_seqlen_k: 30,
        })
        .mask(Mask::Causal(Align::BottomRight));
        let b = Backward::new(
            f,
            t(0x70_0000, dt, [1, 40, 4, 32]),
            t(0x80_0000, dt, [1, 40, 4, 32]),
            t(0x90_0000, dt, [1, 70, 2, 32]),
            t(0xA0_0000, dt, [1, 70, 2, 32]),
        );
        let p = b.plan(Family::Rdna3).unwrap();
        // The grid covers the longest sequence, z the sequences.
        assert_eq!(p.dq.unwrap().grid[2], 3);
        assert_eq!(p.pre.unwrap().grid[0], 1);
        // No query rows: dk and dv are still written (zeros), dq and delta launch nothing.
        let e = |s: [usize; 4]| t(0x10_0000, dt, s);
        let empty = Backward::new(
            Forward::new(
                e([2, 0, 4, 32]),
                e([2, 9, 2, 32]),
                e([2, 9, 2, 32]),
                e([2, 0, 4, 32]),
            )
            .lse(LseRef::contiguous(0x50_0000, [2, 4, 0])),
            e([2, 0, 4, 32]),
            t(0x70_0000, dt, [2, 0, 4, 32]),
            t(0x80_0000, dt, [2, 9, 2, 32]),
            t(0x90_0000, dt, [2, 9, 2, 32]),
        );
        let p = empty.plan(Family::Sm80).unwrap();
        assert!(p.dq.is_none() && p.pre.is_none());
        assert!(p.dkdv.is_some());
    }

    #[test]
    fn an_lse_too_long_for_delta_is_a_typed_error() {
        // Found by the `plan` fuzz target: `lse.len · 4` overflowed (fuzz/corpus/plan/bug-3-*).
        let mut b = call(DType::F16);
        if let Some(l) = &mut b.fwd.lse {
            l.len = usize::MAX;
        }
        assert_eq!(invalid_what(&b), "lse.len");
        b.fwd.lse.as_mut().unwrap().len = usize::MAX / 4;
        assert_eq!(
            b.plan(Family::Sm90).unwrap().delta_bytes,
            usize::MAX / 4 * 4
        );
    }
}
