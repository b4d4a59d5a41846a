/*
 * Quantization rules of the page formats (layout version 1), one value or one
 * group at a time, shared by the C reference and the CUDA kernels so both
 * write the same bytes. A "group" is what one scale covers: a (page, KV head)
 * tile for FP8; a channel of the page's keys or one token's values for
 * INT8 and INT4.
 *
 *   FP8 E4M3  x ~ e4m3(c) * s,        s = amax / 448           (float32 s)
 *   INT8      x ~ q * s, q in [-127, 127], s = amax / 127      (float32 s)
 *   INT4      x ~ z + q * s, q in [0, 15], s = (hi - lo) / 15, z = lo
 *             (s and z stored as fp16: z is the value of code 0)
 * A zero scale encodes every value as code 0 (an all-zero group).
 */
#ifndef IKV_QUANT_H
#define IKV_QUANT_H

#include "kernels/numeric.h"

#define IKV_INT8_QMAX 127.0f
#define IKV_INT4_QMAX 15.0f
/* INT4 keeps its scale and zero in fp16: inputs beyond this are refused. */
#define IKV_INT4_INPUT_MAX 30000.0f

IKV_HD uint8_t ikv_fp8_encode(float x, float scale) {
  return scale == 0.0f ? 0 : ikv_f32_to_fp8_e4m3(x / scale);
}
IKV_HD float ikv_fp8_decode(uint8_t c, float scale) { return ikv_fp8_e4m3_to_f32(c) * scale; }

IKV_HD int8_t ikv_int8_encode(float x, float scale) {
  if (scale == 0.0f) return 0;
  float q = rintf(x / scale);
  return (int8_t)fminf(fmaxf(q, -IKV_INT8_QMAX), IKV_INT8_QMAX);
}
IKV_HD float ikv_int8_decode(int8_t q, float scale) { return (float)q * scale; }

typedef struct ikv_int4_params {
  uint16_t scale, zero; /* fp16 bits */
} ikv_int4_params;

IKV_HD ikv_int4_params ikv_int4_fit(float lo, float hi) {
  ikv_int4_params p;
  p.zero = ikv_f32_to_f16(lo);
  p.scale = ikv_f32_to_f16((hi - lo) / IKV_INT4_QMAX);
  return p;
}
/* The range [lo, hi] the parameters cover. */
IKV_HD float ikv_int4_lo(ikv_int4_params p) { return ikv_f16_to_f32(p.zero); }
IKV_HD float ikv_int4_hi(ikv_int4_params p) {
  return ikv_f16_to_f32(p.zero) + IKV_INT4_QMAX * ikv_f16_to_f32(p.scale);
}
IKV_HD uint8_t ikv_int4_encode(float x, ikv_int4_params p) {
  float s = ikv_f16_to_f32(p.scale);
  if (s == 0.0f) return 0;
  float q = rintf((x - ikv_f16_to_f32(p.zero)) / s);
  return (uint8_t)fminf(fmaxf(q, 0.0f), IKV_INT4_QMAX);
}
IKV_HD float ikv_int4_decode(uint8_t q, ikv_int4_params p) {
  return ikv_f16_to_f32(p.zero) + (float)q * ikv_f16_to_f32(p.scale);
}

#endif /* IKV_QUANT_H */
