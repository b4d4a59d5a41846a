/* Page summaries and ranking on the host (kernels/page_summary.h): what the
 * CPU backend computes and the GPU reproduces bit for bit. The fold keeps
 * the tightest fp16 bounds around the keys (outward roundings checked on
 * their own) and the running sum; the lane-ordered score agrees with a
 * plain double-precision sum; rank keys order by descending score, ties by
 * ordinal, -0 as +0; the partial selection equals a full sort's prefix. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/page_summary.h"
#include "tests/cmocka_all.h"
#include "tests/test_rng.h"

enum { D = 128, G = 4 };

/* The outward roundings: at or below (above) the value, the nearest half
 * that is, exact on halves, and the edges of the half range. */
static void halves_round_outward(void **state) {
  (void)state;
  test_rng r = {0x5eed0903};
  for (int i = 0; i < 100000; i++) {
    const float x = rng_gauss(&r) * (i % 3 ? 3.0f : 3000.0f) + (i % 7 == 0 ? 1e-6f * rng_gauss(&r) : 0.0f);
    const uint16_t d = ikv_f32_to_f16_down(x), u = ikv_f32_to_f16_up(x);
    const float fd = ikv_f16_to_f32(d), fu = ikv_f16_to_f32(u);
    assert_true(fd <= x && x <= fu);
    if (fd == x) assert_true(fu == x);
    else assert_true(ikv_f16_to_f32(ikv_f32_to_f16_up(nextafterf(fd, INFINITY))) == fu); /* adjacent halves */
  }
  const float halves[] = {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, -65504.0f, 6.103515625e-05f, 5.9604644775390625e-08f};
  for (size_t i = 0; i < sizeof(halves) / sizeof(halves[0]); i++) {
    assert_true(ikv_f16_to_f32(ikv_f32_to_f16_down(halves[i])) == halves[i]);
    assert_true(ikv_f16_to_f32(ikv_f32_to_f16_up(halves[i])) == halves[i]);
  }
  assert_int_equal(ikv_f32_to_f16_down(70000.0f), 0x7bff); /* 65504 */
  assert_int_equal(ikv_f32_to_f16_up(70000.0f), 0x7c00);   /* +inf */
  assert_int_equal(ikv_f32_to_f16_down(-70000.0f), 0xfc00); /* -inf */
  assert_int_equal(ikv_f32_to_f16_up(-70000.0f), 0xfbff);   /* -65504 */
  assert_int_equal(ikv_f32_to_f16_down(1e-9f), 0x0000);
  assert_int_equal(ikv_f32_to_f16_up(1e-9f), 0x0001);
  assert_int_equal(ikv_f32_to_f16_down(-1e-9f), 0x8001);
  assert_true(isnan(ikv_f16_to_f32(ikv_f32_to_f16_down(NAN))));
}

static void fold_keeps_bounds_and_sum(void **state) {
  (void)state;
  test_rng r = {0x5eed0901};
  uint16_t mn = 7, mx = 7;
  float sum = 3.0f;
  ikv_summary_reset(&mn, &mx, &sum);
  assert_true(isinf(ikv_f16_to_f32(mn)) && ikv_f16_to_f32(mn) > 0 && isinf(ikv_f16_to_f32(mx)) &&
              ikv_f16_to_f32(mx) < 0 && sum == 0.0f);
  float lo = INFINITY, hi = -INFINITY;
  double total = 0.0;
  for (int i = 0; i < 1000; i++) {
    float x = rng_gauss(&r) * 3.0f;
    ikv_summary_fold(&mn, &mx, &sum, x);
    lo = fminf(lo, x), hi = fmaxf(hi, x), total += x;
  }
  /* the tightest halves around the keys' range */
  assert_int_equal(mn, ikv_f32_to_f16_down(lo));
  assert_int_equal(mx, ikv_f32_to_f16_up(hi));
  assert_true(fabs(sum - total) <= 1e-3 * fabs(total) + 1e-3);
  /* half keys are kept exactly; a NaN key moves no bound */
  ikv_summary_reset(&mn, &mx, &sum);
  ikv_summary_fold(&mn, &mx, &sum, -1.5f), ikv_summary_fold(&mn, &mx, &sum, 0.25f), ikv_summary_fold(&mn, &mx, &sum, NAN);
  assert_true(ikv_f16_to_f32(mn) == -1.5f && ikv_f16_to_f32(mx) == 0.25f);
}

/* The score against a plain double sum, for both modes. */
static void scores_agree_with_a_plain_sum(void **state) {
  (void)state;
  test_rng r = {0x5eed0902};
  uint16_t mn[D], mx[D];
  float sum[D], q[G * D];
  for (int trial = 0; trial < 200; trial++) {
    for (int c = 0; c < D; c++) {
      float a = rng_gauss(&r), b = rng_gauss(&r);
      mn[c] = ikv_f32_to_f16_down(fminf(a, b)), mx[c] = ikv_f32_to_f16_up(fmaxf(a, b)), sum[c] = rng_gauss(&r) * 4.0f;
    }
    rng_fill_gauss(&r, q, G * D, 1.0f);
    double bound = -INFINITY, cosine = -INFINITY;
    for (int j = 0; j < G; j++) {
      double s = 0, dot = 0, qq = 0, kk = 0;
      for (int c = 0; c < D; c++) {
        const double qc = q[j * D + c];
        s += fmax(qc * ikv_f16_to_f32(mn[c]), qc * ikv_f16_to_f32(mx[c]));
        dot += qc * sum[c], qq += qc * qc, kk += (double)sum[c] * sum[c];
      }
      bound = fmax(bound, s), cosine = fmax(cosine, dot / sqrt(qq * kk));
    }
    assert_true(fabs(ikv_summary_score(1, mn, mx, sum, q, G, D) - bound) <= 1e-4 * (fabs(bound) + 1.0));
    assert_true(fabs(ikv_summary_score(0, mn, mx, sum, q, G, D) - cosine) <= 1e-5);
  }
  /* a zero mean key scores 0 in the cosine mode */
  memset(sum, 0, sizeof(sum));
  assert_true(ikv_summary_score(0, mn, mx, sum, q, G, D) == 0.0f);
}

static void rank_keys_order_by_score_then_ordinal(void **state) {
  (void)state;
  const float s[] = {-INFINITY, -3.5f, -1e-30f, -0.0f, 0.0f, 1e-30f, 2.0f, 2.0f, INFINITY};
  const size_t n = sizeof(s) / sizeof(*s);
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++) {
      uint64_t a = ikv_rank_key(s[i], (uint32_t)i), b = ikv_rank_key(s[j], (uint32_t)j);
      if (s[i] > s[j]) assert_true(a < b);                     /* higher score ranks first */
      else if (s[i] < s[j]) assert_true(a > b);
      else assert_true((a < b) == (i < j) && (a == b) == (i == j)); /* ties (and -0, +0) by ordinal */
    }
  assert_int_equal((uint32_t)ikv_rank_key(1.0f, 77), 77);
}

static void smallest_k_is_a_sorted_prefix(void **state) {
  (void)state;
  test_rng r = {0x5eed0903};
  for (int trial = 0; trial < 300; trial++) {
    const uint32_t n = 1 + rng_below(&r, 3000), k = rng_below(&r, n + 1);
    uint64_t *a = malloc(sizeof(uint64_t) * n), *b = malloc(sizeof(uint64_t) * n);
    for (uint32_t i = 0; i < n; i++) a[i] = ikv_rank_key((float)rng_below(&r, 40) - 20.0f, i); /* many ties */
    memcpy(b, a, sizeof(uint64_t) * n);
    ikv_rank_smallest(a, n, k);
    qsort(b, n, sizeof(uint64_t), ikv_rank_key_cmp);
    assert_memory_equal(a, b, sizeof(uint64_t) * k);
    qsort(a, n, sizeof(uint64_t), ikv_rank_key_cmp); /* the rest is a permutation of the rest */
    assert_memory_equal(a, b, sizeof(uint64_t) * n);
    free(a), free(b);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(halves_round_outward), cmocka_unit_test(fold_keeps_bounds_and_sum),
      cmocka_unit_test(scores_agree_with_a_plain_sum),
      cmocka_unit_test(rank_keys_order_by_score_then_ordinal),
      cmocka_unit_test(smallest_k_is_a_sorted_prefix),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
