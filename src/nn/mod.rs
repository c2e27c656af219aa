//! kd's own candle-nn: the differentiable building blocks the model is made of, and the kernels
//! under them. Nothing here knows the model, the data or training.
//!
//! - [`FrozenLinear`], [`layer_norm`], [`masked_softmax`], [`dropout`], [`gelu_erf`]: forward
//!   passes on the fastest kernel for the device, each with a hand-written backward pass in the
//!   one input that needs it ([`autograd`]); frozen weights never get a gradient.
//! - [`adapted_linear`], [`attention`], [`frozen_feed_forward`], [`dropout_add_layer_norm`]: a
//!   LoRA-adapted layer, a layer's attention, its feed-forward block and its residual LayerNorms
//!   as single ops that keep less for the backward pass than the ops they are made of.
//! - [`no_grad`] / [`param`]: `torch.no_grad()` for kd.
//! - [`compute_dtype`], [`activation_dtype`]: which precision norms, softmax and losses run in,
//!   and which the activations flow in.
//! - [`cpu`]: the CPU kernels and the record of which ones run here ([`kernels_used`],
//!   [`cpu_description`]).
mod adapted_linear;
mod attention;
mod autograd;
pub mod cpu;
mod feed_forward;
mod grad_mode;
mod ops;
mod residual_norm;
#[cfg(test)]
mod test_util;

pub use adapted_linear::adapted_linear;
pub use attention::attention;
pub use cpu::bf16_matmul::auto_prefers_bf16;
pub use cpu::gelu::gelu_erf;
pub use cpu::{cpu_description, kernels_used};
pub use feed_forward::frozen_feed_forward;
pub use grad_mode::{grad_enabled, no_grad, param, NoGradGuard};
pub use ops::{activation_dtype, compute_dtype, dropout, dropout_rows, layer_norm, masked_softmax};
pub use ops::{FrozenLinear, RowWindow};
pub use residual_norm::dropout_add_layer_norm;
