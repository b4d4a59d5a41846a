/* GPU test (tag `gpu`): the prefetcher on the CUDA backend, copies on its own
 * stream with events, against no prefetching: the same outputs bit for bit
 * with every predictor, with room and under forced thrash; statistics add
 * up; the host tier's placement is reported. */
#include "tests/prefetch_scenario.h"
#include "tests/require_gpu.h"

static void prefetch_never_changes_results_on_gpu(void **state) {
  (void)state;
  require_gpu();
  sc_check_all(IKV_BACKEND_CUDA);
}

static void host_tier_placement_on_gpu(void **state) {
  (void)state;
  require_gpu();
  ikv_runtime_config c = {.geometry = {.layers = 1, .kv_heads = 1, .head_dim = 64, .page_size = 16}, .q_heads = 1,
                          .max_sequences = 1, .max_batch = 1, .max_plan_pages = 8, .backend = IKV_BACKEND_CUDA};
  c.capacity[IKV_TIER_GPU][IKV_FP16] = 8, c.capacity[IKV_TIER_HOST][IKV_FP16] = 8;
  ikv_runtime *rt;
  assert_int_equal(ikv_runtime_create(&c, &rt), IKV_OK);
  ikv_host_placement where;
  assert_int_equal(ikv_runtime_host_placement(rt, &where), IKV_OK);
  print_message("host tier: %d NUMA node(s); %s\n", where.numa_nodes, where.detail);
  assert_true(where.numa_nodes <= 1 || where.node >= 0 || strstr(where.detail, "not bound") != NULL);
  ikv_runtime_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(prefetch_never_changes_results_on_gpu),
      cmocka_unit_test(host_tier_placement_on_gpu),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
