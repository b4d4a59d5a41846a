/* Page key summaries and page scores on the GPU (kernels/summary_cuda.h). */
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/launch.cuh"
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
    uint16_t mn = s.kmin[at], mx = s.kmax[at];
    float sum = s.ksum[at];
    if (offset == 0) ikv_summary_reset(&mn, &mx, &sum);
    for (uint32_t r = 0; r < len; r++) ikv_summary_fold(&mn, &mx, &sum, key_at(k, dtype, (size_t)(i + r) * HD + c));
    s.kmin[at] = mn, s.kmax[at] = mx, s.ksum[at] = sum;
  }
}

/* The first lane's sum of a group of G lanes' values, folded as
 * ikv_lanes_fold does (the other lanes' sums add in other orders). */
template <int G> __device__ __forceinline__ float lanes_fold(float v) {
#pragma unroll
  for (int off = G / 2; off; off >>= 1) v = IKV_ADD(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

/* Two fp16 values (bits, low half first) as floats, exactly. */
__device__ __forceinline__ float2 half2_bits(uint32_t u) { return __half22float2(*reinterpret_cast<const __half2 *>(&u)); }

/* Sequences side by side: sequence b holds candidates [off[b], off[b + 1])
 * of the concatenated page list, and its keys sit at H * off[b] as
 * [H][n_b]. off NULL: one sequence of n. */
struct segments {
  const uint32_t *off;
  uint32_t count, n;
};

/* The scores of a block's run of one row's candidates: block (x, KV head
 * blockIdx.y, sequence blockIdx.z) takes the row's candidates from
 * x * PAGES_A_BLOCK, a group of G
 * lanes a candidate (ikv_summary_lanes: lane l of a group holds the
 * 4-channel chunks l, l + G, ... of the page's summary, at most four), 32 / G
 * candidates a warp, in the host's order (kernels/page_summary.h). Every
 * load is issued before any arithmetic: the page ids (loaded before the
 * wait), then the summaries and the row's queries, which the block shares
 * through shared memory (loaded per warp inside the loop over query heads
 * they were one dependent round trip a head). The bound's 4 multiplies,
 * maxima and adds a channel are most of a score's instructions; a page a
 * warp spent as many again on the shuffles that fold 32 lanes. A kernel
 * per mode (BOUND: Quest's bound from the fp16 minima and maxima; else the
 * mean key's cosine from the sums) holds only its own data in registers. */
template <int G, bool BOUND, bool FULL, int MIN_BLOCKS>
__global__ void __launch_bounds__(THREADS, MIN_BLOCKS)
    score_kernel(uint32_t H, uint32_t D, ikv_cuda_summaries s,
                                                        const uint32_t *pages, segments sg, const float *q,
                                                        size_t q_stride, uint32_t group, uint64_t *keys) {
  constexpr int PAGES_A_BLOCK = THREADS / G, CPL = 4; /* chunks a lane, at most */
  extern __shared__ float4 qs[];                      /* [group][D / 4]: the row's queries */
  const uint32_t b = blockIdx.z, h = blockIdx.y, chunks = D / IKV_SUMMARY_CHUNK;
  const uint32_t off = sg.off ? sg.off[b] : 0, n = sg.off ? sg.off[b + 1] - off : sg.n;
  const uint32_t i0 = blockIdx.x * PAGES_A_BLOCK, i = i0 + threadIdx.x / G, gl = threadIdx.x % G;
  /* a programmatic dependent (the selection after it) may launch now: it
   * waits for this grid before it reads the keys */
  asm volatile("griddepcontrol.launch_dependents;");
  if (i0 >= n) return; /* the whole block: a shorter sequence's */
  const bool have = i < n;
  const uint32_t page = have ? pages[off + i] : 0; /* the plan's: uploaded, not computed */
  /* launched overlapping the kernel before it, which may write the summaries */
  asm volatile("griddepcontrol.wait;" ::: "memory");
  const float4 *qrow = reinterpret_cast<const float4 *>(q + b * q_stride + (size_t)h * group * D);
#pragma unroll 1
  for (uint32_t x = threadIdx.x; x < group * chunks; x += THREADS) qs[x] = qrow[x];
  const size_t at = ((size_t)page * H + h) * D;
  uint2 mn16[CPL], mx16[CPL]; /* BOUND: a chunk's fp16 minima, maxima (8 bytes each) */
  float4 sm[CPL];             /* else: a chunk's sums */
#pragma unroll
  for (int k = 0; k < CPL; k++) {
    const uint32_t c = gl + G * k;
    const bool in = have && (FULL || c < chunks);
    if constexpr (BOUND) {
      mn16[k] = in ? reinterpret_cast<const uint2 *>(s.kmin + at)[c] : make_uint2(0u, 0u);
      mx16[k] = in ? reinterpret_cast<const uint2 *>(s.kmax + at)[c] : make_uint2(0u, 0u);
    } else {
      sm[k] = in ? reinterpret_cast<const float4 *>(s.ksum + at)[c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
  }
  __syncthreads(); /* the queries in shared memory */
  float lo[CPL][4], hi[CPL][4]; /* BOUND: the bounds as floats, once for every query head */
  if constexpr (BOUND) {
#pragma unroll
    for (int k = 0; k < CPL; k++) {
      const float2 l01 = half2_bits(mn16[k].x), l23 = half2_bits(mn16[k].y);
      const float2 h01 = half2_bits(mx16[k].x), h23 = half2_bits(mx16[k].y);
      lo[k][0] = l01.x, lo[k][1] = l01.y, lo[k][2] = l23.x, lo[k][3] = l23.y;
      hi[k][0] = h01.x, hi[k][1] = h01.y, hi[k][2] = h23.x, hi[k][3] = h23.y;
    }
  }
  float best = -INFINITY;
  for (uint32_t j = 0; j < group; j++) {
    const float4 *qj = qs + j * chunks;
    float a = 0.0f, bb = 0.0f, c2 = 0.0f;
#pragma unroll
    for (int k = 0; k < CPL; k++) {
      const uint32_t c = gl + G * k;
      if (!FULL && c >= chunks) break;
      const float4 qv = qj[c];
      const float qc[4] = {qv.x, qv.y, qv.z, qv.w};
      if constexpr (BOUND) {
#pragma unroll
        for (int x = 0; x < 4; x++) a = IKV_ADD(a, fmaxf(IKV_MUL(qc[x], lo[k][x]), IKV_MUL(qc[x], hi[k][x])));
      } else {
        const float sc[4] = {sm[k].x, sm[k].y, sm[k].z, sm[k].w};
#pragma unroll
        for (int x = 0; x < 4; x++) {
          a = IKV_ADD(a, IKV_MUL(qc[x], sc[x]));
          bb = IKV_ADD(bb, IKV_MUL(qc[x], qc[x]));
          c2 = IKV_ADD(c2, IKV_MUL(sc[x], sc[x]));
        }
      }
    }
    float score;
    if constexpr (BOUND) {
      score = lanes_fold<G>(a);
    } else {
      const float dot = lanes_fold<G>(a), qq = lanes_fold<G>(bb), kk = lanes_fold<G>(c2);
      score = qq > 0.0f && kk > 0.0f ? IKV_DIV(dot, IKV_SQRT(IKV_MUL(qq, kk))) : 0.0f;
    }
    best = fmaxf(best, score);
  }
  if (gl == 0 && have) keys[(size_t)H * off + (size_t)h * n + i] = ikv_rank_key(best, i);
}

#define RANK_THREADS 1024

/* The padded length of a row of n keys sorted with E keys a thread: a power
 * of two, at least one warp's worth. */
__host__ __device__ static inline uint32_t rank_padded(uint32_t n, uint32_t E) {
  uint32_t padded = 32 * E;
  while (padded < n) padded <<= 1;
  return padded;
}

/* A block per row (sequence blockIdx.x / H, head blockIdx.x % H), padded to a
 * power of two with the largest key and bitonic-sorted, its first `want`
 * keys written back. Thread t holds keys [t E, t E + E) in registers: the
 * compare-exchanges of stride below E stay in the thread, those below 32 E
 * go through warp shuffles, and only the longer ones through shared memory,
 * so a row of 2,048 keys takes 25 block barriers instead of 66. */
template <int E>
__global__ void __launch_bounds__(RANK_THREADS) rank_kernel(uint64_t *keys, uint32_t H, segments sg, uint32_t want) {
  extern __shared__ uint64_t row[];
  const uint32_t b = blockIdx.x / H, h = blockIdx.x % H;
  const uint32_t off = sg.off ? sg.off[b] : 0, n = sg.off ? sg.off[b + 1] - off : sg.n;
  const uint32_t padded = rank_padded(n, E), t = threadIdx.x, mine = t * E;
  const bool active = mine < padded; /* whole warps: padded / E is a multiple of 32 */
  uint64_t *k = keys + (size_t)H * off + (size_t)h * n;
  uint64_t v[E];
#pragma unroll
  for (int e = 0; e < E; e++) v[e] = mine + e < n ? k[mine + e] : ~0ull;
  for (uint32_t size = 2; size <= padded; size <<= 1) {
    uint32_t stride = size >> 1;
    if (stride >= 32 * E) { /* the long strides, in shared memory */
      if (active)
#pragma unroll
        for (int e = 0; e < E; e++) row[mine + e] = v[e];
      __syncthreads();
      for (; stride >= 32 * E; stride >>= 1) {
        for (uint32_t i = t; i < padded; i += blockDim.x) {
          const uint32_t j = i ^ stride;
          if (j > i) {
            const uint64_t x = row[i], y = row[j];
            if ((x > y) == ((i & size) == 0)) row[i] = y, row[j] = x;
          }
        }
        __syncthreads();
      }
      if (active)
#pragma unroll
        for (int e = 0; e < E; e++) v[e] = row[mine + e];
      __syncthreads(); /* every thread has read before the next size writes */
    }
    for (; stride >= E; stride >>= 1) { /* partner: the same slot of lane t ^ (stride / E) */
      const uint32_t lanes = stride / E;
      const bool lower = (t & lanes) == 0;
#pragma unroll
      for (int e = 0; e < E; e++) {
        const uint64_t other = __shfl_xor_sync(0xffffffffu, v[e], lanes);
        const bool ascending = ((mine + e) & size) == 0;
        v[e] = (lower == ascending) == (v[e] < other) ? v[e] : other; /* lower of an ascending pair: the smaller */
      }
    }
#pragma unroll
    for (int st = E / 2; st >= 1; st >>= 1) { /* partner inside the thread: fixed indices keep v in registers */
      if ((uint32_t)st > stride) continue;
#pragma unroll
      for (int e = 0; e < E; e++) {
        const int f = e ^ st;
        if (f > e && (v[e] > v[f]) == (((mine + e) & size) == 0)) {
          const uint64_t x = v[e];
          v[e] = v[f], v[f] = x;
        }
      }
    }
  }
#pragma unroll
  for (int e = 0; e < E; e++)
    if (mine + e < want && mine + e < n) k[mine + e] = v[e];
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

template <int G, int MIN_BLOCKS>
auto pick_score_kernel(int bound, bool full) -> decltype(&score_kernel<G, true, true, MIN_BLOCKS>) {
  return bound ? (full ? score_kernel<G, true, true, MIN_BLOCKS> : score_kernel<G, true, false, MIN_BLOCKS>)
               : (full ? score_kernel<G, false, true, MIN_BLOCKS> : score_kernel<G, false, false, MIN_BLOCKS>);
}

template <int G>
cudaError_t launch_scores_g(dim3 grid, cudaStream_t st, const ikv_geometry *g,
                            const ikv_cuda_summaries *s, int bound, const uint32_t *pages, segments sg, const float *q,
                            size_t q_stride, uint32_t group, uint64_t *keys) {
  /* every lane four chunks (head_dim 128, 256, 512): no guard a chunk */
  const bool full = g->head_dim / IKV_SUMMARY_CHUNK == 4 * G;
  const int smem = (int)(sizeof(float) * group * g->head_dim);
  /* Where every block is resident at once with the registers the compiler
   * wants (about 60 at head_dim 128: four blocks an SM), it gets them (1 x
   * 32K on H100: 5.0 us, 5.6 with 48); where blocks queue, five an SM keep
   * more summaries in flight (32 x 128K: 389 us, 410 with four) */
  const auto roomy = pick_score_kernel<G, 1>(bound, full);
  const int sms = ikv_cuda_sm_count();
  int resident = 0;
  if (!sms) return cudaErrorInvalidDevice;
  const cudaError_t oe = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, roomy, THREADS, smem);
  if (oe != cudaSuccess) return oe;
  const bool one_wave = (size_t)grid.x * grid.y * grid.z <= (size_t)resident * sms;
  const auto kernel = one_wave ? roomy : pick_score_kernel<G, 5>(bound, full);
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return e;
  }
  return ikv_launch(kernel, grid, dim3(THREADS), smem, st, true, g->kv_heads, g->head_dim, *s, pages, sg, q, q_stride,
                    group, keys);
}

ikv_status launch_scores(const ikv_geometry *g, const ikv_cuda_summaries *s, int bound, const uint32_t *pages,
                         segments sg, uint32_t longest, const float *q, size_t q_stride, uint32_t group, uint64_t *keys,
                         void *stream) {
  const uint32_t G = ikv_summary_lanes(g->head_dim), per_block = THREADS / G;
  const dim3 grid((longest + per_block - 1) / per_block, g->kv_heads, sg.off ? sg.count : 1);
  cudaStream_t st = (cudaStream_t)stream;
  const auto launch = G == 8 ? launch_scores_g<8> : G == 16 ? launch_scores_g<16> : launch_scores_g<32>;
  const cudaError_t e = launch(grid, st, g, s, bound, pages, sg, q, q_stride, group, keys);
  return e == cudaSuccess && cudaGetLastError() == cudaSuccess ? IKV_OK : IKV_E_CUDA;
}

/* longest: the longest row, for the shared memory and the keys a thread */
template <int E> ikv_status launch_rank_e(uint64_t *keys, uint32_t heads, segments sg, uint32_t rows, uint32_t longest,
                                          uint32_t want, void *stream) {
  const uint32_t padded = rank_padded(longest, E);
  const int smem = (int)(padded * sizeof(uint64_t));
  if (smem > 48 * 1024 &&
      cudaFuncSetAttribute(rank_kernel<E>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
    return IKV_E_CUDA;
  rank_kernel<E><<<rows * heads, padded / E, smem, (cudaStream_t)stream>>>(keys, heads, sg, want);
  return cudaGetLastError() == cudaSuccess ? IKV_OK : IKV_E_CUDA;
}

/* Keys a thread: as few as let RANK_THREADS threads hold the longest row. */
ikv_status launch_rank(uint64_t *keys, uint32_t heads, segments sg, uint32_t rows, uint32_t longest, uint32_t want,
                       void *stream) {
  if (longest <= RANK_THREADS) return launch_rank_e<1>(keys, heads, sg, rows, longest, want, stream);
  if (longest <= 2 * RANK_THREADS) return launch_rank_e<2>(keys, heads, sg, rows, longest, want, stream);
  if (longest <= 4 * RANK_THREADS) return launch_rank_e<4>(keys, heads, sg, rows, longest, want, stream);
  return launch_rank_e<8>(keys, heads, sg, rows, longest, want, stream); /* IKV_CUDA_RANK_MAX = 8 * RANK_THREADS */
}

} // namespace

extern "C" ikv_status ikv_cuda_page_keys(const ikv_geometry *g, const ikv_cuda_summaries *s, int bound,
                                         const uint32_t *pages, uint32_t n, const float *q, uint32_t group,
                                         uint64_t *keys, void *stream) {
  if (!g || !s || (n && (!pages || !q || !keys))) return IKV_E_NULL;
  if (ikv_geometry_check(g) != IKV_OK || !group) return IKV_E_INVALID;
  if (!n) return IKV_OK;
  return launch_scores(g, s, bound, pages, segments{NULL, 1, n}, n, q, 0, group, keys, stream);
}

extern "C" ikv_status ikv_cuda_page_keys_batch(const ikv_geometry *g, const ikv_cuda_summaries *s, int bound,
                                               const uint32_t *pages, const uint32_t *seq_off, uint32_t longest,
                                               uint32_t batch, const float *q, uint32_t q_heads, uint64_t *keys,
                                               void *stream) {
  if (!g || !s || (batch && !seq_off)) return IKV_E_NULL;
  if (ikv_geometry_check(g) != IKV_OK || !q_heads || q_heads % g->kv_heads) return IKV_E_INVALID;
  if (!batch || !longest) return IKV_OK;
  if (!pages || !q || !keys) return IKV_E_NULL;
  return launch_scores(g, s, bound, pages, segments{seq_off, batch, 0}, longest, q, (size_t)q_heads * g->head_dim,
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
                                               uint32_t longest, uint32_t batch, uint32_t want, void *stream) {
  if (batch && !seq_off) return IKV_E_NULL;
  if (longest > IKV_CUDA_RANK_MAX) return IKV_E_UNSUPPORTED;
  if (!batch || !longest || !heads || !want) return IKV_OK;
  if (!keys) return IKV_E_NULL;
  return launch_rank(keys, heads, segments{seq_off, batch, 0}, batch, longest, want, stream);
}

namespace {

/* Threads a block (a row): 1,024 where the rows do not fill the SMs (batch
 * 1: 8 rows; each block's time is then its threads' chains of dependent
 * steps, and more threads make each thread's run of candidates shorter:
 * 2,048 candidates 15.2 -> 13.8 us, 8,192 45.6 -> 25.4 us on H100), 256
 * where they do (batch 32: 256 rows, 19.4 us at 2,048 candidates, 27.4 with
 * 1,024), unless a row exceeds the 8 keys a thread holds (32 x 128K with
 * the keys in registers: 1,024 threads 38.6 us, 256 loading keys from L2
 * 61.5 us). */
constexpr int FORMATS = IKV_PRECISION_COUNT;

/* Candidate i of a row sits in lane i % 32 of warp i / 32 % (T / 32), in
 * round i / T: a warp's 32 consecutive candidates are one "run", so a
 * match orders them within the run, and runs (at most IKV_CUDA_RANK_MAX /
 * 32) are ordered by their first candidate. */
constexpr int MAX_RUNS = IKV_CUDA_RANK_MAX / 32;

/* Where the boundary bin holds this few keys, one warp ranks them outright
 * instead of another histogram pass over the row. */
constexpr uint32_t GATHER = 32;

/* The row's want-th smallest of its n keys (distinct; 0 < want < n): a
 * radix select over the keys thread t holds in registers (candidate
 * r T + t in key[r]; the row is read from memory once, where each pass
 * reading it again cost an L2 round trip). The first digit starts at the
 * highest bit in which the row's keys differ (found on the scores' half,
 * the high 32 bits, unless every score ties), so no pass is spent on bits
 * every key shares; then 8-bit digits down, each pass a histogram of the
 * keys that share the digits found so far (an atomic add a key: grouping a
 * warp's equal digits with __match_any_sync first cost more than the
 * collisions it saved, 1.1 of 8.1 us at 1 x 32K on H100). Once the
 * boundary bin holds GATHER keys or fewer, they are gathered and warp 0
 * ranks them against each other. Returns the threshold: a key is among the
 * want smallest iff it is <= the threshold. */
template <int T, int E>
__device__ uint64_t select_threshold(const uint64_t (&key)[E], uint32_t n, uint32_t want, uint32_t *hist,
                                     uint32_t *wide, uint64_t *shared) {
  const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t lo = ~0u, hi = 0;
#pragma unroll
  for (int r = 0; r < E; r++)
    if (r * T + threadIdx.x < n) {
      const uint32_t x = (uint32_t)(key[r] >> 32); /* the high half */
      lo = min(lo, x), hi = max(hi, x);
    }
#pragma unroll
  for (int off = 16; off; off >>= 1)
    lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, off)), hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, off));
  if (lane == 0) wide[warp] = lo, wide[T / 32 + warp] = hi;
  __syncthreads();
  lo = lane < T / 32 ? wide[lane] : ~0u, hi = lane < T / 32 ? wide[T / 32 + lane] : 0;
#pragma unroll
  for (int off = 16; off; off >>= 1)
    lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, off)), hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, off));
  /* every score the same: the ordinals (the low half) decide */
  const int top = lo != hi ? 63 - __clz((int)(lo ^ hi)) : 31;
  int width = 8, shift = top + 1 - width;
  uint64_t pre = top == 63 ? 0 : ((uint64_t)lo << 32) >> (top + 1) << (top + 1); /* the bits all keys share */
  uint32_t need = want;
  uint32_t *const gathered = hist + 258;
  uint64_t *const pick = shared, *const list = shared + 1;
  for (;;) {
    for (uint32_t d = threadIdx.x; d < 256; d += T) hist[d] = 0;
    if (threadIdx.x == 0) *gathered = 0;
    __syncthreads();
#pragma unroll
    for (int r = 0; r < E; r++)
      if (r * T + threadIdx.x < n && (shift + width == 64 || (key[r] ^ pre) >> (shift + width) == 0))
        atomicAdd(&hist[(uint32_t)(key[r] >> shift) & 0xffu], 1u);
    __syncthreads();
    if (warp == 0) { /* lane l sums bins 8l .. 8l + 7; the lane where the count reaches `need` picks */
      uint32_t c[8], sum = 0;
#pragma unroll
      for (int j = 0; j < 8; j++) c[j] = hist[8 * lane + j], sum += c[j];
      uint32_t incl = sum;
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        const uint32_t y = __shfl_up_sync(0xffffffffu, incl, off);
        if (lane >= (uint32_t)off) incl += y;
      }
      uint32_t before = incl - sum;
      if (before < need && need <= incl) {
        int d = 0;
        while (before + c[d] < need) before += c[d++];
        pick[0] = pre | (uint64_t)(8 * lane + d) << shift;
        hist[256] = need - before, hist[257] = c[d];
      }
    }
    __syncthreads();
    pre = pick[0], need = hist[256];
    const uint32_t in_bin = hist[257];
    if (in_bin == need) return pre | ((1ull << shift) - 1); /* the bin holds exactly the keys still wanted */
    if (in_bin <= GATHER || shift == 0) break;
    width = shift < 8 ? shift : 8, shift -= width;
  }
  /* the boundary bin's keys (those sharing pre above shift) to shared
   * memory, in any order; warp 0 finds the need-th smallest among them */
#pragma unroll
  for (int r = 0; r < E; r++)
    if (r * T + threadIdx.x < n && (key[r] ^ pre) >> shift == 0) list[atomicAdd(gathered, 1u)] = key[r];
  __syncthreads();
  if (warp == 0) {
    const uint32_t m = *gathered;
    const uint64_t mine = lane < m ? list[lane] : ~0ull;
    uint32_t below = 0;
    for (uint32_t j = 0; j < m; j++) below += __shfl_sync(0xffffffffu, mine, j) < mine;
    if (lane < m && below == need - 1) pick[0] = mine;
  }
  __syncthreads();
  return pick[0];
}

/* A block per row (b, h) of at most T E candidates: the row's threshold
 * found, then each warp run matches its candidates by (format, chosen): a
 * run's chosen of a format count into their run's slot, one warp a format
 * turns the slots into offsets, and each chosen candidate lands after its
 * format's earlier runs and the lanes before it. Where it is launched as a
 * programmatic dependent of the scores, the plan's data (uploaded before
 * the scores ran) loads before it waits for their keys. */
template <int T, int E> __global__ void __launch_bounds__(T) select_scatter_kernel(ikv_cuda_selection s) {
  static_assert(T / 32 >= FORMATS, "a warp a format scans the runs");
  __shared__ uint32_t run_count[MAX_RUNS][FORMATS], candidates[FORMATS], chosen_total[FORMATS];
  __shared__ uint32_t hist[259], wide[T / 16]; /* 256 bins, then the pick's need and bin count, the gathered count */
  __shared__ uint64_t shared[1 + GATHER];
  __shared__ int32_t reserved[FORMATS], group[FORMATS][3]; /* the row's, as in ikv_cuda_selection */
  asm volatile("griddepcontrol.launch_dependents;"); /* the decode after it waits for this grid on entry */
  const uint32_t row = blockIdx.x, b = row / s.kv_heads, h = row % s.kv_heads, t = threadIdx.x;
  const uint32_t lane = t & 31, warp = t >> 5;
  /* Everything of the plan's loads before the wait for the keys, at once:
   * the row's reservations and groups, the candidates' formats and the
   * first item of each group this thread's warp ends. Loaded where they
   * were used, one dependent round trip to memory after another, they cost
   * 1.7 of 13.4 us at 1 x 32K on H100. */
  if (t < FORMATS) reserved[t] = s.reserved[row * FORMATS + t], candidates[t] = 0;
  if (t < 3 * FORMATS) group[t / 3][t % 3] = s.groups[row * FORMATS * 3 + t];
  const uint32_t off = s.seq_off[b], n = s.seq_off[b + 1] - off, want = n < s.k ? n : s.k;
  uint32_t prec[E]; /* candidate r T + t's format; FORMATS past the row */
#pragma unroll
  for (int r = 0; r < E; r++) prec[r] = r * T + t < n ? s.cand[off + r * T + t].precision : FORMATS;
  for (uint32_t x = t; x < (n + 31) / 32 * FORMATS; x += T) (&run_count[0][0])[x] = 0;
  __syncthreads();
  /* warp p ends format p's items: lane l's first */
  const bool ends = warp < FORMATS && group[warp][0] >= 0 && lane < (uint32_t)group[warp][1];
  const uint32_t item_begin = ends ? s.items[group[warp][0] + lane].begin : 0;
  asm volatile("griddepcontrol.wait;" ::: "memory"); /* the scores' grid done, its keys visible */
  const uint64_t *keys = s.keys + (size_t)s.kv_heads * off + (size_t)h * n;
  uint64_t key[E];
#pragma unroll
  for (int r = 0; r < E; r++) key[r] = r * T + t < n ? keys[r * T + t] : ~0ull;
  const uint64_t threshold =
      want == n ? ~0ull : want ? select_threshold<T, E>(key, n, want, hist, wide, shared) : 0;
  const bool any = want != 0;
  /* a run's lanes grouped by (format, chosen); lane masks below each lane */
  const uint32_t below = (1u << lane) - 1;
  uint32_t peers[E];
#pragma unroll
  for (int r = 0; r < E; r++) {
    const uint32_t base = r * T + warp * 32, p = prec[r], c = any && key[r] <= threshold;
    if (base >= n) break; /* warp-uniform: this warp's later runs are past the row too */
    peers[r] = __match_any_sync(0xffffffffu, p << 1 | c);
    if ((peers[r] & below) == 0 && p < FORMATS) { /* the group's first lane */
      atomicAdd(&candidates[p], (uint32_t)__popc(peers[r]));
      if (c) run_count[base / 32][p] = (uint32_t)__popc(peers[r]);
    }
  }
  __syncthreads();
  if (warp < FORMATS) { /* warp p: format p's runs to exclusive offsets, lane l over a stretch of runs */
    const uint32_t runs = (n + 31) / 32, per = (runs + 31) / 32, lo = lane * per;
    const uint32_t hi = lo + per < runs ? lo + per : runs;
    uint32_t sum = 0;
    for (uint32_t r = lo; r < hi; r++) sum += run_count[r][warp];
    uint32_t incl = sum;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const uint32_t y = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= (uint32_t)o) incl += y;
    }
    uint32_t at = incl - sum;
    for (uint32_t r = lo; r < hi; r++) {
      const uint32_t x = run_count[r][warp];
      run_count[r][warp] = at, at += x;
    }
    if (lane == 31) chosen_total[warp] = incl;
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < E; r++) {
    const uint32_t base = r * T + warp * 32, i = r * T + t, p = prec[r];
    if (base >= n) break;
    if (!(any && key[r] <= threshold) || p >= FORMATS || reserved[p] < 0) continue; /* no entry reserved for its format */
    const int32_t e = reserved[p] + (int32_t)(run_count[base / 32][p] + __popc(peers[r] & below));
    const ikv_select_candidate x = s.cand[off + i];
    s.page_slot[e] = x.slot, s.page_index[e] = x.page_index, s.first[e] = x.first, s.last[e] = x.last;
  }
  if (warp < FORMATS && reserved[warp] >= 0) { /* warp p: format p's unfilled entries and its items */
    const uint32_t p = warp, placed = chosen_total[p], count = candidates[p] < s.k ? candidates[p] : s.k;
    const int32_t base = reserved[p];
    for (uint32_t e = placed + lane; e < count; e += 32) s.first[base + e] = 1, s.last[base + e] = 0;
    /* the items over the unfilled tail end where the filled part does */
    const uint32_t group_end = (uint32_t)group[p][2], filled_to = group_end - (count - placed);
    for (int32_t i = group[p][0] + (int32_t)lane; group[p][0] >= 0 && i < group[p][0] + group[p][1]; i += 32) {
      const uint32_t begin = i == group[p][0] + (int32_t)lane ? item_begin : s.items[i].begin;
      const uint32_t cut = begin + s.pages_per_item < group_end ? begin + s.pages_per_item : group_end;
      s.items[i].end = cut < filled_to ? cut : (filled_to > begin ? filled_to : begin);
    }
  }
}

/* Keys a thread: as few as hold the longest row. */
template <int T>
cudaError_t launch_select_t(const ikv_cuda_selection *sel, uint32_t rows, cudaStream_t st, bool dependent) {
  const uint32_t E = (sel->longest + T - 1) / T;
  const auto kernel = E <= 1   ? select_scatter_kernel<T, 1>
                      : E <= 2 ? select_scatter_kernel<T, 2>
                      : E <= 4 ? select_scatter_kernel<T, 4>
                               : select_scatter_kernel<T, 8>;
  return ikv_launch(kernel, dim3(rows), dim3(T), 0, st, dependent, *sel);
}

} // namespace

extern "C" ikv_status ikv_cuda_select_scatter(const ikv_cuda_selection *sel, void *stream) {
  if (!sel) return IKV_E_NULL;
  if (!sel->batch || !sel->kv_heads) return IKV_OK;
  if (!sel->seq_off || !sel->cand || !sel->keys || !sel->reserved || !sel->page_slot || !sel->page_index ||
      !sel->first || !sel->last || !sel->groups || !sel->items)
    return IKV_E_NULL;
  if (!sel->pages_per_item || !sel->longest) return IKV_E_INVALID;
  if (sel->longest > IKV_CUDA_RANK_MAX) return IKV_E_UNSUPPORTED;
  const int sms = ikv_cuda_sm_count();
  if (!sms) return IKV_E_CUDA;
  const uint32_t rows = sel->batch * sel->kv_heads;
  /* 1,024 threads a row where the rows leave SMs free or a row exceeds 8
   * keys a thread of 256; the scores overlapped only where the top-k's few
   * blocks leave them the SMs: at batch 32 its waiting blocks slowed the
   * scores (scores + top-k 196.8 -> 208.8 us; batch 1: 20.6 -> 19.8 us) */
  const bool few = rows <= (uint32_t)sms;
  const cudaError_t e = few || sel->longest > 8 * 256 ? launch_select_t<1024>(sel, rows, (cudaStream_t)stream, few)
                                                      : launch_select_t<256>(sel, rows, (cudaStream_t)stream, false);
  return e == cudaSuccess && cudaGetLastError() == cudaSuccess ? IKV_OK : IKV_E_CUDA;
}
