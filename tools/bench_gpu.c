/* GPU helpers shared by the GPU benchmarks. */
#include "tools/bench_gpu.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/numeric.h"
#include "tools/bench_util.h"

void bench_cuda_ok(cudaError_t e, const char *what) {
  if (e == cudaSuccess) return;
  fprintf(stderr, "ikv bench: %s: %s\n", what, cudaGetErrorString(e));
  exit(1);
}

void bench_ikv_ok(const ikv_runtime *rt, ikv_status st, const char *what) {
  if (st == IKV_OK) return;
  fprintf(stderr, "ikv bench: %s: %s (%s)\n", what, ikv_status_str(st), rt ? ikv_runtime_errmsg(rt) : "");
  exit(1);
}

float bench_elapsed_ms(cudaEvent_t a, cudaEvent_t b) {
  float ms;
  BENCH_CUDA(cudaEventElapsedTime(&ms, a, b));
  return ms;
}

double bench_copy_bandwidth(void *scratch) {
  const size_t bytes = 2ull << 30;
  cudaEvent_t a, b;
  BENCH_CUDA(cudaEventCreate(&a));
  BENCH_CUDA(cudaEventCreate(&b));
  double samples[7];
  for (int r = 0; r < 8; r++) { /* the first copy warms up */
    BENCH_CUDA(cudaEventRecord(a, 0));
    BENCH_CUDA(cudaMemcpyAsync((uint8_t *)scratch + bytes, scratch, bytes, cudaMemcpyDeviceToDevice, 0));
    BENCH_CUDA(cudaEventRecord(b, 0));
    BENCH_CUDA(cudaEventSynchronize(b));
    float ms;
    BENCH_CUDA(cudaEventElapsedTime(&ms, a, b));
    if (r) samples[r - 1] = 2.0 * bytes / (ms * 1e-3);
  }
  cudaEventDestroy(a), cudaEventDestroy(b);
  return bench_median(samples, 7);
}

void bench_fill_random_f16(void *device, size_t n, unsigned long long seed) {
  enum { CHUNK = 1 << 20 };
  uint16_t *host = malloc(sizeof(uint16_t) * CHUNK);
  if (!host) bench_cuda_ok(cudaErrorMemoryAllocation, "bench_fill_random_f16");
  uint64_t x = seed | 1;
  for (size_t done = 0; done < n; done += CHUNK) {
    size_t m = n - done < CHUNK ? n - done : CHUNK;
    for (size_t i = 0; i < m; i++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      float mag = 0.05f + (float)((x >> 40) * 0x1.0p-24) * 1.95f; /* away from zero */
      host[i] = ikv_f32_to_f16((x & 1) ? mag : -mag);
    }
    BENCH_CUDA(cudaMemcpy((uint16_t *)device + done, host, sizeof(uint16_t) * m, cudaMemcpyHostToDevice));
  }
  free(host);
}
