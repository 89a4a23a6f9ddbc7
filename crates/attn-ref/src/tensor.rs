//! Host tensors with explicit strides.

use crate::{Dtype, Error};

/// A rank-4 host tensor of values already rounded to [`Tensor::dtype`], stored as `f32`, with explicit
/// element strides (a stride of 0 broadcasts along that dimension).
///
/// `q`, `k`, `v`, `dout` use the logical shape `[B, S, H, D]` (BMHK; in varlen mode `B = 1` and
/// `S = total`), the bias uses `[B, Hq, Sq, Sk]` (varlen: `[nseq, Hq, max_sq, max_sk]`).
///
/// ```
/// use attn_ref::{Dtype, Tensor};
/// let t = Tensor::from_fn(Dtype::F16, [1, 2, 1, 3], |[_, s, _, d]| (s * 3 + d) as f32 + 0.1);
/// assert_eq!(t.strides, [6, 3, 3, 1]);
/// assert_eq!(t.get([0, 1, 0, 2]), Dtype::F16.round(5.1));
/// ```
#[derive(Clone, PartialEq)]
pub struct Tensor {
    /// Element type the values are rounded to.
    pub dtype: Dtype,
    /// Logical shape.
    pub shape: [usize; 4],
    /// Element strides for each dimension (0 = broadcast).
    pub strides: [usize; 4],
    /// Storage; element `idx` lives at `data[sum(idx[d] * strides[d])]`.
    pub data: Vec<f32>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor {{ dtype: {}, shape: {:?}, strides: {:?}, len: {} }}",
            self.dtype,
            self.shape,
            self.strides,
            self.data.len()
        )
    }
}

/// Row-major (contiguous) strides of `shape`.
///
/// ```
/// assert_eq!(attn_ref::contiguous_strides([2, 3, 4, 5]), [60, 20, 5, 1]);
/// ```
pub fn contiguous_strides(shape: [usize; 4]) -> [usize; 4] {
    [
        shape[1] * shape[2] * shape[3],
        shape[2] * shape[3],
        shape[3],
        1,
    ]
}

impl Tensor {
    /// A contiguous tensor; `data` is rounded to `dtype`.
    pub fn contiguous(dtype: Dtype, shape: [usize; 4], mut data: Vec<f32>) -> Result<Self, Error> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(Error::invalid(
                "data",
                format!("{n} elements for shape {shape:?}"),
                data.len(),
            ));
        }
        data.iter_mut().for_each(|x| *x = dtype.round(*x));
        Ok(Tensor {
            dtype,
            shape,
            strides: contiguous_strides(shape),
            data,
        })
    }

    /// A tensor with explicit strides over `data` (rounded to `dtype`); checks that every element is in bounds.
    pub fn with_strides(
        dtype: Dtype,
        shape: [usize; 4],
        strides: [usize; 4],
        mut data: Vec<f32>,
    ) -> Result<Self, Error> {
        if shape.contains(&0) {
            return Ok(Tensor {
                dtype,
                shape,
                strides,
                data: data.into_iter().map(|x| dtype.round(x)).collect(),
            });
        }
        let max: usize = (0..4).map(|d| (shape[d] - 1) * strides[d]).sum();
        if max >= data.len() {
            return Err(Error::invalid(
                "strides",
                format!("max offset < data.len() = {}", data.len()),
                format!("max offset {max} (shape {shape:?}, strides {strides:?})"),
            ));
        }
        data.iter_mut().for_each(|x| *x = dtype.round(*x));
        Ok(Tensor {
            dtype,
            shape,
            strides,
            data,
        })
    }

    /// A contiguous tensor of zeros.
    pub fn zeros(dtype: Dtype, shape: [usize; 4]) -> Self {
        Tensor {
            dtype,
            shape,
            strides: contiguous_strides(shape),
            data: vec![0.0; shape.iter().product()],
        }
    }

    /// A contiguous tensor whose element at index `[a, b, c, d]` is `f([a, b, c, d])` rounded to `dtype`.
    pub fn from_fn(dtype: Dtype, shape: [usize; 4], mut f: impl FnMut([usize; 4]) -> f32) -> Self {
        let mut data = Vec::with_capacity(shape.iter().product());
        for a in 0..shape[0] {
            for b in 0..shape[1] {
                for c in 0..shape[2] {
                    for d in 0..shape[3] {
                        data.push(dtype.round(f([a, b, c, d])));
                    }
                }
            }
        }
        Tensor {
            dtype,
            shape,
            strides: contiguous_strides(shape),
            data,
        }
    }

    /// Storage offset of `idx`.
    #[inline]
    pub fn offset(&self, idx: [usize; 4]) -> usize {
        idx[0] * self.strides[0]
            + idx[1] * self.strides[1]
            + idx[2] * self.strides[2]
            + idx[3] * self.strides[3]
    }

    /// Element at `idx` (panics if out of bounds).
    #[inline]
    pub fn get(&self, idx: [usize; 4]) -> f32 {
        self.data[self.offset(idx)]
    }

    /// Mutable element at `idx` (with a zero stride, this aliases every broadcast element).
    #[inline]
    pub fn get_mut(&mut self, idx: [usize; 4]) -> &mut f32 {
        let o = self.offset(idx);
        &mut self.data[o]
    }

    /// Copies the elements into a row-major vector of the logical shape.
    pub fn to_contiguous(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.shape.iter().product());
        for a in 0..self.shape[0] {
            for b in 0..self.shape[1] {
                for c in 0..self.shape[2] {
                    for d in 0..self.shape[3] {
                        v.push(self.get([a, b, c, d]));
                    }
                }
            }
        }
        v
    }

    /// Number of logical elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Checks that the tensor has `shape`, and that every element is in bounds.
    pub fn check(&self, what: &'static str, shape: [usize; 4]) -> Result<(), Error> {
        if self.shape != shape {
            return Err(Error::invalid(
                what,
                format!("shape {shape:?}"),
                format!("{:?}", self.shape),
            ));
        }
        if shape.contains(&0) {
            return Ok(());
        }
        let max: usize = (0..4).map(|d| (shape[d] - 1) * self.strides[d]).sum();
        if max >= self.data.len() {
            return Err(Error::invalid(
                what,
                "all elements in bounds",
                format!("max offset {max} >= {}", self.data.len()),
            ));
        }
        Ok(())
    }
}
