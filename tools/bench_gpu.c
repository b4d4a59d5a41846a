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

/* Fills n values of device memory, fp16 (half) or fp32, with random
 * magnitudes in [0.05, 2) (away from zero) of the given sign (0: either),
 * one host chunk at a time. */
static void fill_random(void *device, size_t n, int half, int sign, unsigned long long seed) {
  enum { CHUNK = 1 << 20 };
  const size_t size = half ? sizeof(uint16_t) : sizeof(float);
  uint8_t *host = malloc(size * CHUNK);
  if (!host) bench_cuda_ok(cudaErrorMemoryAllocation, "bench fill_random");
  uint64_t x = seed | 1;
  for (size_t done = 0; done < n; done += CHUNK) {
    size_t m = n - done < CHUNK ? n - done : CHUNK;
    for (size_t i = 0; i < m; i++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      const float mag = 0.05f + (float)((x >> 40) * 0x1.0p-24) * 1.95f, v = (sign ? sign < 0 : (int)(x & 1)) ? -mag : mag;
      if (half) ((uint16_t *)host)[i] = ikv_f32_to_f16(v);
      else ((float *)host)[i] = v;
    }
    BENCH_CUDA(cudaMemcpy((uint8_t *)device + size * done, host, size * m, cudaMemcpyHostToDevice));
  }
  free(host);
}

void bench_fill_random_f16(void *device, size_t n, int sign, unsigned long long seed) {
  fill_random(device, n, 1, sign, seed);
}

void bench_fill_random_f32(float *device, size_t n, int sign, unsigned long long seed) {
  fill_random(device, n, 0, sign, seed);
}

double bench_replay_us(cudaGraphExec_t exec, cudaStream_t s, int replays) {
  enum { WARM_UP = 3, MAX_REPLAYS = 64 };
  cudaEvent_t a, b;
  BENCH_CUDA(cudaEventCreate(&a));
  BENCH_CUDA(cudaEventCreate(&b));
  double samples[MAX_REPLAYS];
  if (replays > MAX_REPLAYS) replays = MAX_REPLAYS;
  for (int r = -WARM_UP; r < replays; r++) {
    BENCH_CUDA(cudaEventRecord(a, s));
    BENCH_CUDA(cudaGraphLaunch(exec, s));
    BENCH_CUDA(cudaEventRecord(b, s));
    BENCH_CUDA(cudaEventSynchronize(b));
    if (r >= 0) samples[r] = 1e3 * bench_elapsed_ms(a, b);
  }
  cudaEventDestroy(a), cudaEventDestroy(b);
  return bench_median(samples, replays);
}
