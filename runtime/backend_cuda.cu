/* The CUDA backend: the GPU tier in device memory (cudaMalloc), the host tier
 * in pinned host memory, page moves and conversions on the runtime's own
 * stream, write_kv and decode on the caller's stream after it (an event). */
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/decode_cuda.h"
#include "kernels/quantize_cuda.h"
#include "runtime/plan_internal.h"

namespace {

struct cuda_state {
  cudaStream_t stream; /* the runtime's copies: copy-on-write, tier moves, conversions, plan uploads */
  cudaEvent_t ready;   /* recorded after each of them; the caller's stream waits on it */
  int sm_count;
  /* the device copy of the last slot mapping write_kv saw (one upload a step) */
  int64_t *d_slots, *h_slots;
  uint8_t *d_precs, *h_precs;
  uint32_t cap, n;
  ikv_cuda_move *d_move;
};

struct cuda_plan {
  ikv_cuda_plan dp; /* what the kernel reads: device pointers */
  int32_t *h_row_items;
  void *buf[10];
  void *ws;
  size_t ws_bytes;
};

cuda_state *state(const ikv_runtime *rt) { return (cuda_state *)rt->dev; }

bool ok(cudaError_t e) { return e == cudaSuccess; }

/* The caller's stream waits for the runtime's copies; not while capturing a
 * graph (an outside event cannot join a capture): synchronize before it. */
void wait_ready(ikv_runtime *rt, void *stream) {
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  cudaStreamIsCapturing((cudaStream_t)stream, &cs);
  if (cs == cudaStreamCaptureStatusNone) cudaStreamWaitEvent((cudaStream_t)stream, state(rt)->ready, 0);
}

ikv_status cuda_open(ikv_runtime *rt) {
  int n = 0;
  if (!ok(cudaGetDeviceCount(&n)) || n == 0) {
    cudaGetLastError();
    return IKV_E_UNSUPPORTED;
  }
  cuda_state *s = (cuda_state *)calloc(1, sizeof(cuda_state));
  if (!s) return IKV_E_NO_MEMORY;
  rt->dev = s;
  int device = 0;
  cudaGetDevice(&device);
  if (!ok(cudaDeviceGetAttribute(&s->sm_count, cudaDevAttrMultiProcessorCount, device)) ||
      !ok(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking)) ||
      !ok(cudaEventCreateWithFlags(&s->ready, cudaEventDisableTiming)) || !ok(cudaMalloc(&s->d_move, sizeof(ikv_cuda_move))))
    return IKV_E_CUDA;
  size_t n_pools = (size_t)rt->cfg.geometry.layers * IKV_TIER_COUNT * IKV_PRECISION_COUNT;
  rt->pools = (uint8_t **)calloc(n_pools, sizeof(uint8_t *));
  if (!rt->pools) return IKV_E_NO_MEMORY;
  for (uint32_t l = 0; l < rt->cfg.geometry.layers; l++)
    for (int t = 0; t < IKV_TIER_COUNT; t++)
      for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
        size_t bytes = rt->page_bytes[p] * rt->cfg.capacity[t][p];
        if (!bytes) continue;
        void *pool = NULL;
        cudaError_t e = t == IKV_TIER_GPU ? cudaMalloc(&pool, bytes) : cudaHostAlloc(&pool, bytes, cudaHostAllocDefault);
        if (!ok(e)) return IKV_E_CUDA;
        rt->pools[rt_pool_index(rt, l, (ikv_tier)t, (ikv_precision)p)] = (uint8_t *)pool;
      }
  return IKV_OK;
}

void cuda_close(ikv_runtime *rt) {
  cuda_state *s = state(rt);
  if (s && s->stream) cudaStreamSynchronize(s->stream);
  if (rt->pools) {
    for (uint32_t l = 0; l < rt->cfg.geometry.layers; l++)
      for (int t = 0; t < IKV_TIER_COUNT; t++)
        for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
          uint8_t *pool = rt->pools[rt_pool_index(rt, l, (ikv_tier)t, (ikv_precision)p)];
          if (pool) t == IKV_TIER_GPU ? cudaFree(pool) : cudaFreeHost(pool);
        }
    free(rt->pools);
  }
  if (!s) return;
  cudaFree(s->d_slots), cudaFree(s->d_precs), cudaFree(s->d_move);
  cudaFreeHost(s->h_slots), cudaFreeHost(s->h_precs);
  if (s->ready) cudaEventDestroy(s->ready);
  if (s->stream) cudaStreamDestroy(s->stream);
  free(s);
}

void cuda_copy_page(ikv_runtime *rt, ikv_tier src_tier, int32_t src_slot, ikv_tier dst_tier, int32_t dst_slot,
                    ikv_precision p) {
  cuda_state *s = state(rt);
  for (uint32_t l = 0; l < rt->cfg.geometry.layers; l++)
    cudaMemcpyAsync(rt_page(rt, l, dst_tier, p, dst_slot), rt_page(rt, l, src_tier, p, src_slot), rt->page_bytes[p],
                    cudaMemcpyDefault, s->stream);
  cudaEventRecord(s->ready, s->stream);
}

ikv_status cuda_convert_page(ikv_runtime *rt, const ikv_pt_move *mv, uint32_t rows) {
  cuda_state *s = state(rt);
  const ikv_geometry *g = &rt->cfg.geometry;
  if (mv->old_slot[IKV_TIER_GPU] != IKV_NO_SLOT) {
    ikv_cuda_move m = {(uint8_t)mv->from, (uint8_t)mv->to, (uint16_t)rows, mv->old_slot[IKV_TIER_GPU],
                       mv->new_slot[IKV_TIER_GPU]};
    if (!ok(cudaMemcpyAsync(s->d_move, &m, sizeof(m), cudaMemcpyHostToDevice, s->stream))) return IKV_E_CUDA;
    for (uint32_t l = 0; l < g->layers; l++) {
      ikv_layer_pools lp = rt_layer_pools(rt, l, IKV_TIER_GPU);
      ikv_status st = ikv_cuda_requantize(g, &lp, s->d_move, 1, s->stream);
      if (st != IKV_OK) return st;
    }
    /* the next conversion reuses d_move: this one must have read it */
    if (!ok(cudaStreamSynchronize(s->stream))) return IKV_E_CUDA;
  }
  if (mv->old_slot[IKV_TIER_HOST] != IKV_NO_SLOT) { /* the host copy, by the C reference, once copies have landed */
    if (!ok(cudaStreamSynchronize(s->stream))) return IKV_E_CUDA;
    for (uint32_t l = 0; l < g->layers; l++) {
      ikv_status st = ikv_ref_requantize(g, mv->from, rt_page(rt, l, IKV_TIER_HOST, mv->from, mv->old_slot[IKV_TIER_HOST]),
                                         mv->to, rt_page(rt, l, IKV_TIER_HOST, mv->to, mv->new_slot[IKV_TIER_HOST]), rows);
      if (st != IKV_OK) return st;
    }
  }
  cudaEventRecord(s->ready, s->stream);
  return IKV_OK;
}

/* k, v: device arrays; slots and precisions: the host arrays ikv_append
 * filled (checked by the runtime), uploaded on the runtime's stream through
 * pinned staging once while they stay the same (the other layers reuse them). */
ikv_status cuda_write_kv(ikv_runtime *rt, uint32_t layer, const void *k, const void *v, ikv_dtype dtype,
                         const int64_t *slots, const uint8_t *precs, uint32_t n, void *stream) {
  cuda_state *s = state(rt);
  if (!n) return IKV_OK;
  if (n != s->n || memcmp(slots, s->h_slots, sizeof(int64_t) * n) || memcmp(precs, s->h_precs, n)) {
    if (!ok(cudaStreamSynchronize(s->stream))) return IKV_E_CUDA; /* the last upload has left the staging */
    if (n > s->cap) { /* grows with the largest append seen */
      cudaFree(s->d_slots), cudaFree(s->d_precs), cudaFreeHost(s->h_slots), cudaFreeHost(s->h_precs);
      s->d_slots = NULL, s->d_precs = NULL, s->h_slots = NULL, s->h_precs = NULL, s->n = s->cap = 0;
      if (!ok(cudaHostAlloc(&s->h_slots, sizeof(int64_t) * n, cudaHostAllocDefault)) ||
          !ok(cudaHostAlloc(&s->h_precs, n, cudaHostAllocDefault)) || !ok(cudaMalloc(&s->d_slots, sizeof(int64_t) * n)) ||
          !ok(cudaMalloc(&s->d_precs, n)))
        return IKV_E_CUDA;
      s->cap = n;
    }
    memcpy(s->h_slots, slots, sizeof(int64_t) * n), memcpy(s->h_precs, precs, n);
    s->n = 0; /* valid again once both copies are queued */
    if (!ok(cudaMemcpyAsync(s->d_slots, s->h_slots, sizeof(int64_t) * n, cudaMemcpyHostToDevice, s->stream)) ||
        !ok(cudaMemcpyAsync(s->d_precs, s->h_precs, n, cudaMemcpyHostToDevice, s->stream)) ||
        !ok(cudaEventRecord(s->ready, s->stream)))
      return IKV_E_CUDA;
    s->n = n;
  }
  wait_ready(rt, stream);
  ikv_layer_pools lp = rt_layer_pools(rt, layer, IKV_TIER_GPU);
  return ikv_cuda_write_kv(&rt->cfg.geometry, &lp, k, v, dtype, s->d_slots, s->d_precs, n, stream);
}

ikv_status cuda_plan_open(ikv_runtime *rt, ikv_plan *pl) {
  cuda_plan *cp = (cuda_plan *)calloc(1, sizeof(cuda_plan));
  if (!cp) return IKV_E_NO_MEMORY;
  pl->dev = cp;
  const ikv_geometry *g = &rt->cfg.geometry;
  const size_t E = pl->cap_entries, rows = pl->cap_rows, items = E + rows * IKV_PRECISION_COUNT;
  const size_t bytes[10] = {sizeof(int32_t) * (rows + 1), sizeof(int32_t) * E, E, sizeof(int32_t) * E,
                            sizeof(uint16_t) * E, sizeof(uint16_t) * E, sizeof(int32_t) * pl->cap_batch,
                            sizeof(ikv_work_item) * items, sizeof(int32_t) * E, sizeof(int32_t) * (rows + 1)};
  for (int i = 0; i < 10; i++)
    if (!ok(cudaMalloc(&cp->buf[i], bytes[i]))) return IKV_E_CUDA;
  cp->h_row_items = (int32_t *)malloc(sizeof(int32_t) * (rows + 1));
  if (!cp->h_row_items) return IKV_E_NO_MEMORY;
  /* partials: every item, every KV head, every query head of the group */
  cp->ws_bytes = items * g->kv_heads * (rt->cfg.q_heads / g->kv_heads) * (g->head_dim + 2) * sizeof(float);
  if (!ok(cudaMalloc(&cp->ws, cp->ws_bytes))) return IKV_E_CUDA;
  return IKV_OK;
}

void cuda_plan_close(ikv_plan *pl) {
  cuda_plan *cp = (cuda_plan *)pl->dev;
  if (!cp) return;
  for (int i = 0; i < 10; i++) cudaFree(cp->buf[i]);
  cudaFree(cp->ws);
  free(cp->h_row_items);
  free(cp);
  pl->dev = NULL;
}

uint32_t cuda_pages_per_item(const ikv_runtime *rt, uint32_t rows, uint32_t heads, uint32_t pages) {
  return ikv_cuda_pages_per_item(rows, heads, pages, state(rt)->sm_count);
}

ikv_status cuda_plan_publish(ikv_runtime *rt, ikv_plan *pl) {
  cuda_state *s = state(rt);
  cuda_plan *cp = (cuda_plan *)pl->dev;
  const uint32_t rows = pl->n_rows, nnz = pl->n_entries;
  for (uint32_t r = 0, i = 0; r <= rows; r++) { /* items come ordered by row */
    while (i < pl->n_work && pl->work[i].row < r) i++;
    cp->h_row_items[r] = (int32_t)i;
  }
  const void *src[10] = {pl->indptr, pl->slot, pl->precision, pl->page_index, pl->first, pl->last, pl->seq_len,
                         pl->work, pl->work_entries, cp->h_row_items};
  const size_t bytes[10] = {sizeof(int32_t) * (rows + 1), sizeof(int32_t) * nnz, nnz, sizeof(int32_t) * nnz,
                            sizeof(uint16_t) * nnz, sizeof(uint16_t) * nnz, sizeof(int32_t) * pl->view.batch,
                            sizeof(ikv_work_item) * pl->n_work, sizeof(int32_t) * nnz, sizeof(int32_t) * (rows + 1)};
  for (int i = 0; i < 10; i++)
    if (bytes[i] && !ok(cudaMemcpyAsync(cp->buf[i], src[i], bytes[i], cudaMemcpyHostToDevice, s->stream))) return IKV_E_CUDA;
  ikv_cuda_plan *dp = &cp->dp;
  dp->csr = pl->view;
  dp->csr.indptr = (const int32_t *)cp->buf[0];
  dp->csr.page_slot = (const int32_t *)cp->buf[1];
  dp->csr.precision = (const uint8_t *)cp->buf[2];
  dp->csr.page_index = (const int32_t *)cp->buf[3];
  dp->csr.first = (const uint16_t *)cp->buf[4];
  dp->csr.last = (const uint16_t *)cp->buf[5];
  dp->csr.seq_len = (const int32_t *)cp->buf[6];
  dp->items = (const ikv_work_item *)cp->buf[7];
  dp->entries = (const int32_t *)cp->buf[8];
  dp->row_items = (const int32_t *)cp->buf[9];
  dp->rows = rows;
  dp->n_items = pl->n_work;
  return ok(cudaEventRecord(s->ready, s->stream)) ? IKV_OK : IKV_E_CUDA;
}

ikv_status cuda_decode(ikv_runtime *rt, const ikv_plan *pl, uint32_t layer, const void *q, void *out, float *lse,
                       ikv_dtype dtype, void *stream) {
  const cuda_plan *cp = (const cuda_plan *)pl->dev;
  wait_ready(rt, stream);
  ikv_layer_pools lp = rt_layer_pools(rt, layer, IKV_TIER_GPU);
  return ikv_cuda_decode(&rt->cfg.geometry, &lp, &cp->dp, &rt->attn, q, out, lse, dtype, cp->ws, cp->ws_bytes, stream);
}

} // namespace

extern "C" const rt_backend rt_backend_cuda = {
    0, cuda_open, cuda_close, cuda_copy_page, cuda_convert_page, cuda_write_kv, cuda_plan_open, cuda_plan_close,
    cuda_pages_per_item, cuda_plan_publish, cuda_decode,
};
