/* The CUDA backend: the GPU tier in device memory (cudaMalloc), the host tier
 * pinned on the GPU's NUMA node, page moves and conversions on the runtime's
 * own stream, prefetches on another, write_kv and decode on the caller's
 * stream after them (events; docs/runtime.md, docs/prefetch.md). */
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/copy_cuda.h"
#include "kernels/decode_cuda.h"
#include "kernels/page_summary.h"
#include "kernels/quantize_cuda.h"
#include "kernels/summary_cuda.h"
#include "runtime/plan_internal.h"

namespace {

enum { PREFETCH_EVENTS = 16, STALL_TIMERS = 16, MOVE_PIECES = 4096 };
/* Host -> GPU pieces below SM_COPY_BELOW bytes (a page of one layer in a
 * quantized format) are copied by thread blocks reading the pinned host tier
 * (kernels/copy_cuda.h): the copy engines are slow on small pieces. A demand
 * fetch holds the step up anyway and takes 64 blocks (0.93 of the link on
 * H100 for 16 KiB pieces); a prefetch runs beside the decode and takes 16
 * (0.67 of the link, the decode 4% slower; 64 blocks would slow it 30%:
 * docs/results.md). Descriptors sit in mapped pinned memory, a ring of
 * SM_COPY_SLOTS lists, each reused once the copy reading it has run. */
enum { SM_COPY_BELOW = 32768, SM_COPY_BLOCKS_DEMAND = 64, SM_COPY_BLOCKS_PREFETCH = 16, SM_COPY_SLOTS = 8 };

/* Host data bound for the device (or back): pinned staging and a device
 * buffer, both allocated when the runtime is created (never on the step
 * path), as large as any step needs. */
struct staged {
  void *h, *d;
  size_t cap;
  size_t bytes; /* what the device holds from the last upload (0: nothing) */
};

struct cuda_state {
  cudaStream_t stream;      /* the runtime's copies: copy-on-write, tier moves, conversions, plan uploads, scores */
  cudaEvent_t ready;        /* recorded after each of them; the caller's stream waits on it */
  cudaEvent_t caller_done;  /* recorded after the caller's write_kv and decode; the runtime's stream waits on it */
  int sm_count;
  staged slots, precs, pages; /* the step's slot mapping and each token's page (uploaded at append) */
  staged q, candidates;        /* page ranking: the queries and candidate pages up */
  uint64_t *keys;              /* device: the ranking's keys; the best come back straight into the
                                  caller's (the plan's rank_keys: page-locked, from host_alloc) */
  staged rank_off;            /* a batch ranking's candidates per sequence (CSR offsets) */
  uint32_t *part_off;         /* [max_batch + 1]: the same for the part of a batch ranked at once */
  ikv_cuda_summaries sum;
  ikv_cuda_move *d_move;
  /* which decode blocks may start alongside the write_kv before them
   * (ikv_cuda_plan.item_waits, cuda_plan_publish) */
  uint32_t *last_write; /* [page] build_seq when write_kv last wrote it */
  uint32_t *waited;     /* [page] build_seq of the plan whose items wait for it */
  int unflagged_write;  /* the plan in flight: a write_kv wrote a page its items do not wait for */
  int after_write;      /* the runtime's last kernel is a write_kv, on write_stream: only a
                           decode right after it on that stream may start alongside it;
                           after another kernel (the merge lets its dependents start early)
                           it may not. A flag, since NULL is a stream (the default one) */
  void *write_stream;
  /* tier moves */
  cudaStream_t pf_stream;   /* prefetch copies */
  cudaEvent_t moved;        /* on the runtime's stream: the prefetch stream waits for its evictions */
  cudaEvent_t pf_done[PREFETCH_EVENTS]; /* batch b's event is pf_done[b % PREFETCH_EVENTS] */
  uint32_t pf_last;         /* the latest batch issued (0: none) */
  cudaEvent_t stall_begin[STALL_TIMERS], stall_end[STALL_TIMERS]; /* demand batches, a ring */
  uint32_t stall_head, stall_tail;
  void **dsts, **srcs; /* [MOVE_PIECES] one batched copy call */
  size_t *sizes;
  int batch_api;       /* cudaMemcpyBatchAsync works here */
  int sm_copy;         /* the device reads pinned host memory through host pointers */
  ikv_copy_piece *ring; /* [SM_COPY_SLOTS][MOVE_PIECES], mapped pinned */
  cudaEvent_t ring_done[SM_COPY_SLOTS];
  uint32_t ring_next;
};

/* Plans of at most this many entries mark the items whose blocks must wait
 * for the write_kv before the decode: the marking costs a pass over the
 * entries on the host, worth it where decodes are short enough for the
 * write_kv's few microseconds to matter. */
#define WAIT_FLAGS_MAX_ENTRIES 16384u

struct cuda_plan {
  ikv_cuda_plan dp; /* what the kernel reads: device pointers */
  int32_t *h_row_items;            /* page-locked, like the plan's arrays it uploads (host_alloc) */
  uint8_t *h_item_waits, *h_fresh; /* [items] (page-locked), [WAIT_FLAGS_MAX_ENTRIES] */
  cudaEvent_t uploaded;            /* after the last publish's uploads (plan_reclaim waits for it) */
  void *buf[11];
  void *ws;
  size_t ws_bytes;
  /* device selection: candidates, reserved entries, rank keys (device) */
  uint32_t *d_seq_off, *d_pages;
  ikv_select_candidate *d_cand;
  int32_t *d_reserved, *d_groups;
  uint64_t *d_keys;
};

cuda_state *state(const ikv_runtime *rt) { return (cuda_state *)rt->dev; }

/* The plan leaves its top-k to the GPU (router select_on_device, candidates found). */
bool selects(const ikv_plan *pl) { return pl->dsel && pl->n_dsel; }

bool ok(cudaError_t e) { return e == cudaSuccess; }

/* Every device and page-locked host allocation of the backend, counted in
 * the runtime's statistics (device_allocations): made when the runtime and
 * its plans are created, never by a step. */
bool device_alloc(ikv_runtime *rt, void **p, size_t bytes) {
  rt->stats.device_allocations++;
  return ok(cudaMalloc(p, bytes ? bytes : 1));
}

bool locked_alloc(ikv_runtime *rt, void **p, size_t bytes, unsigned flags) {
  rt->stats.device_allocations++;
  return ok(cudaHostAlloc(p, bytes ? bytes : 1, flags));
}

bool capturing(void *stream) {
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  cudaStreamIsCapturing((cudaStream_t)stream, &cs);
  return cs != cudaStreamCaptureStatusNone;
}

/* The caller's stream waits for the runtime's copies; not while capturing a
 * graph (an outside event cannot join a capture): synchronize before it. */
ikv_status wait_ready(ikv_runtime *rt, void *stream) {
  return capturing(stream) || ok(cudaStreamWaitEvent((cudaStream_t)stream, state(rt)->ready, 0)) ? IKV_OK : IKV_E_CUDA;
}

/* After the caller's work on its stream: the runtime's next copies (which
 * may move or convert the pages it touches) wait for it. */
ikv_status caller_enqueued(ikv_runtime *rt, void *stream, ikv_status st) {
  if (st == IKV_OK && !capturing(stream) && !ok(cudaEventRecord(state(rt)->caller_done, (cudaStream_t)stream)))
    return IKV_E_CUDA;
  return st;
}

/* *stream: the runtime's stream, once the caller's last work is done. */
ikv_status rt_stream(ikv_runtime *rt, cudaStream_t *stream) {
  cuda_state *s = state(rt);
  *stream = s->stream;
  return ok(cudaStreamWaitEvent(s->stream, s->caller_done, 0)) ? IKV_OK : IKV_E_CUDA;
}

/* *stream: the runtime's stream for work on page bytes, after the caller's
 * last work and after every prefetch issued (a page it moves, converts or
 * copies may still be landing). */
ikv_status page_stream(ikv_runtime *rt, cudaStream_t *stream) {
  cuda_state *s = state(rt);
  ikv_status st = rt_stream(rt, stream);
  if (st == IKV_OK && s->pf_last && !ok(cudaStreamWaitEvent(*stream, s->pf_done[s->pf_last % PREFETCH_EVENTS], 0)))
    st = IKV_E_CUDA;
  return st;
}

ikv_status staged_open(ikv_runtime *rt, staged *st, size_t bytes) {
  if (!locked_alloc(rt, &st->h, bytes, cudaHostAllocDefault) || !device_alloc(rt, &st->d, bytes))
    return IKV_E_CUDA;
  st->cap = bytes;
  return IKV_OK;
}

void release(staged *st) { cudaFreeHost(st->h), cudaFree(st->d); }

/* Uploads bytes on the runtime's stream, unless the device holds exactly them. */
ikv_status stage(cuda_state *s, staged *st, const void *src, size_t bytes) {
  if (!bytes || (bytes == st->bytes && !memcmp(src, st->h, bytes))) return IKV_OK;
  if (bytes > st->cap) return IKV_E_INVALID; /* the callers' bounds hold this from creation on */
  if (!ok(cudaStreamSynchronize(s->stream))) return IKV_E_CUDA; /* the last upload has left the staging */
  st->bytes = 0;
  memcpy(st->h, src, bytes);
  if (!ok(cudaStreamWaitEvent(s->stream, s->caller_done, 0)) || /* kernels may still read the old copy */
      !ok(cudaMemcpyAsync(st->d, st->h, bytes, cudaMemcpyHostToDevice, s->stream)) ||
      !ok(cudaEventRecord(s->ready, s->stream)))
    return IKV_E_CUDA;
  st->bytes = bytes;
  return IKV_OK;
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
  char bus_id[32];
  if (!ok(cudaGetDevice(&device)) || !ok(cudaDeviceGetAttribute(&s->sm_count, cudaDevAttrMultiProcessorCount, device)) ||
      !ok(cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), device)) ||
      !ok(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking)) ||
      !ok(cudaStreamCreateWithFlags(&s->pf_stream, cudaStreamNonBlocking)) ||
      !ok(cudaEventCreateWithFlags(&s->ready, cudaEventDisableTiming)) ||
      !ok(cudaEventCreateWithFlags(&s->caller_done, cudaEventDisableTiming)) ||
      !ok(cudaEventCreateWithFlags(&s->moved, cudaEventDisableTiming)) ||
      !device_alloc(rt, (void **)&s->d_move, sizeof(ikv_cuda_move)))
    return IKV_E_CUDA;
  for (int i = 0; i < PREFETCH_EVENTS; i++)
    if (!ok(cudaEventCreateWithFlags(&s->pf_done[i], cudaEventDisableTiming))) return IKV_E_CUDA;
  for (int i = 0; i < STALL_TIMERS; i++)
    if (!ok(cudaEventCreate(&s->stall_begin[i])) || !ok(cudaEventCreate(&s->stall_end[i]))) return IKV_E_CUDA;
  s->dsts = (void **)malloc(sizeof(void *) * MOVE_PIECES), s->srcs = (void **)malloc(sizeof(void *) * MOVE_PIECES);
  s->sizes = (size_t *)malloc(sizeof(size_t) * MOVE_PIECES);
  s->last_write = (uint32_t *)calloc(rt->max_pages, sizeof(uint32_t));
  s->waited = (uint32_t *)calloc(rt->max_pages, sizeof(uint32_t));
  s->batch_api = 1;
  if (!ok(cudaDeviceGetAttribute(&s->sm_copy, cudaDevAttrCanUseHostPointerForRegisteredMem, device))) return IKV_E_CUDA;
  if (s->sm_copy) {
    if (!locked_alloc(rt, (void **)&s->ring, sizeof(ikv_copy_piece) * SM_COPY_SLOTS * MOVE_PIECES, cudaHostAllocMapped))
      return IKV_E_CUDA;
    for (int i = 0; i < SM_COPY_SLOTS; i++)
      if (!ok(cudaEventCreateWithFlags(&s->ring_done[i], cudaEventDisableTiming))) return IKV_E_CUDA;
  }
  if (!s->dsts || !s->srcs || !s->sizes || !s->last_write || !s->waited ||
      ikv_host_tier_open(bus_id, &rt->host) != IKV_OK)
    return IKV_E_NO_MEMORY;
  /* the step's staging: an append's or write_kv's tokens are at most the
   * GPU tier's slots; a ranking's candidates are ranked in parts of at most
   * every page (no sequence holds more), its queries max_batch sequences' */
  const ikv_geometry *g = &rt->cfg.geometry;
  const size_t tokens = rt->gpu_tokens, pages = rt->max_pages, batch = rt->cfg.max_batch;
  s->part_off = (uint32_t *)malloc(sizeof(uint32_t) * (batch + 1));
  if (!s->part_off) return IKV_E_NO_MEMORY;
  ikv_status st = staged_open(rt, &s->slots, sizeof(int64_t) * tokens);
  if (st == IKV_OK) st = staged_open(rt, &s->precs, tokens);
  if (st == IKV_OK) st = staged_open(rt, &s->pages, sizeof(ikv_page_id) * tokens);
  if (st == IKV_OK) st = staged_open(rt, &s->candidates, sizeof(ikv_page_id) * pages);
  if (st == IKV_OK) st = staged_open(rt, &s->q, sizeof(float) * batch * rt->cfg.q_heads * g->head_dim);
  if (st == IKV_OK) st = staged_open(rt, &s->rank_off, sizeof(uint32_t) * (batch + 1));
  if (st != IKV_OK) return st;
  if (!device_alloc(rt, (void **)&s->keys, sizeof(uint64_t) * g->kv_heads * pages)) return IKV_E_CUDA;
  const size_t cells = (size_t)rt->max_pages * rt->cfg.geometry.kv_heads * rt->cfg.geometry.head_dim;
  s->sum.pages = rt->max_pages;
  if (!device_alloc(rt, (void **)&s->sum.kmin, sizeof(uint16_t) * cells) ||
      !device_alloc(rt, (void **)&s->sum.kmax, sizeof(uint16_t) * cells) ||
      !device_alloc(rt, (void **)&s->sum.ksum, sizeof(float) * cells))
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
        if (t == IKV_TIER_GPU) {
          if (!device_alloc(rt, &pool, bytes)) return IKV_E_CUDA;
        } else { /* on the GPU's NUMA node, then pinned for DMA */
          if (!(pool = ikv_host_tier_alloc(rt->host, bytes))) return IKV_E_NO_MEMORY;
          rt->stats.device_allocations++; /* pinned by registering */
          if (!ok(cudaHostRegister(pool, bytes, cudaHostRegisterDefault))) {
            ikv_host_tier_free(rt->host, pool, bytes);
            return IKV_E_CUDA;
          }
        }
        rt->pools[rt_pool_index(rt, l, (ikv_tier)t, (ikv_precision)p)] = (uint8_t *)pool;
      }
  return IKV_OK;
}

void cuda_close(ikv_runtime *rt) {
  cuda_state *s = state(rt);
  if (s && s->stream) cudaStreamSynchronize(s->stream);
  if (s && s->pf_stream) cudaStreamSynchronize(s->pf_stream);
  if (rt->pools) {
    for (uint32_t l = 0; l < rt->cfg.geometry.layers; l++)
      for (int t = 0; t < IKV_TIER_COUNT; t++)
        for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
          uint8_t *pool = rt->pools[rt_pool_index(rt, l, (ikv_tier)t, (ikv_precision)p)];
          if (!pool) continue;
          if (t == IKV_TIER_GPU) {
            cudaFree(pool);
          } else {
            cudaHostUnregister(pool);
            ikv_host_tier_free(rt->host, pool, rt->page_bytes[p] * rt->cfg.capacity[t][p]);
          }
        }
    free(rt->pools);
  }
  ikv_host_tier_close(rt->host);
  if (!s) return;
  cudaFree(s->d_move), cudaFree(s->sum.kmin), cudaFree(s->sum.kmax), cudaFree(s->sum.ksum);
  release(&s->slots), release(&s->precs), release(&s->pages), release(&s->q), cudaFree(s->keys), release(&s->candidates);
  release(&s->rank_off), free(s->part_off);
  free(s->dsts), free(s->srcs), free(s->sizes), free(s->last_write), free(s->waited);
  cudaFreeHost(s->ring);
  for (int i = 0; i < SM_COPY_SLOTS; i++)
    if (s->ring_done[i]) cudaEventDestroy(s->ring_done[i]);
  cudaEvent_t *events[] = {&s->ready, &s->caller_done, &s->moved};
  for (cudaEvent_t *e : events)
    if (*e) cudaEventDestroy(*e);
  for (int i = 0; i < PREFETCH_EVENTS; i++)
    if (s->pf_done[i]) cudaEventDestroy(s->pf_done[i]);
  for (int i = 0; i < STALL_TIMERS; i++) {
    if (s->stall_begin[i]) cudaEventDestroy(s->stall_begin[i]);
    if (s->stall_end[i]) cudaEventDestroy(s->stall_end[i]);
  }
  if (s->stream) cudaStreamDestroy(s->stream);
  if (s->pf_stream) cudaStreamDestroy(s->pf_stream);
  free(s);
}

ikv_status cuda_copy_page(ikv_runtime *rt, int32_t src_slot, int32_t dst_slot, ikv_precision p) {
  cudaStream_t stream;
  if (page_stream(rt, &stream) != IKV_OK) return IKV_E_CUDA;
  for (uint32_t l = 0; l < rt->cfg.geometry.layers; l++)
    if (!ok(cudaMemcpyAsync(rt_page(rt, l, IKV_TIER_GPU, p, dst_slot), rt_page(rt, l, IKV_TIER_GPU, p, src_slot),
                            rt->page_bytes[p], cudaMemcpyDeviceToDevice, stream)))
      return IKV_E_CUDA;
  return ok(cudaEventRecord(state(rt)->ready, stream)) ? IKV_OK : IKV_E_CUDA;
}

/* Up to MOVE_PIECES copies in one call: the batch API hands them to the copy
 * engines together (one by one, 4-64 KB pieces stay far below link speed);
 * where the driver lacks it, one call each. */
ikv_status copy_pieces(cuda_state *s, uint32_t n, cudaStream_t stream) {
  if (s->batch_api) {
    cudaMemcpyAttributes attr;
    memset(&attr, 0, sizeof(attr));
    attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
    attr.flags = cudaMemcpyFlagPreferOverlapWithCompute;
    size_t attr_index = 0;
    cudaError_t e = cudaMemcpyBatchAsync(s->dsts, s->srcs, s->sizes, n, &attr, &attr_index, 1, stream);
    if (ok(e)) return IKV_OK;
    if (e != cudaErrorNotSupported && e != cudaErrorInvalidValue) return IKV_E_CUDA;
    cudaGetLastError();
    s->batch_api = 0;
  }
  for (uint32_t i = 0; i < n; i++)
    if (!ok(cudaMemcpyAsync(s->dsts[i], s->srcs[i], s->sizes[i], cudaMemcpyDefault, stream))) return IKV_E_CUDA;
  return IKV_OK;
}

/* A free descriptor list of the ring, or NULL if the next one is still
 * being read (then the copy engines take the pieces: the host never waits). */
ikv_copy_piece *ring_slot(cuda_state *s) {
  if (!s->sm_copy) return NULL;
  cudaError_t e = cudaEventQuery(s->ring_done[s->ring_next % SM_COPY_SLOTS]);
  if (e == cudaErrorNotReady) cudaGetLastError();
  return ok(e) ? s->ring + (size_t)(s->ring_next % SM_COPY_SLOTS) * MOVE_PIECES : NULL;
}

/* One move_pages call: its stream, and the stall clock of a demand batch,
 * started with the first copy (not with the host's listing of pieces). */
struct mover {
  cuda_state *s;
  cudaStream_t stream;
  int timed, started;
  uint32_t sm_blocks;
};

ikv_status mover_start(mover *mv) {
  if (!mv->timed || mv->started++) return IKV_OK;
  cuda_state *s = mv->s;
  return ok(cudaEventRecord(s->stall_begin[s->stall_head % STALL_TIMERS], mv->stream)) ? IKV_OK : IKV_E_CUDA;
}

/* The ring's current list, n pieces, by the SMs. */
ikv_status flush_sm(mover *mv, uint32_t n) {
  cuda_state *s = mv->s;
  ikv_status st = mover_start(mv);
  if (st == IKV_OK) st = ikv_cuda_copy_pieces(s->ring + (size_t)(s->ring_next % SM_COPY_SLOTS) * MOVE_PIECES, n,
                                              mv->sm_blocks, mv->stream);
  if (st == IKV_OK && !ok(cudaEventRecord(s->ring_done[s->ring_next++ % SM_COPY_SLOTS], mv->stream))) st = IKV_E_CUDA;
  return st;
}

ikv_status flush_dma(mover *mv, uint32_t n) {
  ikv_status st = mover_start(mv);
  return st == IKV_OK ? copy_pieces(mv->s, n, mv->stream) : st;
}

ikv_status cuda_move_pages(ikv_runtime *rt, rt_move_kind kind, const rt_move *m, uint32_t n, uint32_t batch) {
  cuda_state *s = state(rt);
  if (!n) return IKV_OK;
  cudaStream_t stream;
  if (page_stream(rt, &stream) != IKV_OK) return IKV_E_CUDA;
  mover mv = {s, stream, kind == RT_MOVE_DEMAND && s->stall_head - s->stall_tail < STALL_TIMERS, 0,
              kind == RT_MOVE_PREFETCH ? (uint32_t)SM_COPY_BLOCKS_PREFETCH : (uint32_t)SM_COPY_BLOCKS_DEMAND};
  if (kind == RT_MOVE_PREFETCH) { /* after the evictions that made its room */
    if (!ok(cudaEventRecord(s->moved, mv.stream)) || !ok(cudaStreamWaitEvent(s->pf_stream, s->moved, 0)))
      return IKV_E_CUDA;
    mv.stream = s->pf_stream;
  }
  const uint32_t layers = rt->cfg.geometry.layers;
  uint32_t dma = 0, sm = 0;
  ikv_copy_piece *list = NULL;
  ikv_status st = IKV_OK;
  for (uint32_t i = 0; i < n && st == IKV_OK; i++) {
    const ikv_tier to = m[i].from == IKV_TIER_GPU ? IKV_TIER_HOST : IKV_TIER_GPU;
    const size_t bytes = rt->page_bytes[m[i].precision];
    const int small = to == IKV_TIER_GPU && bytes < SM_COPY_BELOW;
    for (uint32_t l = 0; l < layers && st == IKV_OK; l++) {
      void *dst = rt_page(rt, l, to, m[i].precision, m[i].dst_slot);
      const void *src = rt_page(rt, l, m[i].from, m[i].precision, m[i].src_slot);
      if (small && !list) list = ring_slot(s);
      if (small && list) {
        list[sm++] = ikv_copy_piece{src, dst, bytes};
        if (sm == MOVE_PIECES) st = flush_sm(&mv, sm), sm = 0, list = NULL;
      } else {
        s->dsts[dma] = dst, s->srcs[dma] = const_cast<void *>(src), s->sizes[dma] = bytes;
        if (++dma == MOVE_PIECES) st = flush_dma(&mv, dma), dma = 0;
      }
    }
  }
  if (st == IKV_OK && sm) st = flush_sm(&mv, sm);
  if (st == IKV_OK && dma) st = flush_dma(&mv, dma);
  if (st != IKV_OK) return st;
  if (mv.timed && !ok(cudaEventRecord(s->stall_end[s->stall_head++ % STALL_TIMERS], mv.stream))) return IKV_E_CUDA;
  if (kind == RT_MOVE_PREFETCH) {
    if (!ok(cudaEventRecord(s->pf_done[batch % PREFETCH_EVENTS], mv.stream))) return IKV_E_CUDA;
    s->pf_last = batch;
  } else if (kind == RT_MOVE_DEMAND && !ok(cudaEventRecord(s->ready, mv.stream))) {
    return IKV_E_CUDA;
  }
  return IKV_OK;
}

/* A batch's event slot may hold a later batch by now: asking that one is
 * the conservative answer (batches land in issue order). */
int cuda_batch_landed(ikv_runtime *rt, uint32_t batch) {
  cudaError_t e = cudaEventQuery(state(rt)->pf_done[batch % PREFETCH_EVENTS]);
  if (e == cudaErrorNotReady) cudaGetLastError();
  return e == cudaSuccess;
}

ikv_status cuda_await_batch(ikv_runtime *rt, uint32_t batch) {
  cuda_state *s = state(rt);
  if (!ok(cudaStreamWaitEvent(s->stream, s->pf_done[batch % PREFETCH_EVENTS], 0)) ||
      !ok(cudaEventRecord(s->ready, s->stream)))
    return IKV_E_CUDA;
  return IKV_OK;
}

double cuda_take_stall_us(ikv_runtime *rt) {
  cuda_state *s = state(rt);
  double us = 0.0;
  for (; s->stall_tail != s->stall_head; s->stall_tail++) {
    const uint32_t i = s->stall_tail % STALL_TIMERS;
    float ms = 0.0f;
    cudaError_t e = cudaEventQuery(s->stall_end[i]);
    if (e == cudaErrorNotReady) {
      cudaGetLastError();
      break;
    }
    if (ok(e) && ok(cudaEventElapsedTime(&ms, s->stall_begin[i], s->stall_end[i]))) us += 1e3 * ms;
  }
  return us;
}

ikv_status cuda_convert_page(ikv_runtime *rt, const ikv_pt_move *mv, uint32_t rows) {
  cuda_state *s = state(rt);
  const ikv_geometry *g = &rt->cfg.geometry;
  cudaStream_t stream;
  if (page_stream(rt, &stream) != IKV_OK) return IKV_E_CUDA;
  if (mv->old_slot[IKV_TIER_GPU] != IKV_NO_SLOT) {
    ikv_cuda_move m = {(uint8_t)mv->from, (uint8_t)mv->to, (uint16_t)rows, mv->old_slot[IKV_TIER_GPU],
                       mv->new_slot[IKV_TIER_GPU]};
    if (!ok(cudaMemcpyAsync(s->d_move, &m, sizeof(m), cudaMemcpyHostToDevice, stream))) return IKV_E_CUDA;
    for (uint32_t l = 0; l < g->layers; l++) {
      ikv_layer_pools lp = rt_layer_pools(rt, l, IKV_TIER_GPU);
      ikv_status st = ikv_cuda_requantize(g, &lp, s->d_move, 1, stream);
      if (st != IKV_OK) return st;
    }
    /* the next conversion reuses d_move: this one must have read it */
    if (!ok(cudaStreamSynchronize(stream))) return IKV_E_CUDA;
  }
  if (mv->old_slot[IKV_TIER_HOST] != IKV_NO_SLOT) { /* the host copy, by the C reference, once copies have landed */
    if (!ok(cudaStreamSynchronize(stream))) return IKV_E_CUDA;
    for (uint32_t l = 0; l < g->layers; l++) {
      ikv_status st = ikv_ref_requantize(g, mv->from, rt_page(rt, l, IKV_TIER_HOST, mv->from, mv->old_slot[IKV_TIER_HOST]),
                                         mv->to, rt_page(rt, l, IKV_TIER_HOST, mv->to, mv->new_slot[IKV_TIER_HOST]), rows);
      if (st != IKV_OK) return st;
    }
  }
  return ok(cudaEventRecord(s->ready, stream)) ? IKV_OK : IKV_E_CUDA;
}

ikv_status cuda_stage_tokens(ikv_runtime *rt, const int64_t *slots, const uint8_t *precs, const ikv_page_id *pages,
                             uint32_t n) {
  cuda_state *s = state(rt);
  if (!n) return IKV_OK;
  ikv_status st = stage(s, &s->slots, slots, sizeof(int64_t) * n);
  if (st == IKV_OK) st = stage(s, &s->precs, precs, n);
  if (st == IKV_OK) st = stage(s, &s->pages, pages, sizeof(ikv_page_id) * n);
  return st;
}

ikv_status cuda_stream_enter(ikv_runtime *rt, void *stream) {
  if (capturing(stream)) return IKV_OK;
  return ok(cudaStreamWaitEvent((cudaStream_t)stream, state(rt)->ready, 0)) ? IKV_OK : IKV_E_CUDA;
}

ikv_status cuda_stream_leave(ikv_runtime *rt, void *stream) {
  if (capturing(stream)) return IKV_OK;
  return caller_enqueued(rt, stream, IKV_OK);
}

/* Launch sizes a captured step depends on, rounded up so that they hold
 * while a plan changes a little (a router's plan gains a page every
 * page_size tokens, a sequence a candidate): n rounded up by at most an
 * eighth (8 at a time below 64), at most cap. */
static uint32_t bucket(uint32_t n, uint32_t cap) {
  if (!n) return 0;
  uint32_t step = 8;
  while (step * 16 <= n) step *= 2;
  const uint64_t up = ((uint64_t)n + step - 1) / step * step;
  return up < cap ? (uint32_t)up : cap;
}

/* The most candidates of one sequence (offsets on the host). */
static uint32_t longest_sequence(const uint32_t *seq_off, uint32_t batch) {
  uint32_t longest = 0;
  for (uint32_t b = 0; b < batch; b++)
    if (seq_off[b + 1] - seq_off[b] > longest) longest = seq_off[b + 1] - seq_off[b];
  return longest;
}

/* A device-selection plan's longest sequence as its launches are sized
 * (the scores' grid, the top-k's keys a thread): bucketed. */
static uint32_t selection_longest(const ikv_plan *pl) {
  return bucket(longest_sequence(pl->dsel_seq, pl->view.batch), IKV_CUDA_RANK_MAX);
}

/* What a captured step's kernels were launched with: launch shapes and the
 * device buffers they read (FNV-1a over the values). */
ikv_status cuda_graph_key(const ikv_runtime *rt, const ikv_plan *pl, uint64_t *key) {
  const cuda_state *s = state(rt);
  const cuda_plan *cp = (const cuda_plan *)pl->dev;
  /* the decode's grid is the padded item count (a plan's entries may move
   * under it); its page copies are those chosen at capture */
  const uint64_t parts[] = {(uintptr_t)pl, pl->view.batch, pl->view.per_kv_head, pl->n_rows, cp->dp.n_items,
                            (uint64_t)(cp->dp.item_waits && !s->unflagged_write), /* decodes launched overlapping */
                            cp->dp.formats, (uint64_t)selects(pl), selects(pl) ? selection_longest(pl) : 0,
                            selects(pl) ? pl->pages_per_item : 0, /* the top-k cuts items by it */
                            selects(pl) ? pl->dsel_k : 0, (uintptr_t)pl->dsel_q, (uintptr_t)s->slots.d,
                            (uintptr_t)s->precs.d, (uintptr_t)s->pages.d, s->slots.bytes, s->pages.bytes};
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint64_t x : parts)
    for (int byte = 0; byte < 8; byte++) h = (h ^ ((x >> (8 * byte)) & 0xff)) * 0x100000001b3ull;
  *key = h;
  return IKV_OK;
}

/* k, v: device arrays; slots and precisions: the host arrays ikv_append
 * filled (checked by the runtime), uploaded once while they stay the same
 * (the other layers reuse them). */
ikv_status cuda_write_kv(ikv_runtime *rt, uint32_t layer, const void *k, const void *v, ikv_dtype dtype,
                         const int64_t *slots, const uint8_t *precs, uint32_t n, void *stream) {
  cuda_state *s = state(rt);
  if (!n) return IKV_OK;
  ikv_status st = stage(s, &s->slots, slots, sizeof(int64_t) * n);
  if (st == IKV_OK) st = stage(s, &s->precs, precs, n);
  if (st == IKV_OK) st = wait_ready(rt, stream);
  if (st != IKV_OK) return st;
  for (uint32_t i = 0; i < n; i++) { /* the runtime found each token's page (rt->token_pages) */
    const ikv_page_id p = rt->token_pages[i];
    if (rt->active && s->waited[p] != rt->build_seq) s->unflagged_write = 1;
    s->last_write[p] = rt->build_seq;
  }
  s->after_write = 1, s->write_stream = stream;
  ikv_layer_pools lp = rt_layer_pools(rt, layer, IKV_TIER_GPU);
  return caller_enqueued(rt, stream, ikv_cuda_write_kv(&rt->cfg.geometry, &lp, k, v, dtype, (const int64_t *)s->slots.d,
                                                       (const uint8_t *)s->precs.d, n, stream));
}

ikv_status cuda_summarize(ikv_runtime *rt, const void *k, ikv_dtype dtype, const int64_t *slots, const ikv_page_id *pages,
                          uint32_t n, void *stream) {
  cuda_state *s = state(rt);
  if (!n) return IKV_OK;
  ikv_status st = stage(s, &s->slots, slots, sizeof(int64_t) * n);
  if (st == IKV_OK) st = stage(s, &s->pages, pages, sizeof(ikv_page_id) * n);
  if (st == IKV_OK) st = wait_ready(rt, stream);
  if (st != IKV_OK) return st;
  s->after_write = 0;
  return caller_enqueued(rt, stream, ikv_cuda_summarize(&rt->cfg.geometry, &s->sum, k, dtype, (const int64_t *)s->slots.d,
                                                        (const uint32_t *)s->pages.d, n, stream));
}

ikv_status cuda_copy_summary(ikv_runtime *rt, ikv_page_id dst, ikv_page_id src) {
  cuda_state *s = state(rt);
  const size_t m = (size_t)rt->cfg.geometry.kv_heads * rt->cfg.geometry.head_dim;
  cudaStream_t stream;
  if (rt_stream(rt, &stream) != IKV_OK) return IKV_E_CUDA;
  uint8_t *arrays[3] = {(uint8_t *)s->sum.kmin, (uint8_t *)s->sum.kmax, (uint8_t *)s->sum.ksum};
  const size_t bytes[3] = {sizeof(uint16_t) * m, sizeof(uint16_t) * m, sizeof(float) * m}; /* a page's cells */
  for (int a = 0; a < 3; a++)
    if (!ok(cudaMemcpyAsync(arrays[a] + dst * bytes[a], arrays[a] + src * bytes[a], bytes[a], cudaMemcpyDeviceToDevice,
                            stream)))
      return IKV_E_CUDA;
  return ok(cudaEventRecord(s->ready, stream)) ? IKV_OK : IKV_E_CUDA;
}

/* The first min(want, n) keys of every row (sequence b's rows: kv_heads of
 * n = seq_off[b + 1] - seq_off[b] keys each, from kv_heads * seq_off[b]) to
 * the same places in keys (host): one strided copy where every sequence has
 * the same n, else one a sequence. */
static cudaError_t copy_back_best(const cuda_state *s, const uint32_t *seq_off, uint32_t batch, uint32_t heads,
                                  uint32_t want, uint64_t *keys, cudaStream_t stream) {
  uint32_t same = 1;
  for (uint32_t b = 1; b < batch; b++) same &= seq_off[b + 1] - seq_off[b] == seq_off[1] - seq_off[0];
  for (uint32_t b = 0; b < batch; b += same ? batch : 1) {
    const uint32_t n = seq_off[b + 1] - seq_off[b], w = want < n ? want : n, rows = heads * (same ? batch : 1);
    if (!w) continue;
    const size_t at = (size_t)heads * seq_off[b], pitch = sizeof(uint64_t) * n;
    const cudaError_t e = cudaMemcpy2DAsync(keys + at, pitch, s->keys + at, pitch, sizeof(uint64_t) * w, rows,
                                            cudaMemcpyDeviceToHost, stream);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

/* One part of the ranking (its own offsets, queries and keys). */
static ikv_status rank_part(ikv_runtime *rt, int bound, const ikv_page_id *pages, const uint32_t *seq_off,
                            uint32_t batch, const float *q, uint32_t want, uint64_t *keys) {
  cuda_state *s = state(rt);
  const ikv_geometry *g = &rt->cfg.geometry;
  const uint32_t total = seq_off[batch];
  if (!total) return IKV_OK;
  const size_t key_bytes = sizeof(uint64_t) * g->kv_heads * total;
  ikv_status st = stage(s, &s->candidates, pages, sizeof(ikv_page_id) * total);
  if (st == IKV_OK) st = stage(s, &s->rank_off, seq_off, sizeof(uint32_t) * (batch + 1));
  if (st == IKV_OK) st = stage(s, &s->q, q, sizeof(float) * batch * rt->cfg.q_heads * g->head_dim);
  cudaStream_t stream;
  if (st == IKV_OK) st = rt_stream(rt, &stream);
  if (st != IKV_OK) return st;
  const uint32_t longest = longest_sequence(seq_off, batch);
  st = ikv_cuda_page_keys_batch(g, &s->sum, bound, (const uint32_t *)s->candidates.d, (const uint32_t *)s->rank_off.d,
                                longest, batch, (const float *)s->q.d, rt->cfg.q_heads, s->keys, stream);
  if (st != IKV_OK) return st;
  st = ikv_cuda_rank_keys_batch(g->kv_heads, s->keys, (const uint32_t *)s->rank_off.d, longest, batch, want, stream);
  const int on_gpu = st == IKV_OK;
  if (!on_gpu && st != IKV_E_UNSUPPORTED) return st;
  if (on_gpu) /* each row's best min(want, n) come back, not its whole ranking */
    return ok(copy_back_best(s, seq_off, batch, g->kv_heads, want, keys, stream)) && ok(cudaStreamSynchronize(stream))
               ? IKV_OK
               : IKV_E_CUDA;
  if (!ok(cudaMemcpyAsync(keys, s->keys, key_bytes, cudaMemcpyDeviceToHost, stream)) || !ok(cudaStreamSynchronize(stream)))
    return IKV_E_CUDA;
  for (uint32_t b = 0; b < batch; b++) {
    const uint32_t n = seq_off[b + 1] - seq_off[b];
    for (uint32_t h = 0; h < g->kv_heads; h++)
      ikv_rank_smallest(keys + (size_t)g->kv_heads * seq_off[b] + (size_t)h * n, n, want < n ? want : n);
  }
  return IKV_OK;
}

/* The router's ranking: sequence b's candidates pages[seq_off[b],
 * seq_off[b + 1]) and its queries q + b * q_heads * head_dim go up, are
 * scored from the summaries and ranked per KV head on the runtime's stream,
 * one launch each for a part of the batch, and each row's best come back:
 * one round trip a part. The parts are as many sequences as the staging
 * holds the candidates of (a sequence holds at most every page: one part
 * for every batch but the largest). Rows longer than the GPU sort takes
 * come back unranked and are ranked on the host. */
ikv_status cuda_rank_pages_batch(ikv_runtime *rt, int bound, const ikv_page_id *pages, const uint32_t *seq_off,
                                 uint32_t batch, const float *q, uint32_t want, uint64_t *keys) {
  cuda_state *s = state(rt);
  const size_t cap = s->candidates.cap / sizeof(ikv_page_id), q_len = (size_t)rt->cfg.q_heads * rt->cfg.geometry.head_dim;
  const uint32_t H = rt->cfg.geometry.kv_heads;
  if (batch > rt->cfg.max_batch) return IKV_E_INVALID;
  for (uint32_t b0 = 0, b1; b0 < batch; b0 = b1) {
    for (b1 = b0; b1 < batch && seq_off[b1 + 1] - seq_off[b0] <= cap; b1++) s->part_off[b1 - b0 + 1] = seq_off[b1 + 1] - seq_off[b0];
    if (b1 == b0) return IKV_E_INVALID; /* a sequence with more candidates than pages */
    s->part_off[0] = 0;
    const ikv_status st = rank_part(rt, bound, pages + seq_off[b0], s->part_off, b1 - b0, q + b0 * q_len, want,
                                    keys + (size_t)H * seq_off[b0]);
    if (st != IKV_OK) return st;
  }
  return IKV_OK;
}

/* One sequence: a batch of one. */
ikv_status cuda_rank_pages(ikv_runtime *rt, int bound, const ikv_page_id *pages, uint32_t n, const float *q,
                           uint32_t want, uint64_t *keys) {
  const uint32_t seq_off[2] = {0, n};
  return cuda_rank_pages_batch(rt, bound, pages, seq_off, 1, q, want, keys);
}

/* Page-locked host memory: copies from it to the device are asynchronous
 * (from pageable memory the driver stages them, the host waiting). */
void *cuda_host_alloc(ikv_runtime *rt, size_t bytes) {
  void *p = NULL;
  return locked_alloc(rt, &p, bytes, cudaHostAllocDefault) ? p : NULL;
}

void cuda_host_free(ikv_runtime *rt, void *p) {
  (void)rt;
  if (p) cudaFreeHost(p);
}

ikv_status cuda_plan_open(ikv_runtime *rt, ikv_plan *pl) {
  cuda_plan *cp = (cuda_plan *)calloc(1, sizeof(cuda_plan));
  if (!cp) return IKV_E_NO_MEMORY;
  pl->dev = cp;
  const ikv_geometry *g = &rt->cfg.geometry;
  const size_t E = pl->cap_entries, rows = pl->cap_rows, items = E + rows * IKV_PRECISION_COUNT;
  const size_t bytes[11] = {sizeof(int32_t) * (rows + 1), sizeof(int32_t) * E, E, sizeof(int32_t) * E,
                            sizeof(uint16_t) * E, sizeof(uint16_t) * E, sizeof(int32_t) * pl->cap_batch,
                            sizeof(ikv_work_item) * items, sizeof(int32_t) * E, sizeof(int32_t) * (rows + 1), items};
  for (int i = 0; i < 11; i++)
    if (!device_alloc(rt, &cp->buf[i], bytes[i])) return IKV_E_CUDA;
  cp->h_row_items = (int32_t *)cuda_host_alloc(rt, sizeof(int32_t) * (rows + 1));
  cp->h_item_waits = (uint8_t *)cuda_host_alloc(rt, items);
  cp->h_fresh = (uint8_t *)malloc(WAIT_FLAGS_MAX_ENTRIES);
  if (!cp->h_row_items || !cp->h_item_waits || !cp->h_fresh) return IKV_E_NO_MEMORY;
  if (!ok(cudaEventCreateWithFlags(&cp->uploaded, cudaEventDisableTiming))) return IKV_E_CUDA;
  /* partials: every item, every KV head, every query head of the group */
  cp->ws_bytes = items * g->kv_heads * (rt->cfg.q_heads / g->kv_heads) * (g->head_dim + 2) * sizeof(float);
  if (!device_alloc(rt, &cp->ws, cp->ws_bytes)) return IKV_E_CUDA;
  const size_t N = pl->scratch_pages;
  if (!device_alloc(rt, (void **)&cp->d_seq_off, sizeof(uint32_t) * (pl->cap_batch + 1)) ||
      !device_alloc(rt, (void **)&cp->d_pages, sizeof(uint32_t) * N) ||
      !device_alloc(rt, (void **)&cp->d_cand, sizeof(ikv_select_candidate) * N) ||
      !device_alloc(rt, (void **)&cp->d_reserved, sizeof(int32_t) * rows * IKV_PRECISION_COUNT) ||
      !device_alloc(rt, (void **)&cp->d_groups, sizeof(int32_t) * 3 * rows * IKV_PRECISION_COUNT) ||
      !device_alloc(rt, (void **)&cp->d_keys, sizeof(uint64_t) * N * g->kv_heads))
    return IKV_E_CUDA;
  return IKV_OK;
}

void cuda_plan_close(ikv_plan *pl) {
  cuda_plan *cp = (cuda_plan *)pl->dev;
  if (!cp) return;
  if (cp->uploaded) cudaEventSynchronize(cp->uploaded), cudaEventDestroy(cp->uploaded);
  for (int i = 0; i < 11; i++) cudaFree(cp->buf[i]);
  cudaFree(cp->ws);
  cudaFree(cp->d_seq_off), cudaFree(cp->d_pages), cudaFree(cp->d_cand), cudaFree(cp->d_reserved), cudaFree(cp->d_groups), cudaFree(cp->d_keys);
  cudaFreeHost(cp->h_row_items), cudaFreeHost(cp->h_item_waits), free(cp->h_fresh);
  free(cp);
  pl->dev = NULL;
}

ikv_status cuda_plan_reclaim(ikv_runtime *rt, ikv_plan *pl) {
  (void)rt;
  return ok(cudaEventSynchronize(((cuda_plan *)pl->dev)->uploaded)) ? IKV_OK : IKV_E_CUDA;
}

uint32_t cuda_pages_per_item(const ikv_runtime *rt, uint32_t rows, uint32_t heads, uint32_t pages, uint32_t precisions) {
  return ikv_cuda_pages_per_item(rows, heads, pages, precisions, state(rt)->sm_count);
}

/* item_waits: an item holding a page that may be written by the kernel
 * before the decode (appended and not yet written by every layer, or
 * written since the last plan) waits for it. Where the launch is one wave
 * (`launched` items), before that page: the page's position in the item
 * plus one, so the item's earlier pages are in flight by the time the
 * write_kv is done (batch 1 at 32K on H100: select step 480 -> 478 us,
 * host-ranked 548 -> 540, device selection 566 -> 535); on entry (1) where
 * blocks queue (batch 32's select step was 1% slower waiting before the
 * page, cause not established) or the position does not fit. With device
 * selection every item waits on entry when such a page is among the
 * candidates (the GPU picks entries the host does not see). Returns whether
 * the plan's items may start early at all. */
static bool mark_waits(ikv_runtime *rt, const ikv_plan *pl, cuda_state *s, uint32_t launched, uint8_t *fresh,
                       uint8_t *waits) {
  if (pl->n_entries > WAIT_FLAGS_MAX_ENTRIES) return false;
  const uint32_t now = rt->build_seq;
  for (uint32_t e = 0; e < pl->n_entries; e++) {
    const ikv_page_id p = pl->page[e];
    fresh[e] = rt->unwritten_layers[p] || s->last_write[p] + 1 >= now; /* entry e's page may be written */
    if (fresh[e]) s->waited[p] = now;
  }
  bool candidates = false;
  for (uint32_t c = 0; selects(pl) && c < pl->n_dsel; c++) {
    const ikv_page_id p = pl->dsel_cand[c].page;
    candidates |= rt->unwritten_layers[p] || s->last_write[p] + 1 >= now;
  }
  const ikv_geometry *g = &rt->cfg.geometry;
  const bool one_wave = (uint64_t)launched * (pl->view.per_kv_head ? 1 : g->kv_heads) <=
                        ikv_cuda_decode_wave(g->head_dim, s->sm_count);
  for (uint32_t i = 0; i < pl->n_work; i++) {
    uint32_t x = pl->work[i].begin;
    while (!candidates && x < pl->work[i].end && !fresh[pl->work_entries[x]]) x++;
    const uint32_t at = x - pl->work[i].begin + 1;
    waits[i] = candidates ? 1 : x == pl->work[i].end ? 0 : one_wave && at <= UINT8_MAX ? (uint8_t)at : 1;
  }
  return true;
}

ikv_status cuda_plan_publish(ikv_runtime *rt, ikv_plan *pl) {
  cuda_state *s = state(rt);
  cuda_plan *cp = (cuda_plan *)pl->dev;
  const uint32_t rows = pl->n_rows, nnz = pl->n_entries;
  /* the decode's grid: the items rounded up (a bucket) */
  const uint32_t launched = bucket(pl->n_work, pl->cap_entries + pl->cap_rows * IKV_PRECISION_COUNT);
  /* the padding: empty items of the last row (they read no page, and the
   * merge weighs their partials 0) */
  for (uint32_t i = pl->n_work; i < launched; i++) {
    ikv_work_item pad = {};
    pad.row = rows - 1, pad.precision = IKV_FP16;
    pl->work[i] = pad;
  }
  for (uint32_t r = 0, i = 0; r <= rows; r++) { /* items come ordered by row */
    while (i < launched && pl->work[i].row < r) i++;
    cp->h_row_items[r] = (int32_t)i;
  }
  s->unflagged_write = 0; /* writes before this plan: last_write */
  const bool overlap = mark_waits(rt, pl, s, launched, cp->h_fresh, cp->h_item_waits);
  memset(cp->h_item_waits + pl->n_work, 0, launched - pl->n_work);
  const void *src[11] = {pl->indptr, pl->slot, pl->precision, pl->page_index, pl->first, pl->last, pl->seq_len,
                         pl->work, pl->work_entries, cp->h_row_items, cp->h_item_waits};
  const size_t bytes[11] = {sizeof(int32_t) * (rows + 1), sizeof(int32_t) * nnz, nnz, sizeof(int32_t) * nnz,
                            sizeof(uint16_t) * nnz, sizeof(uint16_t) * nnz, sizeof(int32_t) * pl->view.batch,
                            sizeof(ikv_work_item) * launched, sizeof(int32_t) * nnz, sizeof(int32_t) * (rows + 1),
                            overlap ? launched : 0};
  for (int i = 0; i < 11; i++)
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
  dp->item_waits = overlap ? (const uint8_t *)cp->buf[10] : NULL;
  dp->rows = rows;
  dp->n_items = launched;
  dp->n_entries = nnz;
  dp->formats = 0; /* the formats resolve counted (device selection's reserved entries included) */
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) dp->formats |= pl->stats.pages_by_precision[p] ? 1u << p : 0u;
  if (selects(pl)) { /* what the GPU ranks at layer 0's decode */
    const uint32_t B = pl->view.batch;
    if (!ok(cudaMemcpyAsync(cp->d_seq_off, pl->dsel_seq, sizeof(uint32_t) * (B + 1), cudaMemcpyHostToDevice, s->stream)) ||
        !ok(cudaMemcpyAsync(cp->d_pages, pl->dsel_pages, sizeof(uint32_t) * pl->n_dsel, cudaMemcpyHostToDevice, s->stream)) ||
        !ok(cudaMemcpyAsync(cp->d_cand, pl->dsel_cand, sizeof(ikv_select_candidate) * pl->n_dsel, cudaMemcpyHostToDevice,
                            s->stream)) ||
        !ok(cudaMemcpyAsync(cp->d_reserved, pl->dsel_reserved, sizeof(int32_t) * rows * IKV_PRECISION_COUNT,
                            cudaMemcpyHostToDevice, s->stream)) ||
        !ok(cudaMemcpyAsync(cp->d_groups, pl->dsel_groups, sizeof(int32_t) * 3 * rows * IKV_PRECISION_COUNT,
                            cudaMemcpyHostToDevice, s->stream)))
      return IKV_E_CUDA;
  }
  return ok(cudaEventRecord(cp->uploaded, s->stream)) && ok(cudaEventRecord(s->ready, s->stream)) ? IKV_OK : IKV_E_CUDA;
}

/* Device selection, on the caller's stream before layer 0's decode: each
 * sequence's candidates scored per KV head, then each row's best found and
 * written into the plan's reserved entries (two launches). */
ikv_status select_on_device(ikv_runtime *rt, const ikv_plan *pl, cudaStream_t stream) {
  const cuda_plan *cp = (const cuda_plan *)pl->dev;
  const ikv_geometry *g = &rt->cfg.geometry;
  const uint32_t B = pl->view.batch;
  const uint32_t longest = selection_longest(pl);
  ikv_status st = ikv_cuda_page_keys_batch(g, &state(rt)->sum, pl->dsel_bound, cp->d_pages, cp->d_seq_off, longest, B,
                                           pl->dsel_q, rt->cfg.q_heads, cp->d_keys, stream);
  if (st != IKV_OK) return st;
  ikv_cuda_selection sel = {B,
                            g->kv_heads,
                            pl->dsel_k,
                            cp->d_seq_off,
                            cp->d_cand,
                            cp->d_keys,
                            cp->d_reserved,
                            (int32_t *)cp->buf[1],
                            (int32_t *)cp->buf[3],
                            (uint16_t *)cp->buf[4],
                            (uint16_t *)cp->buf[5],
                            cp->d_groups,
                            (ikv_work_item *)cp->buf[7],
                            pl->pages_per_item,
                            longest};
  return ikv_cuda_select_scatter(&sel, stream);
}

ikv_status cuda_decode(ikv_runtime *rt, const ikv_plan *pl, uint32_t layer, const void *q, void *out, float *lse,
                       ikv_dtype dtype, void *stream) {
  const cuda_plan *cp = (const cuda_plan *)pl->dev;
  if (wait_ready(rt, stream) != IKV_OK) return IKV_E_CUDA;
  if (selects(pl) && layer == 0) {
    ikv_status st = select_on_device(rt, pl, (cudaStream_t)stream);
    if (st != IKV_OK) return st;
  }
  ikv_layer_pools lp = rt_layer_pools(rt, layer, IKV_TIER_GPU);
  ikv_cuda_plan dp = cp->dp;
  cuda_state *s = state(rt);
  /* alongside only the write_kv just before it, and only if its items wait for every page written */
  if (s->unflagged_write || !s->after_write || s->write_stream != stream || (selects(pl) && layer == 0))
    dp.item_waits = NULL;
  s->after_write = 0;
  return caller_enqueued(rt, stream, ikv_cuda_decode(&rt->cfg.geometry, &lp, &dp, &rt->attn, q, out, lse, dtype,
                                                     cp->ws, cp->ws_bytes, stream));
}

ikv_status cuda_read_spans(ikv_runtime *rt, const ikv_plan *pl, void *stream, uint16_t *first, uint16_t *last) {
  (void)rt;
  const cuda_plan *cp = (const cuda_plan *)pl->dev;
  const size_t bytes = sizeof(uint16_t) * pl->n_entries;
  cudaStream_t st = (cudaStream_t)stream;
  if (!bytes) return IKV_OK;
  return ok(cudaMemcpyAsync(first, cp->buf[4], bytes, cudaMemcpyDeviceToHost, st)) &&
                 ok(cudaMemcpyAsync(last, cp->buf[5], bytes, cudaMemcpyDeviceToHost, st)) &&
                 ok(cudaStreamSynchronize(st))
             ? IKV_OK
             : IKV_E_CUDA;
}

} // namespace

extern "C" const rt_backend rt_backend_cuda = {
    cuda_open,         cuda_close,        cuda_copy_page,     cuda_move_pages,  cuda_batch_landed,
    cuda_await_batch,  cuda_take_stall_us, cuda_convert_page, cuda_stage_tokens, cuda_stream_enter,
    cuda_stream_leave, cuda_graph_key,    cuda_write_kv,      cuda_summarize,   cuda_copy_summary,
    cuda_rank_pages,   cuda_rank_pages_batch, cuda_plan_open, cuda_plan_close, cuda_host_alloc, cuda_host_free,
    cuda_plan_reclaim, cuda_pages_per_item, cuda_plan_publish,
    cuda_decode,       cuda_read_spans,
};
