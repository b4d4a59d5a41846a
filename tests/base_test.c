#include <string.h>

#include "runtime/ikv_base.h"
#include "tests/cmocka_all.h"

static void status_strings_name_every_code(void **state) {
  (void)state;
  for (int s = 0; s < IKV_STATUS_COUNT; s++) {
    const char *str = ikv_status_str((ikv_status)s);
    assert_non_null(str);
    assert_int_equal(strncmp(str, "IKV_", 4), 0);
  }
  assert_string_equal(ikv_status_str(IKV_OK), "IKV_OK: success");
  assert_non_null(strstr(ikv_status_str((ikv_status)999), "unknown"));
  assert_non_null(strstr(ikv_status_str((ikv_status)-1), "unknown"));
}

static void version_matches_macros(void **state) {
  (void)state;
  assert_string_equal(ikv_version(), IKV_VERSION_STRING);
  assert_int_equal(IKV_VERSION_NUMBER,
                   IKV_VERSION_MAJOR * 10000 + IKV_VERSION_MINOR * 100 + IKV_VERSION_PATCH);
}

static void precision_and_tier_names(void **state) {
  (void)state;
  const char *expected[] = {"fp16", "bf16", "fp8_e4m3", "int8", "int4"};
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
    assert_true(ikv_precision_valid(p));
    assert_string_equal(ikv_precision_name(p), expected[p]);
  }
  assert_string_equal(ikv_precision_name(IKV_SKIP), "skip");
  assert_false(ikv_precision_valid(IKV_SKIP));
  assert_false(ikv_precision_valid(-1));
  assert_false(ikv_precision_valid(IKV_PRECISION_COUNT));
  assert_null(ikv_precision_name(IKV_PRECISION_COUNT));
  assert_string_equal(ikv_tier_name(IKV_TIER_GPU), "gpu");
  assert_string_equal(ikv_tier_name(IKV_TIER_HOST), "host");
  assert_null(ikv_tier_name(IKV_TIER_COUNT));
}

static void geometry_ranges(void **state) {
  (void)state;
  ikv_geometry g = {.layers = 32, .kv_heads = 8, .head_dim = 128, .page_size = 16};
  assert_int_equal(ikv_geometry_check(&g), IKV_OK);
  assert_int_equal(ikv_geometry_check(NULL), IKV_E_NULL);
  uint32_t good_pages[] = {8, 16, 32, 64, 128, 256};
  for (size_t i = 0; i < sizeof(good_pages) / sizeof(*good_pages); i++) {
    ikv_geometry h = g;
    h.page_size = good_pages[i];
    assert_int_equal(ikv_geometry_check(&h), IKV_OK);
  }
  uint32_t bad_pages[] = {0, 4, 12, 24, 512};
  for (size_t i = 0; i < sizeof(bad_pages) / sizeof(*bad_pages); i++) {
    ikv_geometry h = g;
    h.page_size = bad_pages[i];
    assert_int_equal(ikv_geometry_check(&h), IKV_E_INVALID);
  }
  ikv_geometry h = g;
  h.head_dim = 100;
  assert_int_equal(ikv_geometry_check(&h), IKV_E_INVALID);
  h = g;
  h.layers = 0;
  assert_int_equal(ikv_geometry_check(&h), IKV_E_INVALID);
  h = g;
  h.kv_heads = 0;
  assert_int_equal(ikv_geometry_check(&h), IKV_E_INVALID);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(status_strings_name_every_code),
      cmocka_unit_test(version_matches_macros),
      cmocka_unit_test(precision_and_tier_names),
      cmocka_unit_test(geometry_ranges),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
