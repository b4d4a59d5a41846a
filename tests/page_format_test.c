#include "kernels/page_format.h"
#include "tests/cmocka_all.h"

static void tile_sizes_follow_layout_v1(void **state) {
  (void)state;
  /* page 16, head_dim 128: 2048 values per tile. */
  assert_int_equal(ikv_tile_bytes(IKV_FP16, IKV_KEYS, 16, 128), 4096);
  assert_int_equal(ikv_tile_bytes(IKV_BF16, IKV_VALUES, 16, 128), 4096);
  assert_int_equal(ikv_tile_bytes(IKV_FP8_E4M3, IKV_KEYS, 16, 128), 2048 + 16);
  assert_int_equal(ikv_tile_bytes(IKV_INT8, IKV_KEYS, 16, 128), 2048 + 128 * 4);
  assert_int_equal(ikv_tile_bytes(IKV_INT8, IKV_VALUES, 16, 128), 2048 + 16 * 4);
  assert_int_equal(ikv_tile_bytes(IKV_INT4, IKV_KEYS, 16, 128), 1024 + 128 * 4);
  assert_int_equal(ikv_tile_bytes(IKV_INT4, IKV_VALUES, 16, 128), 1024 + 16 * 4);
  assert_int_equal(ikv_tile_bytes((ikv_precision)IKV_SKIP, IKV_KEYS, 16, 128), 0);
}

static void lower_precision_uses_fewer_bytes(void **state) {
  (void)state;
  uint32_t pages[] = {8, 16, 32, 64, 256}, dims[] = {64, 128, 256};
  for (int a = 0; a < 5; a++)
    for (int b = 0; b < 3; b++) {
      ikv_geometry g = {.layers = 3, .kv_heads = 2, .head_dim = dims[b], .page_size = pages[a]};
      size_t fp16 = ikv_page_bytes(&g, IKV_FP16);
      assert_int_equal(fp16, 3u * 2 * 2 * pages[a] * dims[b] * 2);
      assert_int_equal(ikv_page_bytes(&g, IKV_BF16), fp16);
      assert_true(ikv_page_bytes(&g, IKV_FP8_E4M3) < fp16);
      assert_true(ikv_page_bytes(&g, IKV_INT8) < fp16);
      assert_true(ikv_page_bytes(&g, IKV_INT4) < ikv_page_bytes(&g, IKV_INT8));
      for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
        assert_int_equal(ikv_tile_bytes((ikv_precision)p, IKV_KEYS, pages[a], dims[b]) % 16, 0);
        assert_int_equal(ikv_tile_bytes((ikv_precision)p, IKV_VALUES, pages[a], dims[b]) % 16, 0);
      }
    }
}

static void invalid_geometry_sizes_to_zero(void **state) {
  (void)state;
  ikv_geometry g = {.layers = 1, .kv_heads = 1, .head_dim = 100, .page_size = 16};
  assert_int_equal(ikv_page_bytes(&g, IKV_FP16), 0);
  assert_int_equal(ikv_page_bytes(NULL, IKV_FP16), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(tile_sizes_follow_layout_v1),
      cmocka_unit_test(lower_precision_uses_fewer_bytes),
      cmocka_unit_test(invalid_geometry_sizes_to_zero),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
