//! kd's CPU kernels, chosen at run time from what the CPU offers ([`features`]): vectorized exp,
//! Φ and GELU ([`fast_math`], [`gelu`]), the attention softmax, the hashed dropout mask, and the
//! native bf16 products ([`bf16_matmul`]) that frozen linear layers run on ([`native_linear`]), and
//! the inference-only kernels the encoder's forward without gradients fuses its layer into
//! ([`attention`], [`layer_norm`], the GELU epilogue of [`bf16_matmul::matmul_rows_gelu`]).
//! Each has a reference implementation and tests against it beside it.
#[cfg(target_arch = "x86_64")]
pub(crate) mod amx_tiles;
pub mod attention;
pub(crate) mod attention_softmax;
pub mod bf16_matmul;
pub(crate) mod dropout;
mod fast_math;
pub(crate) mod features;
pub(crate) mod fma_math;
pub(crate) mod gelu;
pub mod int8_matmul;
mod kernels;
pub mod layer_norm;
pub mod low_rank;
pub(crate) mod native_linear;
pub(crate) mod row_runs;
pub(crate) mod strided_matmul;

pub(crate) use fast_math::contiguous_f32;
pub use kernels::{cpu_description, kernels_used};
