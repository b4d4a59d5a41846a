/* The runtime: creation, sequences and spans, append, write_kv, decode, stats. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention_ref.h"
#include "runtime/runtime_internal.h"

ikv_status rt_fail(ikv_runtime *rt, ikv_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rt->errmsg, sizeof(rt->errmsg), fmt, ap);
  va_end(ap);
  return status;
}

/* Clears the message on success; keeps the pagetable's status otherwise. */
static ikv_status done(ikv_runtime *rt, ikv_status st, const char *what) {
  if (st == IKV_OK) {
    rt->errmsg[0] = 0;
    return st;
  }
  return rt_fail(rt, st, "%s: %s", what, ikv_status_str(st));
}

const char *ikv_runtime_errmsg(const ikv_runtime *rt) { return rt ? rt->errmsg : "no runtime"; }
const ikv_pagetable *ikv_runtime_pagetable(const ikv_runtime *rt) { return rt ? rt->pt : NULL; }

ikv_status ikv_runtime_host_placement(const ikv_runtime *rt, ikv_host_placement *out) {
  if (!rt || !out) return IKV_E_NULL;
  *out = *ikv_host_tier_placement(rt->host);
  return IKV_OK;
}

ikv_status ikv_runtime_create(const ikv_runtime_config *config, ikv_runtime **out) {
  if (!config || !out) return IKV_E_NULL;
  if (config->backend != IKV_BACKEND_CPU && config->backend != IKV_BACKEND_CUDA) return IKV_E_INVALID;
  const ikv_geometry *g = &config->geometry;
  if (ikv_geometry_check(g) != IKV_OK) return IKV_E_INVALID;
  if (!config->q_heads || config->q_heads % g->kv_heads || config->score_layer >= g->layers)
    return IKV_E_INVALID;
  if (!config->max_batch || !config->max_plan_pages || config->window < 0 || config->sinks < 0 ||
      !(config->softmax_scale >= 0.0f) || !isfinite(config->softmax_scale))
    return IKV_E_INVALID;
  if ((unsigned)config->prefetch.predictor >= IKV_PREDICTOR_COUNT || config->prefetch.predictor == IKV_PREDICT_BELADY)
    return IKV_E_INVALID; /* Belady needs the future: the simulator's alone */
  ikv_runtime *rt = calloc(1, sizeof(*rt));
  if (!rt) return IKV_E_NO_MEMORY;
  rt->cfg = *config;
  rt->be = config->backend == IKV_BACKEND_CUDA ? &rt_backend_cuda : &rt_backend_cpu;
  rt->attn = (ikv_attn_params){
      .q_heads = config->q_heads,
      .softmax_scale = config->softmax_scale > 0.0f ? config->softmax_scale : 1.0f / sqrtf((float)g->head_dim),
      .window = config->window,
      .sinks = config->sinks};
  ikv_pagetable_config pc = {.geometry = *g, .max_sequences = config->max_sequences};
  memcpy(pc.capacity, config->capacity, sizeof(pc.capacity));
  uint64_t gpu_tokens = 0;
  for (int t = 0; t < IKV_TIER_COUNT; t++)
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) rt->max_pages += config->capacity[t][p];
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) gpu_tokens += (uint64_t)config->capacity[IKV_TIER_GPU][p] * g->page_size;
  rt->gpu_tokens = gpu_tokens < UINT32_MAX ? (uint32_t)gpu_tokens : UINT32_MAX; /* a call's count is 32 bits */
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) rt->page_bytes[p] = ikv_page_layer_bytes(g, (ikv_precision)p);
  ikv_status st = ikv_pt_create(&pc, &rt->pt);
  if (st == IKV_OK) st = rt->be->open(rt);
  if (st == IKV_OK) st = rt_tiering_open(rt);
  if (st == IKV_OK) {
    rt->fill = calloc(rt->max_pages, sizeof(uint16_t));
    rt->unwritten_layers = calloc(rt->max_pages, sizeof(uint16_t));
    rt->unwritten_plan = calloc(rt->max_pages, sizeof(uint32_t));
    rt->token_pages = malloc(sizeof(ikv_page_id) * (rt->gpu_tokens ? rt->gpu_tokens : 1));
    st = rt->fill && rt->unwritten_layers && rt->unwritten_plan && rt->token_pages ? IKV_OK : IKV_E_NO_MEMORY;
  }
  if (st != IKV_OK) {
    ikv_runtime_destroy(rt);
    return st;
  }
  *out = rt;
  return IKV_OK;
}

void ikv_runtime_destroy(ikv_runtime *rt) {
  if (!rt) return;
  rt->be->close(rt);
  rt_tiering_close(rt);
  free(rt->fill), free(rt->unwritten_layers), free(rt->unwritten_plan);
  free(rt->token_pages);
  ikv_pt_destroy(rt->pt);
  free(rt);
}

/* Sequence edits that could free a page the plan in flight has pinned wait
 * for ikv_step_end. */
static ikv_status no_plan_in_flight(ikv_runtime *rt, const char *what) {
  if (!rt->active) return IKV_OK;
  return rt_fail(rt, IKV_E_INVALID, "%s: a plan is in flight (call ikv_step_end first)", what);
}

ikv_status ikv_seq_create(ikv_runtime *rt, ikv_precision precision, ikv_seq_id *out) {
  if (!rt) return IKV_E_NULL;
  return done(rt, ikv_pt_seq_create(rt->pt, precision, out), "ikv_seq_create");
}

ikv_status ikv_seq_fork(ikv_runtime *rt, ikv_seq_id parent, ikv_seq_id *child) {
  if (!rt) return IKV_E_NULL;
  return done(rt, ikv_pt_seq_fork(rt->pt, parent, child), "ikv_seq_fork");
}

ikv_status ikv_seq_free(ikv_runtime *rt, ikv_seq_id seq) {
  if (!rt) return IKV_E_NULL;
  ikv_status st = no_plan_in_flight(rt, "ikv_seq_free");
  return st != IKV_OK ? st : done(rt, ikv_pt_seq_free(rt->pt, seq), "ikv_seq_free");
}

ikv_status ikv_seq_truncate(ikv_runtime *rt, ikv_seq_id seq, uint32_t n_tokens) {
  if (!rt) return IKV_E_NULL;
  ikv_status st = no_plan_in_flight(rt, "ikv_seq_truncate");
  return st != IKV_OK ? st : done(rt, ikv_pt_seq_truncate(rt->pt, seq, n_tokens), "ikv_seq_truncate");
}

ikv_status ikv_seq_offload(ikv_runtime *rt, ikv_seq_id seq, uint32_t first, uint32_t count) {
  if (!rt) return IKV_E_NULL;
  ikv_status st = no_plan_in_flight(rt, "ikv_seq_offload");
  if (st != IKV_OK) return st;
  ikv_pt_seq_view v;
  if ((st = ikv_pt_seq_get_view(rt->pt, seq, &v)) != IKV_OK) return done(rt, st, "ikv_seq_offload");
  if ((uint64_t)first + count > v.n_pages)
    return rt_fail(rt, IKV_E_RANGE, "ikv_seq_offload: pages [%u, %u) of %u", first, first + count, v.n_pages);
  /* check first: room in the host pools, no pinned page */
  ikv_pt_stats ps;
  ikv_pt_get_stats(rt->pt, &ps);
  uint32_t need[IKV_PRECISION_COUNT] = {0};
  for (uint32_t i = first; i < first + count; i++) {
    ikv_pt_page_info info;
    ikv_pt_page_get_info(rt->pt, v.pages[i], &info);
    if (info.pins) return rt_fail(rt, IKV_E_PINNED, "ikv_seq_offload: page %u is pinned", i);
    need[info.precision] += info.slot[IKV_TIER_HOST] == IKV_NO_SLOT && info.slot[IKV_TIER_GPU] != IKV_NO_SLOT;
  }
  for (int p = 0; p < IKV_PRECISION_COUNT; p++)
    if (need[p] > ps.pages_free[IKV_TIER_HOST][p])
      return rt_fail(rt, IKV_E_CAPACITY, "ikv_seq_offload: %u %s pages, %u free host slots", need[p],
                     ikv_precision_name(p), ps.pages_free[IKV_TIER_HOST][p]);
  /* the view's pointers die with the first move: copy the page ids out */
  ikv_page_id *pages = rt->victims; /* scratch: pages on the GPU tier, at most gpu_pages */
  uint32_t n = 0;
  for (uint32_t i = first; i < first + count; i++) {
    ikv_page_id page;
    ikv_pt_page_info info;
    ikv_pt_seq_pages(rt->pt, seq, i, 1, &page);
    ikv_pt_page_get_info(rt->pt, page, &info);
    if (info.slot[IKV_TIER_GPU] != IKV_NO_SLOT) pages[n++] = page;
  }
  st = rt_evict(rt, NULL, pages, n, NULL);
  if (st == IKV_OK) rt->errmsg[0] = 0;
  return st;
}

ikv_status ikv_span_add(ikv_runtime *rt, ikv_seq_id seq, const ikv_span *span, ikv_span_id *out) {
  if (!rt) return IKV_E_NULL;
  return done(rt, ikv_pt_span_add(rt->pt, seq, span, out), "ikv_span_add");
}

ikv_status ikv_span_update(ikv_runtime *rt, ikv_seq_id seq, ikv_span_id id, const ikv_span *span) {
  if (!rt) return IKV_E_NULL;
  return done(rt, ikv_pt_span_update(rt->pt, seq, id, span), "ikv_span_update");
}

ikv_status ikv_span_remove(ikv_runtime *rt, ikv_seq_id seq, ikv_span_id id) {
  if (!rt) return IKV_E_NULL;
  return done(rt, ikv_pt_span_remove(rt->pt, seq, id), "ikv_span_remove");
}

ikv_status ikv_span_hint(ikv_runtime *rt, ikv_seq_id seq, ikv_span_id id) {
  if (!rt) return IKV_E_NULL;
  ikv_span span;
  ikv_status st = ikv_pt_span_get(rt->pt, seq, id, &span); /* it exists */
  if (st != IKV_OK) return done(rt, st, "ikv_span_hint");
  if (rt->n_span_hints == IKV_MAX_SPAN_HINTS)
    return rt_fail(rt, IKV_E_CAPACITY, "ikv_span_hint: %d hints wait for the next plan already", IKV_MAX_SPAN_HINTS);
  rt->span_hints[rt->n_span_hints].seq = seq, rt->span_hints[rt->n_span_hints].span = id;
  rt->n_span_hints++;
  rt->errmsg[0] = 0;
  return IKV_OK;
}

/* rt->token_pages[i]: the page of token i's slot. IKV_E_INVALID for more
 * tokens than the GPU tier holds (slots repeat), IKV_E_RANGE for a slot no
 * page on the GPU tier owns. */
static ikv_status find_token_pages(ikv_runtime *rt, const int64_t *slots, const uint8_t *precs, uint32_t n,
                                   const char *what) {
  const uint32_t P = rt->cfg.geometry.page_size;
  if (n > rt->gpu_tokens)
    return rt_fail(rt, IKV_E_INVALID, "%s: %u tokens, more than the GPU tier's %u slots", what, n, rt->gpu_tokens);
  for (uint32_t i = 0; i < n; i++) {
    int p = precs[i];
    if (!ikv_precision_valid(p) || slots[i] < 0 ||
        ikv_pt_slot_owner(rt->pt, IKV_TIER_GPU, (ikv_precision)p, (int32_t)(slots[i] / P), &rt->token_pages[i]) != IKV_OK)
      return rt_fail(rt, IKV_E_RANGE, "%s: token %u: slot %lld (%s) belongs to no page on the GPU tier", what, i,
                     (long long)slots[i], ikv_precision_name(p) ? ikv_precision_name(p) : "bad precision");
  }
  return IKV_OK;
}

/* The host's bookkeeping of tokens an append reserved (pages in
 * rt->token_pages), done at ikv_append since a step replayed as a CUDA graph
 * writes them without the host: rows filled; a host copy of the page dropped
 * (stale once written), so eviction copies the new bytes; and the pages kept
 * on the GPU tier, at their precision, through the next plan, so nothing
 * moves them before the step's write_kv. */
static void note_appended(ikv_runtime *rt, const int64_t *slots, uint32_t n) {
  const ikv_page_id *pages = rt->token_pages;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t offset = (uint32_t)(slots[i] % rt->cfg.geometry.page_size);
    rt->fill[pages[i]] = offset == 0 ? 1 : (uint16_t)(offset + 1 > rt->fill[pages[i]] ? offset + 1 : rt->fill[pages[i]]);
    if (i && pages[i] == pages[i - 1]) continue;
    ikv_pt_page_release(rt->pt, pages[i], IKV_TIER_HOST);
    rt->read_stamp[pages[i]] = rt->build_seq + 1; /* the next plan's number */
    rt->unwritten_layers[pages[i]] = (uint16_t)rt->cfg.geometry.layers;
    rt->unwritten_plan[pages[i]] = rt->build_seq + 1;
  }
}

/* Room on the GPU tier for the batch's new pages and copy-on-write copies,
 * evicting as a plan does (what the cache keeps, only if nothing else can go). */
static ikv_status room_to_append(ikv_runtime *rt, const ikv_seq_id *seqs, const uint32_t *n_tokens, uint32_t batch) {
  const uint32_t P = rt->cfg.geometry.page_size;
  uint32_t need[IKV_PRECISION_COUNT] = {0}, freed[IKV_PRECISION_COUNT];
  for (uint32_t b = 0; b < batch; b++) {
    ikv_pt_seq_info info;
    ikv_pt_seq_get_info(rt->pt, seqs[b], &info);
    if (!n_tokens[b]) continue;
    need[info.precision] += (uint32_t)(((uint64_t)info.tokens + n_tokens[b] + P - 1) / P - (info.tokens + P - 1) / P);
    ikv_page_id last;
    ikv_pt_page_info page;
    if (info.tokens % P && ikv_pt_seq_pages(rt->pt, seqs[b], info.pages - 1, 1, &last) == IKV_OK &&
        ikv_pt_page_get_info(rt->pt, last, &page) == IKV_OK && page.refcount > 1)
      need[page.precision]++;
  }
  ikv_status st = rt_make_room(rt, NULL, need, 1, freed);
  for (int p = 0; p < IKV_PRECISION_COUNT && st == IKV_OK; p++)
    if (freed[p] < need[p]) return rt_make_room(rt, NULL, need, 0, NULL);
  return st;
}

ikv_status ikv_append(ikv_runtime *rt, const ikv_seq_id *seqs, const uint32_t *n_tokens, uint32_t batch,
                      int64_t *slot_mapping, uint8_t *slot_precision) {
  if (!rt) return IKV_E_NULL;
  if (batch && (!seqs || !n_tokens || !slot_mapping || !slot_precision))
    return rt_fail(rt, IKV_E_NULL, "ikv_append: NULL argument");
  ikv_status st = no_plan_in_flight(rt, "ikv_append");
  if (st != IKV_OK) return st;
  for (uint32_t b = 0; b < batch; b++) {
    ikv_pt_seq_info info;
    if (ikv_pt_seq_get_info(rt->pt, seqs[b], &info) != IKV_OK)
      return rt_fail(rt, IKV_E_UNKNOWN_SEQ, "ikv_append: sequence %u of the batch is unknown", b);
  }
  if ((st = room_to_append(rt, seqs, n_tokens, batch)) != IKV_OK) return st;
  uint64_t at = 0;
  for (uint32_t b = 0; b < batch; b++) {
    ikv_pt_copy cow;
    st = ikv_pt_seq_append(rt->pt, seqs[b], n_tokens[b], slot_mapping + at, slot_precision + at, &cow);
    uint32_t appended = b; /* sequences to roll back on failure */
    if (st == IKV_OK && cow.bytes) {
      appended = b + 1;
      st = rt->be->copy_page(rt, cow.src_slot, cow.dst_slot, cow.precision);
      if (st == IKV_OK) st = rt->be->copy_summary(rt, cow.dst_page, cow.src_page);
      if (st == IKV_OK) rt->fill[cow.dst_page] = rt->fill[cow.src_page], rt->stats.cow_copies++;
    }
    if (st != IKV_OK) {
      for (uint32_t r = 0; r < appended; r++) {
        ikv_pt_seq_info info;
        ikv_pt_seq_get_info(rt->pt, seqs[r], &info);
        ikv_pt_seq_truncate(rt->pt, seqs[r], info.tokens - n_tokens[r]);
      }
      /* a failed copy leaves the device in doubt: the copied page's bytes are not to be trusted */
      return rt_fail(rt, st, "ikv_append: sequence %u of the batch: %s%s", b, ikv_status_str(st),
                     appended > b ? " (copying a shared page on write)" : "");
    }
    at += n_tokens[b];
  }
  /* the step's slot mapping, known now: bookkept, and on the device before
   * the step's write_kv (which a replayed graph runs without the host) */
  st = find_token_pages(rt, slot_mapping, slot_precision, (uint32_t)at, "ikv_append");
  if (st == IKV_OK) note_appended(rt, slot_mapping, (uint32_t)at);
  if (st == IKV_OK) st = rt->be->stage_tokens(rt, slot_mapping, slot_precision, rt->token_pages, (uint32_t)at);
  if (st != IKV_OK) return rt_fail(rt, st, "ikv_append: staging the slot mapping: %s", ikv_status_str(st));
  rt->errmsg[0] = 0;
  return IKV_OK;
}

ikv_status ikv_write_kv(ikv_runtime *rt, uint32_t layer, const void *k, const void *v, ikv_dtype dtype,
                        const int64_t *slot_mapping, const uint8_t *slot_precision, uint32_t n, void *stream) {
  if (!rt) return IKV_E_NULL;
  const ikv_geometry *g = &rt->cfg.geometry;
  if (n && (!k || !v || !slot_mapping || !slot_precision)) return rt_fail(rt, IKV_E_NULL, "ikv_write_kv: NULL argument");
  if (layer >= g->layers) return rt_fail(rt, IKV_E_RANGE, "ikv_write_kv: layer %u of %u", layer, g->layers);
  if ((unsigned)dtype >= IKV_DTYPE_COUNT) return rt_fail(rt, IKV_E_INVALID, "ikv_write_kv: dtype %d", (int)dtype);
  ikv_status st = find_token_pages(rt, slot_mapping, slot_precision, n, "ikv_write_kv");
  ikv_page_id *pages = rt->token_pages;
  if (st == IKV_OK) {
    st = rt->be->write_kv(rt, layer, k, v, dtype, slot_mapping, slot_precision, n, stream);
    if (st == IKV_OK && layer == rt->cfg.score_layer)
      st = rt->be->summarize(rt, k, dtype, slot_mapping, pages, n, stream);
    if (st != IKV_OK) rt_fail(rt, st, "ikv_write_kv: %s", ikv_status_str(st));
  }
  if (st == IKV_OK) {
    for (uint32_t i = 0; i < n; i++) { /* written: evictable again (note_appended) */
      if (rt->read_stamp[pages[i]] > rt->build_seq) rt->read_stamp[pages[i]] = 0;
      if ((!i || pages[i] != pages[i - 1]) && rt->unwritten_layers[pages[i]]) rt->unwritten_layers[pages[i]]--;
    }
    rt->errmsg[0] = 0;
  }
  return st;
}

ikv_status ikv_decode(ikv_runtime *rt, const ikv_plan *plan, uint32_t layer, const void *q, void *out,
                      float *lse, ikv_dtype dtype, void *stream) {
  if (!rt) return IKV_E_NULL;
  if (!plan || plan != rt->active) return rt_fail(rt, IKV_E_INVALID, "ikv_decode: the plan is not this runtime's plan in flight");
  if (layer >= rt->cfg.geometry.layers) return rt_fail(rt, IKV_E_RANGE, "ikv_decode: layer %u", layer);
  if ((unsigned)dtype >= IKV_DTYPE_COUNT) return rt_fail(rt, IKV_E_INVALID, "ikv_decode: dtype %d", (int)dtype);
  if (ikv_plan_view(plan)->batch && (!q || !out || !lse)) return rt_fail(rt, IKV_E_NULL, "ikv_decode: NULL argument");
  return done(rt, rt->be->decode(rt, plan, layer, q, out, lse, dtype, stream), "ikv_decode");
}

ikv_status ikv_step_graph_key(const ikv_runtime *rt, const ikv_plan *plan, uint64_t *key) {
  if (!rt || !plan || !key) return IKV_E_NULL;
  return rt->be->graph_key(rt, plan, key);
}

ikv_status ikv_stream_enter(ikv_runtime *rt, void *stream) {
  if (!rt) return IKV_E_NULL;
  return done(rt, rt->be->stream_enter(rt, stream), "ikv_stream_enter");
}

ikv_status ikv_stream_leave(ikv_runtime *rt, void *stream) {
  if (!rt) return IKV_E_NULL;
  return done(rt, rt->be->stream_leave(rt, stream), "ikv_stream_leave");
}

ikv_status ikv_runtime_get_stats(const ikv_runtime *rt, ikv_runtime_stats *out) {
  if (!rt || !out) return IKV_E_NULL;
  *out = rt->stats;
  return IKV_OK;
}
