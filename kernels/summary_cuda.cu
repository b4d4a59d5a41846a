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

/* Lane 0's sum of the warp's values, folded as ikv_lanes_fold does. */
__device__ float warp_fold(float v) {
#pragma unroll
  for (int off = IKV_SUMMARY_LANES / 2; off; off >>= 1) v = IKV_ADD(v, __shfl_xor_sync(0xffffffffu, v, off));
  return __shfl_sync(0xffffffffu, v, 0);
}

/* Sequences side by side: sequence b holds candidates [off[b], off[b + 1])
 * of the concatenated page list, and its keys sit at H * off[b] as
 * [H][n_b]. off NULL: one sequence of n. */
struct segments {
  const uint32_t *off;
  uint32_t count, n;
};

__device__ __forceinline__ void segment_of(const segments &sg, uint32_t i, uint32_t *b, uint32_t *off, uint32_t *n) {
  if (!sg.off) {
    *b = 0, *off = 0, *n = sg.n;
    return;
  }
  uint32_t lo = 0, hi = sg.count; /* the last b with off[b] <= i */
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (sg.off[mid] <= i) lo = mid;
    else hi = mid;
  }
  *b = lo, *off = sg.off[lo], *n = sg.off[lo + 1] - sg.off[lo];
}

/* A warp per (page, KV head): lanes over channels, the host's order
 * (kernels/page_summary.h). */
__global__ void __launch_bounds__(THREADS) score_kernel(uint32_t H, uint32_t D, ikv_cuda_summaries s, int bound,
                                                        const uint32_t *pages, segments sg, const float *q,
                                                        size_t q_stride, uint32_t group, uint64_t *keys) {
  const uint32_t w = blockIdx.x * (THREADS / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (w >= sg.n * H) return; /* the whole warp */
  const uint32_t h = w / sg.n, i = w % sg.n;
  uint32_t b, off, n;
  segment_of(sg, i, &b, &off, &n);
  const size_t at = ((size_t)pages[i] * H + h) * D;
  const float *mn = s.kmin + at, *mx = s.kmax + at, *sum = s.ksum + at;
  float best = -INFINITY;
  for (uint32_t j = 0; j < group; j++) {
    const float *qj = q + b * q_stride + ((size_t)h * group + j) * D;
    float a = 0.0f, bb = 0.0f, c2 = 0.0f;
    for (uint32_t c = lane; c < D; c += 32) {
      if (bound) {
        a = IKV_ADD(a, fmaxf(IKV_MUL(qj[c], mn[c]), IKV_MUL(qj[c], mx[c])));
      } else {
        a = IKV_ADD(a, IKV_MUL(qj[c], sum[c]));
        bb = IKV_ADD(bb, IKV_MUL(qj[c], qj[c]));
        c2 = IKV_ADD(c2, IKV_MUL(sum[c], sum[c]));
      }
    }
    float sc;
    if (bound) {
      sc = warp_fold(a);
    } else {
      const float dot = warp_fold(a), qq = warp_fold(bb), kk = warp_fold(c2);
      sc = qq > 0.0f && kk > 0.0f ? IKV_DIV(dot, IKV_SQRT(IKV_MUL(qq, kk))) : 0.0f;
    }
    best = fmaxf(best, sc);
  }
  if (lane == 0) keys[(size_t)H * off + (size_t)h * n + (i - off)] = ikv_rank_key(best, i - off);
}

#define RANK_THREADS 1024

/* A block per row (sequence blockIdx.x / H, head blockIdx.x % H): the row in
 * shared memory, padded to a power of two with the largest key,
 * bitonic-sorted, its first `want` keys written back. */
__global__ void __launch_bounds__(RANK_THREADS) rank_kernel(uint64_t *keys, uint32_t H, segments sg, uint32_t want) {
  extern __shared__ uint64_t row[];
  const uint32_t b = blockIdx.x / H, h = blockIdx.x % H;
  const uint32_t off = sg.off ? sg.off[b] : 0, n = sg.off ? sg.off[b + 1] - off : sg.n;
  uint32_t padded = 2;
  while (padded < n) padded <<= 1;
  uint64_t *k = keys + (size_t)H * off + (size_t)h * n;
  for (uint32_t i = threadIdx.x; i < padded; i += RANK_THREADS) row[i] = i < n ? k[i] : ~0ull;
  __syncthreads();
  for (uint32_t size = 2; size <= padded; size <<= 1)
    for (uint32_t stride = size >> 1; stride; stride >>= 1) {
      for (uint32_t i = threadIdx.x; i < padded; i += RANK_THREADS) {
        const uint32_t j = i ^ stride;
        if (j > i) {
          const uint64_t a = row[i], c = row[j];
          if ((a > c) == ((i & size) == 0)) row[i] = c, row[j] = a;
        }
      }
      __syncthreads();
    }
  for (uint32_t i = threadIdx.x; i < want && i < n; i += RANK_THREADS) k[i] = row[i];
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

namespace {

ikv_status launch_scores(const ikv_geometry *g, const ikv_cuda_summaries *s, int bound, const uint32_t *pages,
                         segments sg, const float *q, size_t q_stride, uint32_t group, uint64_t *keys, void *stream) {
  const uint32_t warps = sg.n * g->kv_heads, per_block = THREADS / 32;
  score_kernel<<<(warps + per_block - 1) / per_block, THREADS, 0, (cudaStream_t)stream>>>(
      g->kv_heads, g->head_dim, *s, bound, pages, sg, q, q_stride, group, keys);
  return cudaGetLastError() == cudaSuccess ? IKV_OK : IKV_E_CUDA;
}

/* longest: the longest row, for the shared memory */
ikv_status launch_rank(uint64_t *keys, uint32_t heads, segments sg, uint32_t rows, uint32_t longest, uint32_t want,
                       void *stream) {
  uint32_t padded = 2;
  while (padded < longest) padded <<= 1;
  const int smem = (int)(padded * sizeof(uint64_t));
  if (smem > 48 * 1024 && cudaFuncSetAttribute(rank_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
    return IKV_E_CUDA;
  rank_kernel<<<rows * heads, RANK_THREADS, smem, (cudaStream_t)stream>>>(keys, heads, sg, want);
  return cudaGetLastError() == cudaSuccess ? IKV_OK : IKV_E_CUDA;
}

} // namespace

extern "C" ikv_status ikv_cuda_page_keys(const ikv_geometry *g, const ikv_cuda_summaries *s, int bound,
                                         const uint32_t *pages, uint32_t n, const float *q, uint32_t group,
                                         uint64_t *keys, void *stream) {
  if (!g || !s || (n && (!pages || !q || !keys))) return IKV_E_NULL;
  if (ikv_geometry_check(g) != IKV_OK || !group) return IKV_E_INVALID;
  if (!n) return IKV_OK;
  return launch_scores(g, s, bound, pages, segments{NULL, 1, n}, q, 0, group, keys, stream);
}

extern "C" ikv_status ikv_cuda_page_keys_batch(const ikv_geometry *g, const ikv_cuda_summaries *s, int bound,
                                               const uint32_t *pages, const uint32_t *seq_off,
                                               const uint32_t *seq_off_host, uint32_t batch, const float *q,
                                               uint32_t q_heads, uint64_t *keys, void *stream) {
  if (!g || !s || (batch && (!seq_off || !seq_off_host))) return IKV_E_NULL;
  if (ikv_geometry_check(g) != IKV_OK || !q_heads || q_heads % g->kv_heads) return IKV_E_INVALID;
  const uint32_t n = batch ? seq_off_host[batch] : 0;
  if (!n) return IKV_OK;
  if (!pages || !q || !keys) return IKV_E_NULL;
  return launch_scores(g, s, bound, pages, segments{seq_off, batch, n}, q, (size_t)q_heads * g->head_dim,
                       q_heads / g->kv_heads, keys, stream);
}

extern "C" ikv_status ikv_cuda_rank_keys(uint32_t heads, uint64_t *keys, uint32_t n, uint32_t want, void *stream) {
  if (n && !keys) return IKV_E_NULL;
  if (want > n) return IKV_E_INVALID;
  if (n > IKV_CUDA_RANK_MAX) return IKV_E_UNSUPPORTED;
  if (!n || !heads || !want) return IKV_OK;
  return launch_rank(keys, heads, segments{NULL, 1, n}, 1, n, want, stream);
}

extern "C" ikv_status ikv_cuda_rank_keys_batch(uint32_t heads, uint64_t *keys, const uint32_t *seq_off,
                                               const uint32_t *seq_off_host, uint32_t batch, uint32_t want,
                                               void *stream) {
  if (batch && (!seq_off || !seq_off_host)) return IKV_E_NULL;
  uint32_t longest = 0;
  for (uint32_t b = 0; b < batch; b++)
    if (seq_off_host[b + 1] - seq_off_host[b] > longest) longest = seq_off_host[b + 1] - seq_off_host[b];
  if (longest > IKV_CUDA_RANK_MAX) return IKV_E_UNSUPPORTED;
  if (!longest || !heads || !want) return IKV_OK;
  if (!keys) return IKV_E_NULL;
  return launch_rank(keys, heads, segments{seq_off, batch, seq_off_host[batch]}, batch, longest, want, stream);
}

namespace {

constexpr int SCATTER_THREADS = 256, SCATTER_WARPS = SCATTER_THREADS / 32;

/* Exclusive prefix over the block of one count per thread (returned), and the total. */
__device__ uint32_t block_scan(uint32_t x, uint32_t *warp_sums, uint32_t *total) {
  const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t incl = x;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const uint32_t y = __shfl_up_sync(0xffffffffu, incl, off);
    if (lane >= (uint32_t)off) incl += y;
  }
  __syncthreads(); /* warp_sums may hold the previous scan */
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  uint32_t before = 0, all = 0;
  for (int w = 0; w < SCATTER_WARPS; w++) before += w < (int)warp ? warp_sums[w] : 0, all += warp_sums[w];
  *total = all;
  return before + incl - x;
}

/* Each thread owns a contiguous run of the row's candidates; per precision,
 * a block scan places its chosen ones after those of the threads before. */
__global__ void __launch_bounds__(SCATTER_THREADS) scatter_kernel(ikv_cuda_selection s) {
  __shared__ uint8_t chosen[IKV_CUDA_RANK_MAX], prec[IKV_CUDA_RANK_MAX];
  __shared__ uint32_t warp_sums[SCATTER_WARPS];
  const uint32_t row = blockIdx.x, b = row / s.kv_heads, h = row % s.kv_heads;
  const uint32_t off = s.seq_off[b], n = s.seq_off[b + 1] - off, want = n < s.k ? n : s.k;
  const uint64_t *keys = s.keys + (size_t)s.kv_heads * off + (size_t)h * n;
  for (uint32_t i = threadIdx.x; i < n; i += SCATTER_THREADS) chosen[i] = 0, prec[i] = s.cand[off + i].precision;
  __syncthreads();
  for (uint32_t r = threadIdx.x; r < want; r += SCATTER_THREADS) chosen[(uint32_t)keys[r]] = 1; /* the ordinal */
  __syncthreads();
  const uint32_t per = (n + SCATTER_THREADS - 1) / SCATTER_THREADS, lo = threadIdx.x * per;
  const uint32_t hi = lo + per < n ? lo + per : n;
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
    const int32_t base = s.reserved[row * IKV_PRECISION_COUNT + p];
    if (base < 0) continue; /* block-uniform */
    uint32_t mine = 0, of_p = 0;
    for (uint32_t i = lo; i < hi; i++) mine += chosen[i] && prec[i] == p, of_p += prec[i] == p;
    uint32_t placed, candidates;
    uint32_t at = block_scan(mine, warp_sums, &placed);
    block_scan(of_p, warp_sums, &candidates);
    for (uint32_t i = lo; i < hi; i++)
      if (chosen[i] && prec[i] == p) {
        const ikv_select_candidate c = s.cand[off + i];
        const int32_t e = base + (int32_t)at++;
        s.page_slot[e] = c.slot, s.page_index[e] = c.page_index, s.first[e] = c.first, s.last[e] = c.last;
      }
    const uint32_t reserved = candidates < s.k ? candidates : s.k;
    for (uint32_t e = placed + threadIdx.x; e < reserved; e += SCATTER_THREADS) s.first[base + e] = 1, s.last[base + e] = 0;
    /* the items over the unfilled tail end where the filled part does */
    const int32_t *g = s.groups + (row * IKV_PRECISION_COUNT + p) * 3;
    const uint32_t group_end = (uint32_t)g[2], filled_to = group_end - (reserved - placed);
    for (int32_t i = g[0] + (int32_t)threadIdx.x; g[0] >= 0 && i < g[0] + g[1]; i += SCATTER_THREADS) {
      const uint32_t begin = s.items[i].begin, cut = begin + s.pages_per_item < group_end ? begin + s.pages_per_item : group_end;
      s.items[i].end = cut < filled_to ? cut : (filled_to > begin ? filled_to : begin);
    }
  }
}

} // namespace

extern "C" ikv_status ikv_cuda_select_scatter(const ikv_cuda_selection *sel, void *stream) {
  if (!sel) return IKV_E_NULL;
  if (!sel->batch || !sel->kv_heads) return IKV_OK;
  if (!sel->seq_off || !sel->cand || !sel->keys || !sel->reserved || !sel->page_slot || !sel->page_index ||
      !sel->first || !sel->last || !sel->groups || !sel->items)
    return IKV_E_NULL;
  if (!sel->pages_per_item) return IKV_E_INVALID;
  scatter_kernel<<<sel->batch * sel->kv_heads, SCATTER_THREADS, 0, (cudaStream_t)stream>>>(*sel);
  return cudaGetLastError() == cudaSuccess ? IKV_OK : IKV_E_CUDA;
}
