//! Fixed-point arithmetic of the TFLite integer kernels (gemmlowp / `kernels/internal/common.h`).
//!
//! Every function here reproduces the C++ expression it is named after, including its
//! rounding and saturation corner cases, because bit-exactness with LiteRT depends on
//! them. C++ integer division truncates toward zero; Rust's `/` on signed integers does
//! too, so the formulas carry over literally.

/// Splits a positive real multiplier into a Q31 significand and a power-of-two
/// exponent: `m ≈ q * 2^(shift - 31)` with `q` in `[2^30, 2^31)` (TFLite `QuantizeMultiplier`,
/// double-rounding build). Zero (and values too small to represent) give `(0, 0)`.
pub fn quantize_multiplier(m: f64) -> (i32, i32) {
    if m == 0.0 || !m.is_finite() {
        return (0, 0);
    }
    let (q, mut shift) = frexp(m);
    // std::round: half away from zero.
    let mut q_fixed = (q * (1i64 << 31) as f64).round() as i64;
    if q_fixed == 1i64 << 31 {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        shift = 0;
        q_fixed = 0;
    }
    (q_fixed as i32, shift)
}

/// `QuantizeMultiplierSmallerThanOneExp`: like [`quantize_multiplier`], for `m < 1`;
/// the exponent returned is `<= 0` (a right shift).
pub fn quantize_multiplier_smaller_than_one_exp(m: f64) -> (i32, i32) {
    quantize_multiplier(m)
}

/// C `frexp`: `x = f * 2^e` with `|f|` in `[0.5, 1)`.
pub fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let bits = x.to_bits();
    let exp_bits = ((bits >> 52) & 0x7ff) as i32;
    if exp_bits == 0 {
        // Subnormal: scale up first.
        let (f, e) = frexp(x * (1u64 << 54) as f64);
        return (f, e - 54);
    }
    let e = exp_bits - 1022;
    let f = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (f, e)
}

/// gemmlowp `SaturatingRoundingDoublingHighMul` on i32: `a * b / 2^31` rounded to
/// nearest. The nudge-then-truncate formula rounds ties up (toward +inf: -0.5 -> 0,
/// +0.5 -> 1), and the single overflow case `MIN * MIN` saturates.
#[inline(always)]
pub fn srdhm(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// gemmlowp `RoundingDivideByPOT`: `x / 2^exponent` rounded to nearest, ties away from zero.
#[inline(always)]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    debug_assert!((0..=31).contains(&exponent));
    let mask: i32 = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// TFLite `MultiplyByQuantizedMultiplier` (double rounding, the default build):
/// `x * m * 2^(shift-31)`. A left shift multiplies in 32-bit first (wrapping as the C++
/// does in practice; TFLite's converter keeps shifts small enough that it never wraps).
#[inline(always)]
pub fn multiply_by_quantized_multiplier(x: i32, m: i32, shift: i32) -> i32 {
    let left = if shift > 0 { shift } else { 0 };
    let right = if shift > 0 { 0 } else { -shift };
    rounding_divide_by_pot(
        srdhm(x.wrapping_mul(1i32.wrapping_shl(left as u32)), m),
        right.min(31),
    )
}

/// TFLite `MultiplyByQuantizedMultiplierSmallerThanOneExp`: `shift <= 0`.
#[inline(always)]
pub fn multiply_by_quantized_multiplier_smaller_than_one_exp(x: i32, m: i32, shift: i32) -> i32 {
    rounding_divide_by_pot(srdhm(x, m), (-shift).clamp(0, 31))
}

/// TFLite `MultiplyByQuantizedMultiplierGreaterThanOne`: `shift >= 0`.
#[inline(always)]
pub fn multiply_by_quantized_multiplier_greater_than_one(x: i32, m: i32, shift: i32) -> i32 {
    srdhm(x.wrapping_mul(1i32.wrapping_shl(shift.max(0) as u32)), m)
}

/// gemmlowp `SaturatingRoundingDoublingHighMul` on i16.
#[inline(always)]
pub fn srdhm_i16(a: i16, b: i16) -> i16 {
    if a == i16::MIN && b == i16::MIN {
        return i16::MAX;
    }
    let ab = a as i32 * b as i32;
    let nudge: i32 = if ab >= 0 { 1 << 14 } else { 1 - (1 << 14) };
    ((ab + nudge) / (1 << 15)) as i16
}

/// gemmlowp `RoundingDivideByPOT` on i16.
#[inline(always)]
pub fn rounding_divide_by_pot_i16(x: i16, exponent: i32) -> i16 {
    rounding_divide_by_pot(x as i32, exponent) as i16
}

/// gemmlowp `SaturatingRoundingMultiplyByPOT<exponent>` on i32 (saturating left shift
/// for positive exponents, rounding right shift for negative ones).
#[inline(always)]
pub fn saturating_rounding_multiply_by_pot(x: i32, exponent: i32) -> i32 {
    if exponent > 0 {
        let min = i32::MIN >> exponent;
        let max = i32::MAX >> exponent;
        if x > max {
            i32::MAX
        } else if x < min {
            i32::MIN
        } else {
            x << exponent
        }
    } else if exponent < 0 {
        rounding_divide_by_pot(x, -exponent)
    } else {
        x
    }
}

/// The rounding division of TFLite's integer average pooling: ties away from zero.
#[inline(always)]
pub fn rounding_div_away(acc: i32, count: i32) -> i32 {
    if acc > 0 {
        (acc + count / 2) / count
    } else {
        (acc - count / 2) / count
    }
}

/// `TfLiteRound` / `std::round` on f32: ties away from zero.
#[inline(always)]
pub fn round_away_f32(x: f32) -> f32 {
    x.round()
}

/// Round half to even (ONNX QuantizeLinear, numpy `rint`).
#[inline(always)]
pub fn round_half_even_f32(x: f32) -> f32 {
    x.round_ties_even()
}

/// Round half to even (f64).
#[inline(always)]
pub fn round_half_even_f64(x: f64) -> f64 {
    x.round_ties_even()
}

// ---------------------------------------------------------------------------------
// gemmlowp fixed-point transcendental functions (Q-format int32), used by the
// reference int8 softmax.

/// `FixedPoint<int32, I>` as a raw i32 with `31 - I` fractional bits.
#[inline(always)]
fn fp_one(integer_bits: i32) -> i32 {
    if integer_bits == 0 {
        i32::MAX
    } else {
        1i32 << (31 - integer_bits)
    }
}

#[inline(always)]
fn mask_if_non_zero(a: bool) -> i32 {
    if a {
        -1
    } else {
        0
    }
}

/// gemmlowp `exp_on_interval_between_negative_one_quarter_and_0_excl` (Q0.31 in/out).
fn exp_on_interval_between_negative_one_quarter_and_0_excl(a: i32) -> i32 {
    const CONSTANT_TERM: i32 = 1895147668;
    const CONSTANT_1_OVER_3: i32 = 715827883;
    // x = a + 1/8, computed in Q0.31.
    let x = a.wrapping_add(1 << 28);
    let x2 = srdhm(x, x);
    let x3 = srdhm(x2, x);
    let x4 = srdhm(x2, x2);
    let x4_over_4 = rounding_divide_by_pot(x4, 2);
    let x4_over_24_plus_x3_over_6_plus_x2_over_2 = rounding_divide_by_pot(
        srdhm(x4_over_4.wrapping_add(x3), CONSTANT_1_OVER_3).wrapping_add(x2),
        1,
    );
    CONSTANT_TERM.wrapping_add(srdhm(
        CONSTANT_TERM,
        x.wrapping_add(x4_over_24_plus_x3_over_6_plus_x2_over_2),
    ))
}

/// gemmlowp `exp_on_negative_values` for `FixedPoint<int32, integer_bits>` input,
/// returning Q0.31.
pub fn exp_on_negative_values(a: i32, integer_bits: i32) -> i32 {
    let fractional_bits = 31 - integer_bits;
    let one_quarter = 1i32 << (fractional_bits - 2);
    let mask = one_quarter - 1;
    let a_mod_quarter_minus_one_quarter = (a & mask).wrapping_sub(one_quarter);
    // Rescale to Q0.31.
    let rescaled =
        saturating_rounding_multiply_by_pot(a_mod_quarter_minus_one_quarter, integer_bits);
    let mut result = exp_on_interval_between_negative_one_quarter_and_0_excl(rescaled);
    let remainder = a_mod_quarter_minus_one_quarter.wrapping_sub(a);
    // exp(-2^k) constants in Q0.31, for k = -2 .. 4.
    let table: [(i32, i32); 7] = [
        (-2, 1672461947),
        (-1, 1302514674),
        (0, 790015084),
        (1, 290630308),
        (2, 39332535),
        (3, 720401),
        (4, 242),
    ];
    for (exponent, multiplier) in table {
        if integer_bits > exponent {
            let shift_amount = fractional_bits + exponent;
            if (0..31).contains(&shift_amount) {
                let m = mask_if_non_zero(remainder & (1i32 << shift_amount) != 0);
                result = (m & srdhm(result, multiplier)) | (!m & result);
            }
        }
    }
    if integer_bits > 5 {
        let clamp = -(1i32 << (fractional_bits + 5));
        let m = mask_if_non_zero(a < clamp);
        result &= !m;
    }
    let m = mask_if_non_zero(a == 0);
    (m & fp_one(0)) | (!m & result)
}

/// gemmlowp `one_over_one_plus_x_for_x_in_0_1`: input Q0.31 in [0,1), output Q0.31
/// (the value 1/(1+x) is in (0.5, 1]).
pub fn one_over_one_plus_x_for_x_in_0_1(a: i32) -> i32 {
    // half_denominator = (a + 1) / 2, computed as RoundingHalfSum(a, one) in Q0.31.
    let half_denominator = rounding_half_sum(a, i32::MAX);
    // Newton-Raphson in Q2.29.
    const CONSTANT_48_OVER_17: i32 = 1515870810;
    const CONSTANT_NEG_32_OVER_17: i32 = -1010580540;
    let mut x = CONSTANT_48_OVER_17.wrapping_add(srdhm(half_denominator, CONSTANT_NEG_32_OVER_17));
    let one_q2 = 1i32 << 29;
    for _ in 0..3 {
        // half_denominator_times_x: Q0 * Q2 -> Q2.
        let half_denominator_times_x = srdhm(half_denominator, x);
        let one_minus = one_q2.wrapping_sub(half_denominator_times_x);
        // x + Rescale<2>(x * one_minus): Q2*Q2 = Q4, rescale to Q2 (<<2, saturating).
        let prod = srdhm(x, one_minus);
        x = x.wrapping_add(saturating_rounding_multiply_by_pot(prod, 2));
    }
    // Rescale<0>(ExactMulByPot<-1>(x)): the raw value reinterpreted as Q1.30 (halved),
    // then a saturating left shift by 1 to Q0.31.
    saturating_rounding_multiply_by_pot(x, 1)
}

/// gemmlowp `RoundingHalfSum` on i32.
#[inline(always)]
pub fn rounding_half_sum(a: i32, b: i32) -> i32 {
    let sum = a as i64 + b as i64;
    let sign: i64 = if sum >= 0 { 1 } else { -1 };
    ((sum + sign) / 2) as i32
}

/// TFLite `GetReciprocal`: `1 / x` for a Q(`x_integer_digits`) positive value, as a Q0.31
/// significand and a left shift `num_bits_over_unit` (reference softmax).
pub fn get_reciprocal(x: i32, x_integer_digits: i32) -> (i32, i32) {
    let headroom_plus_one = (x as u32).leading_zeros() as i32;
    let num_bits_over_unit = x_integer_digits - headroom_plus_one;
    let shifted_sum_minus_one = ((x as u32) << headroom_plus_one).wrapping_sub(1u32 << 31) as i32;
    let shifted_scale = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one);
    (shifted_scale, num_bits_over_unit)
}

/// TFLite `CalculateInputRadius`.
pub fn calculate_input_radius(
    input_integer_bits: i32,
    input_left_shift: i32,
    total_signed_bits: i32,
) -> i32 {
    let max_input_rescaled = 1.0
        * ((1i64 << input_integer_bits) - 1) as f64
        * (1i64 << (total_signed_bits - input_integer_bits)) as f64
        / 2f64.powi(input_left_shift);
    // Round down, as TFLite does (floor of the exact value).
    max_input_rescaled.floor() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact rational evaluation of x * m * 2^(shift-31) with the two roundings of the
    /// double-rounding scheme, done in i128 independently of the code above.
    fn mbqm_model(x: i32, m: i32, shift: i32) -> i32 {
        let left = shift.max(0);
        let right = (-shift).max(0);
        let xs = (x as i128) << left;
        let xs = xs as i32 as i128; // 32-bit product as in C++
        let ab = xs * m as i128;
        // Round ab / 2^31 to nearest, ties up (gemmlowp's nudge-and-truncate).
        let q = (ab + (1i128 << 30)).div_euclid(1i128 << 31);
        // Round q / 2^right half away from zero.
        let d = 1i128 << right;
        let (n, neg) = if q < 0 { (-q, true) } else { (q, false) };
        let r = (2 * n + d) / (2 * d);
        (if neg { -r } else { r }) as i32
    }

    #[test]
    fn frexp_matches_definition() {
        for &x in &[1.0, 0.5, 0.75, 3.0, 1e-10, 123456.789, 2f64.powi(-1070)] {
            let (f, e) = frexp(x);
            assert!((0.5..1.0).contains(&f), "{x}: {f}");
            // Two steps so that 2^e itself never underflows.
            assert_eq!(f * 2f64.powi(e / 2) * 2f64.powi(e - e / 2), x);
        }
    }

    #[test]
    fn quantize_multiplier_known_values() {
        // 0.5 = 2^30 * 2^(0-31)
        assert_eq!(quantize_multiplier(0.5), (1 << 30, 0));
        // 1.0 = 2^30 * 2^(1-31)
        assert_eq!(quantize_multiplier(1.0), (1 << 30, 1));
        // 0.75 = 0.75*2^31 * 2^-31
        assert_eq!(quantize_multiplier(0.75), (1610612736, 0));
        // Significand that rounds up to 2^31 renormalizes.
        let (q, s) = quantize_multiplier(1.0 - 1e-12);
        assert_eq!((q, s), (1 << 30, 1));
        // Too small: zero.
        assert_eq!(quantize_multiplier(1e-20), (0, 0));
        assert_eq!(quantize_multiplier(0.0), (0, 0));
    }

    #[test]
    fn quantize_multiplier_reconstructs() {
        let mut m = 1e-9f64;
        while m < 1e6 {
            let (q, s) = quantize_multiplier(m);
            assert!(q >= 1 << 30, "{m}");
            let back = q as f64 * 2f64.powi(s - 31);
            assert!((back - m).abs() <= m * 2f64.powi(-30), "{m} -> {back}");
            m *= 1.37;
        }
    }

    #[test]
    fn srdhm_and_rdbp_corner_cases() {
        assert_eq!(srdhm(i32::MIN, i32::MIN), i32::MAX);
        assert_eq!(srdhm(1 << 30, 1 << 30), 1 << 29);
        // Ties round up: -0.5 -> 0, +0.5 -> 1, -1.5 -> -1.
        assert_eq!(srdhm(-1, 1 << 30), 0);
        assert_eq!(srdhm(1, 1 << 30), 1);
        assert_eq!(srdhm(-3, 1 << 30), -1);
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(-6, 2), -2);
        assert_eq!(rounding_divide_by_pot(6, 2), 2);
        assert_eq!(rounding_divide_by_pot(-7, 2), -2);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
        assert_eq!(rounding_divide_by_pot(7, 0), 7);
    }

    #[test]
    fn mbqm_matches_rational_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200_000 {
            let m: i32 = rng.gen_range((1 << 30)..i32::MAX);
            let shift: i32 = rng.gen_range(-31..=8);
            let bound = if shift > 0 {
                i32::MAX >> shift
            } else {
                i32::MAX
            };
            let x: i32 = match rng.gen_range(0..3) {
                0 => rng.gen_range(-1000..1000),
                1 => rng.gen_range(-(1 << 20)..(1 << 20)),
                _ => rng.gen_range(-bound..bound),
            };
            assert_eq!(
                multiply_by_quantized_multiplier(x, m, shift),
                mbqm_model(x, m, shift),
                "x={x} m={m} shift={shift}"
            );
        }
    }

    #[test]
    fn rounding_div_away_model() {
        for acc in -2000..2000 {
            for count in 1..70 {
                let exact = acc as f64 / count as f64;
                let want = exact.abs().round() * exact.signum();
                // Ties away from zero only when count is even; for odd counts the C
                // formula (acc + count/2) / count equals round-half-away too.
                assert_eq!(rounding_div_away(acc, count) as f64, want, "{acc}/{count}");
            }
        }
    }

    #[test]
    fn exp_on_negative_values_accuracy() {
        // Q5.26 inputs, as the reference softmax uses.
        for i in 0..2000 {
            let x = -(i as f64) * 0.01;
            let a = (x * (1i64 << 26) as f64).round() as i32;
            let got = exp_on_negative_values(a, 5) as f64 / 2f64.powi(31);
            assert!((got - x.exp()).abs() < 1e-6, "exp({x}) = {got}");
        }
    }

    #[test]
    fn one_over_one_plus_x_accuracy() {
        for i in 0..1000 {
            let x = i as f64 / 1000.0;
            let a = (x * 2f64.powi(31)).min(i32::MAX as f64) as i32;
            let got = one_over_one_plus_x_for_x_in_0_1(a) as f64 / 2f64.powi(31);
            assert!((got - 1.0 / (1.0 + x)).abs() < 1e-8, "1/(1+{x}) = {got}");
        }
    }
}
