//! `torch.no_grad()` for kd: inside a [`no_grad`] scope the trainable tensors enter the
//! computation detached, so candle records no graph, keeps no activations for a backward pass,
//! and the hand-written backward passes cost nothing.
use candle_core::{Tensor, Var};
use std::cell::Cell;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Restores the previous mode when dropped.
pub struct NoGradGuard {
    previous: bool,
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Disables gradient tracking on this thread until the guard is dropped.
pub fn no_grad() -> NoGradGuard {
    let previous = GRAD_ENABLED.with(|g| g.replace(false));
    NoGradGuard { previous }
}

/// Whether gradients are being tracked on this thread (false inside a [`no_grad`] scope).
pub fn grad_enabled() -> bool {
    GRAD_ENABLED.with(Cell::get)
}

/// A trainable tensor as the forward pass should use it: tracked, or detached under no_grad.
pub fn param(var: &Var) -> Tensor {
    if GRAD_ENABLED.with(Cell::get) {
        var.as_tensor().clone()
    } else {
        var.as_tensor().detach()
    }
}
