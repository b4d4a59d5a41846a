/* Page formats through the C reference: round trips per format and geometry,
 * input types, special values, write_kv in steps, requantize, error paths. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/numeric.h"
#include "kernels/quantize_ref.h"
#include "tests/cmocka_all.h"
#include "tests/test_rng.h"

/* Per-format bound on |x_hat - x| relative to the group's largest |x|:
 * fp16 2^-11 relative to x, bf16 2^-8; fp8 carries 3 mantissa bits (2^-4
 * relative) plus its subnormal step; int8 half a step of amax/127; int4 half
 * a step of range/15 plus the fp16 rounding of scale and zero. */
static double bound(ikv_precision p, double x, double amax) {
  switch (p) {
    case IKV_FP16: return fabs(x) * 0x1.0p-11 + 1e-7;
    case IKV_BF16: return fabs(x) * 0x1.0p-8 + 1e-30;
    case IKV_FP8_E4M3: return fabs(x) * 0x1.0p-4 + amax / 448.0 * 0x1.0p-9 + 1e-12;
    case IKV_INT8: return amax / 127.0 * 0.5 * 1.0001 + 1e-12;
    default: return 2.0 * amax / 15.0 * (0.5 + 0x1.0p-10) + amax * 0x1.0p-10;
  }
}

/* amax[t][h][c] = the largest |x| of the group that scales x[t][h][c]
 * (x is [n][H][D]): the whole (head) tile for fp8, the channel for keys, the
 * token for values. */
static void group_amax(ikv_precision p, int keys, const float *x, uint32_t n, uint32_t H, uint32_t D,
                       double *amax) {
  for (uint32_t h = 0; h < H; h++)
    for (uint32_t t = 0; t < n; t++)
      for (uint32_t c = 0; c < D; c++) {
        double a = 0;
        uint32_t t0 = 0, t1 = n, c0 = 0, c1 = D;
        if (p != IKV_FP8_E4M3 && keys) c0 = c, c1 = c + 1;
        if (p != IKV_FP8_E4M3 && !keys) t0 = t, t1 = t + 1;
        if (t > 0 && (p == IKV_FP8_E4M3 || keys)) { /* same group as the row above */
          amax[((size_t)t * H + h) * D + c] = amax[((size_t)(t - 1) * H + h) * D + c];
          continue;
        }
        for (uint32_t tt = t0; tt < t1; tt++)
          for (uint32_t cc = c0; cc < c1; cc++) a = fmax(a, fabs(x[((size_t)tt * H + h) * D + cc]));
        amax[((size_t)t * H + h) * D + c] = a;
      }
}

static void check_round_trip(ikv_precision p, uint32_t P, uint32_t D, uint32_t n, test_rng *r) {
  ikv_geometry g = {.layers = 1, .kv_heads = 2, .head_dim = D, .page_size = P};
  size_t count = (size_t)n * 2 * D;
  float *k = malloc(sizeof(float) * count), *v = malloc(sizeof(float) * count);
  float *k2 = malloc(sizeof(float) * count), *v2 = malloc(sizeof(float) * count);
  rng_fill_gauss(r, k, count, 1.5f);
  rng_fill_gauss(r, v, count, 0.7f);
  uint8_t *page = malloc(ikv_page_layer_bytes(&g, p));
  memset(page, 0xa5, ikv_page_layer_bytes(&g, p)); /* poison */
  assert_int_equal(ikv_ref_page_quantize(&g, p, k, v, IKV_DTYPE_F32, n, page), IKV_OK);
  for (size_t i = 0; i < count; i++) k2[i] = v2[i] = NAN;
  assert_int_equal(ikv_ref_page_dequantize(&g, p, page, n, k2, v2), IKV_OK);
  double *ak = malloc(sizeof(double) * count), *av = malloc(sizeof(double) * count);
  group_amax(p, 1, k, n, 2, D, ak);
  group_amax(p, 0, v, n, 2, D, av);
  for (uint32_t t = 0; t < n; t++)
    for (uint32_t h = 0; h < 2; h++)
      for (uint32_t c = 0; c < D; c++) {
        size_t i = ((size_t)t * 2 + h) * D + c;
        double bk = bound(p, k[i], ak[i]), bv = bound(p, v[i], av[i]);
        if (!(fabs(k2[i] - k[i]) <= bk) || !(fabs(v2[i] - v[i]) <= bv))
          fail_msg("%s P=%u D=%u t=%u c=%u: k %g->%g (bound %g) v %g->%g (bound %g)", ikv_precision_name(p), P,
                   D, t, c, k[i], k2[i], bk, v[i], v2[i], bv);
      }
  free(k), free(v), free(k2), free(v2), free(page), free(ak), free(av);
}

static void round_trips_per_format_and_geometry(void **state) {
  (void)state;
  test_rng r = {0x5eed0101};
  uint32_t pages[] = {16, 32, 64}, dims[] = {64, 128, 256};
  for (int p = 0; p < IKV_PRECISION_COUNT; p++)
    for (int a = 0; a < 3; a++)
      for (int b = 0; b < 3; b++) {
        check_round_trip((ikv_precision)p, pages[a], dims[b], pages[a], &r);
        check_round_trip((ikv_precision)p, pages[a], dims[b], 1 + rng_below(&r, pages[a]), &r);
      }
}

static void half_inputs_match_float_inputs(void **state) {
  (void)state;
  test_rng r = {0x5eed0102};
  ikv_geometry g = {.layers = 1, .kv_heads = 2, .head_dim = 64, .page_size = 16};
  size_t count = 16 * 2 * 64;
  float kf[16 * 2 * 64], vf[16 * 2 * 64];
  uint16_t kh[16 * 2 * 64], vh[16 * 2 * 64];
  for (int dt = IKV_DTYPE_F16; dt <= IKV_DTYPE_BF16; dt++) {
    rng_fill_gauss(&r, kf, count, 1.0f);
    rng_fill_gauss(&r, vf, count, 1.0f);
    for (size_t i = 0; i < count; i++) {
      kh[i] = dt == IKV_DTYPE_F16 ? ikv_f32_to_f16(kf[i]) : ikv_f32_to_bf16(kf[i]);
      vh[i] = dt == IKV_DTYPE_F16 ? ikv_f32_to_f16(vf[i]) : ikv_f32_to_bf16(vf[i]);
    }
    assert_int_equal(ikv_ref_to_float(kh, (ikv_dtype)dt, count, kf), IKV_OK);
    assert_int_equal(ikv_ref_to_float(vh, (ikv_dtype)dt, count, vf), IKV_OK);
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
      size_t bytes = ikv_page_layer_bytes(&g, (ikv_precision)p);
      uint8_t *a = malloc(bytes), *b = malloc(bytes);
      assert_int_equal(ikv_ref_page_quantize(&g, (ikv_precision)p, kh, vh, (ikv_dtype)dt, 16, a), IKV_OK);
      assert_int_equal(ikv_ref_page_quantize(&g, (ikv_precision)p, kf, vf, IKV_DTYPE_F32, 16, b), IKV_OK);
      assert_memory_equal(a, b, bytes);
      free(a), free(b);
    }
  }
}

static void special_values(void **state) {
  (void)state;
  ikv_geometry g = {.layers = 1, .kv_heads = 1, .head_dim = 16, .page_size = 8};
  float k[8 * 16], v[8 * 16], k2[8 * 16], v2[8 * 16];
  uint8_t page[4096], before[4096];
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
    size_t bytes = ikv_page_layer_bytes(&g, (ikv_precision)p);
    /* constant groups (zero range) and all-zero groups decode exactly */
    for (int i = 0; i < 8 * 16; i++) k[i] = 0.0f, v[i] = 0.25f;
    assert_int_equal(ikv_ref_page_quantize(&g, (ikv_precision)p, k, v, IKV_DTYPE_F32, 8, page), IKV_OK);
    assert_int_equal(ikv_ref_page_dequantize(&g, (ikv_precision)p, page, 8, k2, v2), IKV_OK);
    for (int i = 0; i < 8 * 16; i++) {
      assert_true(k2[i] == 0.0f);
      assert_true(fabsf(v2[i] - 0.25f) <= 0.25f * 0x1.0p-4f);
    }
    /* non-finite input is refused and the page is untouched */
    float bad[3] = {NAN, INFINITY, -INFINITY};
    for (int b = 0; b < 3; b++) {
      for (int i = 0; i < 8 * 16; i++) k[i] = (float)(i % 7) - 3.0f;
      k[37] = bad[b];
      memcpy(before, page, bytes);
      assert_int_equal(ikv_ref_page_quantize(&g, (ikv_precision)p, k, v, IKV_DTYPE_F32, 8, page), IKV_E_INVALID);
      assert_memory_equal(before, page, bytes);
    }
  }
  /* large finite values: fp8 scales them into range (no NaN, no saturation
   * error beyond the format's step); int4 refuses beyond its fp16 range */
  for (int i = 0; i < 8 * 16; i++) k[i] = (i % 2 ? 1.0f : -1.0f) * 60000.0f * (float)(i % 5 + 1) / 5.0f;
  assert_int_equal(ikv_ref_page_quantize(&g, IKV_FP8_E4M3, k, v, IKV_DTYPE_F32, 8, page), IKV_OK);
  assert_int_equal(ikv_ref_page_dequantize(&g, IKV_FP8_E4M3, page, 8, k2, v2), IKV_OK);
  for (int i = 0; i < 8 * 16; i++) {
    assert_false(isnan(k2[i]));
    assert_true(fabsf(k2[i] - k[i]) <= fabsf(k[i]) * 0x1.0p-4f);
  }
  assert_int_equal(ikv_ref_page_quantize(&g, IKV_INT4, k, v, IKV_DTYPE_F32, 8, page), IKV_E_INVALID);
}

static void argument_errors(void **state) {
  (void)state;
  ikv_geometry g = {.layers = 1, .kv_heads = 1, .head_dim = 16, .page_size = 8};
  float k[8 * 16] = {1.0f}, v[8 * 16] = {1.0f};
  uint8_t page[4096], dst[4096];
  assert_int_equal(ikv_ref_page_quantize(NULL, IKV_FP16, k, v, IKV_DTYPE_F32, 8, page), IKV_E_NULL);
  assert_int_equal(ikv_ref_page_quantize(&g, IKV_FP16, NULL, v, IKV_DTYPE_F32, 8, page), IKV_E_NULL);
  assert_int_equal(ikv_ref_page_quantize(&g, (ikv_precision)7, k, v, IKV_DTYPE_F32, 8, page), IKV_E_PRECISION);
  assert_int_equal(ikv_ref_page_quantize(&g, IKV_SKIP, k, v, IKV_DTYPE_F32, 8, page), IKV_E_PRECISION);
  assert_int_equal(ikv_ref_page_quantize(&g, IKV_FP16, k, v, (ikv_dtype)9, 8, page), IKV_E_INVALID);
  assert_int_equal(ikv_ref_page_quantize(&g, IKV_FP16, k, v, IKV_DTYPE_F32, 9, page), IKV_E_RANGE);
  assert_int_equal(ikv_ref_requantize(&g, IKV_FP16, page, (ikv_precision)5, dst, 8), IKV_E_PRECISION);
  assert_int_equal(ikv_ref_tile_read(IKV_INT8, IKV_KEYS, 8, 16, page, 4, 5, k, 16), IKV_E_RANGE);
  assert_int_equal(ikv_ref_tile_write(IKV_INT8, IKV_KEYS, 8, 16, page, 8, k, 16, 1), IKV_E_RANGE);
  assert_int_equal(ikv_ref_tile_write(IKV_INT8, (ikv_kv)2, 8, 16, page, 0, k, 16, 1), IKV_E_INVALID);
  assert_int_equal(ikv_ref_tile_write(IKV_INT8, IKV_KEYS, 12, 16, page, 0, k, 16, 1), IKV_E_INVALID);
}

/* write_kv one token at a time against one call for the whole page. */
static void write_in_steps(void **state) {
  (void)state;
  test_rng r = {0x5eed0103};
  ikv_geometry g = {.layers = 1, .kv_heads = 2, .head_dim = 64, .page_size = 16};
  const uint32_t P = 16, D = 64, H = 2, count = P * H * D;
  float k[16 * 2 * 64], v[16 * 2 * 64], k2[16 * 2 * 64], v2[16 * 2 * 64], k3[16 * 2 * 64], v3[16 * 2 * 64];
  for (int extremes_first = 1; extremes_first >= 0; extremes_first--)
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
      size_t bytes = ikv_page_layer_bytes(&g, (ikv_precision)p);
      uint8_t *whole = malloc(3 * bytes), *steps = whole + bytes;
      memset(whole, 0x3c, 2 * bytes);
      memset(steps, 0xc3, bytes); /* different stale bytes: a fresh page ignores them */
      rng_fill_gauss(&r, k, count, 1.0f);
      rng_fill_gauss(&r, v, count, 1.0f);
      if (extremes_first) /* token 0 holds every group's largest magnitude */
        for (uint32_t h = 0; h < H; h++)
          for (uint32_t c = 0; c < D; c++) {
            k[h * D + c] = c % 2 ? 9.0f : -9.0f;
            v[h * D + c] = c % 2 ? -9.0f : 9.0f;
          }
      ikv_layer_pools pools = {.base = {0}, .pages = {0}};
      pools.base[p] = whole;
      pools.pages[p] = 1;
      int64_t slots[16];
      uint8_t precs[16];
      for (uint32_t t = 0; t < P; t++) slots[t] = t, precs[t] = (uint8_t)p;
      assert_int_equal(ikv_ref_write_kv(&g, &pools, k, v, IKV_DTYPE_F32, slots, precs, P), IKV_OK);
      pools.base[p] = steps;
      for (uint32_t t = 0; t < P; t++)
        assert_int_equal(ikv_ref_write_kv(&g, &pools, k + t * H * D, v + t * H * D, IKV_DTYPE_F32, &slots[t],
                                          &precs[t], 1), IKV_OK);
      /* one call for a whole page == quantizing the page */
      uint8_t *quantized = whole + 2 * bytes;
      assert_int_equal(ikv_ref_page_quantize(&g, (ikv_precision)p, k, v, IKV_DTYPE_F32, P, quantized), IKV_OK);
      assert_memory_equal(whole, quantized, bytes);
      /* FP8 and INT8 scale by magnitude, so no later row refits them; INT4
       * keys fit a [lo, hi] range that one row cannot span, so they refit */
      int refits = p == IKV_INT4 || (!extremes_first && (p == IKV_FP8_E4M3 || p == IKV_INT8));
      if (!refits) {
        assert_memory_equal(whole, steps, bytes); /* same bytes */
      } else {
        /* refits re-encode: each costs at most one more rounding, so the
         * error stays within a small multiple of the one-call error */
        assert_int_equal(ikv_ref_page_dequantize(&g, (ikv_precision)p, whole, P, k2, v2), IKV_OK);
        assert_int_equal(ikv_ref_page_dequantize(&g, (ikv_precision)p, steps, P, k3, v3), IKV_OK);
        double e_whole = 0, e_steps = 0, norm = 0;
        for (uint32_t i = 0; i < count; i++) {
          e_whole += (k2[i] - k[i]) * (k2[i] - k[i]) + (v2[i] - v[i]) * (v2[i] - v[i]);
          e_steps += (k3[i] - k[i]) * (k3[i] - k[i]) + (v3[i] - v[i]) * (v3[i] - v[i]);
          norm += k[i] * k[i] + v[i] * v[i];
        }
        print_message("%s: rel err one call %.3g, in steps %.3g\n", ikv_precision_name(p), sqrt(e_whole / norm),
                      sqrt(e_steps / norm));
        assert_true(sqrt(e_steps) <= 2.0 * sqrt(e_whole));
      }
      free(whole);
    }
}

static void write_kv_validates_before_writing(void **state) {
  (void)state;
  test_rng r = {0x5eed0104};
  ikv_geometry g = {.layers = 1, .kv_heads = 1, .head_dim = 16, .page_size = 8};
  size_t fp16 = ikv_page_layer_bytes(&g, IKV_FP16), int4 = ikv_page_layer_bytes(&g, IKV_INT4);
  uint8_t *a = malloc(2 * fp16), *b = malloc(2 * int4), *a0 = malloc(2 * fp16), *b0 = malloc(2 * int4);
  memset(a, 0x11, 2 * fp16);
  memset(b, 0x22, 2 * int4);
  memcpy(a0, a, 2 * fp16);
  memcpy(b0, b, 2 * int4);
  ikv_layer_pools pools = {.base = {0}, .pages = {0}};
  pools.base[IKV_FP16] = a, pools.pages[IKV_FP16] = 2;
  pools.base[IKV_INT4] = b, pools.pages[IKV_INT4] = 2;
  float k[4 * 16], v[4 * 16];
  rng_fill_gauss(&r, k, 64, 1.0f);
  rng_fill_gauss(&r, v, 64, 1.0f);
  int64_t slots[4] = {0, 1, 8, 9};
  uint8_t precs[4] = {IKV_FP16, IKV_FP16, IKV_INT4, IKV_INT4};
  int64_t bad_slots[4] = {0, 1, 16, 9}; /* page 2 of a 2-page pool */
  uint8_t bad_precs[4] = {IKV_FP16, IKV_INT8, IKV_INT4, IKV_INT4}; /* int8 not provisioned */
  uint8_t skip_precs[4] = {IKV_FP16, IKV_SKIP, IKV_INT4, IKV_INT4};
  assert_int_equal(ikv_ref_write_kv(&g, &pools, k, v, IKV_DTYPE_F32, bad_slots, precs, 4), IKV_E_RANGE);
  assert_int_equal(ikv_ref_write_kv(&g, &pools, k, v, IKV_DTYPE_F32, slots, bad_precs, 4), IKV_E_PRECISION);
  assert_int_equal(ikv_ref_write_kv(&g, &pools, k, v, IKV_DTYPE_F32, slots, skip_precs, 4), IKV_E_PRECISION);
  assert_int_equal(ikv_ref_write_kv(&g, &pools, NULL, v, IKV_DTYPE_F32, slots, precs, 4), IKV_E_NULL);
  assert_int_equal(ikv_ref_write_kv(&g, NULL, k, v, IKV_DTYPE_F32, slots, precs, 4), IKV_E_NULL);
  int64_t neg[4] = {0, -1, 8, 9};
  assert_int_equal(ikv_ref_write_kv(&g, &pools, k, v, IKV_DTYPE_F32, neg, precs, 4), IKV_E_RANGE);
  v[63] = NAN; /* last token, int4 page: found before the first token is written */
  assert_int_equal(ikv_ref_write_kv(&g, &pools, k, v, IKV_DTYPE_F32, slots, precs, 4), IKV_E_INVALID);
  assert_memory_equal(a, a0, 2 * fp16);
  assert_memory_equal(b, b0, 2 * int4);
  v[63] = 0.5f;
  assert_int_equal(ikv_ref_write_kv(&g, &pools, k, v, IKV_DTYPE_F32, slots, precs, 4), IKV_OK);
  float out[2 * 16];
  assert_int_equal(ikv_ref_tile_read(IKV_INT4, IKV_VALUES, 8, 16, b + int4 + ikv_tile_offset(&g, IKV_INT4, 0, IKV_VALUES),
                                     0, 2, out, 16), IKV_OK);
  for (int i = 0; i < 32; i++) assert_true(fabsf(out[i] - v[32 + i]) <= 0.2f);
  free(a), free(b), free(a0), free(b0);
}

static void requantize_down_and_up(void **state) {
  (void)state;
  test_rng r = {0x5eed0105};
  ikv_geometry g = {.layers = 1, .kv_heads = 2, .head_dim = 128, .page_size = 32};
  size_t count = 32 * 2 * 128;
  float *k = malloc(sizeof(float) * count * 4), *v = k + count, *k2 = v + count, *v2 = k2 + count;
  rng_fill_gauss(&r, k, count, 1.0f);
  rng_fill_gauss(&r, v, count, 1.0f);
  size_t max = ikv_page_layer_bytes(&g, IKV_FP16);
  uint8_t *src = malloc(max), *dst = malloc(max), *expect = malloc(max);
  for (int from = 0; from < IKV_PRECISION_COUNT; from++)
    for (int to = 0; to < IKV_PRECISION_COUNT; to++) {
      uint32_t n = 20 + rng_below(&r, 13);
      assert_int_equal(ikv_ref_page_quantize(&g, (ikv_precision)from, k, v, IKV_DTYPE_F32, n, src), IKV_OK);
      memset(dst, 0x77, max);
      assert_int_equal(ikv_ref_requantize(&g, (ikv_precision)from, src, (ikv_precision)to, dst, n), IKV_OK);
      /* requantize == quantize(dequantize(src)), byte for byte */
      assert_int_equal(ikv_ref_page_dequantize(&g, (ikv_precision)from, src, n, k2, v2), IKV_OK);
      assert_int_equal(ikv_ref_page_quantize(&g, (ikv_precision)to, k2, v2, IKV_DTYPE_F32, n, expect), IKV_OK);
      assert_memory_equal(dst, expect, ikv_page_layer_bytes(&g, (ikv_precision)to));
    }
  free(k), free(src), free(dst), free(expect);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(round_trips_per_format_and_geometry),
      cmocka_unit_test(half_inputs_match_float_inputs),
      cmocka_unit_test(special_values),
      cmocka_unit_test(argument_errors),
      cmocka_unit_test(write_in_steps),
      cmocka_unit_test(write_kv_validates_before_writing),
      cmocka_unit_test(requantize_down_and_up),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
