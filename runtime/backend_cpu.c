/* The CPU backend: both tiers in host memory, page bytes moved and converted
 * by the C reference kernels. The slot bookkeeping and the bytes moved are
 * the same as on a GPU. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention_ref.h"
#include "kernels/numeric.h"
#include "runtime/plan_internal.h"

size_t rt_pool_index(const ikv_runtime *rt, uint32_t layer, ikv_tier tier, ikv_precision p) {
  (void)rt;
  return ((size_t)layer * IKV_TIER_COUNT + tier) * IKV_PRECISION_COUNT + p;
}

uint8_t *rt_page(const ikv_runtime *rt, uint32_t layer, ikv_tier tier, ikv_precision p, int32_t slot) {
  return rt->pools[rt_pool_index(rt, layer, tier, p)] + (size_t)slot * rt->page_bytes[p];
}

ikv_layer_pools rt_layer_pools(const ikv_runtime *rt, uint32_t layer, ikv_tier tier) {
  ikv_layer_pools lp;
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
    lp.base[p] = rt->pools[rt_pool_index(rt, layer, tier, (ikv_precision)p)];
    lp.pages[p] = rt->cfg.capacity[tier][p];
  }
  return lp;
}

/* Pools: the host tier's from the host-tier allocator (aligned; nothing to
 * bind to without a GPU), the stand-in GPU tier's from malloc. */
static ikv_status cpu_open(ikv_runtime *rt) {
  size_t n = (size_t)rt->cfg.geometry.layers * IKV_TIER_COUNT * IKV_PRECISION_COUNT;
  rt->pools = calloc(n, sizeof(uint8_t *));
  if (!rt->pools || rt_summaries_create(rt) != IKV_OK || ikv_host_tier_open(NULL, &rt->host) != IKV_OK)
    return IKV_E_NO_MEMORY;
  for (uint32_t l = 0; l < rt->cfg.geometry.layers; l++)
    for (int t = 0; t < IKV_TIER_COUNT; t++)
      for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
        size_t bytes = rt->page_bytes[p] * rt->cfg.capacity[t][p];
        if (!bytes) continue;
        uint8_t *pool = t == IKV_TIER_HOST ? ikv_host_tier_alloc(rt->host, bytes) : malloc(bytes);
        if (!pool) return IKV_E_NO_MEMORY;
        rt->pools[rt_pool_index(rt, l, (ikv_tier)t, (ikv_precision)p)] = pool;
      }
  return IKV_OK;
}

static void cpu_close(ikv_runtime *rt) {
  rt_summaries_destroy(rt);
  if (rt->pools)
    for (uint32_t l = 0; l < rt->cfg.geometry.layers; l++)
      for (int t = 0; t < IKV_TIER_COUNT; t++)
        for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
          uint8_t *pool = rt->pools[rt_pool_index(rt, l, (ikv_tier)t, (ikv_precision)p)];
          if (t == IKV_TIER_HOST) ikv_host_tier_free(rt->host, pool, rt->page_bytes[p] * rt->cfg.capacity[t][p]);
          else free(pool);
        }
  free(rt->pools);
  ikv_host_tier_close(rt->host);
}

static ikv_status cpu_copy_page(ikv_runtime *rt, int32_t src_slot, int32_t dst_slot, ikv_precision p) {
  for (uint32_t l = 0; l < rt->cfg.geometry.layers; l++)
    memcpy(rt_page(rt, l, IKV_TIER_GPU, p, dst_slot), rt_page(rt, l, IKV_TIER_GPU, p, src_slot), rt->page_bytes[p]);
  return IKV_OK;
}

/* Moves land at once: prefetched pages are there before anything reads them. */
static ikv_status cpu_move_pages(ikv_runtime *rt, rt_move_kind kind, const rt_move *m, uint32_t n, uint32_t batch) {
  (void)kind, (void)batch;
  for (uint32_t i = 0; i < n; i++) {
    const ikv_tier to = m[i].from == IKV_TIER_GPU ? IKV_TIER_HOST : IKV_TIER_GPU;
    for (uint32_t l = 0; l < rt->cfg.geometry.layers; l++)
      memcpy(rt_page(rt, l, to, m[i].precision, m[i].dst_slot), rt_page(rt, l, m[i].from, m[i].precision, m[i].src_slot),
             rt->page_bytes[m[i].precision]);
  }
  return IKV_OK;
}

/* Nothing to stage, no streams to order, no graphs. */
static ikv_status cpu_stage_tokens(ikv_runtime *rt, const int64_t *slots, const uint8_t *precs, const ikv_page_id *pages,
                                   uint32_t n) {
  return (void)rt, (void)slots, (void)precs, (void)pages, (void)n, IKV_OK;
}
static ikv_status cpu_stream(ikv_runtime *rt, void *stream) { return (void)rt, (void)stream, IKV_OK; }
static ikv_status cpu_graph_key(const ikv_runtime *rt, const ikv_plan *plan, uint64_t *key) {
  return (void)rt, (void)plan, (void)key, IKV_E_UNSUPPORTED;
}

static int cpu_batch_landed(ikv_runtime *rt, uint32_t batch) { return (void)rt, (void)batch, 1; }
static ikv_status cpu_await_batch(ikv_runtime *rt, uint32_t batch) { return (void)rt, (void)batch, IKV_OK; }
static double cpu_take_stall_us(ikv_runtime *rt) { return (void)rt, 0.0; }

static ikv_status cpu_convert_page(ikv_runtime *rt, const ikv_pt_move *mv, uint32_t rows) {
  for (int t = 0; t < IKV_TIER_COUNT; t++) {
    if (mv->old_slot[t] == IKV_NO_SLOT) continue;
    for (uint32_t l = 0; l < rt->cfg.geometry.layers; l++) {
      ikv_status st = ikv_ref_requantize(&rt->cfg.geometry, mv->from, rt_page(rt, l, (ikv_tier)t, mv->from, mv->old_slot[t]),
                                         mv->to, rt_page(rt, l, (ikv_tier)t, mv->to, mv->new_slot[t]), rows);
      if (st != IKV_OK) return st;
    }
  }
  return IKV_OK;
}

static ikv_status cpu_write_kv(ikv_runtime *rt, uint32_t layer, const void *k, const void *v, ikv_dtype dtype,
                               const int64_t *slots, const uint8_t *precs, uint32_t n, void *stream) {
  (void)stream; /* synchronous */
  ikv_layer_pools lp = rt_layer_pools(rt, layer, IKV_TIER_GPU);
  return ikv_ref_write_kv(&rt->cfg.geometry, &lp, k, v, dtype, slots, precs, n);
}

static ikv_status cpu_plan_open(ikv_runtime *rt, ikv_plan *pl) {
  (void)rt, (void)pl;
  return IKV_OK;
}

static void cpu_plan_close(ikv_plan *pl) { (void)pl; }

static uint32_t cpu_pages_per_item(const ikv_runtime *rt, uint32_t rows, uint32_t heads, uint32_t pages,
                                   uint32_t precisions) {
  (void)rt, (void)rows, (void)heads, (void)pages, (void)precisions;
  return IKV_WORK_PAGES;
}

static ikv_status cpu_plan_publish(ikv_runtime *rt, ikv_plan *pl) {
  (void)rt, (void)pl;
  return IKV_OK;
}

static void convert_out(const float *src, void *dst, ikv_dtype dtype, size_t n) {
  uint16_t *h = dst;
  switch (dtype) {
    case IKV_DTYPE_F32: memcpy(dst, src, n * sizeof(float)); break;
    case IKV_DTYPE_F16: for (size_t i = 0; i < n; i++) h[i] = ikv_f32_to_f16(src[i]); break;
    default: for (size_t i = 0; i < n; i++) h[i] = ikv_f32_to_bf16(src[i]); break;
  }
}

static ikv_status cpu_decode(ikv_runtime *rt, const ikv_plan *pl, uint32_t layer, const void *q, void *out, float *lse,
                             ikv_dtype dtype, void *stream) {
  (void)stream;
  const ikv_decode_plan *view = &pl->view;
  size_t n = (size_t)view->batch * rt->cfg.q_heads * rt->cfg.geometry.head_dim;
  float *qf = malloc(sizeof(float) * (n ? 2 * n : 1)); /* the reference path: not a hot path */
  if (!qf) return IKV_E_NO_MEMORY;
  ikv_ref_to_float(q, dtype, n, qf);
  ikv_layer_pools lp = rt_layer_pools(rt, layer, IKV_TIER_GPU);
  ikv_status st = ikv_ref_decode(&rt->cfg.geometry, &lp, view, &rt->attn, qf, qf + n, lse, 0);
  if (st == IKV_OK) convert_out(qf + n, out, dtype, n);
  free(qf);
  return st;
}

/* The plan's uploaded arrays: nothing uploads them here. */
static void *cpu_host_alloc(ikv_runtime *rt, size_t bytes) {
  (void)rt;
  return malloc(bytes);
}

static void cpu_host_free(ikv_runtime *rt, void *p) {
  (void)rt;
  free(p);
}

const rt_backend rt_backend_cpu = {
    .open = cpu_open,
    .close = cpu_close,
    .copy_page = cpu_copy_page,
    .move_pages = cpu_move_pages,
    .batch_landed = cpu_batch_landed,
    .await_batch = cpu_await_batch,
    .take_stall_us = cpu_take_stall_us,
    .stage_tokens = cpu_stage_tokens,
    .stream_enter = cpu_stream,
    .stream_leave = cpu_stream,
    .graph_key = cpu_graph_key,
    .convert_page = cpu_convert_page,
    .write_kv = cpu_write_kv,
    .summarize = rt_summarize,
    .copy_summary = rt_summary_copy,
    .rank_pages = rt_rank_pages,
    .plan_open = cpu_plan_open,
    .plan_close = cpu_plan_close,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,
    .pages_per_item = cpu_pages_per_item,
    .plan_publish = cpu_plan_publish,
    .decode = cpu_decode,
};
