/* The runtime's backends behind one small table: where page bytes live and
 * which kernels move, convert, write and read them. The CPU backend keeps both
 * tiers in host memory and runs the C reference kernels; the CUDA backend
 * keeps the GPU tier in device memory (cudaMalloc) and the host tier pinned,
 * and runs the CUDA kernels on the caller's streams. */
#ifndef IKV_RUNTIME_BACKEND_H
#define IKV_RUNTIME_BACKEND_H

#include "runtime/intentkv.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One page's bytes (every layer) from one tier to the other. */
typedef struct rt_move {
  ikv_tier from;
  ikv_precision precision;
  int32_t src_slot, dst_slot;
} rt_move;

/* What a batch of moves is for: it decides the stream and the accounting. */
typedef enum rt_move_kind {
  RT_MOVE_EVICT = 0, /* GPU -> host on the runtime's stream */
  RT_MOVE_DEMAND,    /* host -> GPU on the runtime's stream, before the decode that needs it (timed: a stall) */
  RT_MOVE_PREFETCH   /* host -> GPU on the prefetch stream, after the runtime's stream's work so far */
} rt_move_kind;

typedef struct rt_backend {
  ikv_status (*open)(ikv_runtime *rt); /* pools, page summaries and the backend's own state */
  void (*close)(ikv_runtime *rt);
  /* a page's bytes in every layer, within the GPU tier (copy-on-write) */
  ikv_status (*copy_page)(ikv_runtime *rt, int32_t src_slot, int32_t dst_slot, ikv_precision precision);
  /* pages between tiers, batched; a RT_MOVE_PREFETCH batch is numbered
   * `batch` (1, 2, ... in issue order) for batch_landed and await_batch */
  ikv_status (*move_pages)(ikv_runtime *rt, rt_move_kind kind, const rt_move *moves, uint32_t n, uint32_t batch);
  /* whether prefetch batch `batch` (and every one before it) has landed; never blocks */
  int (*batch_landed)(ikv_runtime *rt, uint32_t batch);
  /* the runtime's stream, hence the next decode, waits for prefetch batch `batch` */
  ikv_status (*await_batch)(ikv_runtime *rt, uint32_t batch);
  /* device time of the demand batches finished since the last call, in us; never blocks */
  double (*take_stall_us)(ikv_runtime *rt);
  /* a page's bytes in every layer and tier after a precision move */
  ikv_status (*convert_page)(ikv_runtime *rt, const ikv_pt_move *move, uint32_t rows);
  /* the step's slot mapping at append (slots, precisions and each token's
   * page), where write_kv and summarize find it on the device */
  ikv_status (*stage_tokens)(ikv_runtime *rt, const int64_t *slots, const uint8_t *precisions,
                             const ikv_page_id *pages, uint32_t n);
  /* CUDA graphs across steps: the caller's stream waits for the runtime's
   * uploads and moves (enter), and the runtime's later moves for the
   * stream's work (leave); the key of what a captured step depends on */
  ikv_status (*stream_enter)(ikv_runtime *rt, void *stream);
  ikv_status (*stream_leave)(ikv_runtime *rt, void *stream);
  ikv_status (*graph_key)(const ikv_runtime *rt, const ikv_plan *plan, uint64_t *key);
  /* write_kv once the runtime has checked the slots */
  ikv_status (*write_kv)(ikv_runtime *rt, uint32_t layer, const void *k, const void *v, ikv_dtype dtype,
                         const int64_t *slots, const uint8_t *precisions, uint32_t n, void *stream);
  /* score_layer's keys (k as given to write_kv, after it) into the summaries
   * of their pages: pages[i] owns token i at slots[i] */
  ikv_status (*summarize)(ikv_runtime *rt, const void *k, ikv_dtype dtype, const int64_t *slots,
                          const ikv_page_id *pages, uint32_t n, void *stream);
  /* a copy-on-write copy's summary */
  ikv_status (*copy_summary)(ikv_runtime *rt, ikv_page_id dst, ikv_page_id src);
  /* Ranks candidate pages[0, n) for every KV head against one sequence's
   * queries q[q_heads][head_dim] (host); bound: Quest's bound, else mean-key
   * cosine. keys[h * n + r], r < want: head h's r-th best, as
   * ikv_rank_key(score, i) (kernels/page_summary.h); keys holds kv_heads * n. */
  ikv_status (*rank_pages)(ikv_runtime *rt, int bound, const ikv_page_id *pages, uint32_t n, const float *q,
                           uint32_t want, uint64_t *keys);
  /* rank_pages for a whole batch in one call (NULL: the router ranks one
   * sequence at a time): sequence b's candidates are pages[seq_off[b],
   * seq_off[b + 1]), its queries q + b * q_heads * head_dim, its keys at
   * keys + kv_heads * seq_off[b], laid out as rank_pages lays them, the best
   * min(want, n_b) of each row first. */
  ikv_status (*rank_pages_batch)(ikv_runtime *rt, int bound, const ikv_page_id *pages, const uint32_t *seq_off,
                                 uint32_t batch, const float *q, uint32_t want, uint64_t *keys);
  /* a plan's buffers on the backend's side */
  ikv_status (*plan_open)(ikv_runtime *rt, ikv_plan *plan);
  void (*plan_close)(ikv_plan *plan);
  /* host memory for the plan arrays plan_publish sends to the device and
   * the ranked keys rank_pages_batch brings back (CUDA: page-locked, so
   * that the copies are asynchronous and direct) */
  void *(*host_alloc)(ikv_runtime *rt, size_t bytes);
  void (*host_free)(ikv_runtime *rt, void *p);
  /* the plan's host arrays may be written again: the last publish's
   * uploads from them are done (NULL: nothing to wait for) */
  ikv_status (*plan_reclaim)(ikv_runtime *rt, ikv_plan *plan);
  /* pages per work item of the plan's partition (precisions: formats the rows mix) */
  uint32_t (*pages_per_item)(const ikv_runtime *rt, uint32_t rows, uint32_t heads_per_row, uint32_t pages_per_row,
                             uint32_t precisions);
  /* after a build: the plan where decode reads it */
  ikv_status (*plan_publish)(ikv_runtime *rt, ikv_plan *plan);
  ikv_status (*decode)(ikv_runtime *rt, const ikv_plan *plan, uint32_t layer, const void *q, void *out, float *lse,
                       ikv_dtype dtype, void *stream);
  /* device selection: the plan's entries' valid tokens as the device holds
   * them once `stream`'s work is done (it waits); NULL: no device selection */
  ikv_status (*read_spans)(ikv_runtime *rt, const ikv_plan *plan, void *stream, uint16_t *first, uint16_t *last);
} rt_backend;

extern const rt_backend rt_backend_cpu, rt_backend_cuda;

#ifdef __cplusplus
}
#endif
#endif /* IKV_RUNTIME_BACKEND_H */
