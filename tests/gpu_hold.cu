/* The stream hold of tests/gpu_hold.h. */
#include <cuda_runtime.h>

#include "tests/gpu_hold.h"

__device__ static inline unsigned long long now_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void hold_kernel(unsigned long long ns) {
  asm volatile("griddepcontrol.launch_dependents;");
  const unsigned long long start = now_ns();
  while (now_ns() - start < ns) __nanosleep(1000);
}

extern "C" int test_gpu_hold(void *stream, uint64_t ns) {
  hold_kernel<<<1, 32, 0, (cudaStream_t)stream>>>(ns);
  return cudaGetLastError() == cudaSuccess;
}
