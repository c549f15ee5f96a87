/*
 * edgeopt_kernels.c: see edgeopt_kernels.h. Each function names the edgeopt runtime
 * function (crates/runtime/src/kernels/quantized/) whose arithmetic it reproduces.
 */
#include "edgeopt_kernels.h"

#include <string.h>

#if EO_USE_DSP
#include <arm_acle.h>
#endif

/* Wrapping 32-bit arithmetic (what the Rust kernels do with wrapping_*), without
 * signed-overflow undefined behaviour. */
static int32_t eo_wadd(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }
static int32_t eo_wsub(int32_t a, int32_t b) { return (int32_t)((uint32_t)a - (uint32_t)b); }
static int32_t eo_shl(int32_t a, int32_t s) { return (int32_t)((uint32_t)a << s); }
static int32_t eo_clamp(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* fixedpoint::srdhm: gemmlowp SaturatingRoundingDoublingHighMul. */
int32_t eo_srdhm(int32_t a, int32_t b) {
    int64_t ab, nudge;
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* fixedpoint::rounding_divide_by_pot: ties away from zero. */
int32_t eo_rounding_divide_by_pot(int32_t x, int32_t exponent) {
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* fixedpoint::multiply_by_quantized_multiplier (double rounding). */
int32_t eo_mbqm(int32_t x, int32_t mult, int32_t shift) {
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    return eo_rounding_divide_by_pot(eo_srdhm(eo_shl(x, left), mult), right < 31 ? right : 31);
}

/* fixedpoint::multiply_by_quantized_multiplier_smaller_than_one_exp. */
static int32_t eo_mbqm_small(int32_t x, int32_t mult, int32_t shift) {
    return eo_rounding_divide_by_pot(eo_srdhm(x, mult), eo_clamp(-shift, 0, 31));
}

/* Dot product of an int16 operand (zero point already subtracted) with int8 weights.
 * DSP path: the int16 operand is stored with elements 1 and 2 of every group of four
 * swapped (see eo_reorder), so that SXTB16 on four weight bytes (bytes 0,2 and, after
 * a rotation, bytes 1,3) lines up with two 32-bit loads of the operand; SMLAD then does
 * two multiply-accumulates per instruction. Integer sums are exact, so the result equals
 * the portable loop's. */
static int32_t eo_dot(const int16_t *p, const int8_t *w, int32_t k, int32_t acc) {
#if EO_USE_DSP
    int32_t k4 = k >> 2;
    while (k4-- > 0) {
        int32_t pa, pb;
        uint32_t wv;
        memcpy(&pa, p, 4);
        memcpy(&pb, p + 2, 4);
        memcpy(&wv, w, 4);
        acc = __smlad(pa, __sxtb16((int32_t)wv), acc);
        acc = __smlad(pb, __sxtb16((int32_t)((wv >> 8) | (wv << 24))), acc);
        p += 4;
        w += 4;
    }
    k &= 3;
#endif
    while (k-- > 0) acc = eo_wadd(acc, (int32_t)*p++ * (int32_t)*w++);
    return acc;
}

/* Two output channels at once over the same operand (halves the operand loads). */
static void eo_dot2(const int16_t *p, const int8_t *w0, const int8_t *w1, int32_t k,
                    int32_t *acc0, int32_t *acc1) {
    int32_t a0 = *acc0, a1 = *acc1;
#if EO_USE_DSP
    int32_t k4 = k >> 2;
    while (k4-- > 0) {
        int32_t pa, pb;
        uint32_t u0, u1;
        memcpy(&pa, p, 4);
        memcpy(&pb, p + 2, 4);
        memcpy(&u0, w0, 4);
        memcpy(&u1, w1, 4);
        a0 = __smlad(pa, __sxtb16((int32_t)u0), a0);
        a0 = __smlad(pb, __sxtb16((int32_t)((u0 >> 8) | (u0 << 24))), a0);
        a1 = __smlad(pa, __sxtb16((int32_t)u1), a1);
        a1 = __smlad(pb, __sxtb16((int32_t)((u1 >> 8) | (u1 << 24))), a1);
        p += 4;
        w0 += 4;
        w1 += 4;
    }
    k &= 3;
#endif
    while (k-- > 0) {
        const int32_t v = *p++;
        a0 = eo_wadd(a0, v * (int32_t)*w0++);
        a1 = eo_wadd(a1, v * (int32_t)*w1++);
    }
    *acc0 = a0;
    *acc1 = a1;
}

/* Puts an int16 operand of length k into the order eo_dot expects. */
static void eo_reorder(int16_t *p, int32_t k) {
#if EO_USE_DSP
    int32_t i;
    for (i = 0; i + 4 <= k; i += 4) {
        const int16_t t = p[i + 1];
        p[i + 1] = p[i + 2];
        p[i + 2] = t;
    }
#else
    (void)p;
    (void)k;
#endif
}

/* conv::depthwise + tflite_conv (Rounding::TiesAway under Numerics::Reference).
 * Weights are [kh, kw, oc] (the generator transposes them) so that, as in the runtime,
 * the channel loop is innermost and contiguous; `acc` holds oc int32 accumulators. */
static void eo_depthwise_s8(const eo_conv_params *p, const int8_t *x, int8_t *y, int32_t *acc) {
    const int32_t m = p->oc, mult = p->oc / p->ic;
    int32_t n, oy, ox, o, c, j, ky, kx;
    for (n = 0; n < p->n; n++) {
        for (oy = 0; oy < p->oh; oy++) {
            for (ox = 0; ox < p->ow; ox++) {
                int8_t *out = y + (((size_t)n * p->oh + oy) * p->ow + ox) * m;
                const int32_t iy0 = oy * p->stride_h - p->pad_h;
                const int32_t ix0 = ox * p->stride_w - p->pad_w;
                for (o = 0; o < m; o++) acc[o] = p->bias ? p->bias[o] : 0;
                for (ky = 0; ky < p->kh; ky++) {
                    const int32_t iy = iy0 + ky * p->dil_h;
                    if (iy < 0 || iy >= p->ih) continue;
                    for (kx = 0; kx < p->kw; kx++) {
                        const int32_t ix = ix0 + kx * p->dil_w;
                        const int8_t *xs, *ws;
                        if (ix < 0 || ix >= p->iw) continue;
                        xs = x + (((size_t)n * p->ih + iy) * p->iw + ix) * p->ic;
                        ws = p->weights + (size_t)(ky * p->kw + kx) * m;
                        if (mult == 1) {
                            for (c = 0; c < m; c++)
                                acc[c] = eo_wadd(acc[c], ((int32_t)xs[c] - p->in_zp) * (int32_t)ws[c]);
                        } else {
                            for (c = 0; c < p->ic; c++) {
                                const int32_t xv = (int32_t)xs[c] - p->in_zp;
                                for (j = 0; j < mult; j++)
                                    acc[c * mult + j] =
                                        eo_wadd(acc[c * mult + j], xv * (int32_t)ws[c * mult + j]);
                            }
                        }
                    }
                }
                for (o = 0; o < m; o++)
                    out[o] = (int8_t)eo_clamp(eo_mbqm(acc[o], p->mult[o], p->shift[o]) + p->out_zp,
                                              p->act_min, p->act_max);
            }
        }
    }
}

/* conv::accumulate_nhwc (fill_patch + dot) + tflite_conv, Numerics::Reference. */
void eo_conv_s8(const eo_conv_params *p, const int8_t *x, int8_t *y, int16_t *scratch,
                int32_t *acc) {
    const int32_t cg = p->ic / p->groups, mg = p->oc / p->groups;
    const int32_t k_len = p->kh * p->kw * cg;
    int32_t n, oy, ox, g, o, ky, kx, c;
    if (p->depthwise) {
        eo_depthwise_s8(p, x, y, acc);
        return;
    }
    for (n = 0; n < p->n; n++) {
        for (oy = 0; oy < p->oh; oy++) {
            for (ox = 0; ox < p->ow; ox++) {
                int8_t *out = y + (((size_t)n * p->oh + oy) * p->ow + ox) * p->oc;
                for (g = 0; g < p->groups; g++) {
                    /* Receptive field in (ky, kx, c) order, zero point subtracted, 0 in
                     * the padding. */
                    int16_t *dst = scratch;
                    for (ky = 0; ky < p->kh; ky++) {
                        const int32_t iy = oy * p->stride_h + ky * p->dil_h - p->pad_h;
                        for (kx = 0; kx < p->kw; kx++) {
                            const int32_t ix = ox * p->stride_w + kx * p->dil_w - p->pad_w;
                            if (iy >= 0 && iy < p->ih && ix >= 0 && ix < p->iw) {
                                const int8_t *src =
                                    x + (((size_t)n * p->ih + iy) * p->iw + ix) * p->ic + g * cg;
                                for (c = 0; c < cg; c++) dst[c] = (int16_t)(src[c] - p->in_zp);
                            } else {
                                for (c = 0; c < cg; c++) dst[c] = 0;
                            }
                            dst += cg;
                        }
                    }
                    eo_reorder(scratch, k_len);
                    for (o = g * mg; o + 1 < (g + 1) * mg; o += 2) {
                        int32_t a0 = p->bias ? p->bias[o] : 0;
                        int32_t a1 = p->bias ? p->bias[o + 1] : 0;
                        eo_dot2(scratch, p->weights + (size_t)o * k_len,
                                p->weights + (size_t)(o + 1) * k_len, k_len, &a0, &a1);
                        out[o] = (int8_t)eo_clamp(eo_mbqm(a0, p->mult[o], p->shift[o]) + p->out_zp,
                                                  p->act_min, p->act_max);
                        out[o + 1] = (int8_t)eo_clamp(
                            eo_mbqm(a1, p->mult[o + 1], p->shift[o + 1]) + p->out_zp, p->act_min,
                            p->act_max);
                    }
                    for (; o < (g + 1) * mg; o++) {
                        const int32_t acc = eo_dot(scratch, p->weights + (size_t)o * k_len, k_len,
                                                   p->bias ? p->bias[o] : 0);
                        out[o] = (int8_t)eo_clamp(eo_mbqm(acc, p->mult[o], p->shift[o]) + p->out_zp,
                                                  p->act_min, p->act_max);
                    }
                }
            }
        }
    }
}

/* TFLM's FULLY_CONNECTED (reference_integer_ops::FullyConnected / FullyConnectedPerChannel,
 * and CMSIS-NN's arm_fully_connected_s8): the accumulator is requantized by
 * MultiplyByQuantizedMultiplier, i.e. rounded twice (doubling high multiply, then a
 * ties-away right shift), like CONV_2D. LiteRT's reference FULLY_CONNECTED rounds once
 * instead (edgeopt's runtime, Numerics::Reference: fc::tflite_fc with Rounding::Single);
 * on the MLPerf AD model that one-rounding C matched TFLite Micro on 0 of 40 outputs. */
void eo_fc_s8(const eo_fc_params *p, const int8_t *x, int8_t *y, int16_t *scratch) {
    int32_t r, o, i;
    for (r = 0; r < p->rows; r++) {
        const int8_t *xr = x + (size_t)r * p->k;
        int8_t *out = y + (size_t)r * p->n;
        for (i = 0; i < p->k; i++) scratch[i] = (int16_t)(xr[i] - p->in_zp);
        eo_reorder(scratch, p->k);
        for (o = 0; o + 1 < p->n; o += 2) {
            int32_t a0 = p->bias ? p->bias[o] : 0;
            int32_t a1 = p->bias ? p->bias[o + 1] : 0;
            eo_dot2(scratch, p->weights + (size_t)o * p->k, p->weights + (size_t)(o + 1) * p->k,
                    p->k, &a0, &a1);
            out[o] = (int8_t)eo_clamp(eo_mbqm(a0, p->mult[o], p->shift[o]) + p->out_zp,
                                      p->act_min, p->act_max);
            out[o + 1] = (int8_t)eo_clamp(
                eo_mbqm(a1, p->mult[o + 1], p->shift[o + 1]) + p->out_zp, p->act_min,
                p->act_max);
        }
        for (; o < p->n; o++) {
            const int32_t acc =
                eo_dot(scratch, p->weights + (size_t)o * p->k, p->k, p->bias ? p->bias[o] : 0);
            out[o] = (int8_t)eo_clamp(eo_mbqm(acc, p->mult[o], p->shift[o]) + p->out_zp,
                                      p->act_min, p->act_max);
        }
    }
}

static int32_t eo_binary_one(const eo_binary_params *p, int32_t a, int32_t b) {
    int32_t v;
    if (p->kind == 2) {
        v = p->out_zp + eo_mbqm((a - p->a_zp) * (b - p->b_zp), p->out_mult, p->out_shift);
    } else {
        const int32_t x1 = (a - p->a_zp) * (1 << p->left_shift);
        const int32_t x2 = (b - p->b_zp) * (1 << p->left_shift);
        const int32_t y1 = eo_mbqm_small(x1, p->a_mult, p->a_shift);
        const int32_t y2 = eo_mbqm_small(x2, p->b_mult, p->b_shift);
        const int32_t raw = p->kind == 1 ? y1 - y2 : y1 + y2;
        v = eo_mbqm_small(raw, p->out_mult, p->out_shift) + p->out_zp;
    }
    return eo_clamp(v, p->act_min, p->act_max);
}

/* elementwise::tflite_binary (Add/Sub: TFLite's 8-bit general path; Mul). Safe in
 * place (y == a or y == b) when not broadcasting: element i is read before written. */
void eo_binary_s8(const eo_binary_params *p, const int8_t *a, const int8_t *b, int8_t *y) {
    int32_t i, d;
    if (!p->broadcast) {
        for (i = 0; i < p->count; i++) y[i] = (int8_t)eo_binary_one(p, a[i], b[i]);
        return;
    } else {
        int32_t idx[EO_MAX_RANK] = {0};
        int32_t ia = 0, ib = 0;
        for (i = 0; i < p->count; i++) {
            y[i] = (int8_t)eo_binary_one(p, a[ia], b[ib]);
            for (d = p->rank - 1; d >= 0; d--) {
                idx[d]++;
                ia += p->a_stride[d];
                ib += p->b_stride[d];
                if (idx[d] < p->out_shape[d]) break;
                ia -= p->a_stride[d] * p->out_shape[d];
                ib -= p->b_stride[d] * p->out_shape[d];
                idx[d] = 0;
            }
        }
    }
}

/* pool::tflite_pool: the divisor counts in-bounds elements; rounding_div_away. */
void eo_pool_s8(const eo_pool_params *p, const int8_t *x, int8_t *y) {
    int32_t n, oy, ox, c, iy, ix;
    for (n = 0; n < p->n; n++) {
        for (oy = 0; oy < p->oh; oy++) {
            const int32_t y0 = oy * p->stride_h - p->pad_h;
            const int32_t ys = y0 > 0 ? y0 : 0;
            const int32_t ye = y0 + p->kh < p->ih ? y0 + p->kh : p->ih;
            for (ox = 0; ox < p->ow; ox++) {
                const int32_t x0 = ox * p->stride_w - p->pad_w;
                const int32_t xs = x0 > 0 ? x0 : 0;
                const int32_t xe = x0 + p->kw < p->iw ? x0 + p->kw : p->iw;
                const int32_t count = (ye - ys) * (xe - xs);
                int8_t *out = y + (((size_t)n * p->oh + oy) * p->ow + ox) * p->c;
                for (c = 0; c < p->c; c++) {
                    int32_t acc = p->is_max ? INT32_MIN : 0;
                    for (iy = ys; iy < ye; iy++) {
                        const int8_t *row = x + (((size_t)n * p->ih + iy) * p->iw) * p->c + c;
                        for (ix = xs; ix < xe; ix++) {
                            const int32_t v = row[(size_t)ix * p->c];
                            if (p->is_max) {
                                if (v > acc) acc = v;
                            } else {
                                acc += v;
                            }
                        }
                    }
                    if (!p->is_max) {
                        acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    }
                    out[c] = (int8_t)eo_clamp(acc, p->act_min, p->act_max);
                }
            }
        }
    }
}

/* ---- gemmlowp fixed-point transcendental functions (fixedpoint.rs) ---- */

static int32_t eo_sat_rounding_mul_pot(int32_t x, int32_t exponent) {
    if (exponent > 0) {
        const int32_t min = INT32_MIN >> exponent;
        const int32_t max = INT32_MAX >> exponent;
        if (x > max) return INT32_MAX;
        if (x < min) return INT32_MIN;
        return eo_shl(x, exponent);
    }
    if (exponent < 0) return eo_rounding_divide_by_pot(x, -exponent);
    return x;
}

static int32_t eo_exp_on_interval(int32_t a) {
    const int32_t constant_term = 1895147668;
    const int32_t constant_1_over_3 = 715827883;
    const int32_t xx = eo_wadd(a, 1 << 28);
    const int32_t x2 = eo_srdhm(xx, xx);
    const int32_t x3 = eo_srdhm(x2, xx);
    const int32_t x4 = eo_srdhm(x2, x2);
    const int32_t x4_over_4 = eo_rounding_divide_by_pot(x4, 2);
    const int32_t poly = eo_rounding_divide_by_pot(
        eo_wadd(eo_srdhm(eo_wadd(x4_over_4, x3), constant_1_over_3), x2), 1);
    return eo_wadd(constant_term, eo_srdhm(constant_term, eo_wadd(xx, poly)));
}

/* exp_on_negative_values with 5 integer bits (the reference softmax's Q5.26). */
static int32_t eo_exp_on_negative_values_q5(int32_t a) {
    static const int32_t multipliers[7] = {1672461947, 1302514674, 790015084, 290630308,
                                           39332535,   720401,     242};
    const int32_t fractional_bits = 26;
    const int32_t one_quarter = (int32_t)1 << (fractional_bits - 2);
    const int32_t mask = one_quarter - 1;
    const int32_t amq = eo_wsub(a & mask, one_quarter);
    int32_t result = eo_exp_on_interval(eo_sat_rounding_mul_pot(amq, 5));
    const int32_t remainder = eo_wsub(amq, a);
    int32_t k;
    for (k = 0; k < 7; k++) {
        const int32_t shift_amount = fractional_bits + (k - 2);
        const int32_t m = (remainder & ((int32_t)1 << shift_amount)) != 0 ? -1 : 0;
        result = (m & eo_srdhm(result, multipliers[k])) | (~m & result);
    }
    return a == 0 ? INT32_MAX : result;
}

static int32_t eo_rounding_half_sum(int32_t a, int32_t b) {
    const int64_t sum = (int64_t)a + (int64_t)b;
    const int64_t sign = sum >= 0 ? 1 : -1;
    return (int32_t)((sum + sign) / 2);
}

static int32_t eo_one_over_one_plus_x(int32_t a) {
    const int32_t half_denominator = eo_rounding_half_sum(a, INT32_MAX);
    const int32_t c48_17 = 1515870810;
    const int32_t cneg32_17 = -1010580540;
    const int32_t one_q2 = (int32_t)1 << 29;
    int32_t x = eo_wadd(c48_17, eo_srdhm(half_denominator, cneg32_17));
    int32_t i;
    for (i = 0; i < 3; i++) {
        const int32_t hdx = eo_srdhm(half_denominator, x);
        const int32_t one_minus = eo_wsub(one_q2, hdx);
        x = eo_wadd(x, eo_sat_rounding_mul_pot(eo_srdhm(x, one_minus), 2));
    }
    return eo_sat_rounding_mul_pot(x, 1);
}

static int32_t eo_clz32(uint32_t x) {
    int32_t n = 0;
    if (x == 0) return 32;
    while (!(x & 0x80000000u)) {
        x <<= 1;
        n++;
    }
    return n;
}

/* activation::softmax, Numerics::Reference (TFLite reference int8 softmax). */
void eo_softmax_s8(const eo_softmax_params *p, const int8_t *x, int8_t *y) {
    int32_t r, i;
    for (r = 0; r < p->rows; r++) {
        const int8_t *row = x + (size_t)r * p->depth;
        int8_t *out = y + (size_t)r * p->depth;
        int32_t max_in_row = -128, sum_of_exps = 0, headroom, num_bits_over_unit, shifted_scale,
                out_shift;
        for (i = 0; i < p->depth; i++)
            if (row[i] > max_in_row) max_in_row = row[i];
        for (i = 0; i < p->depth; i++) {
            const int32_t diff = row[i] - max_in_row;
            if (diff >= p->diff_min) {
                const int32_t rescaled = eo_srdhm(
                    eo_shl(diff, p->input_left_shift > 0 ? p->input_left_shift : 0),
                    p->input_multiplier);
                sum_of_exps = eo_wadd(sum_of_exps, eo_rounding_divide_by_pot(
                                                       eo_exp_on_negative_values_q5(rescaled), 12));
            }
        }
        /* fixedpoint::get_reciprocal(sum_of_exps, 12). */
        headroom = eo_clz32((uint32_t)sum_of_exps);
        num_bits_over_unit = 12 - headroom;
        shifted_scale = eo_one_over_one_plus_x(
            (int32_t)(((uint32_t)sum_of_exps << headroom) - ((uint32_t)1 << 31)));
        out_shift = eo_clamp(num_bits_over_unit + 31 - 8, 0, 31);
        for (i = 0; i < p->depth; i++) {
            const int32_t diff = row[i] - max_in_row;
            if (diff >= p->diff_min) {
                const int32_t rescaled = eo_srdhm(
                    eo_shl(diff, p->input_left_shift > 0 ? p->input_left_shift : 0),
                    p->input_multiplier);
                const int32_t e = eo_exp_on_negative_values_q5(rescaled);
                const int32_t unsat =
                    eo_rounding_divide_by_pot(eo_srdhm(shifted_scale, e), out_shift);
                out[i] = (int8_t)eo_clamp(unsat - 128, -128, 127);
            } else {
                out[i] = -128;
            }
        }
    }
}

void eo_lut_s8(const eo_lut_params *p, const int8_t *x, int8_t *y) {
    int32_t i;
    for (i = 0; i < p->count; i++) y[i] = p->table[(int32_t)x[i] + 128];
}

void eo_dequantize_s8(const eo_dequant_params *p, const int8_t *x, float *y) {
    int32_t i;
    for (i = 0; i < p->count; i++) y[i] = p->table[(int32_t)x[i] + 128];
}

void eo_quantize_f32_s8(const eo_quant_params *p, const float *x, int8_t *y) {
    int32_t i;
    for (i = 0; i < p->count; i++) {
        float r = x[i] / p->scale;
        int32_t q;
        /* Saturate before the cast (out-of-range float -> int is undefined in C); NaN
           becomes 0, as the runtime's saturating cast gives; anything past +-1e6
           clamps to the same int8 bound. Then round half away from zero without libm:
           the truncation and the remainder are exact for |r| <= 1e6 < 2^24. */
        if (r != r) {
            q = 0;
        } else if (r > 1e6f) {
            q = 1000000;
        } else if (r < -1e6f) {
            q = -1000000;
        } else {
            float d;
            q = (int32_t)r;
            d = r - (float)q;
            if (d >= 0.5f) q++;
            else if (d <= -0.5f) q--;
        }
        q += p->zero_point;
        y[i] = (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
    }
}

void eo_transpose_s8(const eo_transpose_params *p, const int8_t *x, int8_t *y) {
    int32_t idx[EO_MAX_RANK] = {0};
    int32_t i, d, off = 0;
    for (i = 0; i < p->count; i++) {
        y[i] = x[off];
        for (d = p->rank - 1; d >= 0; d--) {
            idx[d]++;
            off += p->in_stride[d];
            if (idx[d] < p->out_shape[d]) break;
            off -= p->in_stride[d] * p->out_shape[d];
            idx[d] = 0;
        }
    }
}

/* movement::pad, constant mode. */
void eo_pad_s8(const eo_pad_params *p, const int8_t *x, int8_t *y) {
    int32_t idx[EO_MAX_RANK] = {0};
    int32_t count = 1, i, d;
    for (d = 0; d < p->rank; d++) count *= p->out_shape[d];
    for (i = 0; i < count; i++) {
        int32_t off = 0, inside = 1;
        for (d = 0; d < p->rank; d++) {
            const int32_t s = idx[d] - p->pad_before[d];
            if (s < 0 || s >= p->in_shape[d]) {
                inside = 0;
                break;
            }
            off = off * p->in_shape[d] + s;
        }
        y[i] = inside ? x[off] : p->fill;
        for (d = p->rank - 1; d >= 0; d--) {
            if (++idx[d] < p->out_shape[d]) break;
            idx[d] = 0;
        }
    }
}

/* movement::concat: one input's slices into the output. */
void eo_concat_part_s8(const eo_concat_part *p, const int8_t *x, int8_t *y) {
    int32_t o, i;
    for (o = 0; o < p->outer; o++) {
        const int8_t *src = x + (size_t)o * p->chunk;
        int8_t *dst = y + (size_t)o * p->out_chunk + p->offset;
        for (i = 0; i < p->chunk; i++) {
            dst[i] = p->table ? p->table[(int32_t)src[i] + 128]
                              : (int8_t)eo_clamp(src[i], p->act_min, p->act_max);
        }
    }
}

/* movement::strided_slice / slice: a strided gather. The generator drops the dims of
 * extent 1 and merges contiguous ones, so the last dim is often a plain run. */
void eo_slice_s8(const eo_slice_params *p, const int8_t *x, int8_t *y) {
    int32_t idx[EO_MAX_RANK] = {0};
    int32_t i, d, off = p->base;
    const int32_t last = p->rank - 1;
    if (p->count == 0) return;
    if (p->rank == 0) {
        y[0] = x[off];
        return;
    }
    {
        /* One run of the last dim at a time; the odometer walks the others. */
        const int32_t run = p->out_shape[last], step = p->in_stride[last];
        for (i = 0; i < p->count; i += run) {
            int32_t j;
            if (step == 1) {
                memcpy(y + i, x + off, (size_t)run);
            } else {
                for (j = 0; j < run; j++) y[i + j] = x[off + j * step];
            }
            for (d = last - 1; d >= 0; d--) {
                idx[d]++;
                off += p->in_stride[d];
                if (idx[d] < p->out_shape[d]) break;
                off -= p->in_stride[d] * p->out_shape[d];
                idx[d] = 0;
            }
        }
    }
}

/* movement::split: one output's slices of the input. */
void eo_split_part_s8(const eo_split_part *p, const int8_t *x, int8_t *y) {
    int32_t o;
    for (o = 0; o < p->outer; o++) {
        memcpy(y + (size_t)o * p->chunk, x + (size_t)o * p->in_chunk + p->offset,
               (size_t)p->chunk);
    }
}

/* movement::tile: every output row (last dim) repeats one input row. */
void eo_tile_s8(const eo_tile_params *p, const int8_t *x, int8_t *y) {
    int32_t idx[EO_MAX_RANK] = {0};
    int32_t in_stride[EO_MAX_RANK];
    int32_t rows = 1, r, d, j;
    const int32_t last = p->rank - 1;
    int32_t in_row, out_row;
    if (p->rank == 0) {
        y[0] = x[0];
        return;
    }
    in_row = p->in_shape[last];
    out_row = p->out_shape[last];
    in_stride[last] = 1;
    for (d = last - 1; d >= 0; d--) in_stride[d] = in_stride[d + 1] * p->in_shape[d + 1];
    for (d = 0; d < last; d++) rows *= p->out_shape[d];
    if (in_row == 0) return;
    for (r = 0; r < rows; r++) {
        int32_t src = 0;
        for (d = 0; d < last; d++) src += (idx[d] % p->in_shape[d]) * in_stride[d];
        for (j = 0; j < out_row; j += in_row) memcpy(y + j, x + src, (size_t)in_row);
        y += out_row;
        for (d = last - 1; d >= 0; d--) {
            if (++idx[d] < p->out_shape[d]) break;
            idx[d] = 0;
        }
    }
}

/* ComputeInterpolationValuesInteger: the scaled source coordinate and its two taps.
 * C's division truncates toward zero, so a negative half-pixel coordinate (first
 * row/column) gives lower tap 0. The lower tap is also bounded by size - 1 (TFLite
 * leaves it unbounded; it only matters for extreme upscales, where TFLite would read
 * past the input), as the runtime (movement::resize_bilinear) does. */
static void eo_resize_taps(int32_t v, int32_t scale, int32_t half, int32_t size,
                           int32_t *scaled, int32_t *lo, int32_t *hi) {
    const int32_t s = half ? v * scale + scale / 2 - (1 << 9) : v * scale;
    int32_t l = s / (1 << 10), h = (s + (1 << 10) - 1) / (1 << 10);
    if (l < 0) l = 0;
    if (l > size - 1) l = size - 1;
    if (h > size - 1) h = size - 1;
    if (h < 0) h = 0;
    *scaled = s;
    *lo = l;
    *hi = h;
}

/* movement::resize_bilinear (TFLite ResizeBilinearInteger, which TFLite Micro runs):
 * the weighted sum in int64 as TFLite computes it, rounded half away from zero. */
void eo_resize_bilinear_s8(const eo_resize_bilinear_params *p, const int8_t *x, int8_t *y) {
    int32_t b, oy, ox, ch;
    const int32_t one = 1 << 10;
    for (b = 0; b < p->n; b++) {
        const int8_t *xb = x + (size_t)b * p->ih * p->iw * p->c;
        for (oy = 0; oy < p->oh; oy++) {
            int32_t sy, y0, y1, dy;
            eo_resize_taps(oy, p->scale_h, p->half_pixel, p->ih, &sy, &y0, &y1);
            dy = sy - one * y0;
            for (ox = 0; ox < p->ow; ox++) {
                int32_t sx, x0, x1, dx;
                const int8_t *r00, *r10, *r01, *r11;
                int32_t w00, w10, w01, w11;
                eo_resize_taps(ox, p->scale_w, p->half_pixel, p->iw, &sx, &x0, &x1);
                dx = sx - one * x0;
                /* Each weight is a product of two factors of at most ~1.5 * 2^10: it
                 * fits int32; the sum of the four products is taken in int64. */
                w00 = (one - dy) * (one - dx);
                w10 = dy * (one - dx);
                w01 = (one - dy) * dx;
                w11 = dy * dx;
                r00 = xb + ((size_t)y0 * p->iw + x0) * p->c;
                r10 = xb + ((size_t)y1 * p->iw + x0) * p->c;
                r01 = xb + ((size_t)y0 * p->iw + x1) * p->c;
                r11 = xb + ((size_t)y1 * p->iw + x1) * p->c;
                for (ch = 0; ch < p->c; ch++) {
                    const int64_t v = (int64_t)r00[ch] * w00 + (int64_t)r10[ch] * w10 +
                                      (int64_t)r01[ch] * w01 + (int64_t)r11[ch] * w11;
                    const int64_t round = v > 0 ? ((int64_t)1 << 19) : -((int64_t)1 << 19);
                    int64_t q = (v + round) / ((int64_t)1 << 20);
                    if (q < -128) q = -128;
                    if (q > 127) q = 127;
                    *y++ = (int8_t)q;
                }
            }
        }
    }
}

/* reduce::mean_generic (Numerics::Tflm): TFLite Micro's QuantizedMeanOrSum (mean). The
 * sums wrap as the int32 accumulators of TFLM do; the order of the additions does not
 * matter for integers. */
void eo_mean_s8(const eo_mean_params *p, const int8_t *x, int8_t *y) {
    int32_t kidx[EO_MAX_RANK] = {0};
    int32_t i, j, d, base = 0;
    for (i = 0; i < p->count; i++) {
        int32_t ridx[EO_MAX_RANK] = {0};
        int32_t off = base, sum = 0;
        for (j = 0; j < p->red_count; j++) {
            sum = eo_wadd(sum, x[off]);
            for (d = p->red_rank - 1; d >= 0; d--) {
                ridx[d]++;
                off += p->red_stride[d];
                if (ridx[d] < p->red_shape[d]) break;
                off -= p->red_stride[d] * p->red_shape[d];
                ridx[d] = 0;
            }
        }
        y[i] = (int8_t)eo_clamp(
            eo_wadd(eo_mbqm(eo_wsub(sum, p->zp_sum), p->mult, p->shift), p->out_zp), -128,
            127);
        for (d = p->kept_rank - 1; d >= 0; d--) {
            kidx[d]++;
            base += p->kept_stride[d];
            if (kidx[d] < p->kept_shape[d]) break;
            base -= p->kept_stride[d] * p->kept_shape[d];
            kidx[d] = 0;
        }
    }
}

/* reference::reduce (Numerics::Tflm: float sums) / TFLM's float Mean: per output, the
 * float sum from 0 of its elements in input order, divided by their count. */
void eo_mean_f32(const eo_mean_params *p, const float *x, float *y) {
    int32_t kidx[EO_MAX_RANK] = {0};
    int32_t i, j, d, base = 0;
    for (i = 0; i < p->count; i++) {
        int32_t ridx[EO_MAX_RANK] = {0};
        int32_t off = base;
        float sum = 0.0f;
        for (j = 0; j < p->red_count; j++) {
            sum += x[off];
            for (d = p->red_rank - 1; d >= 0; d--) {
                ridx[d]++;
                off += p->red_stride[d];
                if (ridx[d] < p->red_shape[d]) break;
                off -= p->red_stride[d] * p->red_shape[d];
                ridx[d] = 0;
            }
        }
        y[i] = sum / (float)p->red_count;
        for (d = p->kept_rank - 1; d >= 0; d--) {
            kidx[d]++;
            base += p->kept_stride[d];
            if (kidx[d] < p->kept_shape[d]) break;
            base -= p->kept_stride[d] * p->kept_shape[d];
            kidx[d] = 0;
        }
    }
}

/* fc::batch_matmul (Numerics::Tflm): each output is a dot product of a row of a and a
 * column of b. The column (zero point subtracted) goes to the int16 scratch once and
 * meets every row of a through eo_dot (SMLAD on DSP cores); the row's zero point is
 * taken out afterwards: sum (a - za)(b - zb) = sum a (b - zb) - za sum (b - zb), exact in
 * 32-bit integers as TFLM's sum. */
void eo_batch_matmul_s8(const eo_batch_matmul_params *p, const int8_t *a, const int8_t *b,
                        int8_t *y, int16_t *scratch) {
    int32_t idx[EO_MAX_RANK] = {0};
    int32_t t, i, j, kk, d, aoff = 0, boff = 0;
    for (t = 0; t < p->batches; t++) {
        const int8_t *A = a + aoff;
        const int8_t *B = b + boff;
        int8_t *Y = y + (size_t)t * p->m * p->n;
        for (j = 0; j < p->n; j++) {
            int32_t colsum = 0;
            for (kk = 0; kk < p->k; kk++) {
                scratch[kk] = (int16_t)(B[(size_t)kk * p->n + j] - p->b_zp);
                colsum += scratch[kk];
            }
            eo_reorder(scratch, p->k);
            for (i = 0; i < p->m; i++) {
                const int32_t acc =
                    eo_wsub(eo_dot(scratch, A + (size_t)i * p->k, p->k, 0), p->a_zp * colsum);
                Y[(size_t)i * p->n + j] = (int8_t)eo_clamp(
                    eo_mbqm(acc, p->mult, p->shift) + p->out_zp, p->act_min, p->act_max);
            }
        }
        for (d = p->batch_rank - 1; d >= 0; d--) {
            idx[d]++;
            aoff += p->a_stride[d];
            boff += p->b_stride[d];
            if (idx[d] < p->batch_shape[d]) break;
            aoff -= p->a_stride[d] * p->batch_shape[d];
            boff -= p->b_stride[d] * p->batch_shape[d];
            idx[d] = 0;
        }
    }
}

static float eo_binary_f32_one(int32_t kind, float a, float b) {
    switch (kind) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    default: return a / b;
    }
}

/* reference::binary on f32 / TFLM's float ADD, SUB, MUL, DIV (one rounding each). */
void eo_binary_f32(const eo_binary_f32_params *p, const float *a, const float *b, float *y) {
    int32_t i, d;
    if (!p->broadcast) {
        for (i = 0; i < p->count; i++) y[i] = eo_binary_f32_one(p->kind, a[i], b[i]);
    } else {
        int32_t idx[EO_MAX_RANK] = {0};
        int32_t ao = 0, bo = 0;
        for (i = 0; i < p->count; i++) {
            y[i] = eo_binary_f32_one(p->kind, a[ao], b[bo]);
            for (d = p->rank - 1; d >= 0; d--) {
                idx[d]++;
                ao += p->a_stride[d];
                bo += p->b_stride[d];
                if (idx[d] < p->out_shape[d]) break;
                ao -= p->a_stride[d] * p->out_shape[d];
                bo -= p->b_stride[d] * p->out_shape[d];
                idx[d] = 0;
            }
        }
    }
    if (p->clamp) {
        for (i = 0; i < p->count; i++) {
            float v = y[i] < p->act_min ? p->act_min : y[i];
            y[i] = p->act_max < v ? p->act_max : v;
        }
    }
}

/* Correctly rounded square root in integer arithmetic: the 24-bit significand of the
 * result is the integer square root of the (exponent-evened) significand scaled by 2^23,
 * rounded to nearest (a tie is impossible: the square of r + 1/2 is never an integer). */
float eo_sqrtf(float x) {
    uint32_t bits, r = 0, bit;
    uint64_t m, rem;
    (void)rem;
    int32_t e;
    memcpy(&bits, &x, 4);
    if ((bits & 0x7fffffffu) == 0) return x;               /* +-0 */
    if (bits >> 31) return (x - x) / (x - x);              /* negative (or -NaN): NaN */
    if ((bits >> 23) >= 0xffu) return x;                   /* +inf, NaN */
    e = (int32_t)(bits >> 23);
    m = bits & 0x7fffffu;
    if (e == 0) { /* subnormal: normalize */
        e = 1;
        while (!(m & 0x800000u)) {
            m <<= 1;
            e--;
        }
    } else {
        m |= 0x800000u;
    }
    e -= 127; /* x = m / 2^23 * 2^e, m in [2^23, 2^24) */
    if (e & 1) {
        m <<= 1;
        e -= 1;
    }
    m <<= 23; /* sqrt(x) = sqrt(m) / 2^23 * 2^(e/2); m in [2^46, 2^48) */
    rem = m;
    for (bit = 1u << 24; bit; bit >>= 1) { /* floor(sqrt(m)), 25 bits at most */
        const uint64_t trial = (uint64_t)(r | bit) * (uint64_t)(r | bit);
        if (trial <= m) r |= bit;
    }
    rem = m - (uint64_t)r * r;
    if (rem > r) r++;
    bits = ((uint32_t)(e / 2 + 126) << 23) + r;
    memcpy(&x, &bits, 4);
    return x;
}

/* reference::unary on f32 / TFLM's float SQRT. */
void eo_unary_f32(const eo_unary_f32_params *p, const float *x, float *y) {
    int32_t i;
    for (i = 0; i < p->count; i++) y[i] = eo_sqrtf(x[i]);
}

void eo_copy(const void *x, void *y, size_t bytes) {
    if (x != y) memmove(y, x, bytes);
}
