/* The shared next-step predictors (prefetch/predict.h) and the host tier's
 * allocator (prefetch/host_tier.h). */
#include <stdint.h>
#include <string.h>

#include "prefetch/host_tier.h"
#include "prefetch/predict.h"
#include "tests/cmocka_all.h"

static void names_round_trip(void **state) {
  (void)state;
  for (int p = 0; p < IKV_PREDICTOR_COUNT; p++) {
    ikv_predictor back;
    assert_int_equal(ikv_predictor_parse(ikv_predictor_name(p), &back), IKV_OK);
    assert_int_equal(back, p);
  }
  ikv_predictor back = IKV_PREDICT_HINTS;
  assert_int_equal(ikv_predictor_parse("oracle", &back), IKV_E_INVALID);
  assert_int_equal(back, IKV_PREDICT_HINTS);
  assert_int_equal(ikv_predictor_parse(NULL, &back), IKV_E_NULL);
  assert_null(ikv_predictor_name(IKV_PREDICTOR_COUNT));
}

static void history_ranks_by_decayed_frequency(void **state) {
  (void)state;
  ikv_history *h;
  assert_int_equal(ikv_history_create(100, 4, &h), IKV_OK);
  /* step 0: 7 read twice, 3 once; step 1: 5 once */
  const uint32_t s0[] = {7, 3, 7}, s1[] = {5};
  assert_int_equal(ikv_history_record(h, s0, 3), IKV_OK);
  ikv_history_end_step(h);
  assert_int_equal(ikv_history_record(h, s1, 1), IKV_OK);
  ikv_history_end_step(h);
  /* 7: 2 * 0.7^2 = 0.98; 5: 0.7; 3: 0.49 */
  assert_float_equal(ikv_history_score(h, 7), 2.0f * 0.49f, 1e-5);
  assert_float_equal(ikv_history_score(h, 5), 0.7f, 1e-6);
  assert_float_equal(ikv_history_score(h, 42), 0.0f, 0.0);
  uint32_t cand[16];
  assert_int_equal(ikv_predict_next(h, NULL, 0, cand, 16), 3);
  assert_int_equal(cand[0], 7), assert_int_equal(cand[1], 5), assert_int_equal(cand[2], 3);
  /* pages put first lead, once each; out-of-range ones are passed over */
  const uint32_t first[] = {3, 99, 3, 1000};
  assert_int_equal(ikv_predict_next(h, first, 4, cand, 16), 4);
  assert_int_equal(cand[0], 3), assert_int_equal(cand[1], 99), assert_int_equal(cand[2], 7), assert_int_equal(cand[3], 5);
  assert_int_equal(ikv_predict_next(h, first, 4, cand, 2), 2); /* cap */
  ikv_history_destroy(h);
}

static void history_forgets_after_eight_steps(void **state) {
  (void)state;
  ikv_history *h;
  assert_int_equal(ikv_history_create(10, 2, &h), IKV_OK);
  const uint32_t old = 1, fresh = 2;
  assert_int_equal(ikv_history_record(h, &old, 1), IKV_OK);
  ikv_history_end_step(h);
  for (int s = 0; s < IKV_HISTORY_STEPS - 1; s++) {
    assert_int_equal(ikv_history_record(h, &fresh, 1), IKV_OK);
    ikv_history_end_step(h);
  }
  uint32_t cand[4];
  assert_int_equal(ikv_predict_next(h, NULL, 0, cand, 4), 2); /* page 1: read 8 steps ago, still in */
  ikv_history_end_step(h);                                      /* a step that read nothing */
  assert_int_equal(ikv_predict_next(h, NULL, 0, cand, 4), 1);
  assert_int_equal(cand[0], fresh);
  ikv_history_destroy(h);
}

static void history_errors_change_nothing(void **state) {
  (void)state;
  ikv_history *h = NULL;
  assert_int_equal(ikv_history_create(0, 4, &h), IKV_E_INVALID);
  assert_int_equal(ikv_history_create(4, 4, NULL), IKV_E_NULL);
  assert_int_equal(ikv_history_create(4, 2, &h), IKV_OK);
  const uint32_t bad[] = {1, 4}, many[] = {0, 1, 2};
  assert_int_equal(ikv_history_record(h, bad, 2), IKV_E_RANGE);
  assert_int_equal(ikv_history_record(h, many, 3), IKV_E_CAPACITY);
  assert_int_equal(ikv_history_record(h, NULL, 1), IKV_E_NULL);
  assert_int_equal(ikv_history_record(h, many, 2), IKV_OK);
  assert_int_equal(ikv_history_record(h, many, 1), IKV_E_CAPACITY); /* the step's room is used */
  ikv_history_end_step(h);
  assert_float_equal(ikv_history_score(h, 1), 0.7f, 1e-6); /* only the good record counted */
  assert_float_equal(ikv_history_score(h, 0), 0.7f, 1e-6);
  uint32_t cand[4];
  assert_int_equal(ikv_predict_next(h, NULL, 0, cand, 4), 2);
  ikv_history_destroy(h);
}

static void host_tier_without_gpu_is_aligned_and_unbound(void **state) {
  (void)state;
  ikv_host_tier *t;
  assert_int_equal(ikv_host_tier_open(NULL, &t), IKV_OK);
  const ikv_host_placement *w = ikv_host_tier_placement(t);
  assert_int_equal(w->node, -1);
  assert_non_null(strstr(w->detail, "not bound"));
  uint8_t *p = ikv_host_tier_alloc(t, 1 << 20);
  assert_non_null(p);
  assert_int_equal((uintptr_t)p % 4096, 0);
  memset(p, 0x5a, 1 << 20);
  assert_null(ikv_host_tier_alloc(t, 0));
  ikv_host_tier_free(t, p, 1 << 20);
  ikv_host_tier_close(t);
  assert_int_equal(ikv_host_tier_open(NULL, NULL), IKV_E_NULL);
}

static void host_tier_unknown_gpu_says_why(void **state) {
  (void)state;
  ikv_host_tier *t;
  assert_int_equal(ikv_host_tier_open("ffff:ff:1f.7", &t), IKV_OK); /* no such device */
  const ikv_host_placement *w = ikv_host_tier_placement(t);
  assert_int_equal(w->node, -1);
  assert_non_null(strstr(w->detail, "not bound"));
  void *p = ikv_host_tier_alloc(t, 65536);
  assert_non_null(p);
  assert_int_equal((uintptr_t)p % 4096, 0);
  ikv_host_tier_free(t, p, 65536);
  ikv_host_tier_close(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(names_round_trip),
      cmocka_unit_test(history_ranks_by_decayed_frequency),
      cmocka_unit_test(history_forgets_after_eight_steps),
      cmocka_unit_test(history_errors_change_nothing),
      cmocka_unit_test(host_tier_without_gpu_is_aligned_and_unbound),
      cmocka_unit_test(host_tier_unknown_gpu_says_why),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
