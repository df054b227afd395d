//! `tanh` in plain arithmetic that the compiler vectorises (the C library's `tanh` is a call
//! per value, about half of a rule pass at the rule's sizes). Within 3 machine epsilons of the
//! C library's result, relative; one definition for every [`super::ForwardPass`] (the rule's
//! activations without tape, and the bound of [`super::ForwardPass::run`], which the actors'
//! rule service runs). The tape, and the bound of the reference step without tape, keep the C
//! library's `tanh`, so a pass with tape and one without agree to a few machine epsilons.

/// Past this `2|x|`, `tanh` rounds to ±1 (from |x| ≈ 19.1 on).
const CLAMP: f64 = 40.0;
/// Adding and subtracting it rounds a double of magnitude below 2^51 to an integer.
const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 · 2^52
/// ln 2 in two parts (fdlibm's): `n · LN2_HI` is exact for the `n` used here.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);

/// `exp(y) - 1` for `0 <= y <= CLAMP` (or NaN), to a few machine epsilons, relative.
#[inline(always)]
fn expm1(y: f64) -> f64 {
    // y = n·ln2 + r, |r| <= ln2/2; exp(y) - 1 = 2^n·expm1(r) + (2^n - 1).
    let t = y * std::f64::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    // expm1(r) by its Taylor series to r^13/13! (the rest is below 1e-17 of r).
    let mut p = 1.0 / 6_227_020_800.0;
    for c in [
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
    ] {
        p = p * r + c;
    }
    let p = p * r;
    // 2^n from n's bits in `t`'s mantissa (0 <= n <= 58).
    let two_n = f64::from_bits((t.to_bits() & 0xff).wrapping_add(1023) << 52);
    two_n * p + (two_n - 1.0)
}

/// `tanh(x)`, with `tanh(±inf) = ±1` and NaN for NaN.
#[inline(always)]
pub fn tanh(x: f64) -> f64 {
    let a = x.abs();
    let y = 2.0 * a;
    let y = if y > CLAMP { CLAMP } else { y };
    let e = expm1(y);
    (e / (e + 2.0)).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within 3 machine epsilons of the C library's `tanh`, relative (7e-16), over tiny,
    /// small, medium and saturating arguments.
    #[test]
    fn agrees_with_the_c_library() {
        let mut worst: f64 = 0.0;
        let mut x = 1e-300;
        while x < 30.0 {
            for v in [x, -x] {
                let (ours, libm) = (tanh(v), v.tanh());
                let ulp = libm.abs().max(f64::MIN_POSITIVE) * f64::EPSILON;
                worst = worst.max((ours - libm).abs() / ulp);
            }
            x *= 1.000_37;
        }
        assert!(worst <= 3.0, "worst {worst} epsilons");
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(f64::INFINITY), 1.0);
        assert_eq!(tanh(f64::NEG_INFINITY), -1.0);
        assert!(tanh(f64::NAN).is_nan());
        assert_eq!(tanh(100.0), 1.0);
    }
}
