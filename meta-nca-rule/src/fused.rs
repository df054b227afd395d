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
///
/// One copy of the tensor's storage (`as_vec` walks it element by element through its
/// strides, which was 8% of a meta-epoch), so `t` must be laid out row-major: every tensor of
/// this crate is (made from a vector, by a fused op or by a matrix product; none is permuted),
/// and a broadcast one would panic here, its storage being shorter.
pub fn values<S: Shape, T>(t: &Tensor<S, f64, Cpu, T>) -> Vec<f64> {
    let n = t.shape().num_elements();
    let mut v = vec![0.0; n];
    if n > 0 {
        t.copy_into(&mut v);
    }
    v
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `values` (one copy of the storage) reads what `as_vec` (through the strides) reads, for
    /// every kind of tensor the crate makes: from a vector, a matrix product, a fused op.
    #[test]
    fn values_match_as_vec() {
        let dev = Cpu::default();
        let a: Tensor2<NoneTape> = dev.tensor_from_vec((0..12).map(|v| v as f64 * 0.5 - 2.0).collect(), (3, 4));
        let b: Tensor2<NoneTape> = dev.tensor_from_vec((0..20).map(|v| (v as f64).sin()).collect(), (4, 5));
        let product = a.clone().matmul(b);
        let doubled = fused(&dev, a.clone(), (3, 4), |x| (x.iter().map(|v| 2.0 * v).collect(), pure(|g| g.to_vec())));
        for t in [a, product, doubled] {
            assert_eq!(values(&t), t.as_vec());
        }
        let empty: Tensor2<NoneTape> = dev.tensor_from_vec(Vec::new(), (0, 3));
        assert!(values(&empty).is_empty());
    }
}
