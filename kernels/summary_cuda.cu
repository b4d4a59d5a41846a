/* Page key summaries and page scores on the GPU (kernels/summary_cuda.h). */
#include <cuda_runtime.h>

#include "kernels/page_summary.h"
#include "kernels/summary_cuda.h"

#define THREADS 256

__device__ float key_at(const void *k, int dtype, size_t i) {
  if (dtype == IKV_DTYPE_F16) return ikv_f16_to_f32(reinterpret_cast<const uint16_t *>(k)[i]);
  if (dtype == IKV_DTYPE_BF16) return ikv_bf16_to_f32(reinterpret_cast<const uint16_t *>(k)[i]);
  return reinterpret_cast<const float *>(k)[i];
}

/* A block per token; the block of a run's first token (consecutive slots of
 * one page) folds the run in token order, a thread per (head, channel), so
 * the sums add in the CPU backend's order. */
__global__ void __launch_bounds__(THREADS) summarize_kernel(uint32_t P, uint32_t HD, ikv_cuda_summaries s, const void *k,
                                                            int dtype, const int64_t *slots, const uint32_t *pages,
                                                            uint32_t n) {
  const uint32_t i = blockIdx.x;
  const uint32_t page = pages[i];
  if (i > 0 && pages[i - 1] == page && slots[i - 1] + 1 == slots[i]) return;
  uint32_t len = 1;
  while (i + len < n && pages[i + len] == page && slots[i + len] == slots[i] + len) len++;
  const uint32_t offset = (uint32_t)(slots[i] % P);
  for (uint32_t c = threadIdx.x; c < HD; c += THREADS) {
    const size_t at = (size_t)page * HD + c;
    float mn = s.kmin[at], mx = s.kmax[at], sum = s.ksum[at];
    if (offset == 0) ikv_summary_reset(&mn, &mx, &sum);
    for (uint32_t r = 0; r < len; r++) ikv_summary_fold(&mn, &mx, &sum, key_at(k, dtype, (size_t)(i + r) * HD + c));
    s.kmin[at] = mn, s.kmax[at] = mx, s.ksum[at] = sum;
  }
}

/* A thread per (page, KV head). */
__global__ void __launch_bounds__(THREADS) score_kernel(uint32_t H, uint32_t D, ikv_cuda_summaries s, int bound,
                                                        const uint32_t *pages, uint32_t n, const float *q, uint32_t group,
                                                        float *scores) {
  const uint32_t x = blockIdx.x * THREADS + threadIdx.x;
  if (x >= n * H) return;
  const uint32_t h = x / n, i = x % n;
  const size_t at = ((size_t)pages[i] * H + h) * D;
  scores[x] = ikv_summary_score(bound, s.kmin + at, s.kmax + at, s.ksum + at, q + (size_t)h * group * D, group, D);
}

extern "C" ikv_status ikv_cuda_summarize(const ikv_geometry *g, const ikv_cuda_summaries *s, const void *k,
                                         ikv_dtype dtype, const int64_t *slot_mapping, const uint32_t *pages, uint32_t n,
                                         void *stream) {
  if (!g || !s || (n && (!k || !slot_mapping || !pages))) return IKV_E_NULL;
  if (ikv_geometry_check(g) != IKV_OK || (unsigned)dtype >= IKV_DTYPE_COUNT) return IKV_E_INVALID;
  if (!n) return IKV_OK;
  summarize_kernel<<<n, THREADS, 0, (cudaStream_t)stream>>>(g->page_size, g->kv_heads * g->head_dim, *s, k, dtype,
                                                            slot_mapping, pages, n);
  return cudaGetLastError() == cudaSuccess ? IKV_OK : IKV_E_CUDA;
}

extern "C" ikv_status ikv_cuda_score_pages(const ikv_geometry *g, const ikv_cuda_summaries *s, int bound,
                                           const uint32_t *pages, uint32_t n, const float *q, uint32_t group,
                                           float *scores, void *stream) {
  if (!g || !s || (n && (!pages || !q || !scores))) return IKV_E_NULL;
  if (ikv_geometry_check(g) != IKV_OK || !group) return IKV_E_INVALID;
  if (!n) return IKV_OK;
  const uint32_t threads = n * g->kv_heads;
  score_kernel<<<(threads + THREADS - 1) / THREADS, THREADS, 0, (cudaStream_t)stream>>>(g->kv_heads, g->head_dim, *s,
                                                                                       bound, pages, n, q, group, scores);
  return cudaGetLastError() == cudaSuccess ? IKV_OK : IKV_E_CUDA;
}
