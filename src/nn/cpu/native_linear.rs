//! Frozen linear layers on the CPU's native bf16 kernels ([`super::bf16_matmul`]): the weight is
//! packed once in bf16 for the forward x·Wᵀ + b and, on the first backward, once more for the
//! input gradient g·W; activations and gradients stay f32 and are rounded to bf16 only where they
//! enter a product, as under PyTorch's CPU autocast.
use super::bf16_matmul::{self, Kernel, PackedMatrix, PackedRows};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use std::sync::{Arc, OnceLock};

/// A frozen (out × in) weight and bias, packed for a native bf16 kernel.
#[derive(Debug)]
pub struct NativeLinear {
    kernel: Kernel,
    /// The weight lives here only, as B = Wᵀ: the layer keeps no other copy ([`Self::weight`]
    /// unpacks it where one is needed).
    forward: PackedMatrix,
    bias: Option<Vec<f32>>,
    backward: OnceLock<PackedMatrix>,
}

/// The native kernel frozen weights of `dtype` on `device` run on: bf16 weights on a CPU that
/// has one. The layers, the activations' dtype and the run records all ask here.
pub fn kernel_for(dtype: DType, device: &Device) -> Option<Kernel> {
    bf16_matmul::native_kernel().filter(|_| dtype == DType::BF16 && device.is_cpu())
}

impl NativeLinear {
    /// Packs a bf16 weight on the CPU when this CPU has a native bf16 kernel; `None` otherwise
    /// (the layer keeps candle's matmul).
    pub fn for_weight(weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Arc<Self>>> {
        let Some(kernel) = kernel_for(weight.dtype(), weight.device()) else {
            return Ok(None);
        };
        let (out_dim, in_dim) = weight.dims2()?;
        if in_dim == 0 {
            // No rows to recover from an empty input; candle's matmul handles that shape.
            return Ok(None);
        }
        let forward = PackedMatrix::from_weight_transposed(&bits(weight)?, out_dim, in_dim);
        let bias = match bias {
            Some(b) => Some(b.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            None => None,
        };
        Ok(Some(Arc::new(Self {
            kernel,
            forward,
            bias,
            backward: OnceLock::new(),
        })))
    }

    /// x·Wᵀ + b for f32 `x` of shape (..., in), not tracked (the caller attaches the backward).
    pub fn forward(self: &Arc<Self>, x: &Tensor) -> Result<Tensor> {
        self.apply(x, Direction::Forward)
    }

    /// x·Wᵀ + b for rows already in the kernel's layout (inference: one conversion of a layer's
    /// input feeds query, key and value).
    pub fn forward_rows(&self, x: &PackedRows) -> Vec<f32> {
        bf16_matmul::matmul_rows(self.kernel, x, &self.forward, self.bias.as_deref())
    }

    /// GELU(x·Wᵀ + b) in bf16, laid out as the next layer's input (inference: the FFN's
    /// intermediate activation never exists in f32).
    pub fn forward_rows_gelu(&self, x: &PackedRows) -> PackedRows {
        bf16_matmul::matmul_rows_gelu(self.kernel, x, &self.forward, self.bias.as_deref())
    }

    /// g·W for an f32 output gradient `g` of shape (..., out). W's own packing is made from
    /// the forward one on the first backward (the same bits: packing only moves them).
    pub fn input_grad(self: &Arc<Self>, grad: &Tensor) -> Result<Tensor> {
        if self.backward.get().is_none() {
            let (in_dim, out_dim) = self.dims();
            let packed = PackedMatrix::pack(out_dim, in_dim, |o, i| self.forward.bits(i, o));
            // Another thread may have packed it meanwhile; either copy is the same.
            let _ = self.backward.set(packed);
        }
        self.apply(grad, Direction::InputGrad)
    }

    /// The (out, in) bf16 weight, unpacked (quantizing, merging, tensor paths).
    pub fn weight(&self) -> Result<Tensor> {
        let (in_dim, out_dim) = self.dims();
        let values: Vec<half::bf16> = (0..out_dim * in_dim)
            .map(|e| half::bf16::from_bits(self.forward.bits(e % in_dim, e / in_dim)))
            .collect();
        Tensor::from_vec(values, (out_dim, in_dim), &Device::Cpu)
    }

    /// Input and output widths.
    pub fn dims(&self) -> (usize, usize) {
        self.forward.dims()
    }

    fn apply(self: &Arc<Self>, x: &Tensor, direction: Direction) -> Result<Tensor> {
        let op = LinearOp {
            layer: self.clone(),
            direction,
        };
        let (k, n) = op.packed().dims();
        let mut out_shape = x.dims().to_vec();
        match out_shape.last_mut() {
            Some(last) if *last == k => *last = n,
            _ => candle_core::bail!("kd-bf16-linear: input {:?}, depth {k} expected", x.shape()),
        }
        let rows = x.elem_count() / k.max(1);
        x.contiguous()?
            .reshape((rows, k))?
            .apply_op1_no_bwd(&op)?
            .reshape(out_shape)
    }
}

fn bits(t: &Tensor) -> Result<Vec<u16>> {
    Ok(t.flatten_all()?
        .to_vec1::<half::bf16>()?
        .into_iter()
        .map(half::bf16::to_bits)
        .collect())
}

#[derive(Clone, Copy)]
enum Direction {
    Forward,
    InputGrad,
}

struct LinearOp {
    layer: Arc<NativeLinear>,
    direction: Direction,
}

impl LinearOp {
    fn packed(&self) -> &PackedMatrix {
        match self.direction {
            Direction::Forward => &self.layer.forward,
            Direction::InputGrad => self.layer.backward.get().expect("packed before use"),
        }
    }
}

impl CustomOp1 for LinearOp {
    fn name(&self) -> &'static str {
        "kd-bf16-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = super::fast_math::contiguous_f32(storage, layout, "kd-bf16-linear")?;
        let (rows, _) = layout.shape().dims2()?;
        let packed = self.packed();
        let bias = match self.direction {
            Direction::Forward => self.layer.bias.as_deref(),
            Direction::InputGrad => None,
        };
        let n = packed.dims().1;
        let out = bf16_matmul::matmul(self.layer.kernel, x, rows, packed, bias);
        Ok((CpuStorage::F32(out), Shape::from((rows, n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layer keeps its weight only as the forward packing: unpacked it is the weight's bits,
    /// and the backward packing made from it is the one the weight itself gives.
    #[test]
    fn the_forward_packing_holds_the_weight_and_gives_the_backward_one() -> Result<()> {
        let (out_dim, in_dim) = (37, 53);
        let w = Tensor::randn(0f32, 1.0, (out_dim, in_dim), &Device::Cpu)?.to_dtype(DType::BF16)?;
        let Some(layer) = NativeLinear::for_weight(&w, None)? else {
            eprintln!("skipped: this CPU has no native bf16 kernel");
            return Ok(());
        };
        assert_eq!(bits(&layer.weight()?)?, bits(&w)?);
        let g = Tensor::randn(0f32, 1.0, (3, out_dim), &Device::Cpu)?;
        let got = layer.input_grad(&g)?;
        let want = PackedMatrix::from_weight(&bits(&w)?, out_dim, in_dim);
        let backward = layer.backward.get().expect("packed by the backward");
        for (k, n) in (0..out_dim).flat_map(|k| (0..in_dim).map(move |n| (k, n))) {
            assert_eq!(backward.bits(k, n), want.bits(k, n), "B[{k}][{n}]");
        }
        assert_eq!(got.dims(), &[3, in_dim]);
        Ok(())
    }
}
