/* GPU test (tag `gpu`): the CUDA toolchain end to end. The probe kernel's
 * result is checked against the same computation in C on fresh random inputs
 * (y is both input and output, so it starts random, never zeros). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/device_probe.h"
#include "tests/cmocka_all.h"

/* Without a device the tests skip, unless IKV_REQUIRE_GPU is set (the GPU
 * bundle's runner sets it, so a GPU run can never pass by skipping). */
static void require_gpu(void) {
  int n = 0;
  assert_int_equal(ikv_gpu_count(&n), IKV_OK);
  if (n == 0 && getenv("IKV_REQUIRE_GPU")) fail_msg("no CUDA device but IKV_REQUIRE_GPU is set");
  if (n == 0) skip();
}

static float uniform(uint64_t *s) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return (float)((*s >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static void axpy_matches_c(void **state) {
  (void)state;
  require_gpu();
  const size_t sizes[] = {1, 255, 257, 1 << 20, (1 << 20) + 3};
  uint64_t seed = 0x1234567887654321ull;
  for (size_t k = 0; k < sizeof(sizes) / sizeof(*sizes); k++) {
    size_t n = sizes[k];
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float));
    float a = uniform(&seed) * 3.0f;
    for (size_t i = 0; i < n; i++) {
      x[i] = uniform(&seed);
      y[i] = uniform(&seed);
      ref[i] = fmaf(a, x[i], y[i]);
    }
    assert_int_equal(ikv_gpu_axpy(0, a, x, y, n), IKV_OK);
    for (size_t i = 0; i < n; i++) assert_true(y[i] == ref[i]); /* fma both sides: exact */
    free(x);
    free(y);
    free(ref);
  }
}

static void errors_are_reported(void **state) {
  (void)state;
  require_gpu();
  float v = 1.0f;
  int count = 0;
  assert_int_equal(ikv_gpu_count(&count), IKV_OK);
  assert_int_equal(ikv_gpu_axpy(0, 1.0f, NULL, &v, 1), IKV_E_NULL);
  assert_int_equal(ikv_gpu_axpy(count, 1.0f, &v, &v, 1), IKV_E_INVALID);
  assert_int_equal(ikv_gpu_axpy(-1, 1.0f, &v, &v, 1), IKV_E_INVALID);
  ikv_gpu_info info;
  assert_int_equal(ikv_gpu_get_info(count, &info), IKV_E_INVALID);
  assert_int_equal(ikv_gpu_get_info(0, NULL), IKV_E_NULL);
  assert_int_equal(ikv_gpu_get_info(0, &info), IKV_OK);
  assert_true(strlen(info.name) > 0);
  assert_true(info.sm_count > 0);
  assert_true(info.total_memory > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(axpy_matches_c),
      cmocka_unit_test(errors_are_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
