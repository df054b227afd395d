//! Fused ops on the dfdx tape: an op whose forward is plain Rust over the input's values and
//! whose backward is a hand-written adjoint. The reference path's perception, update and loss
//! are fused ops, and so are the rule's activation layers; the finite-difference test guards
//! every adjoint.

use dfdx::prelude::*;

/// A dfdx tensor of rows × columns.
pub type Tensor2<T> = Tensor<(usize, usize), f64, Cpu, T>;

/// Maps an op's output gradient to its input gradient; may also add to other gradients
/// (an untaped operand's) through the store it is given.
pub type Backward = Box<dyn FnOnce(&[f64], &mut Gradients<f64, Cpu>) -> Result<Vec<f64>, CpuError>>;

/// The values of `t`, row-major; empty for a tensor with no elements (dfdx 0.13's `as_vec`
/// panics on those, e.g. a batch with no live cells).
pub fn values<S: Shape, T>(t: &Tensor<S, f64, Cpu, T>) -> Vec<f64> {
    if t.shape().num_elements() == 0 { Vec::new() } else { t.as_vec() }
}

/// A backward that only maps the output gradient to the input gradient.
pub fn pure(f: impl FnOnce(&[f64]) -> Vec<f64> + 'static) -> Backward {
    Box::new(move |g, _| Ok(f(g)))
}

/// A fused op on the tape: `forward` maps the input's values to the output's values and a
/// closure that maps the output's gradient to the input's gradient.
pub fn fused<T: Tape<f64, Cpu>, S: Shape>(
    dev: &Cpu,
    x: Tensor2<T>,
    out_shape: S,
    forward: impl FnOnce(&[f64]) -> (Vec<f64>, Backward),
) -> Tensor<S, f64, Cpu, T> {
    let (x, mut tape) = x.split_tape();
    let (out_values, backward) = forward(&values(&x));
    let out = dev.tensor_from_vec(out_values, out_shape);
    if T::OWNS_TAPE {
        let (x_ghost, out_ghost) = (x.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let g_out: Vec<f64> = grads.get_or_alloc_mut(&out_ghost)?.to_vec();
            if g_out.is_empty() && x_ghost.shape().num_elements() == 0 {
                return Ok(());
            }
            let g_x = backward(&g_out, grads)?;
            for (a, b) in grads.get_or_alloc_mut(&x_ghost)?.iter_mut().zip(&g_x) {
                *a += b;
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}
