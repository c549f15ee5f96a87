//! TensorFlow Lite Micro's semantics for the element-wise ops whose Prepare differs from
//! LiteRT's (which edgeopt's runtime kernels follow). The per-element arithmetic is the
//! runtime's (`fixedpoint`); only the parameters TFLM derives differ. Each function
//! returns the 256-entry int8 table (index `x + 128`) the generated C looks up.
//!
//! Checked against TFLM's interpreter on all 256 inputs at six input scales
//! (crates/tests/tests/codegen_ops_vs_tflm.rs).

use edgeopt_runtime::kernels::quantized::common::Affine;
use edgeopt_runtime::kernels::quantized::fixedpoint::{
    multiply_by_quantized_multiplier, quantize_multiplier, round_away_f32,
};

/// RELU (TFLM `CalculateReluOpData`): requantize by `in_scale / out_scale` computed in
/// double, then clamp to [out_zp, 127]. LiteRT divides the two f32 scales in float
/// before widening; the rounded quotient gives another Q31 multiplier, and for about 1
/// scale pair in 1500 (random pairs, measured) another table.
pub fn relu_table(qx: Affine, qy: Affine) -> Vec<i8> {
    let (m, s) = quantize_multiplier(qx.scale as f64 / qy.scale as f64);
    // act_min = 0: zp + round(0 / scale).
    let lo = qy.zp.max(-128);
    (-128..=127i32)
        .map(|v| {
            let r = qy.zp + multiply_by_quantized_multiplier(v - qx.zp, m, s);
            r.clamp(lo, 127) as i8
        })
        .collect()
}

/// RELU6 (TFLM `Relu6Prepare` / `Relu6Quantized`): the input integers clamped to
/// [in_zp, six] with six = FloatToQuantizedType(6, in_scale, in_zp), i.e. in the
/// input's quantization; the output's parameters are not read (no requantization).
/// LiteRT requantizes to the output's parameters, so the two differ whenever input and
/// output parameters differ (0 to 8 of 1024 outputs equal in the test's sweep); with
/// equal parameters they agree.
pub fn relu6_table(qx: Affine) -> Vec<i8> {
    let six = (round_away_f32(6.0f32 / qx.scale) as i32 + qx.zp).clamp(-128, 127);
    let zero = qx.zp;
    (-128..=127i32)
        .map(|v| {
            let c = if v > six {
                six
            } else if v < zero {
                zero
            } else {
                v
            };
            c as i8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu6_ignores_output_params_and_clamps_in_input_units() {
        let qx = Affine {
            scale: 0.05,
            zp: -2,
        };
        let t = relu6_table(qx);
        // six = round(6 / 0.05) - 2 = 118.
        assert_eq!(t[0], -2);
        assert_eq!(t[(-2 + 128) as usize], -2);
        assert_eq!(t[(50 + 128) as usize], 50);
        assert_eq!(t[(118 + 128) as usize], 118);
        assert_eq!(t[255], 118);
    }

    #[test]
    fn relu_divides_the_scales_in_double() {
        // in / out in f32 is 2.4569...f32, whose Q31 multiplier maps input 118 to 14;
        // the double quotient's (TFLM's; codegen_ops_vs_tflm.rs) maps it to 15.
        let qx = Affine {
            scale: 0.024_050_42,
            zp: 60,
        };
        let qy = Affine {
            scale: 0.009_788_942_5,
            zp: -128,
        };
        assert_eq!(relu_table(qx, qy)[(118 + 128) as usize], 15);
        let (m, s) = quantize_multiplier((qx.scale / qy.scale) as f64);
        assert_eq!(multiply_by_quantized_multiplier(118 - 60, m, s) - 128, 14);
    }

    #[test]
    fn relu_with_equal_params_is_a_clamp_at_the_zero_point() {
        let q = Affine {
            scale: 0.0233,
            zp: 17,
        };
        let t = relu_table(q, q);
        for (i, &y) in t.iter().enumerate() {
            let x = i as i32 - 128;
            assert_eq!(y as i32, x.max(17));
        }
    }
}
