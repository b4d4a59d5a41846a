/* The router: one sequence's semantic spans, budgets and memory pressure
 * turned into the pages its rows read, each with a precision and a token mask.
 * Rules (docs/router.md): sinks and the recent window are always read; ALWAYS
 * and GLOBAL spans are read in full; SKIP spans never (a page shared with a
 * read span says so); ATTEND spans, RECENT spans outside the window and tokens
 * no span covers compete for the budgets by score (span mode) or by
 * query-aware page score, top-k per KV head; IntentQuant picks precisions. */
#include <stdlib.h>
#include <string.h>

#include "runtime/plan_internal.h"

/* Per-sequence working state. */
typedef struct route {
  ikv_runtime *rt;
  ikv_plan *plan;
  const ikv_router_params *rp;
  const ikv_plan_request *req;
  ikv_pt_seq_view v;
  uint32_t P, b, n_chunks, hints;
  uint64_t tokens_used, bytes_used;
  /* device selection: this sequence's candidates of each precision, and the first of them */
  uint32_t dsel_count[IKV_PRECISION_COUNT], dsel_first[IKV_PRECISION_COUNT];
} route;

static uint16_t min16(uint16_t a, uint16_t b) { return a < b ? a : b; }
static uint16_t max16(uint16_t a, uint16_t b) { return a > b ? a : b; }

/* Marks tokens [a, b) for reading at `prec` in the (want, lo, hi) arrays;
 * returns the number of pages touched. */
static uint32_t mark(const route *r, uint8_t *want, uint16_t *lo, uint16_t *hi, uint32_t a, uint32_t b,
                     uint8_t prec) {
  uint32_t first = a / r->P, last = (b - 1) / r->P;
  for (uint32_t i = first; i <= last; i++) {
    want[i] = rt_best(want[i], prec);
    lo[i] = min16(lo[i], (uint16_t)(i == first ? a % r->P : 0));
    hi[i] = max16(hi[i], (uint16_t)(i == last ? (b - 1) % r->P : r->P - 1));
  }
  return last - first + 1;
}

/* Pages of tokens [a, b) the GPU page cache keeps while this plan is the
 * latest (sinks, recent window, ALWAYS and GLOBAL spans). */
static void keep(const route *r, uint32_t a, uint32_t b) {
  for (uint32_t i = a / r->P; a < b && i <= (b - 1) / r->P; i++) r->rt->keep_stamp[r->v.pages[i]] = r->rt->build_seq;
}

static uint64_t page_cost_bytes(const route *r, uint32_t i, uint8_t want) {
  return r->rt->page_bytes[rt_effective(want, r->v.precisions[i])];
}

static ikv_status decide(route *r, ikv_span_id span, int kind, ikv_reason reason, uint32_t selected,
                         uint32_t skipped, uint8_t prec, uint32_t *index) {
  ikv_span_decision d = {.seq_index = r->b, .span = span, .kind = (ikv_span_kind)kind, .reason = reason,
                         .pages_selected = selected, .pages_skipped = skipped, .precision = prec};
  return plan_decide(r->plan, d, index);
}

static ikv_status add_chunk(route *r, uint32_t a, uint32_t b, float score, int32_t pinned, uint32_t decision) {
  rt_chunk *c = &r->plan->chunks[r->n_chunks++];
  uint8_t prec = ikv_intentquant(ikv_attend_class(score), r->rp->memory_pressure);
  if (prec != IKV_SKIP && pinned != IKV_UNPINNED_PRECISION) prec = (uint8_t)pinned;
  *c = (rt_chunk){a, b, score, prec, decision};
  return IKV_OK;
}

static int by_score(const void *x, const void *y) {
  const rt_chunk *a = x, *b = y;
  if (a->score != b->score) return a->score > b->score ? -1 : 1;
  return a->start < b->start ? -1 : a->start > b->start;
}

/* Span mode: chunks by score, pages in logical order, until a budget says no. */
static void select_by_span_score(route *r) {
  ikv_plan *pl = r->plan;
  const ikv_router_params *rp = r->rp;
  qsort(pl->chunks, r->n_chunks, sizeof(rt_chunk), by_score);
  for (uint32_t c = 0; c < r->n_chunks; c++) {
    rt_chunk *ch = &pl->chunks[c];
    ikv_span_decision *d = &pl->decisions[ch->decision];
    uint32_t first = ch->start / r->P, last = (ch->end - 1) / r->P, taken = 0, total = last - first + 1;
    if (ch->precision == IKV_SKIP) {
      d->reason = IKV_REASON_ATTEND_PRESSURE;
      d->pages_skipped += total;
      continue;
    }
    int stopped = 0;
    for (uint32_t i = first; i <= last; i++) {
      uint16_t lo = (uint16_t)(i == first ? ch->start % r->P : 0);
      uint16_t hi = (uint16_t)(i == last ? (ch->end - 1) % r->P : r->P - 1);
      if (pl->sel_want[i] != IKV_SKIP) { /* already read: widen its mask */
        uint16_t nlo = min16(pl->sel_lo[i], lo), nhi = max16(pl->sel_hi[i], hi);
        r->tokens_used += (uint64_t)(nhi - nlo) - (pl->sel_hi[i] - pl->sel_lo[i]);
        pl->sel_lo[i] = nlo, pl->sel_hi[i] = nhi;
        pl->sel_want[i] = rt_best(pl->sel_want[i], ch->precision);
        taken++;
        continue;
      }
      uint64_t t = (uint64_t)(hi - lo) + 1, bytes = page_cost_bytes(r, i, ch->precision);
      if (stopped || (rp->token_budget && r->tokens_used + t > rp->token_budget) ||
          (rp->byte_budget && r->bytes_used + bytes > rp->byte_budget)) {
        stopped = 1;
        if (r->hints < IKV_HINTS_PER_SEQ && pl->n_hints < pl->cap_entries) {
          pl->hints[pl->n_hints++] = r->v.pages[i]; /* next in line: likely soon */
          r->hints++;
        }
        continue;
      }
      pl->sel_want[i] = ch->precision, pl->sel_lo[i] = lo, pl->sel_hi[i] = hi;
      r->tokens_used += t, r->bytes_used += bytes;
      taken++;
    }
    d->pages_selected += taken;
    d->pages_skipped += total - taken;
    d->precision = rt_best(d->precision, taken ? ch->precision : IKV_SKIP);
    d->reason = taken == total ? IKV_REASON_ATTEND_SELECTED : taken ? IKV_REASON_ATTEND_PARTIAL : IKV_REASON_ATTEND_BUDGET;
  }
}

/* Marks the ATTEND chunks' pages as candidates (cand_*); pressure bands
 * that skip a chunk say so. */
static void mark_candidates(route *r) {
  ikv_plan *pl = r->plan;
  for (uint32_t c = 0; c < r->n_chunks; c++) {
    rt_chunk *ch = &pl->chunks[c];
    if (ch->precision == IKV_SKIP) {
      pl->decisions[ch->decision].reason = IKV_REASON_ATTEND_PRESSURE;
      continue;
    }
    mark(r, pl->cand_want, pl->cand_lo, pl->cand_hi, ch->start, ch->end, ch->precision);
  }
}

/* Whether page i competes for the budget: an ATTEND candidate that no
 * mandatory rule already reads. */
static inline int competes(const ikv_plan *pl, uint32_t i) {
  return pl->cand_want[i] != IKV_SKIP && pl->sel_want[i] == IKV_SKIP;
}

/* Device selection: the candidates on the GPU tier (not already read for a
 * mandatory rule) go to the GPU, which ranks them at decode time; each row
 * reserves entries for them (emit_rows). They stay on the GPU for the step. */
static ikv_status offer_to_device(route *r) {
  ikv_plan *pl = r->plan;
  ikv_runtime *rt = r->rt;
  const uint32_t N = r->v.n_pages, base = pl->n_dsel;
  mark_candidates(r);
  memset(pl->head_sel, 0, (size_t)rt->cfg.geometry.kv_heads * N);
  memset(pl->head_any, 0, N);
  memset(r->dsel_count, 0, sizeof(r->dsel_count));
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) r->dsel_first[p] = UINT32_MAX;
  uint32_t n = 0;
  for (uint32_t i = 0; i < N; i++)
    n += competes(pl, i) && r->v.gpu_slots[i] != IKV_NO_SLOT;
  if (n > IKV_CUDA_RANK_MAX)
    return rt_fail(rt, IKV_E_UNSUPPORTED, "ikv_plan_build: sequence %u: %u candidates; the GPU ranks at most %d",
                   r->b, n, IKV_CUDA_RANK_MAX);
  if (base + n > pl->scratch_pages)
    return rt_fail(rt, IKV_E_CAPACITY, "ikv_plan_build: %u candidates over the batch; a plan holds %u", base + n,
                   pl->scratch_pages);
  for (uint32_t i = 0; i < N; i++) {
    if (!competes(pl, i) || r->v.gpu_slots[i] == IKV_NO_SLOT) continue;
    const uint8_t prec = r->v.precisions[i];
    if (r->dsel_first[prec] == UINT32_MAX) r->dsel_first[prec] = pl->n_dsel;
    r->dsel_count[prec]++;
    pl->dsel_pages[pl->n_dsel] = r->v.pages[i];
    pl->dsel_cand[pl->n_dsel++] = (ikv_select_candidate){r->v.pages[i], r->v.gpu_slots[i], (int32_t)i,
                                                         pl->cand_lo[i], pl->cand_hi[i], prec};
    rt->read_stamp[r->v.pages[i]] = rt->build_seq; /* the GPU may read it: it stays */
  }
  pl->dsel_seq[r->b + 1] = pl->n_dsel;
  for (uint32_t c = 0; c < r->n_chunks; c++) {
    rt_chunk *ch = &pl->chunks[c];
    if (ch->precision == IKV_SKIP) {
      pl->decisions[ch->decision].pages_skipped += (ch->end - 1) / r->P - ch->start / r->P + 1;
      continue;
    }
    uint32_t offered = 0, total = 0, mandatory = 0;
    for (uint32_t i = ch->start / r->P; i <= (ch->end - 1) / r->P; i++, total++) {
      mandatory += pl->sel_want[i] != IKV_SKIP;
      offered += pl->sel_want[i] == IKV_SKIP && r->v.gpu_slots[i] != IKV_NO_SLOT;
    }
    ikv_span_decision *d = &pl->decisions[ch->decision];
    d->pages_selected += offered + mandatory;
    d->pages_skipped += total - offered - mandatory;
    d->precision = rt_best(d->precision, offered + mandatory ? ch->precision : IKV_SKIP);
    d->reason = IKV_REASON_ATTEND_ON_DEVICE;
  }
  return IKV_OK;
}

/* Query-aware modes: candidate pages ranked per KV head by page score; each
 * head takes its top-k within the budgets. */
static ikv_status select_by_query(route *r) {
  ikv_plan *pl = r->plan;
  ikv_runtime *rt = r->rt;
  const ikv_router_params *rp = r->rp;
  const uint32_t N = r->v.n_pages, H = rt->cfg.geometry.kv_heads, D = rt->cfg.geometry.head_dim;
  mark_candidates(r);
  uint32_t n_cand = 0;
  for (uint32_t i = 0; i < N; i++)
    if (competes(pl, i)) pl->order[n_cand++] = i;
  memset(pl->head_sel, 0, (size_t)H * N);
  memset(pl->head_any, 0, N);
  /* keys[h * n_cand + r]: head h's r-th best candidate, from the batch's
   * ranking (rank_batch in plan.c) or from the backend in one call */
  const uint32_t want = rp->topk_pages && rp->topk_pages < n_cand ? rp->topk_pages : n_cand;
  const uint64_t *keys = pl->rank_keys;
  if (pl->ranked_batch) {
    if (pl->dsel_seq[r->b + 1] - pl->dsel_seq[r->b] != n_cand) /* the same rules on the same state: cannot happen */
      return rt_fail(rt, IKV_E_INVALID, "ikv_plan_build: sequence %u: its candidates changed within the build", r->b);
    keys += (size_t)H * pl->dsel_seq[r->b];
  } else {
    const float *q = rp->score_q + (size_t)r->b * rt->cfg.q_heads * D;
    ikv_page_id *cand_pages = pl->order + n_cand;
    for (uint32_t k = 0; k < n_cand; k++) cand_pages[k] = r->v.pages[pl->order[k]];
    ikv_status st = rt->be->rank_pages(rt, rp->score_mode == IKV_SCORE_QUERY_BOUND, cand_pages, n_cand, q, want,
                                       pl->rank_keys);
    if (st != IKV_OK) return st;
  }
  for (uint32_t h = 0; h < H; h++) {
    uint64_t tokens = r->tokens_used, bytes = r->bytes_used;
    for (uint32_t k = 0; k < want; k++) {
      const uint32_t i = pl->order[(uint32_t)keys[(size_t)h * n_cand + k]];
      uint64_t t = (uint64_t)(pl->cand_hi[i] - pl->cand_lo[i]) + 1, by = page_cost_bytes(r, i, pl->cand_want[i]);
      if ((rp->token_budget && tokens + t > rp->token_budget) || (rp->byte_budget && bytes + by > rp->byte_budget)) break;
      pl->head_sel[(size_t)h * N + i] = pl->head_any[i] = 1;
      tokens += t, bytes += by;
    }
  }
  /* each chunk's decision: pages some head (or a mandatory rule) reads */
  for (uint32_t c = 0; c < r->n_chunks; c++) {
    rt_chunk *ch = &pl->chunks[c];
    if (ch->precision == IKV_SKIP) {
      pl->decisions[ch->decision].pages_skipped += (ch->end - 1) / r->P - ch->start / r->P + 1;
      continue;
    }
    uint32_t taken = 0, total = 0;
    for (uint32_t i = ch->start / r->P; i <= (ch->end - 1) / r->P; i++, total++) {
      taken += pl->sel_want[i] != IKV_SKIP || pl->head_any[i];
    }
    ikv_span_decision *d = &pl->decisions[ch->decision];
    d->pages_selected += taken;
    d->pages_skipped += total - taken;
    d->precision = rt_best(d->precision, taken ? ch->precision : IKV_SKIP);
    d->reason = taken == total ? IKV_REASON_ATTEND_SELECTED : taken ? IKV_REASON_ATTEND_PARTIAL : IKV_REASON_ATTEND_NOT_TOPK;
  }
  return IKV_OK;
}

/* The mandatory rules: sinks, recent window, ALWAYS/GLOBAL spans; chunks for
 * everything that competes; SKIP spans remembered in the order array. */
static ikv_status mandatory_and_chunks(route *r, uint32_t n_spans, uint32_t *n_skip) {
  ikv_plan *pl = r->plan;
  const ikv_router_params *rp = r->rp;
  const uint32_t L = r->v.tokens;
  const float pressure = rp->memory_pressure;
  ikv_status st = IKV_OK;
  uint32_t sinks = rp->sink_tokens < L ? rp->sink_tokens : L;
  uint32_t window_start = rp->recent_tokens < L ? L - rp->recent_tokens : 0;
  if (sinks) {
    uint32_t n = mark(r, pl->sel_want, pl->sel_lo, pl->sel_hi, 0, sinks, ikv_intentquant(IKV_USE_SINK, pressure));
    keep(r, 0, sinks);
    st = decide(r, 0, IKV_SPAN_KIND_COUNT, IKV_REASON_SINKS, n, 0, ikv_intentquant(IKV_USE_SINK, pressure), NULL);
  }
  if (st == IKV_OK && rp->recent_tokens && L) {
    uint8_t prec = ikv_intentquant(IKV_USE_RECENT, pressure);
    uint32_t n = mark(r, pl->sel_want, pl->sel_lo, pl->sel_hi, window_start, L, prec);
    keep(r, window_start, L);
    st = decide(r, 0, IKV_SPAN_KIND_COUNT, IKV_REASON_RECENT_WINDOW, n, 0, prec, NULL);
  }
  *n_skip = 0;
  for (uint32_t s = 0; s < n_spans && st == IKV_OK; s++) {
    const ikv_span *sp = &pl->spans[s];
    uint32_t d;
    switch (sp->policy) {
      case IKV_POLICY_ALWAYS:
      case IKV_POLICY_GLOBAL: {
        uint8_t prec = sp->pinned_precision != IKV_UNPINNED_PRECISION ? (uint8_t)sp->pinned_precision
                                                                       : ikv_intentquant(IKV_USE_ALWAYS, pressure);
        uint32_t n = mark(r, pl->sel_want, pl->sel_lo, pl->sel_hi, sp->start, sp->end, prec);
        keep(r, sp->start, sp->end);
        st = decide(r, pl->span_ids[s], sp->kind,
                    sp->policy == IKV_POLICY_ALWAYS ? IKV_REASON_ALWAYS : IKV_REASON_GLOBAL, n, 0, prec, NULL);
        break;
      }
      case IKV_POLICY_SKIP:
        pl->span_order[(*n_skip)++] = s;
        break;
      case IKV_POLICY_RECENT: {
        uint32_t inside_from = sp->start > window_start ? sp->start : window_start;
        uint32_t in_pages = inside_from < sp->end ? (sp->end - 1) / r->P - inside_from / r->P + 1 : 0;
        /* a page the window starts inside is counted with the outside part */
        if (in_pages && sp->start < window_start && window_start % r->P) in_pages--;
        st = decide(r, pl->span_ids[s], sp->kind, IKV_REASON_RECENT_WINDOW, in_pages, 0,
                    in_pages ? ikv_intentquant(IKV_USE_RECENT, pressure) : IKV_SKIP, &d);
        if (st == IKV_OK && sp->start < window_start)
          st = add_chunk(r, sp->start, sp->end < window_start ? sp->end : window_start, sp->score,
                         sp->pinned_precision, d);
        break;
      }
      default:
        st = decide(r, pl->span_ids[s], sp->kind, IKV_REASON_ATTEND_SELECTED, 0, 0, IKV_SKIP, &d);
        if (st == IKV_OK) st = add_chunk(r, sp->start, sp->end, sp->score, sp->pinned_precision, d);
    }
  }
  return st;
}

/* Tokens no span covers compete as ATTEND with default_score. */
static ikv_status gaps(route *r, uint32_t n_spans) {
  ikv_plan *pl = r->plan;
  const uint32_t L = r->v.tokens;
  /* spans by start: insertion sort of indices (span counts are small) */
  uint32_t *idx = pl->span_order + n_spans;
  for (uint32_t s = 0; s < n_spans; s++) {
    uint32_t j = s;
    while (j && pl->spans[idx[j - 1]].start > pl->spans[s].start) idx[j] = idx[j - 1], j--;
    idx[j] = s;
  }
  uint32_t cursor = 0, decision = UINT32_MAX;
  ikv_status st = IKV_OK;
  for (uint32_t k = 0; k <= n_spans && st == IKV_OK; k++) {
    uint32_t next = k < n_spans ? pl->spans[idx[k]].start : L;
    if (next > cursor) {
      if (decision == UINT32_MAX)
        st = decide(r, 0, IKV_SPAN_KIND_COUNT, IKV_REASON_ATTEND_SELECTED, 0, 0, IKV_SKIP, &decision);
      if (st == IKV_OK) st = add_chunk(r, cursor, next, r->rp->default_score, IKV_UNPINNED_PRECISION, decision);
    }
    if (k < n_spans && pl->spans[idx[k]].end > cursor) cursor = pl->spans[idx[k]].end;
  }
  return st;
}

/* Whether some row reads page i, and the widest mask any row reads it with. */
static int page_read(const route *r, uint32_t i, int query_mode, uint16_t *lo, uint16_t *hi) {
  const ikv_plan *pl = r->plan;
  const int sel = pl->sel_want[i] != IKV_SKIP, cand = query_mode && pl->head_any[i];
  *lo = UINT16_MAX, *hi = 0;
  if (sel) *lo = pl->sel_lo[i], *hi = pl->sel_hi[i];
  if (query_mode && pl->cand_want[i] != IKV_SKIP && (sel || cand))
    *lo = min16(*lo, pl->cand_lo[i]), *hi = max16(*hi, pl->cand_hi[i]);
  return sel || cand;
}

/* SKIP spans: never selected for themselves; say so when a page read for
 * another span carries some of their tokens inside its mask. */
static ikv_status skip_spans(route *r, uint32_t n_skip, int query_mode) {
  ikv_plan *pl = r->plan;
  ikv_status st = IKV_OK;
  for (uint32_t k = 0; k < n_skip && st == IKV_OK; k++) {
    const ikv_span *sp = &pl->spans[pl->span_order[k]];
    uint32_t first = sp->start / r->P, last = (sp->end - 1) / r->P, shared = 0;
    for (uint32_t i = first; i <= last; i++) {
      uint16_t lo, hi;
      if (!page_read(r, i, query_mode, &lo, &hi)) continue;
      shared += i * r->P + lo < sp->end && i * r->P + hi + 1 > sp->start;
    }
    st = decide(r, pl->span_ids[pl->span_order[k]], sp->kind,
                shared ? IKV_REASON_SKIP_SHARED_PAGE : IKV_REASON_SKIP_POLICY, shared, last - first + 1 - shared,
                IKV_SKIP, NULL);
  }
  return st;
}

/* Device selection: each row's entries reserved for the GPU's picks, per
 * precision, standing in as copies of the first candidate of that precision
 * until the GPU writes them (so settling and partitioning see real pages). */
static uint32_t reserved_per_row(const route *r) {
  uint32_t n = 0;
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) n += r->dsel_count[p] < r->rp->topk_pages ? r->dsel_count[p] : r->rp->topk_pages;
  return n;
}

/* The row's reserved entries, per precision: placeholders (the first
 * candidate of that precision) the GPU overwrites with its picks. */
static void push_reserved(route *r) {
  ikv_plan *pl = r->plan;
  int32_t *reserved = pl->dsel_reserved + (size_t)pl->n_rows * IKV_PRECISION_COUNT;
  const plan_entries out = plan_entries_of(pl);
  uint32_t e = pl->n_entries;
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
    const uint32_t n = r->dsel_count[p] < r->rp->topk_pages ? r->dsel_count[p] : r->rp->topk_pages;
    reserved[p] = n ? (int32_t)e : -1;
    if (!n) continue;
    const ikv_select_candidate c = pl->dsel_cand[r->dsel_first[p]];
    for (uint32_t k = 0; k < n; k++, e++) plan_entry_set(out, e, c.page, c.page_index, c.first, c.last, c.precision);
  }
  pl->n_entries = e;
}

static ikv_status emit_rows(route *r, int query_mode) {
  ikv_plan *pl = r->plan;
  const uint32_t N = r->v.n_pages, H = r->rt->cfg.geometry.kv_heads;
  const int dsel = r->rp->select_on_device != 0;
  uint32_t rows = query_mode ? H : 1, need = dsel ? rows * reserved_per_row(r) : 0;
  if (pl->n_entries + rows * N + need > pl->cap_entries) /* count only when it might not fit */
    for (uint32_t h = 0; h < rows; h++)
      for (uint32_t i = 0; i < N; i++)
        need += pl->sel_want[i] != IKV_SKIP || (query_mode && pl->head_sel[(size_t)h * N + i]);
  if (pl->n_entries + need > pl->cap_entries)
    return rt_fail(r->rt, IKV_E_CAPACITY, "ikv_plan_build: sequence %u: plan holds %u pages (max_plan_pages), needs %u more",
                   r->b, pl->cap_entries, pl->n_entries + need - pl->cap_entries);
  /* the hot loops: the plan's arrays in locals (plan_entries) */
  const uint8_t *restrict sel_want = pl->sel_want, *restrict cand_want = pl->cand_want;
  const uint16_t *restrict sel_lo = pl->sel_lo, *restrict sel_hi = pl->sel_hi, *restrict cand_lo = pl->cand_lo,
                           *restrict cand_hi = pl->cand_hi;
  const ikv_page_id *restrict pages = r->v.pages;
  if (!query_mode) {
    const plan_entries out = plan_entries_of(pl);
    uint32_t n = pl->n_entries;
    for (uint32_t i = 0; i < N; i++)
      if (sel_want[i] != IKV_SKIP) plan_entry_set(out, n++, pages[i], (int32_t)i, sel_lo[i], sel_hi[i], sel_want[i]);
    pl->n_entries = n;
    pl->indptr[++pl->n_rows] = (int32_t)n;
    return IKV_OK;
  }
  /* a row per KV head: the mandatory pages and the head's picks */
  for (uint32_t h = 0; h < rows; h++) {
    const uint8_t *restrict picked = pl->head_sel + (size_t)h * N;
    const plan_entries out = plan_entries_of(pl);
    uint32_t n = pl->n_entries;
    for (uint32_t i = 0; i < N; i++) {
      const int sel = sel_want[i] != IKV_SKIP;
      if (!sel && !picked[i]) continue;
      uint16_t lo = sel ? sel_lo[i] : cand_lo[i], hi = sel ? sel_hi[i] : cand_hi[i];
      uint8_t want = sel ? sel_want[i] : cand_want[i];
      if (sel && cand_want[i] != IKV_SKIP) {
        lo = min16(lo, cand_lo[i]), hi = max16(hi, cand_hi[i]);
        want = rt_best(want, cand_want[i]);
      }
      plan_entry_set(out, n++, pages[i], (int32_t)i, lo, hi, want);
    }
    pl->n_entries = n;
    if (dsel) push_reserved(r);
    pl->indptr[++pl->n_rows] = (int32_t)pl->n_entries;
  }
  return IKV_OK;
}

/* What every plan of sequence b starts from: its spans read, the mandatory
 * rules marked, the competing chunks listed, their cost counted. */
static ikv_status route_open(route *r, uint32_t *n_skip) {
  ikv_runtime *rt = r->rt;
  ikv_plan *plan = r->plan;
  const ikv_plan_request *req = r->req;
  const uint32_t b = r->b;
  ikv_pt_seq_get_view(rt->pt, req->seqs[b], &r->v); /* the sequence was validated */
  uint32_t n_spans;
  if (ikv_pt_span_list(rt->pt, req->seqs[b], plan->span_ids, plan->scratch_spans, &n_spans) != IKV_OK)
    return rt_fail(rt, IKV_E_CAPACITY, "ikv_plan_build: sequence %u has %u spans; a plan takes %u per sequence", b,
                   n_spans, plan->scratch_spans);
  for (uint32_t s = 0; s < n_spans; s++) ikv_pt_span_get(rt->pt, req->seqs[b], plan->span_ids[s], &plan->spans[s]);
  const uint32_t N = r->v.n_pages;
  memset(plan->sel_want, IKV_SKIP, N);
  memset(plan->sel_lo, 0xff, sizeof(uint16_t) * N); /* UINT16_MAX: no token yet */
  memset(plan->sel_hi, 0, sizeof(uint16_t) * N);
  if (req->router.score_mode != IKV_SCORE_SPAN) {
    memset(plan->cand_want, IKV_SKIP, N);
    memset(plan->cand_lo, 0xff, sizeof(uint16_t) * N);
    memset(plan->cand_hi, 0, sizeof(uint16_t) * N);
  }

  ikv_status st = mandatory_and_chunks(r, n_spans, n_skip);
  /* gaps() sorts span indices after the SKIP list in the order array */
  if (st == IKV_OK) st = gaps(r, n_spans);
  for (uint32_t i = 0; i < N; i++) /* what the mandatory rules cost */
    if (plan->sel_want[i] != IKV_SKIP) {
      r->tokens_used += (uint64_t)(plan->sel_hi[i] - plan->sel_lo[i]) + 1;
      r->bytes_used += page_cost_bytes(r, i, plan->sel_want[i]);
    }
  return st;
}

ikv_status rt_route_candidates(ikv_runtime *rt, ikv_plan *plan, const ikv_plan_request *req, uint32_t b) {
  route r = {.rt = rt, .plan = plan, .rp = &req->router, .req = req, .P = rt->cfg.geometry.page_size, .b = b};
  const uint32_t decisions = plan->n_decisions;
  uint32_t n_skip;
  ikv_status st = route_open(&r, &n_skip);
  if (st == IKV_OK) {
    mark_candidates(&r);
    uint32_t n = plan->dsel_seq[b];
    for (uint32_t i = 0; i < r.v.n_pages; i++) /* the order select_by_query ranks them in */
      if (competes(plan, i)) {
        if (n == plan->scratch_pages) {
          st = IKV_E_CAPACITY;
          break;
        }
        plan->dsel_pages[n++] = r.v.pages[i];
      }
    plan->dsel_seq[b + 1] = n;
  }
  plan->n_decisions = decisions; /* the sequence's real pass makes them again */
  return st;
}

ikv_status rt_route_sequence(ikv_runtime *rt, ikv_plan *plan, const ikv_plan_request *req, uint32_t b) {
  route r = {.rt = rt, .plan = plan, .rp = &req->router, .req = req, .P = rt->cfg.geometry.page_size, .b = b};
  uint32_t n_skip;
  ikv_status st = route_open(&r, &n_skip);
  int query_mode = req->router.score_mode != IKV_SCORE_SPAN;
  if (st == IKV_OK) {
    if (req->router.select_on_device) st = offer_to_device(&r);
    else if (query_mode) st = select_by_query(&r);
    else select_by_span_score(&r);
    if (st == IKV_OK) st = skip_spans(&r, n_skip, query_mode);
  }
  if (st == IKV_OK) st = emit_rows(&r, query_mode);
  return st;
}
