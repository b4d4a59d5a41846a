/*
 * Scalar number formats shared by the C reference and the CUDA kernels
 * (host and device), so both produce the same bits: IEEE half, bfloat16 and
 * FP8 E4M3 (the "fn" variant: no infinities, 0x7f/0xff are NaN, max 448).
 * Every float -> narrow conversion rounds to nearest, ties to even.
 * On the device the hardware conversions stand in for the bit manipulation:
 * the same bits for every input but NaN, whose payload may differ (the
 * formats never store a NaN: inputs are finite and FP8 saturates).
 */
#ifndef IKV_NUMERIC_H
#define IKV_NUMERIC_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#define IKV_HD __host__ __device__ __forceinline__
#else
#define IKV_HD static inline
#endif

#define IKV_FP8_E4M3_MAX 448.0f

IKV_HD uint32_t ikv_f32_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

IKV_HD float ikv_bits_f32(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

/* float -> IEEE half; overflow gives infinity, NaN stays NaN. */
IKV_HD uint16_t ikv_f32_to_f16(float f) {
#ifdef __CUDA_ARCH__
  return __half_as_ushort(__float2half_rn(f));
#else
  uint32_t x = ikv_f32_bits(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u);
  if (x >= 0x477ff000u) return sign | 0x7c00u; /* rounds past 65504 */
  if (x < 0x38800000u) {                        /* below 2^-14: half subnormal */
    float q = rintf(ikv_bits_f32(x) * 16777216.0f); /* units of 2^-24, exact scaling */
    return sign | (uint16_t)q;                       /* q == 1024 is the smallest normal */
  }
  x += 0xfffu + ((x >> 13) & 1u); /* round the 13 dropped mantissa bits to even */
  return sign | (uint16_t)((x - 0x38000000u) >> 13);
#endif
}

IKV_HD float ikv_f16_to_f32(uint16_t h) {
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half(h));
#else
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {
    float v = (float)mant * 5.9604644775390625e-8f; /* 2^-24 */
    return sign ? -v : v;
  }
  if (exp == 31) return ikv_bits_f32(sign | 0x7f800000u | (mant << 13));
  return ikv_bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
#endif
}

/* float -> the nearest half at or below (at or above) it: bounds that never
 * cut the value they bound. Beyond the half range that is -inf (+inf) on
 * the open side and +-65504 on the other; NaN stays NaN. A step from +0
 * down (-0 up) cannot happen: round-to-nearest keeps the sign. */
IKV_HD uint16_t ikv_f32_to_f16_down(float f) {
  const uint16_t h = ikv_f32_to_f16(f);
  if (!(ikv_f16_to_f32(h) > f)) return h;
  return (h & 0x8000u) ? (uint16_t)(h + 1u) : (uint16_t)(h - 1u); /* one step toward -inf */
}
IKV_HD uint16_t ikv_f32_to_f16_up(float f) {
  const uint16_t h = ikv_f32_to_f16(f);
  if (!(ikv_f16_to_f32(h) < f)) return h;
  return (h & 0x8000u) ? (uint16_t)(h - 1u) : (uint16_t)(h + 1u); /* one step toward +inf */
}

/* float -> bfloat16; NaN stays NaN (quiet). */
IKV_HD uint16_t ikv_f32_to_bf16(float f) {
#ifdef __CUDA_ARCH__
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
#else
  uint32_t x = ikv_f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
#endif
}

IKV_HD float ikv_bf16_to_f32(uint16_t b) { return ikv_bits_f32((uint32_t)b << 16); }

/* float -> FP8 E4M3 with saturation: finite input never becomes NaN;
 * |x| beyond 448 (and infinities) give +-448; NaN gives NaN (0x7f). */
IKV_HD uint8_t ikv_f32_to_fp8_e4m3(float f) {
#ifdef __CUDA_ARCH__ /* cvt.rn.satfinite: the same rounding and saturation */
  return (uint8_t)__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3);
#else
  uint32_t x = ikv_f32_bits(f);
  uint8_t sign = (uint8_t)((x >> 24) & 0x80u);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fu;
  float a = fabsf(f);
  if (a >= IKV_FP8_E4M3_MAX) return sign | 0x7eu;
  if (a < 0.015625f) { /* below 2^-6: subnormal, units of 2^-9 */
    return sign | (uint8_t)rintf(a * 512.0f); /* 8 is the smallest normal, 0x08 */
  }
  int e = (int)((ikv_f32_bits(a) >> 23) & 0xffu) - 127; /* -6 .. 8 */
  float m = ikv_bits_f32((ikv_f32_bits(a) & 0x007fffffu) | 0x3f800000u); /* [1, 2) */
  int mant = (int)rintf((m - 1.0f) * 8.0f);
  if (mant == 8) {
    mant = 0;
    e++;
  }
  if (e > 8 || (e == 8 && mant > 6)) return sign | 0x7eu; /* saturate at 448 */
  return sign | (uint8_t)(((e + 7) << 3) | mant);
#endif
}

IKV_HD float ikv_fp8_e4m3_to_f32(uint8_t c) {
#ifdef __CUDA_ARCH__ /* exact through half */
  return __half2float(__half(__nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)c, __NV_E4M3)));
#else
  uint32_t exp = (c >> 3) & 0xfu, mant = c & 0x7u;
  float v;
  if (exp == 15 && mant == 7) return ikv_bits_f32(0x7fc00000u);
  if (exp == 0)
    v = (float)mant * 0.001953125f; /* 2^-9 */
  else
    v = ikv_bits_f32(((exp + 120u) << 23) | (mant << 20));
  return (c & 0x80u) ? -v : v;
#endif
}

#endif /* IKV_NUMERIC_H */
