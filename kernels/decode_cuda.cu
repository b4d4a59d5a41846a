/* The fused paged decode-attention kernel and its split-KV merge. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/decode_cuda.h"

#define WARPS 4
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

/* Everything a launch needs, by value. */
struct decode_args {
  const uint8_t *base[IKV_PRECISION_COUNT];
  size_t page_bytes[IKV_PRECISION_COUNT];
  uint32_t k_tile[IKV_PRECISION_COUNT], v_tile[IKV_PRECISION_COUNT]; /* bytes of a K / V tile */
  uint32_t payload[IKV_PRECISION_COUNT];                             /* where a tile's scales start */
  ikv_decode_plan csr;
  const ikv_work_item *items;
  const int32_t *entries, *row_items;
  uint32_t kv_heads, group, page_size, q_heads;
  float scale_log2; /* softmax scale * log2(e): scores live in the log2 domain */
  int32_t window, sinks;
  const void *q;
  void *out;
  float *lse;
  int dtype;
  float *ws; /* partials: [item][kv head or 0][group] x (head_dim acc, m, l) */
};

/* ---- loads ---------------------------------------------------------------- */

template <int BYTES> struct raw;
template <> struct raw<1> { uint8_t v; };
template <> struct raw<2> { uint16_t v; };
template <> struct raw<4> { uint32_t v; };
template <> struct raw<8> { uint2 v; };
template <> struct raw<16> { uint4 v; };
template <> struct raw<32> { uint4 v[2]; };

/* N bytes from global memory in one load, as an array of bytes. */
template <int N> __device__ __forceinline__ void load_bytes(const uint8_t *p, uint8_t (&b)[N]) {
  raw<N> r = *reinterpret_cast<const raw<N> *>(p);
  memcpy(b, &r, N);
}

__device__ __forceinline__ float load_q(const void *q, int dtype, size_t i) {
  if (dtype == IKV_DTYPE_F16) return __half2float(reinterpret_cast<const __half *>(q)[i]);
  if (dtype == IKV_DTYPE_BF16) return __bfloat162float(reinterpret_cast<const __nv_bfloat16 *>(q)[i]);
  return reinterpret_cast<const float *>(q)[i];
}

__device__ __forceinline__ void store_out(void *out, int dtype, size_t i, float x) {
  if (dtype == IKV_DTYPE_F16) reinterpret_cast<__half *>(out)[i] = __float2half_rn(x);
  else if (dtype == IKV_DTYPE_BF16) reinterpret_cast<__nv_bfloat16 *>(out)[i] = __float2bfloat16_rn(x);
  else reinterpret_cast<float *>(out)[i] = x;
}

/* ---- one tile row, dequantized: lane's DPL consecutive channels ----------- */

/* Per-tile constants a lane needs for its channels (keys: per channel;
 * values: per token, read with the row). */
template <int PREC, int DPL> struct tile_params {
  float scale[DPL], zero[DPL];
};

template <int PREC, int DPL>
__device__ __forceinline__ void tile_setup(const uint8_t *scales, int slice, bool keys, tile_params<PREC, DPL> &tp) {
#pragma unroll
  for (int i = 0; i < DPL; i++) tp.scale[i] = 1.0f, tp.zero[i] = 0.0f;
  if (PREC == IKV_FP8_E4M3) {
    float s = *reinterpret_cast<const float *>(scales);
#pragma unroll
    for (int i = 0; i < DPL; i++) tp.scale[i] = s;
  } else if (keys && PREC == IKV_INT8) {
#pragma unroll
    for (int i = 0; i < DPL; i++) tp.scale[i] = reinterpret_cast<const float *>(scales)[slice * DPL + i];
  } else if (keys && PREC == IKV_INT4) {
#pragma unroll
    for (int i = 0; i < DPL; i++) {
      const __half *p = reinterpret_cast<const __half *>(scales) + 2 * (slice * DPL + i);
      tp.scale[i] = __half2float(p[0]);
      tp.zero[i] = __half2float(p[1]);
    }
  }
}

/* Bytes one lane reads of a row: its DPL channels (a lane's slice). */
template <int PREC, int DPL> struct row_bytes {
  static constexpr int n = (PREC == IKV_FP16 || PREC == IKV_BF16) ? 2 * DPL : PREC == IKV_INT4 ? DPL / 2 : DPL;
};

template <int PREC, int D, int DPL>
__device__ __forceinline__ void load_row(const uint8_t *tile, int row, int slice, uint8_t (&b)[row_bytes<PREC, DPL>::n]) {
  constexpr int N = row_bytes<PREC, DPL>::n;
  load_bytes<N>(tile + (size_t)row * (N * (D / DPL)) + slice * N, b);
}

/* Decodes a lane's row bytes. For values of INT8/INT4 tiles the per-token
 * scale (and zero) come from the tile's scale area. */
template <int PREC, int D, int DPL>
__device__ __forceinline__ void decode_row(const uint8_t (&b)[row_bytes<PREC, DPL>::n], const tile_params<PREC, DPL> &tp,
                                           const uint8_t *scales, int row, bool keys, float (&x)[DPL]) {
  if (PREC == IKV_FP16) {
#pragma unroll
    for (int i = 0; i < DPL; i++) x[i] = __half2float(__ushort_as_half((uint16_t)(b[2 * i] | (b[2 * i + 1] << 8))));
  } else if (PREC == IKV_BF16) {
#pragma unroll
    for (int i = 0; i < DPL; i++) x[i] = __uint_as_float((uint32_t)(b[2 * i] | (b[2 * i + 1] << 8)) << 16);
  } else if (PREC == IKV_FP8_E4M3) {
#pragma unroll
    for (int i = 0; i < DPL; i++) {
      __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)b[i], __NV_E4M3);
      x[i] = __half2float(__half(h)) * tp.scale[i];
    }
  } else if (PREC == IKV_INT8) {
    float s = keys ? 1.0f : reinterpret_cast<const float *>(scales)[row];
#pragma unroll
    for (int i = 0; i < DPL; i++) x[i] = (float)(int8_t)b[i] * (keys ? tp.scale[i] : s);
  } else { /* INT4: even channel in the low nibble */
    float s = 0.0f, z = 0.0f;
    if (!keys) {
      const __half *p = reinterpret_cast<const __half *>(scales) + 2 * row;
      s = __half2float(p[0]), z = __half2float(p[1]);
    }
#pragma unroll
    for (int i = 0; i < DPL; i++) {
      float q = (float)((b[i / 2] >> (4 * (i & 1))) & 0xf);
      x[i] = keys ? tp.zero[i] + q * tp.scale[i] : z + q * s;
    }
  }
}

/* ---- a block: one work item, one KV head ------------------------------------
 * The block's 128 lanes are laid out as (query head g, token slot tau,
 * channel slice): each lane holds DPL = D / LPT channels of one query head's
 * q and output, so a lane carries few registers and many warps stay resident.
 * A token's q.k is summed over its LPT lanes with log2(LPT) shuffles; the
 * lanes of different query heads read the same K/V rows (DRAM once, then L1),
 * and each (g, tau) runs its own online softmax, merged at the end. */

template <int D, int MAXG, int DPL> struct layout {
  static constexpr int LPT = D / DPL;                   /* lanes per token */
  static constexpr int T = WARPS * 32 / (MAXG * LPT);   /* token slots */
  static constexpr int IN_FLIGHT = 4;                   /* rows a lane loads before the first use */
};

template <int D, int MAXG, int DPL, int PREC>
__device__ void run_item(const decode_args &a, const ikv_work_item &it, uint32_t h, uint32_t b, int slice, int tau,
                         bool active, const float (&q)[DPL], float &m, float &l, float (&acc)[DPL]) {
  typedef layout<D, MAXG, DPL> lay;
  constexpr int N = row_bytes<PREC, DPL>::n, LPT = lay::LPT, T = lay::T, IN_FLIGHT = lay::IN_FLIGHT;
  const int64_t query = (int64_t)a.csr.seq_len[b] - 1;
  for (uint32_t k = it.begin; k < it.end; k++) {
    const int32_t e = a.entries[k];
    const uint8_t *page = a.base[PREC] + (size_t)a.csr.page_slot[e] * a.page_bytes[PREC];
    const uint8_t *kt = page + (size_t)h * (a.k_tile[PREC] + a.v_tile[PREC]), *vt = kt + a.k_tile[PREC];
    const uint8_t *ks = kt + a.payload[PREC], *vs = vt + a.payload[PREC];
    tile_params<PREC, DPL> kp, vp;
    tile_setup<PREC, DPL>(ks, slice, true, kp);
    tile_setup<PREC, DPL>(vs, slice, false, vp);
    const int first = a.csr.first[e], last = a.csr.last[e];
    const int64_t base_pos = (int64_t)a.csr.page_index[e] * a.page_size;
    /* the trip count is the same for every lane: the shuffles need the whole warp */
    for (int t0 = first; t0 <= last; t0 += T * IN_FLIGHT) {
      uint8_t kb[IN_FLIGHT][N], vb[IN_FLIGHT][N];
#pragma unroll
      for (int u = 0; u < IN_FLIGHT; u++) { /* all loads first: memory-level parallelism */
        const int t = t0 + u * T + tau;
        if (t <= last && active) {
          load_row<PREC, D, DPL>(kt, t, slice, kb[u]);
          load_row<PREC, D, DPL>(vt, t, slice, vb[u]);
        }
      }
      bool keep[IN_FLIGHT];
      float sc[IN_FLIGHT];
#pragma unroll
      for (int u = 0; u < IN_FLIGHT; u++) {
        const int t = t0 + u * T + tau;
        const int64_t pos = base_pos + t;
        keep[u] = active && t <= last && !(a.window > 0 && pos <= query - a.window && pos >= a.sinks);
        float s = 0.0f;
        if (keep[u]) {
          float kx[DPL];
          decode_row<PREC, D, DPL>(kb[u], kp, ks, t, true, kx);
#pragma unroll
          for (int i = 0; i < DPL; i++) s = fmaf(q[i], kx[i], s);
        }
#pragma unroll
        for (int off = LPT / 2; off; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        sc[u] = keep[u] ? s : -INFINITY;
      }
      /* one rescale for all the in-flight tokens */
      float mn = m;
#pragma unroll
      for (int u = 0; u < IN_FLIGHT; u++) mn = fmaxf(mn, sc[u]);
      if (mn == -INFINITY) continue; /* nothing kept yet */
      const float corr = exp2f(m - mn);
      l *= corr;
#pragma unroll
      for (int i = 0; i < DPL; i++) acc[i] *= corr;
#pragma unroll
      for (int u = 0; u < IN_FLIGHT; u++) {
        if (!keep[u]) continue;
        const float p = exp2f(sc[u] - mn);
        float vx[DPL];
        decode_row<PREC, D, DPL>(vb[u], vp, vs, t0 + u * T + tau, false, vx);
        l += p;
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[i] = fmaf(p, vx[i], acc[i]);
      }
      m = mn;
    }
  }
}

template <int D, int MAXG, int DPL> __global__ void __launch_bounds__(WARPS * 32) decode_kernel(decode_args a) {
  typedef layout<D, MAXG, DPL> lay;
  constexpr int LPT = lay::LPT, T = lay::T;
  __shared__ float sm_m[MAXG][T], sm_l[MAXG][T];
  __shared__ float sm_acc[MAXG][T][D];
  const ikv_work_item it = a.items[blockIdx.x];
  const bool per_head = a.csr.per_kv_head != 0;
  const uint32_t h = per_head ? it.row % a.kv_heads : blockIdx.y, b = per_head ? it.row / a.kv_heads : it.row;
  const int slice = threadIdx.x % LPT, tau = (threadIdx.x / LPT) % T, g = threadIdx.x / (LPT * T);
  const bool active = g < (int)a.group;
  float q[DPL], acc[DPL], m = -INFINITY, l = 0.0f;
#pragma unroll
  for (int i = 0; i < DPL; i++) {
    acc[i] = 0.0f;
    q[i] = active ? load_q(a.q, a.dtype, ((size_t)b * a.q_heads + h * a.group + g) * D + slice * DPL + i) * a.scale_log2
                  : 0.0f;
  }
  switch (it.precision) { /* block-uniform: one page format per item */
    case IKV_FP16: run_item<D, MAXG, DPL, IKV_FP16>(a, it, h, b, slice, tau, active, q, m, l, acc); break;
    case IKV_BF16: run_item<D, MAXG, DPL, IKV_BF16>(a, it, h, b, slice, tau, active, q, m, l, acc); break;
    case IKV_FP8_E4M3: run_item<D, MAXG, DPL, IKV_FP8_E4M3>(a, it, h, b, slice, tau, active, q, m, l, acc); break;
    case IKV_INT8: run_item<D, MAXG, DPL, IKV_INT8>(a, it, h, b, slice, tau, active, q, m, l, acc); break;
    default: run_item<D, MAXG, DPL, IKV_INT4>(a, it, h, b, slice, tau, active, q, m, l, acc); break;
  }
  /* merge the token slots of each query head, then write the block's partial */
  if (slice == 0) sm_m[g][tau] = m, sm_l[g][tau] = l;
#pragma unroll
  for (int i = 0; i < DPL; i++) sm_acc[g][tau][slice * DPL + i] = acc[i];
  __syncthreads();
  const uint32_t hh = per_head ? 0 : h;
  for (uint32_t x = threadIdx.x; x < a.group * D; x += blockDim.x) {
    const uint32_t gg = x / D, d = x % D;
    float M = -INFINITY;
    for (int w = 0; w < T; w++) M = fmaxf(M, sm_m[gg][w]);
    float L = 0.0f, A = 0.0f;
    if (M != -INFINITY)
      for (int w = 0; w < T; w++) {
        const float c = exp2f(sm_m[gg][w] - M);
        L += sm_l[gg][w] * c;
        A += sm_acc[gg][w][d] * c;
      }
    float *rec = a.ws + ((size_t)(blockIdx.x * gridDim.y + hh) * a.group + gg) * (D + 2);
    rec[d] = A;
    if (d == 0) rec[D] = M, rec[D + 1] = L;
  }
}

/* One block per (sequence, query head): merges the row's partials by
 * log-sum-exp and writes out and lse. */
template <int D> __global__ void merge_kernel(decode_args a, uint32_t hh_count) {
  const uint32_t b = blockIdx.x, j = blockIdx.y, h = j / a.group, g = j % a.group;
  const bool per_head = a.csr.per_kv_head != 0;
  const uint32_t r = per_head ? b * a.kv_heads + h : b, hh = per_head ? 0 : h;
  const int32_t i0 = a.row_items[r], i1 = a.row_items[r + 1];
  float M = -INFINITY;
  for (int32_t i = i0; i < i1; i++) M = fmaxf(M, a.ws[((size_t)(i * hh_count + hh) * a.group + g) * (D + 2) + D]);
  const size_t o = ((size_t)b * a.q_heads + j) * D;
  for (uint32_t d = threadIdx.x; d < D; d += blockDim.x) {
    float L = 0.0f, A = 0.0f;
    if (M != -INFINITY)
      for (int32_t i = i0; i < i1; i++) {
        const float *rec = a.ws + ((size_t)(i * hh_count + hh) * a.group + g) * (D + 2);
        const float c = exp2f(rec[D] - M);
        L += rec[D + 1] * c;
        A += rec[d] * c;
      }
    store_out(a.out, a.dtype, o + d, L > 0.0f ? A / L : 0.0f);
    if (d == 0) a.lse[(size_t)b * a.q_heads + j] = L > 0.0f ? (M + log2f(L)) * LN2 : -INFINITY;
  }
}

/* ---- host side ---------------------------------------------------------------- */

static ikv_status cuda_ok(cudaError_t e) { return e == cudaSuccess ? IKV_OK : IKV_E_CUDA; }

extern "C" uint32_t ikv_cuda_pages_per_item(uint32_t rows, uint32_t kv_heads_per_row, uint32_t pages_per_row,
                                            int sm_count) {
  /* a block holds 4 warps; ~5 fit an SM at the kernel's register use */
  uint64_t blocks_wanted = 2ull * 5 * (uint64_t)(sm_count > 0 ? sm_count : 1);
  uint64_t per_row = rows && kv_heads_per_row ? (blocks_wanted + (uint64_t)rows * kv_heads_per_row - 1) /
                                                    ((uint64_t)rows * kv_heads_per_row)
                                              : 1;
  uint64_t pages = (pages_per_row + per_row - 1) / per_row;
  return pages < 4 ? 4 : (uint32_t)pages;
}

extern "C" size_t ikv_cuda_decode_workspace(const ikv_geometry *g, const ikv_attn_params *p, const ikv_cuda_plan *plan) {
  if (!g || !p || !plan || !g->kv_heads) return 0;
  size_t heads = plan->csr.per_kv_head ? 1 : g->kv_heads;
  return (size_t)plan->n_items * heads * (p->q_heads / g->kv_heads) * (g->head_dim + 2) * sizeof(float);
}

/* Channels a lane: 8, or more when the group's heads need them to fit 128
 * lanes (head_dim 256 with 8 query heads a KV head). */
template <int D, int MAXG> static void launch(const decode_args &a, uint32_t n_items, uint32_t heads, uint32_t batch,
                                              cudaStream_t s) {
  constexpr int DPL = D * MAXG / (WARPS * 32) > 8 ? D * MAXG / (WARPS * 32) : 8;
  if (n_items) decode_kernel<D, MAXG, DPL><<<dim3(n_items, heads), WARPS * 32, 0, s>>>(a);
  if (batch) merge_kernel<D><<<dim3(batch, a.q_heads), D < 128 ? D : 128, 0, s>>>(a, heads);
}

template <int D> static void launch_d(const decode_args &a, uint32_t n_items, uint32_t heads, uint32_t batch, cudaStream_t s) {
  if (a.group == 1) launch<D, 1>(a, n_items, heads, batch, s);
  else if (a.group == 2) launch<D, 2>(a, n_items, heads, batch, s);
  else if (a.group <= 4) launch<D, 4>(a, n_items, heads, batch, s);
  else launch<D, 8>(a, n_items, heads, batch, s);
}

extern "C" ikv_status ikv_cuda_decode(const ikv_geometry *g, const ikv_layer_pools *pools, const ikv_cuda_plan *plan,
                                      const ikv_attn_params *p, const void *q, void *out, float *lse, ikv_dtype dtype,
                                      void *workspace, size_t workspace_bytes, void *stream) {
  if (!g || !pools || !plan || !p) return IKV_E_NULL;
  if (ikv_geometry_check(g) != IKV_OK || !p->q_heads || p->q_heads % g->kv_heads || !(p->softmax_scale > 0.0f) ||
      p->window < 0 || p->sinks < 0 || (unsigned)dtype >= IKV_DTYPE_COUNT)
    return IKV_E_INVALID;
  const uint32_t group = p->q_heads / g->kv_heads;
  if (group > 8 || (g->head_dim != 64 && g->head_dim != 128 && g->head_dim != 256)) return IKV_E_UNSUPPORTED;
  if (plan->csr.batch && (!q || !out || !lse)) return IKV_E_NULL;
  if (workspace_bytes < ikv_cuda_decode_workspace(g, p, plan) || (plan->n_items && !workspace)) return IKV_E_CAPACITY;
  decode_args a;
  memset(&a, 0, sizeof(a));
  for (int prec = 0; prec < IKV_PRECISION_COUNT; prec++) {
    a.base[prec] = (const uint8_t *)pools->base[prec];
    a.page_bytes[prec] = ikv_page_layer_bytes(g, (ikv_precision)prec);
    a.k_tile[prec] = (uint32_t)ikv_tile_bytes((ikv_precision)prec, IKV_KEYS, g->page_size, g->head_dim);
    a.v_tile[prec] = (uint32_t)ikv_tile_bytes((ikv_precision)prec, IKV_VALUES, g->page_size, g->head_dim);
    a.payload[prec] = (uint32_t)ikv_tile_payload_bytes((ikv_precision)prec, g->page_size, g->head_dim);
  }
  a.csr = plan->csr;
  a.items = plan->items, a.entries = plan->entries, a.row_items = plan->row_items;
  a.kv_heads = g->kv_heads, a.group = group, a.page_size = g->page_size, a.q_heads = p->q_heads;
  a.scale_log2 = p->softmax_scale * LOG2E;
  a.window = p->window, a.sinks = p->sinks;
  a.q = q, a.out = out, a.lse = lse, a.dtype = dtype, a.ws = (float *)workspace;
  const uint32_t heads = plan->csr.per_kv_head ? 1 : g->kv_heads;
  cudaStream_t s = (cudaStream_t)stream;
  switch (g->head_dim) {
    case 64: launch_d<64>(a, plan->n_items, heads, plan->csr.batch, s); break;
    case 128: launch_d<128>(a, plan->n_items, heads, plan->csr.batch, s); break;
    default: launch_d<256>(a, plan->n_items, heads, plan->csr.batch, s); break;
  }
  return cuda_ok(cudaGetLastError());
}

/* ---- device copies of a plan ------------------------------------------------------ */

struct plan_storage {
  ikv_cuda_plan plan;
  void *buffers[10];
};

static ikv_status upload(plan_storage *ps, int slot, const void *src, size_t bytes, const void **dst) {
  *dst = NULL;
  if (!bytes) return IKV_OK;
  if (cudaMalloc(&ps->buffers[slot], bytes) != cudaSuccess) return IKV_E_CUDA;
  *dst = ps->buffers[slot];
  return cuda_ok(cudaMemcpy(ps->buffers[slot], src, bytes, cudaMemcpyHostToDevice));
}

extern "C" ikv_status ikv_cuda_plan_create(const ikv_decode_plan *host, uint32_t kv_heads, uint32_t pages_per_item,
                                           ikv_cuda_plan **out) {
  if (!host || !out) return IKV_E_NULL;
  if (!kv_heads || !pages_per_item) return IKV_E_INVALID;
  uint32_t rows = host->per_kv_head ? host->batch * kv_heads : host->batch, nnz = (uint32_t)host->indptr[rows];
  plan_storage *ps = (plan_storage *)calloc(1, sizeof(plan_storage));
  int32_t *entries = (int32_t *)malloc(sizeof(int32_t) * (nnz + 1));
  ikv_work_item *items = (ikv_work_item *)malloc(sizeof(ikv_work_item) * (nnz + (size_t)rows * IKV_PRECISION_COUNT + 1));
  int32_t *row_items = (int32_t *)malloc(sizeof(int32_t) * (rows + 1));
  ikv_status st = ps && entries && items && row_items ? IKV_OK : IKV_E_NO_MEMORY;
  uint32_t n_items = 0;
  if (st == IKV_OK) {
    ikv_plan_partition(host, rows, pages_per_item, entries, items, &n_items);
    for (uint32_t r = 0, i = 0; r <= rows; r++) { /* items come ordered by row */
      while (i < n_items && items[i].row < r) i++;
      row_items[r] = (int32_t)i;
    }
    ikv_cuda_plan *p = &ps->plan;
    p->csr = *host;
    p->rows = rows;
    p->n_items = n_items;
    const void **dst[10] = {(const void **)&p->csr.indptr, (const void **)&p->csr.page_slot, (const void **)&p->csr.precision,
                            (const void **)&p->csr.page_index, (const void **)&p->csr.first, (const void **)&p->csr.last,
                            (const void **)&p->csr.seq_len, (const void **)&p->items, (const void **)&p->entries,
                            (const void **)&p->row_items};
    const void *src[10] = {host->indptr, host->page_slot, host->precision, host->page_index, host->first, host->last,
                           host->seq_len, items, entries, row_items};
    size_t bytes[10] = {sizeof(int32_t) * (rows + 1), sizeof(int32_t) * nnz, nnz, sizeof(int32_t) * nnz,
                        sizeof(uint16_t) * nnz, sizeof(uint16_t) * nnz, sizeof(int32_t) * host->batch,
                        sizeof(ikv_work_item) * n_items, sizeof(int32_t) * nnz, sizeof(int32_t) * (rows + 1)};
    for (int i = 0; i < 10 && st == IKV_OK; i++) st = upload(ps, i, src[i], bytes[i], dst[i]);
  }
  free(entries), free(items), free(row_items);
  if (st != IKV_OK) {
    ikv_cuda_plan_destroy(ps ? &ps->plan : NULL);
    return st;
  }
  *out = &ps->plan;
  return IKV_OK;
}

extern "C" void ikv_cuda_plan_destroy(ikv_cuda_plan *plan) {
  if (!plan) return;
  plan_storage *ps = (plan_storage *)plan; /* plan is the first member */
  for (int i = 0; i < 10; i++) cudaFree(ps->buffers[i]);
  free(ps);
}
