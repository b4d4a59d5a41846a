/* Scalar formats: exhaustive round trips and comparison with independent
 * oracles (the compiler's _Float16; a brute-force nearest search for FP8). */
#include <math.h>
#include <string.h>

#include "kernels/numeric.h"
#include "tests/cmocka_all.h"
#include "tests/test_rng.h"

static void f16_round_trips_every_code(void **state) {
  (void)state;
  for (uint32_t h = 0; h < 65536; h++) {
    float f = ikv_f16_to_f32((uint16_t)h);
    if (isnan(f)) {
      assert_true(isnan(ikv_f16_to_f32(ikv_f32_to_f16(f))));
      continue;
    }
    assert_int_equal(ikv_f32_to_f16(f), h);
  }
}

static void f16_matches_the_compiler(void **state) {
  (void)state;
  test_rng r = {0x5eed0001};
  for (int i = 0; i < 2000000; i++) {
    /* magnitudes from 2^-30 to 2^17: subnormals, normals, overflow */
    float f = (float)((rng_uniform(&r) - 0.5) * ldexp(1.0, (int)rng_below(&r, 48) - 30));
    _Float16 h = (_Float16)f;
    uint16_t bits;
    memcpy(&bits, &h, 2);
    assert_int_equal(ikv_f32_to_f16(f), bits);
    assert_true(ikv_f16_to_f32(bits) == (float)h);
  }
  assert_int_equal(ikv_f32_to_f16(65520.0f), 0x7c00);  /* ties to even: up to infinity */
  assert_int_equal(ikv_f32_to_f16(65519.0f), 0x7bff);
  assert_int_equal(ikv_f32_to_f16(-INFINITY), 0xfc00);
  assert_true(ikv_f32_to_f16(NAN) == 0x7e00);
}

static void bf16_rounds_to_nearest_even(void **state) {
  (void)state;
  for (uint32_t b = 0; b < 65536; b++) {
    float f = ikv_bf16_to_f32((uint16_t)b);
    if (!isnan(f)) assert_int_equal(ikv_f32_to_bf16(f), b);
  }
  /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0). */
  assert_int_equal(ikv_f32_to_bf16(1.0f + 0x1.0p-8f), 0x3f80);
  assert_int_equal(ikv_f32_to_bf16(1.0f + 0x1.8p-8f), 0x3f81);
  assert_int_equal(ikv_f32_to_bf16(1.0f + 0x1.0p-7f + 0x1.0p-8f), 0x3f82); /* odd: up */
  assert_true(isnan(ikv_bf16_to_f32(ikv_f32_to_bf16(NAN))));
}

/* The FP8 E4M3 value of every code, computed from the format's definition. */
static double fp8_value(uint8_t c) {
  int e = (c >> 3) & 15, m = c & 7;
  double v = e ? ldexp(1.0 + m / 8.0, e - 7) : ldexp(m / 8.0, -6);
  return (c & 0x80) ? -v : v;
}

static void fp8_matches_brute_force_nearest(void **state) {
  (void)state;
  for (int c = 0; c < 256; c++) {
    if ((c & 0x7f) == 0x7f) {
      assert_true(isnan(ikv_fp8_e4m3_to_f32((uint8_t)c)));
      continue;
    }
    assert_true(ikv_fp8_e4m3_to_f32((uint8_t)c) == (float)fp8_value((uint8_t)c));
    if (c != 0x80) assert_int_equal(ikv_f32_to_fp8_e4m3((float)fp8_value((uint8_t)c)), c);
  }
  test_rng r = {0x5eed0002};
  for (int i = 0; i < 200000; i++) {
    float f = (float)((rng_uniform(&r) - 0.5) * ldexp(1.0, (int)rng_below(&r, 22) - 11));
    /* nearest of the 127 non-negative finite codes, ties to the even mantissa */
    double a = fabs((double)f), best_d = INFINITY;
    int best = 0;
    for (int c = 0; c <= 0x7e; c++) {
      double d = fabs(fp8_value((uint8_t)c) - a);
      if (d < best_d || (d == best_d && (c & 1) == 0)) best_d = d, best = c;
    }
    if (a > 448.0) best = 0x7e;
    uint8_t got = ikv_f32_to_fp8_e4m3(f);
    assert_int_equal(got & 0x7f, best);
    if (best) assert_int_equal(got & 0x80, f < 0 ? 0x80 : 0);
  }
}

static void fp8_saturates_and_never_makes_nan(void **state) {
  (void)state;
  assert_int_equal(ikv_f32_to_fp8_e4m3(448.0f), 0x7e);
  assert_int_equal(ikv_f32_to_fp8_e4m3(460.0f), 0x7e);
  assert_int_equal(ikv_f32_to_fp8_e4m3(1e30f), 0x7e);
  assert_int_equal(ikv_f32_to_fp8_e4m3(INFINITY), 0x7e);
  assert_int_equal(ikv_f32_to_fp8_e4m3(-INFINITY), 0xfe);
  assert_int_equal(ikv_f32_to_fp8_e4m3(-1e30f), 0xfe);
  assert_int_equal(ikv_f32_to_fp8_e4m3(NAN) & 0x7f, 0x7f);
  assert_int_equal(ikv_f32_to_fp8_e4m3(0x1.0p-10f), 0x00); /* half the smallest subnormal: even */
  assert_int_equal(ikv_f32_to_fp8_e4m3(0x1.8p-10f), 0x01);
  assert_int_equal(ikv_f32_to_fp8_e4m3(0x1.0p-6f), 0x08);  /* smallest normal */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(f16_round_trips_every_code),
      cmocka_unit_test(f16_matches_the_compiler),
      cmocka_unit_test(bf16_rounds_to_nearest_even),
      cmocka_unit_test(fp8_matches_brute_force_nearest),
      cmocka_unit_test(fp8_saturates_and_never_makes_nan),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
