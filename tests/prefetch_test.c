/* The prefetcher and the GPU page cache on the CPU backend (moves land at
 * once there; tests/prefetch_cuda_test.c runs the same on a GPU with real
 * streams): results never change, statistics add up, kept pages stay;
 * configuration errors. */
#include "tests/prefetch_scenario.h"

static void prefetch_never_changes_results(void **state) {
  (void)state;
  sc_check_all(IKV_BACKEND_CPU);
}

static void prefetch_config_is_checked(void **state) {
  (void)state;
  ikv_runtime_config c = {.geometry = {.layers = 1, .kv_heads = 1, .head_dim = 64, .page_size = 16}, .q_heads = 1,
                          .max_sequences = 1, .max_batch = 1, .max_plan_pages = 8};
  c.capacity[IKV_TIER_GPU][IKV_FP16] = 8;
  ikv_runtime *rt = NULL;
  c.prefetch.predictor = IKV_PREDICT_BELADY; /* needs the future */
  assert_int_equal(ikv_runtime_create(&c, &rt), IKV_E_INVALID);
  c.prefetch.predictor = (ikv_predictor)IKV_PREDICTOR_COUNT;
  assert_int_equal(ikv_runtime_create(&c, &rt), IKV_E_INVALID);
  assert_null(rt);
  c.prefetch.predictor = IKV_PREDICT_HISTORY;
  assert_int_equal(ikv_runtime_create(&c, &rt), IKV_OK);
  ikv_host_placement where;
  assert_int_equal(ikv_runtime_host_placement(rt, &where), IKV_OK);
  assert_int_equal(where.node, -1); /* the CPU backend: no GPU to be near */
  assert_true(strlen(where.detail) > 0);
  assert_int_equal(ikv_runtime_host_placement(rt, NULL), IKV_E_NULL);
  ikv_runtime_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(prefetch_never_changes_results),
      cmocka_unit_test(prefetch_config_is_checked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
