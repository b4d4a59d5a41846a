/*
 * The GPU page cache and the prefetcher: which pages leave the GPU tier
 * (intent-aware LRU), page moves between tiers in batches, and the pages
 * the predictor expects next copied ahead of the plan that reads them.
 * Streams and events are the backend's (docs/prefetch.md).
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/plan_internal.h"

ikv_status rt_tiering_open(ikv_runtime *rt) {
  rt->build_seq = 1; /* stamps of 0 name no plan */
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) rt->gpu_pages += rt->cfg.capacity[IKV_TIER_GPU][p];
  const uint64_t cand = (uint64_t)(IKV_HISTORY_STEPS + 1) * rt->cfg.max_plan_pages + IKV_MAX_SPAN_HINTS;
  rt->cap_cand = cand < rt->max_pages ? (uint32_t)cand : rt->max_pages;
  rt->read_stamp = calloc(rt->max_pages, sizeof(uint32_t));
  rt->keep_stamp = calloc(rt->max_pages, sizeof(uint32_t));
  rt->landing = calloc(rt->max_pages, sizeof(uint32_t));
  rt->victims = malloc(sizeof(ikv_page_id) * (rt->gpu_pages + 1));
  rt->moves = malloc(sizeof(rt_move) * (rt->gpu_pages + 1));
  rt->cand = malloc(sizeof(uint32_t) * (rt->cap_cand + 1));
  rt->mark = calloc(rt->max_pages, 1);
  rt->pairs = malloc(sizeof(uint32_t) * 4 * ((size_t)rt->gpu_pages + 1));
  if (!rt->read_stamp || !rt->keep_stamp || !rt->landing || !rt->victims || !rt->moves || !rt->cand || !rt->pairs || !rt->mark)
    return IKV_E_NO_MEMORY;
  /* a predictor's history also orders its victims; without one, plain LRU needs none */
  if (rt->cfg.prefetch.predictor == IKV_PREDICT_NONE) return IKV_OK;
  return ikv_history_create(rt->max_pages, rt->cfg.max_plan_pages, &rt->history);
}

void rt_tiering_close(ikv_runtime *rt) {
  free(rt->read_stamp), free(rt->keep_stamp), free(rt->landing), free(rt->victims), free(rt->moves), free(rt->cand), free(rt->pairs), free(rt->mark);
  ikv_history_destroy(rt->history);
}

/* ---- moves --------------------------------------------------------------------- */

/* pl: the plan being built, or NULL (an offload between steps). */
static ikv_status issue(ikv_runtime *rt, ikv_plan *pl, rt_move_kind kind, uint32_t n, uint64_t bytes) {
  if (!n) return IKV_OK;
  ikv_status st = rt->be->move_pages(rt, kind, rt->moves, n, kind == RT_MOVE_PREFETCH ? rt->batches + 1 : 0);
  if (st != IKV_OK) return rt_fail(rt, st, "moving %u pages between tiers: %s", n, ikv_status_str(st));
  if (kind == RT_MOVE_PREFETCH) rt->batches++;
  uint64_t *plan_bytes = pl ? (kind == RT_MOVE_EVICT ? &pl->stats.bytes_d2h : &pl->stats.bytes_h2d) : NULL;
  if (plan_bytes) *plan_bytes += bytes;
  *(kind == RT_MOVE_EVICT ? &rt->stats.bytes_d2h : &rt->stats.bytes_h2d) += bytes;
  return IKV_OK;
}

ikv_status rt_evict(ikv_runtime *rt, ikv_plan *pl, const ikv_page_id *pages, uint32_t n, uint32_t *evicted) {
  uint32_t moved = 0, done = 0;
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < n; i++) {
    ikv_pt_page_info info;
    ikv_pt_copy copy;
    if (ikv_pt_page_get_info(rt->pt, pages[i], &info) != IKV_OK || info.slot[IKV_TIER_GPU] == IKV_NO_SLOT ||
        info.pins || ikv_pt_page_make_resident(rt->pt, pages[i], IKV_TIER_HOST, &copy) != IKV_OK)
      continue; /* gone, not on the GPU, pinned, or the host pool is full */
    if (copy.bytes) {
      rt->moves[moved++] = (rt_move){IKV_TIER_GPU, info.precision, info.slot[IKV_TIER_GPU], copy.dst_slot};
      bytes += copy.bytes; /* all layers */
    }
    ikv_pt_page_release(rt->pt, pages[i], IKV_TIER_GPU);
    if (rt->landing[pages[i]]) /* the backend orders the eviction after any copy still bringing it */
      rt->landing[pages[i]] = 0, rt->n_landing--;
    done++;
  }
  if (pl) pl->stats.evictions += done, rt->stats.evictions += done; /* an offload is no eviction */
  if (evicted) *evicted = done;
  return issue(rt, pl, RT_MOVE_EVICT, moved, bytes);
}

/* A page some batch still brings: true until that batch has landed. */
static int still_landing(ikv_runtime *rt, ikv_page_id p) {
  const uint32_t b = rt->landing[p];
  if (b > rt->landed && rt->be->batch_landed(rt, b)) rt->landed = b; /* batches land in issue order */
  return b > rt->landed;
}

/* Never a page the plan in flight or a prefetch protects, nor one appended
 * to since the last plan (read_stamp ahead of build_seq: not written yet),
 * nor a partly filled page: its sequence appends there, on the GPU tier.
 * With spare_kept, none a plan among the last KEEP_PLANS kept (a sequence
 * left out of a batch or two keeps its sinks, prompt and recent window). */
enum { KEEP_PLANS = 4 };
static int evictable(const ikv_runtime *rt, const ikv_plan *pl, ikv_page_id p, int spare_kept) {
  const int kept = rt->keep_stamp[p] && rt->build_seq - rt->keep_stamp[p] < KEEP_PLANS;
  return (!pl || pl->page_want[p] == UNSEEN) && rt->read_stamp[p] < rt->build_seq &&
         rt->fill[p] == rt->cfg.geometry.page_size && !(spare_kept && kept);
}

/* Victims in eviction order: the oldest evictable pages, twice as many as
 * needed, by history score (then age). */
static int by_score(const void *a, const void *b, void *ctx) {
  const ikv_history *h = ctx;
  const ikv_page_id *x = a, *y = b;
  const float fx = ikv_history_score(h, x[0]), fy = ikv_history_score(h, y[0]);
  if (fx != fy) return fx < fy ? -1 : 1;
  return x[1] < y[1] ? -1 : x[1] > y[1]; /* [1]: LRU rank */
}

ikv_status rt_make_room(ikv_runtime *rt, ikv_plan *pl, const uint32_t need[IKV_PRECISION_COUNT], int spare_kept,
                        uint32_t freed[IKV_PRECISION_COUNT]) {
  uint32_t want[IKV_PRECISION_COUNT], total = 0;
  ikv_pt_stats ps;
  ikv_pt_get_stats(rt->pt, &ps);
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
    want[p] = need[p] > ps.pages_free[IKV_TIER_GPU][p] ? need[p] - ps.pages_free[IKV_TIER_GPU][p] : 0;
    total += want[p];
    if (freed) freed[p] = need[p] - want[p];
  }
  if (!total) return IKV_OK;
  uint32_t n = 0;
  rt_stamp_plan(rt); /* the order below is the least recently used first */
  ikv_pt_evict_candidates(rt->pt, IKV_TIER_GPU, rt->victims, rt->gpu_pages, &n);
  /* per precision: its evictable pages in LRU order, the window sorted by score */
  ikv_page_id *pair = rt->pairs; /* (page, LRU rank) */
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
    if (!want[p]) continue;
    uint32_t w = 0;
    for (uint32_t i = 0; i < n && w < 2 * want[p]; i++) {
      ikv_pt_page_info info;
      ikv_page_id v = rt->victims[i];
      if (ikv_pt_page_get_info(rt->pt, v, &info) != IKV_OK || info.precision != (ikv_precision)p ||
          info.slot[IKV_TIER_GPU] == IKV_NO_SLOT || !evictable(rt, pl, v, spare_kept))
        continue;
      pair[2 * w] = v, pair[2 * w + 1] = i, w++;
    }
    qsort_r(pair, w, 2 * sizeof(ikv_page_id), by_score, rt->history);
    for (uint32_t k = 0; k < w; k++) pair[k] = pair[2 * k]; /* the pages, in eviction order */
    /* the best victims first; more of the window if the host pool refuses some */
    uint32_t done = 0, at = 0;
    while (done < want[p] && at < w) {
      const uint32_t take = want[p] - done < w - at ? want[p] - done : w - at;
      uint32_t got;
      ikv_status st = rt_evict(rt, pl, pair + at, take, &got);
      if (st != IKV_OK) return st;
      done += got, at += take;
    }
    if (freed) freed[p] += done;
  }
  return IKV_OK;
}

ikv_status rt_fetch(ikv_runtime *rt, ikv_plan *pl, const ikv_page_id *pages, uint32_t n, rt_move_kind kind) {
  uint32_t moved = 0;
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < n; i++) {
    ikv_pt_copy copy;
    ikv_status st = ikv_pt_page_make_resident(rt->pt, pages[i], IKV_TIER_GPU, &copy);
    if (st != IKV_OK) {
      issue(rt, pl, kind, moved, bytes); /* the slots already taken get their bytes */
      return rt_fail(rt, st, "fetching page %u to the GPU tier: %s", pages[i], ikv_status_str(st));
    }
    if (!copy.bytes) continue;
    rt->moves[moved++] = (rt_move){IKV_TIER_HOST, copy.precision, copy.src_slot, copy.dst_slot};
    bytes += copy.bytes; /* all layers */
    if (kind == RT_MOVE_PREFETCH) rt->n_landing += !rt->landing[pages[i]], rt->landing[pages[i]] = rt->batches + 1;
  }
  return issue(rt, pl, kind, moved, bytes);
}

/* ---- the prefetcher -------------------------------------------------------------- */

ikv_status rt_await_landing(ikv_runtime *rt, ikv_plan *pl) {
  if (!rt->n_landing) return IKV_OK; /* no prefetched page waits for its first read */
  uint32_t wait_for = 0;
  for (uint32_t e = 0; e < pl->n_entries; e++) {
    const ikv_page_id p = pl->page[e];
    const uint32_t b = rt->landing[p];
    if (!b) continue;
    if (still_landing(rt, p)) {
      pl->stats.prefetch_late++;
      wait_for = b > wait_for ? b : wait_for;
    } else {
      pl->stats.prefetch_hits++;
    }
  }
  /* the first read of a prefetched page ends its landing either way */
  for (uint32_t e = 0; e < pl->n_entries; e++)
    if (rt->landing[pl->page[e]]) rt->landing[pl->page[e]] = 0, rt->n_landing--;
  rt->stats.prefetch_hits += pl->stats.prefetch_hits, rt->stats.prefetch_late += pl->stats.prefetch_late;
  if (!wait_for) return IKV_OK;
  ikv_status st = rt->be->await_batch(rt, wait_for);
  return st == IKV_OK ? st : rt_fail(rt, st, "ikv_plan_build: waiting for a prefetch: %s", ikv_status_str(st));
}

void rt_prefetch_next(ikv_runtime *rt, ikv_plan *pl) {
  /* without a predictor the cache is plain LRU and keeps no history */
  const ikv_predictor predictor = rt->cfg.prefetch.predictor;
  if (predictor == IKV_PREDICT_NONE) return;
  if (ikv_history_record(rt->history, pl->page, pl->n_entries) != IKV_OK) return;
  ikv_history_end_step(rt->history);
  for (uint32_t e = 0; e < pl->n_entries; e++) rt->read_stamp[pl->page[e]] = rt->build_seq; /* they stay */
  const uint32_t *first = NULL;
  uint32_t n_first = 0;
  if (predictor == IKV_PREDICT_HINTS) first = pl->hints, n_first = pl->n_sched_hints;
  if (predictor == IKV_PREDICT_MARGIN) first = pl->hints + pl->n_sched_hints, n_first = pl->n_margin_hints;
  const uint32_t n = ikv_predict_next(rt->history, first, n_first, rt->cand, rt->cap_cand);
  /* What the next step should find, best first, while the GPU tier holds
   * it beside this plan's pages: the resident are protected, the rest
   * chosen for copying within the byte budget; lower-ranked candidates stay
   * evictable (as in the simulator, which evicts them for better ones). */
  uint32_t held[IKV_PRECISION_COUNT] = {0}, need[IKV_PRECISION_COUNT] = {0}, chosen = 0;
  for (uint32_t e = 0; e < pl->n_entries; e++) /* this plan's distinct pages */
    if (!rt->mark[pl->page[e]]) rt->mark[pl->page[e]] = 1, held[pl->precision[e]]++;
  for (uint32_t e = 0; e < pl->n_entries; e++) rt->mark[pl->page[e]] = 0;
  const uint64_t budget = rt->cfg.prefetch.bytes_per_step ? rt->cfg.prefetch.bytes_per_step : UINT64_MAX;
  uint64_t bytes = 0;
  for (uint32_t k = 0; k < n; k++) {
    const ikv_page_id p = rt->cand[k];
    ikv_pt_page_info info;
    if (ikv_pt_page_get_info(rt->pt, p, &info) != IKV_OK || rt->read_stamp[p] == rt->build_seq ||
        held[info.precision] >= rt->cfg.capacity[IKV_TIER_GPU][info.precision])
      continue; /* freed since, read by this plan, or no room left for its precision */
    if (info.slot[IKV_TIER_GPU] == IKV_NO_SLOT) {
      const uint64_t b = (uint64_t)rt->cfg.geometry.layers * rt->page_bytes[info.precision];
      if (bytes + b > budget) break;
      bytes += b, need[info.precision]++;
      rt->cand[chosen++] = p; /* in place: chosen <= k */
    }
    rt->read_stamp[p] = rt->build_seq; /* not a victim now */
    held[info.precision]++;
  }
  uint32_t room[IKV_PRECISION_COUNT];
  if (!chosen || rt_make_room(rt, pl, need, 1, room) != IKV_OK) return;
  /* where room fell short, the best ranked of each precision go */
  uint32_t go = 0;
  for (uint32_t k = 0; k < chosen; k++) {
    ikv_pt_page_info info;
    ikv_pt_page_get_info(rt->pt, rt->cand[k], &info);
    if (room[info.precision]) room[info.precision]--, rt->cand[go++] = rt->cand[k];
  }
  if (rt_fetch(rt, pl, rt->cand, go, RT_MOVE_PREFETCH) == IKV_OK) {
    pl->stats.prefetched += go;
    rt->stats.prefetched += go;
  }
}

void rt_poll_stalls(ikv_runtime *rt) { rt->stats.stall_us += rt->be->take_stall_us(rt); }
