//! A float tensor whose rank is known only at run time.
//!
//! burn's `Tensor<D>` carries its rank in the type; an IR graph's ranks are data. This
//! enum holds ranks 1 to 6 and dispatches to the typed tensor. Binary ops follow numpy
//! broadcasting: operands are first brought to the same rank by prepending 1s, then
//! burn broadcasts size-1 dimensions.

use crate::TrainError;
use burn::tensor::{activation, Device, Tensor, TensorData};

pub type Result<T> = std::result::Result<T, TrainError>;

/// Largest rank an IR value may have inside the lowered graph.
pub const MAX_RANK: usize = 6;

#[derive(Debug, Clone)]
pub enum DynTensor {
    R1(Tensor<1>),
    R2(Tensor<2>),
    R3(Tensor<3>),
    R4(Tensor<4>),
    R5(Tensor<5>),
    R6(Tensor<6>),
}

/// Evaluates `$body` with `$t` bound to the typed tensor (any rank).
macro_rules! with_t {
    ($x:expr, $t:ident => $body:expr) => {
        match $x {
            DynTensor::R1($t) => $body,
            DynTensor::R2($t) => $body,
            DynTensor::R3($t) => $body,
            DynTensor::R4($t) => $body,
            DynTensor::R5($t) => $body,
            DynTensor::R6($t) => $body,
        }
    };
}

/// Maps the typed tensor to another of the same rank.
macro_rules! map_t {
    ($x:expr, $t:ident => $body:expr) => {
        match $x {
            DynTensor::R1($t) => DynTensor::R1($body),
            DynTensor::R2($t) => DynTensor::R2($body),
            DynTensor::R3($t) => DynTensor::R3($body),
            DynTensor::R4($t) => DynTensor::R4($body),
            DynTensor::R5($t) => DynTensor::R5($body),
            DynTensor::R6($t) => DynTensor::R6($body),
        }
    };
}

/// Applies a same-rank binary op to two tensors already aligned to equal rank.
macro_rules! zip_t {
    ($a:expr, $b:expr, $x:ident, $y:ident => $body:expr) => {
        match ($a, $b) {
            (DynTensor::R1($x), DynTensor::R1($y)) => DynTensor::R1($body),
            (DynTensor::R2($x), DynTensor::R2($y)) => DynTensor::R2($body),
            (DynTensor::R3($x), DynTensor::R3($y)) => DynTensor::R3($body),
            (DynTensor::R4($x), DynTensor::R4($y)) => DynTensor::R4($body),
            (DynTensor::R5($x), DynTensor::R5($y)) => DynTensor::R5($body),
            (DynTensor::R6($x), DynTensor::R6($y)) => DynTensor::R6($body),
            _ => unreachable!("operands aligned to the same rank"),
        }
    };
}

fn arr<const D: usize>(shape: &[usize]) -> [usize; D] {
    let mut a = [0usize; D];
    a.copy_from_slice(shape);
    a
}

fn bad(msg: impl Into<String>) -> TrainError {
    TrainError::Lowering(msg.into())
}

/// Normalizes a possibly negative axis for a tensor of `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(bad(format!("axis {axis} out of range for rank {rank}")));
    }
    Ok(a as usize)
}

// `add`/`sub`/`mul`/`div`/`neg` return `Result` (shapes are checked at run time), so
// they cannot be the std operator traits.
#[allow(clippy::should_implement_trait)]
impl DynTensor {
    /// A tensor from row-major f32 data.
    pub fn from_vec(data: Vec<f32>, shape: &[usize], device: &Device) -> Result<DynTensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(bad(format!(
                "{} values do not fill shape {shape:?}",
                data.len()
            )));
        }
        // Rank-0 scalars become rank 1 so every op has a typed tensor.
        let shape: Vec<usize> = if shape.is_empty() {
            vec![1]
        } else {
            shape.to_vec()
        };
        let td = TensorData::new(data, shape.clone());
        Ok(match shape.len() {
            1 => DynTensor::R1(Tensor::from_data(td, device)),
            2 => DynTensor::R2(Tensor::from_data(td, device)),
            3 => DynTensor::R3(Tensor::from_data(td, device)),
            4 => DynTensor::R4(Tensor::from_data(td, device)),
            5 => DynTensor::R5(Tensor::from_data(td, device)),
            6 => DynTensor::R6(Tensor::from_data(td, device)),
            r => return Err(bad(format!("rank {r} exceeds the supported {MAX_RANK}"))),
        })
    }

    /// From an IR tensor (any numeric dtype, converted to f32).
    pub fn from_ir(t: &edgeopt_ir::Tensor, device: &Device) -> Result<DynTensor> {
        DynTensor::from_vec(t.to_f32_vec(), &t.shape, device)
    }

    /// Reads the values back (synchronizes with the device).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let data = with_t!(self, t => t.to_data());
        data.convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| bad(format!("reading tensor data: {e:?}")))
    }

    pub fn to_ir(&self) -> Result<edgeopt_ir::Tensor> {
        edgeopt_ir::Tensor::from_f32(self.dims(), self.to_vec()?).map_err(TrainError::Ir)
    }

    pub fn dims(&self) -> Vec<usize> {
        with_t!(self, t => t.dims().to_vec())
    }

    pub fn rank(&self) -> usize {
        with_t!(self, t => t.dims().len())
    }

    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }

    pub fn device(&self) -> Device {
        with_t!(self, t => t.device())
    }

    fn into_rank<const D: usize>(self, shape: [usize; D]) -> Tensor<D> {
        with_t!(self, t => t.reshape(shape))
    }

    /// Reshape to a concrete shape with the same element count.
    pub fn reshape(self, shape: &[usize]) -> Result<DynTensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(bad(format!(
                "cannot reshape {:?} to {shape:?}",
                self.dims()
            )));
        }
        if shape == self.dims().as_slice() {
            return Ok(self);
        }
        let shape: Vec<usize> = if shape.is_empty() {
            vec![1]
        } else {
            shape.to_vec()
        };
        Ok(match shape.len() {
            1 => DynTensor::R1(self.into_rank(arr::<1>(&shape))),
            2 => DynTensor::R2(self.into_rank(arr::<2>(&shape))),
            3 => DynTensor::R3(self.into_rank(arr::<3>(&shape))),
            4 => DynTensor::R4(self.into_rank(arr::<4>(&shape))),
            5 => DynTensor::R5(self.into_rank(arr::<5>(&shape))),
            6 => DynTensor::R6(self.into_rank(arr::<6>(&shape))),
            r => return Err(bad(format!("rank {r} exceeds the supported {MAX_RANK}"))),
        })
    }

    /// Prepends size-1 dimensions up to `rank`.
    pub fn lift(self, rank: usize) -> Result<DynTensor> {
        let d = self.dims();
        if d.len() >= rank {
            return Ok(self);
        }
        let mut s = vec![1; rank - d.len()];
        s.extend(d);
        self.reshape(&s)
    }

    pub fn r1(self) -> Result<Tensor<1>> {
        match self {
            DynTensor::R1(t) => Ok(t),
            o => Err(bad(format!("expected rank 1, got {:?}", o.dims()))),
        }
    }
    pub fn r2(self) -> Result<Tensor<2>> {
        match self {
            DynTensor::R2(t) => Ok(t),
            o => Err(bad(format!("expected rank 2, got {:?}", o.dims()))),
        }
    }
    pub fn r3(self) -> Result<Tensor<3>> {
        match self {
            DynTensor::R3(t) => Ok(t),
            o => Err(bad(format!("expected rank 3, got {:?}", o.dims()))),
        }
    }
    pub fn r4(self) -> Result<Tensor<4>> {
        match self {
            DynTensor::R4(t) => Ok(t),
            o => Err(bad(format!("expected rank 4, got {:?}", o.dims()))),
        }
    }

    pub fn permute(self, perm: &[usize]) -> Result<DynTensor> {
        let r = self.rank();
        let mut seen = vec![false; r];
        if perm.len() != r
            || perm
                .iter()
                .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
        {
            return Err(bad(format!("bad permutation {perm:?} for rank {r}")));
        }
        Ok(match self {
            DynTensor::R1(t) => DynTensor::R1(t),
            DynTensor::R2(t) => DynTensor::R2(t.permute(arr::<2>(perm))),
            DynTensor::R3(t) => DynTensor::R3(t.permute(arr::<3>(perm))),
            DynTensor::R4(t) => DynTensor::R4(t.permute(arr::<4>(perm))),
            DynTensor::R5(t) => DynTensor::R5(t.permute(arr::<5>(perm))),
            DynTensor::R6(t) => DynTensor::R6(t.permute(arr::<6>(perm))),
        })
    }

    /// Checks numpy broadcast compatibility and aligns ranks.
    fn align(self, other: DynTensor) -> Result<(DynTensor, DynTensor)> {
        let r = self.rank().max(other.rank());
        let a = self.lift(r)?;
        let b = other.lift(r)?;
        for (x, y) in a.dims().iter().zip(b.dims()) {
            if *x != y && *x != 1 && y != 1 {
                return Err(bad(format!(
                    "shapes {:?} and {:?} do not broadcast",
                    a.dims(),
                    b.dims()
                )));
            }
        }
        Ok((a, b))
    }

    pub fn add(self, o: DynTensor) -> Result<DynTensor> {
        let (a, b) = self.align(o)?;
        Ok(zip_t!(a, b, x, y => x + y))
    }
    pub fn sub(self, o: DynTensor) -> Result<DynTensor> {
        let (a, b) = self.align(o)?;
        Ok(zip_t!(a, b, x, y => x - y))
    }
    pub fn mul(self, o: DynTensor) -> Result<DynTensor> {
        let (a, b) = self.align(o)?;
        Ok(zip_t!(a, b, x, y => x * y))
    }
    pub fn div(self, o: DynTensor) -> Result<DynTensor> {
        let (a, b) = self.align(o)?;
        Ok(zip_t!(a, b, x, y => x / y))
    }
    pub fn max_pair(self, o: DynTensor) -> Result<DynTensor> {
        let (a, b) = self.align(o)?;
        let d = broadcast_dims(&a.dims(), &b.dims());
        let (a, b) = (a.expand(&d)?, b.expand(&d)?);
        Ok(zip_t!(a, b, x, y => x.max_pair(y)))
    }
    pub fn min_pair(self, o: DynTensor) -> Result<DynTensor> {
        let (a, b) = self.align(o)?;
        let d = broadcast_dims(&a.dims(), &b.dims());
        let (a, b) = (a.expand(&d)?, b.expand(&d)?);
        Ok(zip_t!(a, b, x, y => x.min_pair(y)))
    }

    /// Broadcasts to `shape` (same rank).
    pub fn expand(self, shape: &[usize]) -> Result<DynTensor> {
        if self.dims() == shape {
            return Ok(self);
        }
        Ok(match self {
            DynTensor::R1(t) => DynTensor::R1(t.expand(arr::<1>(shape))),
            DynTensor::R2(t) => DynTensor::R2(t.expand(arr::<2>(shape))),
            DynTensor::R3(t) => DynTensor::R3(t.expand(arr::<3>(shape))),
            DynTensor::R4(t) => DynTensor::R4(t.expand(arr::<4>(shape))),
            DynTensor::R5(t) => DynTensor::R5(t.expand(arr::<5>(shape))),
            DynTensor::R6(t) => DynTensor::R6(t.expand(arr::<6>(shape))),
        })
    }

    pub fn mul_scalar(self, s: f32) -> DynTensor {
        map_t!(self, t => t.mul_scalar(s))
    }
    pub fn add_scalar(self, s: f32) -> DynTensor {
        map_t!(self, t => t.add_scalar(s))
    }
    pub fn relu(self) -> DynTensor {
        map_t!(self, t => activation::relu(t))
    }
    pub fn sigmoid(self) -> DynTensor {
        map_t!(self, t => activation::sigmoid(t))
    }
    pub fn tanh(self) -> DynTensor {
        map_t!(self, t => activation::tanh(t))
    }
    /// x * relu6(x + 3) / 6 (ONNX HardSwish).
    pub fn hard_swish(self) -> DynTensor {
        map_t!(self, t => t.clone() * t.add_scalar(3.0).clamp(0.0, 6.0).div_scalar(6.0))
    }
    /// max(0, min(1, alpha x + beta)).
    pub fn hard_sigmoid(self, alpha: f32, beta: f32) -> DynTensor {
        map_t!(self, t => t.mul_scalar(alpha).add_scalar(beta).clamp(0.0, 1.0))
    }
    pub fn leaky_relu(self, alpha: f32) -> DynTensor {
        map_t!(self, t => activation::leaky_relu(t, alpha as f64))
    }
    pub fn exp(self) -> DynTensor {
        map_t!(self, t => t.exp())
    }
    pub fn log(self) -> DynTensor {
        map_t!(self, t => t.log())
    }
    pub fn neg(self) -> DynTensor {
        map_t!(self, t => t.neg())
    }
    pub fn abs(self) -> DynTensor {
        map_t!(self, t => t.abs())
    }
    pub fn sqrt(self) -> DynTensor {
        map_t!(self, t => t.sqrt())
    }
    pub fn recip(self) -> DynTensor {
        map_t!(self, t => t.recip())
    }
    pub fn clamp(self, min: Option<f32>, max: Option<f32>) -> DynTensor {
        match (min, max) {
            (Some(a), Some(b)) => map_t!(self, t => t.clamp(a, b)),
            (Some(a), None) => map_t!(self, t => t.clamp_min(a)),
            (None, Some(b)) => map_t!(self, t => t.clamp_max(b)),
            (None, None) => self,
        }
    }
    pub fn round(self) -> DynTensor {
        map_t!(self, t => t.round())
    }
    pub fn detach(self) -> DynTensor {
        map_t!(self, t => t.detach())
    }
    pub fn require_grad(self) -> DynTensor {
        map_t!(self, t => t.require_grad())
    }
    /// Moves the tensor onto the autodiff decorator of its device (a leaf).
    pub fn autodiff(self) -> DynTensor {
        map_t!(self, t => t.autodiff())
    }
    /// Drops the autodiff decoration (no graph is kept).
    pub fn inner(self) -> DynTensor {
        map_t!(self, t => t.inner())
    }
    pub fn softmax(self, axis: usize) -> DynTensor {
        map_t!(self, t => activation::softmax(t, axis))
    }
    pub fn log_softmax(self, axis: usize) -> DynTensor {
        map_t!(self, t => activation::log_softmax(t, axis))
    }
    pub fn mean_dim(self, axis: usize) -> DynTensor {
        map_t!(self, t => t.mean_dim(axis))
    }
    pub fn sum_dim(self, axis: usize) -> DynTensor {
        map_t!(self, t => t.sum_dim(axis))
    }
    pub fn max_dim(self, axis: usize) -> DynTensor {
        map_t!(self, t => t.max_dim(axis))
    }
    pub fn min_dim(self, axis: usize) -> DynTensor {
        map_t!(self, t => t.min_dim(axis))
    }
    /// Sum of all elements as a rank-1 tensor of one element.
    pub fn sum(self) -> Tensor<1> {
        with_t!(self, t => t.sum())
    }
    /// Elements `start..end` along `axis`.
    pub fn narrow(self, axis: usize, start: usize, len: usize) -> DynTensor {
        map_t!(self, t => t.narrow(axis, start, len))
    }

    /// Concatenation along `axis`; all parts must have the same rank.
    pub fn cat(parts: Vec<DynTensor>, axis: usize) -> Result<DynTensor> {
        let r = parts
            .first()
            .map(|p| p.rank())
            .ok_or_else(|| bad("concat of nothing"))?;
        if parts.iter().any(|p| p.rank() != r) || axis >= r {
            return Err(bad("concat parts differ in rank"));
        }
        let d0 = parts[0].dims();
        for p in &parts {
            let d = p.dims();
            if (0..r).any(|i| i != axis && d[i] != d0[i]) {
                return Err(bad(format!("concat of {d0:?} and {d:?} along axis {axis}")));
            }
        }
        macro_rules! cat_r {
            ($v:ident, $n:literal) => {{
                let ts: Vec<Tensor<$n>> = parts
                    .into_iter()
                    .map(|p| match p {
                        DynTensor::$v(t) => t,
                        _ => unreachable!(),
                    })
                    .collect();
                DynTensor::$v(Tensor::cat(ts, axis))
            }};
        }
        Ok(match r {
            1 => cat_r!(R1, 1),
            2 => cat_r!(R2, 2),
            3 => cat_r!(R3, 3),
            4 => cat_r!(R4, 4),
            5 => cat_r!(R5, 5),
            _ => cat_r!(R6, 6),
        })
    }

    /// Pads each axis by `(begin, end)` with a constant, or by reflection / edge
    /// replication.
    pub fn pad(self, pads: &[(usize, usize)], mode: burn::tensor::ops::PadMode) -> DynTensor {
        let pads = pads.to_vec();
        map_t!(self, t => t.pad(pads.clone(), mode))
    }
}

/// numpy broadcast of two same-rank shapes.
pub fn broadcast_dims(a: &[usize], b: &[usize]) -> Vec<usize> {
    a.iter().zip(b).map(|(&x, &y)| x.max(y)).collect()
}

impl DynTensor {
    /// Gradient of this (leaf) tensor in `grads`, on the plain device.
    pub fn grad(&self, grads: &burn::tensor::Gradients) -> Option<DynTensor> {
        match self {
            DynTensor::R1(t) => t.grad(grads).map(DynTensor::R1),
            DynTensor::R2(t) => t.grad(grads).map(DynTensor::R2),
            DynTensor::R3(t) => t.grad(grads).map(DynTensor::R3),
            DynTensor::R4(t) => t.grad(grads).map(DynTensor::R4),
            DynTensor::R5(t) => t.grad(grads).map(DynTensor::R5),
            DynTensor::R6(t) => t.grad(grads).map(DynTensor::R6),
        }
    }
}
