/* GPU tests: skip without a CUDA device, unless IKV_REQUIRE_GPU says one
 * must be there (gpu_bundle/run.sh sets it), then fail. */
#ifndef IKV_TESTS_REQUIRE_GPU_H
#define IKV_TESTS_REQUIRE_GPU_H

#include <cuda_runtime_api.h>
#include <stdlib.h>

#include "tests/cmocka_all.h"

static inline void require_gpu(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) n = 0;
  if (n == 0 && getenv("IKV_REQUIRE_GPU")) fail_msg("no CUDA device but IKV_REQUIRE_GPU is set");
  if (n == 0) skip();
}

#endif
