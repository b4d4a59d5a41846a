/*
 * Quantization rules of the page formats (layout version 1), one value or one
 * group at a time, shared by the C reference and the CUDA kernels so both
 * write the same bytes. A "group" is what one scale covers: a (page, KV head)
 * tile for FP8; a channel of the page's keys or one token's values for
 * INT8 and INT4.
 *
 *   FP8 E4M3  x ~ e4m3(c) * s,        s = amax * (1/448)       (float32 s)
 *   INT8      x ~ q * s, q in [-127, 127], s = amax * (1/127)  (float32 s)
 *   INT4      x ~ z + q * s, q in [0, 15], s = (hi - lo) * (1/15), z = lo
 *             (s and z stored as fp16: z is the value of code 0)
 * Codes come from x * (1 / s) (INT4: (x - z) * (1 / s)), rounded as each
 * format rounds. A zero scale encodes every value as code 0 (an all-zero
 * group).
 */
#ifndef IKV_QUANT_H
#define IKV_QUANT_H

#include "kernels/numeric.h"

#define IKV_INT8_QMAX 127.0f
#define IKV_INT4_QMAX 15.0f
/* INT4 keeps its scale and zero in fp16: inputs beyond this are refused. */
#define IKV_INT4_INPUT_MAX 30000.0f

/* A group's scale: its largest magnitude times the reciprocal of the
 * largest code (a float constant: multiplied, not divided, so every side
 * computes it in a couple of instructions and to the same bits). */
#define IKV_INT8_QMAX_INV 0x1.020408p-7f   /* float(1 / 127) */
#define IKV_FP8_E4M3_MAX_INV 0x1.24924ap-9f /* float(1 / 448) */
#define IKV_INT4_QMAX_INV 0x1.111112p-4f   /* float(1 / 15) */
IKV_HD float ikv_int8_scale(float amax) { return amax * IKV_INT8_QMAX_INV; }
IKV_HD float ikv_fp8_scale(float amax) { return amax * IKV_FP8_E4M3_MAX_INV; }

/* Encoding multiplies by the reciprocal of the scale: one division per
 * group, not per value (what the GPU needs to write at memory speed). The
 * reciprocal of a zero scale is 0 (every code 0); of a subnormal scale,
 * capped at FLT_MAX so that 0 * inverse stays 0. */
IKV_HD float ikv_scale_inverse(float scale) {
#ifdef __CUDA_ARCH__ /* correctly rounded like 1.0f / scale, without a general division */
  return scale == 0.0f ? 0.0f : fminf(__frcp_rn(scale), 3.4028234664e38f);
#else
  return scale == 0.0f ? 0.0f : fminf(1.0f / scale, 3.4028234664e38f);
#endif
}

IKV_HD uint8_t ikv_fp8_encode_by(float x, float inverse) {
  return inverse == 0.0f ? 0 : ikv_f32_to_fp8_e4m3(x * inverse);
}
IKV_HD uint8_t ikv_fp8_encode(float x, float scale) { return ikv_fp8_encode_by(x, ikv_scale_inverse(scale)); }
IKV_HD float ikv_fp8_decode(uint8_t c, float scale) { return ikv_fp8_e4m3_to_f32(c) * scale; }

/* Rounds a float in [-2^22, 2^22] to the nearest integer, ties to even, as
 * rintf does, by adding 1.5 * 2^23 (the add rounds away the fraction): on
 * the GPU full-rate float and integer adds instead of quarter-rate
 * conversions. */
#define IKV_ROUND_BIAS 12582912.0f /* 1.5 * 2^23: its bits are 0x4B400000 */
IKV_HD int32_t ikv_round_small(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_int(__fadd_rn(f, IKV_ROUND_BIAS)) - 0x4B400000;
#else
  return (int32_t)rintf(f);
#endif
}

/* Clamping before rounding gives what rounding before clamping gives: the
 * bounds are integers. */
IKV_HD int8_t ikv_int8_encode_by(float x, float inverse) {
  return (int8_t)ikv_round_small(fminf(fmaxf(x * inverse, -IKV_INT8_QMAX), IKV_INT8_QMAX));
}
IKV_HD int8_t ikv_int8_encode(float x, float scale) { return ikv_int8_encode_by(x, ikv_scale_inverse(scale)); }
IKV_HD float ikv_int8_decode(int8_t q, float scale) { return (float)q * scale; }

typedef struct ikv_int4_params {
  uint16_t scale, zero; /* fp16 bits */
} ikv_int4_params;

IKV_HD ikv_int4_params ikv_int4_fit(float lo, float hi) {
  ikv_int4_params p;
  p.zero = ikv_f32_to_f16(lo);
  p.scale = ikv_f32_to_f16((hi - lo) * IKV_INT4_QMAX_INV);
  return p;
}
/* The range [lo, hi] the parameters cover. */
IKV_HD float ikv_int4_lo(ikv_int4_params p) { return ikv_f16_to_f32(p.zero); }
IKV_HD float ikv_int4_hi(ikv_int4_params p) {
  return ikv_f16_to_f32(p.zero) + IKV_INT4_QMAX * ikv_f16_to_f32(p.scale);
}
/* zero: the value of code 0 as float; inverse: ikv_scale_inverse of the scale */
/* (x - zero) / scale clamped to the codes' range, before rounding */
IKV_HD float ikv_int4_clamped(float x, float zero, float inverse) {
  return fminf(fmaxf((x - zero) * inverse, 0.0f), IKV_INT4_QMAX);
}
IKV_HD uint8_t ikv_int4_encode_by(float x, float zero, float inverse) {
  return (uint8_t)ikv_round_small(ikv_int4_clamped(x, zero, inverse));
}
IKV_HD uint8_t ikv_int4_encode(float x, ikv_int4_params p) {
  return ikv_int4_encode_by(x, ikv_f16_to_f32(p.zero), ikv_scale_inverse(ikv_f16_to_f32(p.scale)));
}
IKV_HD float ikv_int4_decode(uint8_t q, ikv_int4_params p) {
  return ikv_f16_to_f32(p.zero) + (float)q * ikv_f16_to_f32(p.scale);
}

#endif /* IKV_QUANT_H */
