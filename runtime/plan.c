/* Plans: validation of requests, scheduler tables, the effects a plan has on
 * pages (conversions, demand fetches, recency), the kernel-ready CSR arrays,
 * the work partition, statistics, and the end of a step. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/plan_internal.h"

static const char *const reason_names[IKV_REASON_COUNT] = {
    [IKV_REASON_SINKS] = "sink tokens: always read",
    [IKV_REASON_ALWAYS] = "ALWAYS span: read in full",
    [IKV_REASON_GLOBAL] = "GLOBAL span: read in full",
    [IKV_REASON_RECENT_WINDOW] = "inside the recent window: read",
    [IKV_REASON_ATTEND_SELECTED] = "ATTEND: every page fit the budget",
    [IKV_REASON_ATTEND_PARTIAL] = "ATTEND: the budget took some pages",
    [IKV_REASON_ATTEND_BUDGET] = "ATTEND: no page fit the budget",
    [IKV_REASON_ATTEND_PRESSURE] = "ATTEND: its score band is skipped at this memory pressure",
    [IKV_REASON_ATTEND_NOT_TOPK] = "ATTEND: no page in any KV head's top-k",
    [IKV_REASON_ATTEND_ON_DEVICE] = "ATTEND: candidates for the GPU's top-k per KV head",
    [IKV_REASON_SKIP_POLICY] = "SKIP span: not read",
    [IKV_REASON_SKIP_SHARED_PAGE] = "SKIP span: some tokens read inside a page shared with a read span",
    [IKV_REASON_SCHEDULER_TABLES] = "scheduler tables",
};

const char *ikv_reason_str(ikv_reason reason) {
  return (unsigned)reason < IKV_REASON_COUNT ? reason_names[reason] : "unknown reason";
}

/* ---- the plan object ------------------------------------------------------ */

/* The plan's host buffers: one list for checking their allocation and for
 * freeing them; those the backend copies to or from the device (the plan it
 * uploads, the ranked keys that come back) come from its host_alloc. */
#define PLAN_COPIED_BUFFERS(X)                                                                                 \
  X(indptr) X(seq_len) X(slot) X(page_index) X(precision) X(first) X(last) X(work) X(work_entries) X(dsel_seq) \
  X(dsel_cand) X(dsel_pages) X(dsel_reserved) X(dsel_groups) X(rank_keys)
#define PLAN_HOST_BUFFERS(X)                                                                                   \
  X(want) X(page) X(row_precision) X(hints) X(decisions) X(touched) X(touched_stored) X(touched_on_gpu)        \
  X(page_want) X(segs) X(marks) X(cuts) X(cand_seg) X(picked) X(order)                          \
  X(span_order) X(chunks) X(spans) X(span_ids) X(extents) X(reuse_seqs) X(reuse_version) X(reuse_pages)        \
  X(old_start) X(fresh) X(seq_pending) X(parted_precision) X(placed) X(parted_indptr) X(runs) X(old_runs)      \
  X(run_at) X(old_run_at) X(row_settled) X(old_seq) X(seq_at) X(old_row_precision)
#define PLAN_MISSING(field) !pl->field ||
#define PLAN_FREE(field) free(pl->field);
#define PLAN_FREE_COPIED(field) pl->rt->be->host_free(pl->rt, pl->field);

/* A host array the backend copies to or from the device (its host_alloc). */
static void *copied_alloc(ikv_runtime *rt, size_t bytes) { return rt->be->host_alloc(rt, bytes); }

ikv_status ikv_plan_create(ikv_runtime *rt, ikv_plan **out) {
  if (!rt || !out) return IKV_E_NULL;
  ikv_plan *pl = calloc(1, sizeof(*pl));
  if (!pl) return IKV_E_NO_MEMORY;
  const uint32_t H = rt->cfg.geometry.kv_heads;
  pl->rt = rt;
  pl->cap_batch = rt->cfg.max_batch;
  pl->cap_rows = rt->cfg.max_batch * H;
  pl->cap_entries = rt->cfg.max_plan_pages;
  pl->scratch_spans = IKV_PLAN_MAX_DECISIONS_PER_SEQ;
  pl->cap_decisions = rt->cfg.max_batch * (IKV_PLAN_MAX_DECISIONS_PER_SEQ + 3);
  pl->scratch_pages = rt->max_pages;
  size_t E = pl->cap_entries, N = pl->scratch_pages, S = pl->scratch_spans;
  pl->indptr = copied_alloc(rt, sizeof(int32_t) * (pl->cap_rows + 1));
  pl->seq_len = copied_alloc(rt, sizeof(int32_t) * pl->cap_batch);
  pl->slot = copied_alloc(rt, sizeof(int32_t) * E);
  pl->page_index = copied_alloc(rt, sizeof(int32_t) * E);
  pl->precision = copied_alloc(rt, E);
  pl->want = malloc(E);
  pl->first = copied_alloc(rt, sizeof(uint16_t) * E);
  pl->last = copied_alloc(rt, sizeof(uint16_t) * E);
  pl->page = malloc(sizeof(ikv_page_id) * E);
  pl->row_precision = malloc(pl->cap_rows);
  pl->work = copied_alloc(rt, sizeof(ikv_work_item) * (E + (size_t)pl->cap_rows * IKV_PRECISION_COUNT));
  pl->work_entries = copied_alloc(rt, sizeof(int32_t) * E);
  pl->hints = malloc(sizeof(ikv_page_id) * E);
  pl->decisions = malloc(sizeof(ikv_span_decision) * pl->cap_decisions);
  pl->touched = malloc(sizeof(ikv_page_id) * E);
  pl->touched_stored = malloc(E);
  pl->touched_on_gpu = malloc(E);
  pl->page_want = malloc(rt->max_pages);
  pl->segs = malloc(sizeof(rt_seg) * RT_SEGMENTS(S));
  pl->marks = malloc(sizeof(rt_mark) * (S + 2));
  pl->cuts = malloc(sizeof(uint64_t) * (N / 64 + 1));
  pl->cand_seg = malloc(sizeof(uint32_t) * N);
  pl->picked = malloc(sizeof(uint64_t) * (H + 1) * (N / 64 + 1));
  pl->rank_keys = copied_alloc(rt, sizeof(uint64_t) * H * N);
  pl->order = malloc(sizeof(uint32_t) * 2 * N);
  pl->span_order = malloc(sizeof(uint32_t) * 2 * S);
  pl->chunks = malloc(sizeof(*pl->chunks) * (2 * S + 1));
  pl->spans = malloc(sizeof(ikv_span) * S);
  pl->span_ids = malloc(sizeof(ikv_span_id) * S);
  pl->extents = malloc(sizeof(ikv_page_extent) * N);
  pl->dsel_seq = copied_alloc(rt, sizeof(uint32_t) * (pl->cap_batch + 1));
  pl->dsel_cand = copied_alloc(rt, sizeof(ikv_select_candidate) * N);
  pl->dsel_pages = copied_alloc(rt, sizeof(uint32_t) * N);
  pl->dsel_reserved = copied_alloc(rt, sizeof(int32_t) * pl->cap_rows * IKV_PRECISION_COUNT);
  pl->dsel_groups = copied_alloc(rt, sizeof(int32_t) * 3 * pl->cap_rows * IKV_PRECISION_COUNT);
  pl->reuse_seqs = malloc(sizeof(ikv_seq_id) * pl->cap_batch);
  pl->reuse_version = malloc(sizeof(uint32_t) * pl->cap_batch);
  pl->reuse_pages = malloc(sizeof(uint32_t) * pl->cap_batch);
  pl->old_start = malloc(sizeof(int32_t) * (pl->cap_rows + 1));
  pl->fresh = malloc(sizeof(int32_t) * pl->cap_rows);
  pl->seq_pending = malloc(pl->cap_batch);
  pl->row_settled = malloc(pl->cap_rows);
  pl->old_seq = malloc(sizeof(int32_t) * pl->cap_batch);
  pl->old_row_precision = malloc(pl->cap_rows);
  pl->seq_at = malloc(sizeof(rt_seq_at) * pl->cap_batch);
  pl->parted_precision = malloc(E);
  pl->placed = malloc(pl->cap_rows);
  pl->parted_indptr = malloc(sizeof(int32_t) * (pl->cap_rows + 1));
  pl->runs = malloc(sizeof(rt_run) * E); /* a run holds an entry at least */
  pl->old_runs = malloc(sizeof(rt_run) * E);
  pl->run_at = malloc(sizeof(uint32_t) * (pl->cap_batch + 1));
  pl->old_run_at = malloc(sizeof(uint32_t) * (pl->cap_batch + 1));
  if (PLAN_COPIED_BUFFERS(PLAN_MISSING) PLAN_HOST_BUFFERS(PLAN_MISSING) 0) {
    ikv_plan_destroy(pl);
    return IKV_E_NO_MEMORY;
  }
  ikv_status st = rt->be->plan_open(rt, pl);
  if (st != IKV_OK) {
    ikv_plan_destroy(pl);
    return st;
  }
  memset(pl->page_want, UNSEEN, rt->max_pages);
  pl->indptr[0] = 0;
  pl->view.indptr = pl->indptr;
  pl->view.page_slot = pl->slot;
  pl->view.precision = pl->precision;
  pl->view.page_index = pl->page_index;
  pl->view.first = pl->first;
  pl->view.last = pl->last;
  pl->view.seq_len = pl->seq_len;
  *out = pl;
  return IKV_OK;
}

void ikv_plan_destroy(ikv_plan *pl) {
  if (!pl) return;
  if (pl->rt->active == pl) ikv_step_end(pl->rt, pl);
  if (pl->rt->stamped == pl) rt_stamp_plan(pl->rt);
  pl->rt->be->plan_close(pl); /* waits for uploads from the arrays below */
  PLAN_COPIED_BUFFERS(PLAN_FREE_COPIED)
  PLAN_HOST_BUFFERS(PLAN_FREE)
  free(pl);
}

ikv_status plan_decide(ikv_plan *pl, ikv_span_decision d, uint32_t *index) {
  if (pl->n_decisions == pl->cap_decisions)
    return rt_fail(pl->rt, IKV_E_CAPACITY, "ikv_plan_build: more than %u span decisions", pl->cap_decisions);
  if (index) *index = pl->n_decisions;
  pl->decisions[pl->n_decisions++] = d;
  return IKV_OK;
}

/* ---- validation ----------------------------------------------------------- */

static ikv_status check_request(ikv_runtime *rt, ikv_plan *pl, const ikv_plan_request *req) {
  if (pl->rt != rt) return rt_fail(rt, IKV_E_INVALID, "ikv_plan_build: the plan belongs to another runtime");
  if (rt->active) return rt_fail(rt, IKV_E_INVALID, "ikv_plan_build: a plan is in flight (call ikv_step_end first)");
  if (req->batch > pl->cap_batch)
    return rt_fail(rt, IKV_E_CAPACITY, "ikv_plan_build: batch %u exceeds max_batch %u", req->batch, pl->cap_batch);
  if (req->batch && !req->seqs) return rt_fail(rt, IKV_E_NULL, "ikv_plan_build: seqs is NULL");
  for (uint32_t b = 0; b < req->batch; b++) {
    ikv_pt_seq_info info;
    if (ikv_pt_seq_get_info(rt->pt, req->seqs[b], &info) != IKV_OK)
      return rt_fail(rt, IKV_E_UNKNOWN_SEQ, "ikv_plan_build: sequence %u of the batch is unknown", b);
  }
  if (req->mode == IKV_PLAN_TABLES) {
    const ikv_plan_tables *t = &req->tables;
    if (!t->indptr || (!t->page_index && req->batch) || (!t->precision && req->batch))
      return rt_fail(rt, IKV_E_NULL, "ikv_plan_build: tables need indptr, page_index and precision");
    if (!t->first != !t->last) return rt_fail(rt, IKV_E_NULL, "ikv_plan_build: give both first and last, or neither");
    if (t->per_kv_head && req->batch && t->indptr[req->batch * rt->cfg.geometry.kv_heads] < 0)
      return rt_fail(rt, IKV_E_INVALID, "ikv_plan_build: indptr");
    return IKV_OK;
  }
  if (req->mode != IKV_PLAN_ROUTER) return rt_fail(rt, IKV_E_INVALID, "ikv_plan_build: mode %d", (int)req->mode);
  const ikv_router_params *rp = &req->router;
  if (!(rp->memory_pressure >= 0.0f && rp->memory_pressure <= 1.0f))
    return rt_fail(rt, IKV_E_INVALID, "ikv_plan_build: memory_pressure %g outside [0, 1]", rp->memory_pressure);
  if (!isfinite(rp->default_score)) return rt_fail(rt, IKV_E_INVALID, "ikv_plan_build: default_score is not finite");
  if ((unsigned)rp->score_mode > IKV_SCORE_MEAN_COSINE)
    return rt_fail(rt, IKV_E_INVALID, "ikv_plan_build: score_mode %d", (int)rp->score_mode);
  if (rp->score_mode != IKV_SCORE_SPAN && !rp->score_q && req->batch)
    return rt_fail(rt, IKV_E_NULL, "ikv_plan_build: query-aware scoring needs score_q");
  if (rp->select_on_device && rp->score_mode == IKV_SCORE_SPAN)
    return rt_fail(rt, IKV_E_INVALID, "ikv_plan_build: select_on_device needs a query-aware score_mode");
  if (rp->select_on_device && !rp->topk_pages)
    return rt_fail(rt, IKV_E_INVALID, "ikv_plan_build: select_on_device needs topk_pages > 0");
  if (rp->select_on_device && rt->cfg.backend != IKV_BACKEND_CUDA)
    return rt_fail(rt, IKV_E_UNSUPPORTED, "ikv_plan_build: select_on_device needs the CUDA backend");
  return IKV_OK;
}

/* Checks and writes entries [begin, end) of a row of the tables after the
 * plan's entries (the caller commits them), in one tight loop; prev: the
 * row's page before them (-1: none). Returns the first entry that breaks a
 * rule, or end. */
static int32_t tables_row(ikv_plan *pl, const ikv_plan_tables *t, const ikv_pt_seq_view *v, uint32_t P, int32_t begin,
                          int32_t end, int32_t prev) {
  const int32_t *restrict index = t->page_index;
  const uint8_t *restrict want = t->precision, *restrict stored = v->precisions;
  const uint16_t *restrict first = t->first, *restrict last = t->last;
  const ikv_page_id *restrict pages = v->pages;
  const plan_entries out = plan_entries_of(pl);
  const uint32_t at = pl->n_entries - (uint32_t)begin; /* entry e lands at e + at */
  const uint32_t n_pages = v->n_pages, tail = n_pages ? v->tokens - (n_pages - 1) * P : 0; /* the last page's tokens */
  for (int32_t e = begin; e < end; e++) {
    const int32_t i = index[e];
    const uint8_t w = want[e];
    if (i <= prev || (uint32_t)i >= n_pages || w >= IKV_PRECISION_COUNT || rt_rank[w] > rt_rank[stored[i]]) return e;
    const uint32_t valid = (uint32_t)i + 1 == n_pages ? tail : P;
    const uint16_t f = first ? first[e] : 0, l = last ? last[e] : (uint16_t)(valid - 1);
    if (f > l || l >= valid) return e;
    plan_entry_set(out, (uint32_t)e + at, pages[i], i, f, l, w);
    prev = i;
  }
  return end;
}

/* The message for entry e, which tables_row refused. */
static ikv_status tables_refusal(ikv_runtime *rt, const ikv_plan_tables *t, const ikv_pt_seq_view *v, uint32_t b,
                                 int32_t begin, int32_t e) {
  const uint32_t P = rt->cfg.geometry.page_size;
  const int32_t i = t->page_index[e], prev = e > begin ? t->page_index[e - 1] : -1;
  const uint8_t want = t->precision[e];
  if (i < 0 || (uint32_t)i >= v->n_pages)
    return rt_fail(rt, IKV_E_RANGE, "ikv_plan_build: sequence %u: page %d outside its %u pages", b, i, v->n_pages);
  if (i <= prev)
    return rt_fail(rt, IKV_E_INVALID, "ikv_plan_build: sequence %u: page %d after page %d (a row's pages increase)", b,
                   i, prev);
  if (!ikv_precision_valid(want))
    return rt_fail(rt, IKV_E_PRECISION, "ikv_plan_build: sequence %u: page %d: precision code %u", b, i, want);
  if (rt_precision_rank(want) > rt_precision_rank(v->precisions[i]))
    return rt_fail(rt, IKV_E_PRECISION, "ikv_plan_build: sequence %u: page %d is stored as %s; %s cannot be restored", b,
                   i, ikv_precision_name(v->precisions[i]), ikv_precision_name(want));
  const uint32_t valid = (uint32_t)i + 1 == v->n_pages ? v->tokens - (uint32_t)i * P : P;
  const uint16_t first = t->first ? t->first[e] : 0, last = t->last ? t->last[e] : (uint16_t)(valid - 1);
  return rt_fail(rt, IKV_E_RANGE, "ikv_plan_build: sequence %u: page %d: mask [%u, %u] outside its %u valid tokens", b,
                 i, first, last, valid);
}

/* Sequence b's decision: its rows came from the scheduler's tables. */
static ikv_status tables_decision(ikv_plan *pl, uint32_t b, uint32_t pages) {
  ikv_span_decision d = {.seq_index = b, .kind = IKV_SPAN_KIND_COUNT, .reason = IKV_REASON_SCHEDULER_TABLES,
                         .pages_selected = pages, .precision = IKV_SKIP};
  return plan_decide(pl, d, NULL);
}

/* Scheduler tables for sequence b: every row checked, then pushed. */
static ikv_status tables_sequence(ikv_runtime *rt, ikv_plan *pl, const ikv_plan_request *req, uint32_t b) {
  const ikv_plan_tables *t = &req->tables;
  const uint32_t H = rt->cfg.geometry.kv_heads;
  uint32_t rows = t->per_kv_head ? H : 1, base = b * rows;
  ikv_pt_seq_view v;
  ikv_pt_seq_get_view(rt->pt, req->seqs[b], &v);
  for (uint32_t h = 0; h < rows; h++) {
    int32_t begin = t->indptr[base + h], end = t->indptr[base + h + 1];
    if (begin < 0 || end < begin || (b == 0 && h == 0 && begin != 0))
      return rt_fail(rt, IKV_E_INVALID, "ikv_plan_build: sequence %u: indptr[%u..%u] = %d, %d is not a valid range",
                     b, base + h, base + h + 1, begin, end);
    if (pl->n_entries + (uint32_t)(end - begin) > pl->cap_entries)
      return rt_fail(rt, IKV_E_CAPACITY, "ikv_plan_build: more than max_plan_pages (%u) pages", pl->cap_entries);
    const int32_t bad = tables_row(pl, t, &v, rt->cfg.geometry.page_size, begin, end, -1);
    if (bad != end) return tables_refusal(rt, t, &v, b, begin, bad);
    pl->n_entries += (uint32_t)(end - begin);
    pl->indptr[++pl->n_rows] = (int32_t)pl->n_entries;
  }
  return tables_decision(pl, b, pl->n_entries - (uint32_t)pl->indptr[base]);
}

/* ---- rows kept where they did not change ------------------------------------ */

/* Whether this build may keep rows of the last one: the same mode, and rows
 * of the same shape (tables: row shape and mask form; the router: span
 * mode, one row a sequence, its last rows remembered). Which rows continue
 * which: match_seqs. */
static int rows_reusable(const ikv_plan *pl, const ikv_plan_request *req) {
  if (!pl->reuse_ok || !req->batch || req->mode != pl->reuse_mode) return 0;
  if (req->mode == IKV_PLAN_ROUTER) return req->router.score_mode == IKV_SCORE_SPAN;
  const ikv_plan_tables *t = &req->tables;
  return (t->per_kv_head != 0) == pl->reuse_per_head && (t->first != NULL) == pl->reuse_masks;
}

static int by_seq_id(const void *x, const void *y) {
  const rt_seq_at *a = x, *b = y;
  return (a->seq > b->seq) - (a->seq < b->seq);
}

/* Where each sequence of the batch was in the last build's batch
 * (old_seq[b], -1: absent or out of order). Sequences that joined or left
 * leave the others' rows in place; one found before a sequence that came
 * earlier starts afresh, so that kept rows keep their order (they then
 * only move, never cross: keep_rows). */
static void match_seqs(ikv_plan *pl, const ikv_plan_request *req) {
  const uint32_t B = req->batch, old_B = pl->reuse_batch;
  if (B == old_B && !memcmp(req->seqs, pl->reuse_seqs, sizeof(ikv_seq_id) * B)) { /* the usual step */
    for (uint32_t b = 0; b < B; b++) pl->old_seq[b] = (int32_t)b;
    return;
  }
  for (uint32_t i = 0; i < old_B; i++) pl->seq_at[i] = (rt_seq_at){pl->reuse_seqs[i], i};
  qsort(pl->seq_at, old_B, sizeof(rt_seq_at), by_seq_id);
  int32_t last = -1;
  for (uint32_t b = 0; b < B; b++) {
    const rt_seq_at key = {req->seqs[b], 0}, *hit = bsearch(&key, pl->seq_at, old_B, sizeof(rt_seq_at), by_seq_id);
    const int32_t ob = hit && (int32_t)hit->at > last ? (int32_t)hit->at : -1;
    pl->old_seq[b] = ob;
    if (ob >= 0) last = ob;
  }
}

/* The last build's row that row r continues (rows_per_seq rows a sequence), -1: none. */
static int32_t old_row(const ikv_plan *pl, uint32_t r, uint32_t rows_per_seq) {
  const int32_t ob = pl->old_seq[r / rows_per_seq];
  return ob < 0 ? -1 : ob * (int32_t)rows_per_seq + (int32_t)(r % rows_per_seq);
}

/* Whether sequence b's entries of the last build (where it was sequence
 * ob) still hold their pages' right slots: its view's version is the same
 * and it lost no page. */
static int seq_unchanged(const ikv_plan *pl, const ikv_pt_seq_view *v, int32_t ob) {
  return ob >= 0 && v->version == pl->reuse_version[ob] && v->n_pages >= pl->reuse_pages[ob];
}

/* How many leading entries of an old row the request's row repeats (n at
 * most): page, precision, and the masks where the scheduler gives them.
 * memcmp first, as equal rows are the usual case. */
static int32_t same_prefix(const ikv_plan *pl, const ikv_plan_tables *t, int32_t req_at, int32_t old_at, int32_t n) {
  const int32_t *ri = t->page_index + req_at, *pi = pl->page_index + old_at;
  const uint8_t *rw = t->precision + req_at, *pw = pl->want + old_at;
  int same = !memcmp(ri, pi, sizeof(int32_t) * (size_t)n) && !memcmp(rw, pw, (size_t)n);
  if (t->first)
    same = same && !memcmp(t->first + req_at, pl->first + old_at, sizeof(uint16_t) * (size_t)n) &&
           !memcmp(t->last + req_at, pl->last + old_at, sizeof(uint16_t) * (size_t)n);
  if (same) return n;
  int32_t d = 0;
  while (d < n && ri[d] == pi[d] && rw[d] == pw[d] &&
         (!t->first || (t->first[req_at + d] == pl->first[old_at + d] && t->last[req_at + d] == pl->last[old_at + d])))
    d++;
  return d;
}

/* How many leading pages two span-mode rows, given as runs, read alike. */
static uint32_t same_runs(const rt_run *a, uint32_t na, const rt_run *b, uint32_t nb) {
  uint32_t n = 0;
  for (uint32_t k = 0; k < na && k < nb; k++) {
    if (a[k].first != b[k].first || a[k].lo != b[k].lo || a[k].hi != b[k].hi || a[k].want != b[k].want) break;
    n += a[k].count < b[k].count ? a[k].count : b[k].count;
    if (a[k].count != b[k].count) break;
  }
  return n;
}

/* How many of the first n entries of the last build's row r (from `at`)
 * were resolved in full: the others wait for a downgrade that build could
 * not make (no room, or rows appended and not yet written) and are tried
 * again (their stored precision can only be higher than wanted). A row
 * whose entries all resolved at once says so (row_settled). */
static int32_t settled_prefix(const ikv_plan *pl, uint32_t r, int32_t at, int32_t n) {
  if (pl->row_settled[r]) return n;
  int32_t d = 0;
  while (d < n && rt_rank[pl->precision[at + d]] <= rt_rank[pl->want[at + d]]) d++;
  return d;
}

void plan_move_entries(ikv_plan *pl, int32_t from, int32_t to, int32_t n) {
  if (from == to || !n) return;
#define MOVE(a) memmove(pl->a + to, pl->a + from, sizeof(*pl->a) * (size_t)n);
  MOVE(page) MOVE(page_index) MOVE(first) MOVE(last) MOVE(want) MOVE(slot) MOVE(precision)
#undef MOVE
}

/* The last build's entries [from, to) leave with the recency it reserved. */
static void stamp_leaving(ikv_runtime *rt, ikv_plan *pl, int32_t from, int32_t to) {
  if (to > from) ikv_pt_pages_stamp(rt->pt, pl->page + from, (uint32_t)(to - from), pl->stamp_base + (uint64_t)from);
}

/* The rows placed at `starts` ([rows + 1]), row r keeping fresh[r] leading
 * entries of the last build's row it continues (old_row; fresh[r] is 0
 * where none): the last build's entries not kept leave with the recency it
 * reserved, the kept ones move (kept rows keep their order: rows that move
 * right from the last, then rows that move left from the first, and no row
 * lands on one not yet moved), and fresh[r] becomes the row's first entry
 * still to write. */
static void keep_rows(ikv_runtime *rt, ikv_plan *pl, uint32_t rows, uint32_t rows_per_seq, const int32_t *starts) {
  const int32_t *old = pl->old_start;
  int32_t *keep = pl->fresh;
  const int stamped = rt->stamped == pl;
  for (uint32_t r = 0, next = 0; stamped && r <= rows; r++) { /* old rows in order: kept rows ascend */
    const int32_t o = r < rows ? old_row(pl, r, rows_per_seq) : (int32_t)pl->old_rows;
    if (o < 0) continue;
    stamp_leaving(rt, pl, old[next], old[o]); /* old rows no row continues */
    if (r < rows) stamp_leaving(rt, pl, old[o] + keep[r], old[o + 1]), next = (uint32_t)o + 1;
  }
  rt->stamped = NULL;
  for (uint32_t r = rows; r-- > 0;) {
    const int32_t o = old_row(pl, r, rows_per_seq);
    if (o >= 0 && starts[r] > old[o]) plan_move_entries(pl, old[o], starts[r], keep[r]);
  }
  for (uint32_t r = 0; r < rows; r++) {
    const int32_t o = old_row(pl, r, rows_per_seq);
    if (o >= 0 && starts[r] < old[o]) plan_move_entries(pl, old[o], starts[r], keep[r]);
  }
  if (pl->indptr != starts) memcpy(pl->indptr, starts, sizeof(int32_t) * (rows + 1));
  for (uint32_t r = 0; r < rows; r++) keep[r] += starts[r];
  pl->n_rows = rows, pl->rows_per_seq = rows_per_seq;
  pl->kept_pending = stamped;
}

/* The first n entries of the plan, the last build's (rt->stamped == pl),
 * leave with the recency that build reserved for them. */
static void stamp_last(ikv_runtime *rt, ikv_plan *pl, uint32_t n) {
  if (rt->stamped != pl) return;
  stamp_leaving(rt, pl, 0, (int32_t)n);
  rt->stamped = NULL;
}

/* After a failed build that kept rows: their pages get the recency the last
 * build reserved for them (its stamps were to be superseded by this one's). */
static void stamp_kept(ikv_runtime *rt, ikv_plan *pl) {
  if (!pl->kept_pending) return;
  for (uint32_t r = 0; r < pl->n_rows; r++) {
    const int32_t kept = pl->fresh[r] - pl->indptr[r];
    if (kept > 0)
      ikv_pt_pages_stamp(rt->pt, pl->page + pl->indptr[r], (uint32_t)kept,
                         pl->stamp_base + (uint64_t)pl->old_start[old_row(pl, r, pl->rows_per_seq)]);
  }
  pl->kept_pending = 0;
}

/* Scheduler tables over the last build's plan (rows_reusable): each row of
 * a sequence the last build had (match_seqs) keeps the entries its
 * sequence's version and the request still vouch for (checked and resolved
 * then), moves them to the row's new place, and only the rest is checked
 * and written as tables_sequence does. With masks left to the runtime the
 * entries from the sequence's old last page on are always rewritten (its
 * valid tokens may have grown). *reused == 0: build afresh (an indptr range
 * is invalid, or the rows outgrow the plan: the full build gives those their
 * messages); nothing was changed but the last plan's pages stamped. */
static ikv_status tables_reuse(ikv_runtime *rt, ikv_plan *pl, const ikv_plan_request *req, int *reused,
                               uint32_t old_entries) {
  const ikv_plan_tables *t = &req->tables;
  const uint32_t P = rt->cfg.geometry.page_size, per = t->per_kv_head ? rt->cfg.geometry.kv_heads : 1,
                 rows = req->batch * per;
  int32_t *old = pl->old_start, *keep = pl->fresh;
  *reused = 0;
  for (uint32_t b = 0; b < req->batch && !*reused; b++) {
    ikv_pt_seq_view v;
    ikv_pt_seq_get_view(rt->pt, req->seqs[b], &v);
    const int32_t ob = pl->old_seq[b];
    const int same = seq_unchanged(pl, &v, ob);
    const int32_t tail = same ? (int32_t)pl->reuse_pages[ob] - 1 : 0; /* the old last page */
    for (uint32_t r = b * per; r < (b + 1) * per; r++) {
      const int32_t begin = t->indptr[r], end = t->indptr[r + 1], o = old_row(pl, r, per);
      if (begin < 0 || end < begin || (r == 0 && begin != 0)) {
        *reused = -1;
        break;
      }
      const int32_t old_len = same ? old[o + 1] - old[o] : 0;
      int32_t d = same ? same_prefix(pl, t, begin, old[o], old_len < end - begin ? old_len : end - begin) : 0;
      if (!t->first)
        while (d > 0 && pl->page_index[old[o] + d - 1] >= tail) d--;
      keep[r] = same ? settled_prefix(pl, (uint32_t)o, old[o], d) : 0;
    }
  }
  if (*reused || (uint32_t)t->indptr[rows] > pl->cap_entries) { /* built afresh: the last plan's pages stamped first */
    stamp_last(rt, pl, old_entries);
    *reused = 0;
    return IKV_OK;
  }
  *reused = 1;
  keep_rows(rt, pl, rows, per, t->indptr);
  ikv_status st = IKV_OK;
  for (uint32_t b = 0; b < req->batch && st == IKV_OK; b++) {
    ikv_pt_seq_view v;
    ikv_pt_seq_get_view(rt->pt, req->seqs[b], &v);
    for (uint32_t r = b * per; r < (b + 1) * per && st == IKV_OK; r++) {
      const int32_t from = pl->fresh[r], end = t->indptr[r + 1];
      pl->n_entries = (uint32_t)from;
      const int32_t bad = tables_row(pl, t, &v, P, from, end, from > t->indptr[r] ? t->page_index[from - 1] : -1);
      if (bad != end) st = tables_refusal(rt, t, &v, b, t->indptr[r], bad);
    }
    if (st == IKV_OK) st = tables_decision(pl, b, (uint32_t)(t->indptr[(b + 1) * per] - t->indptr[b * per]));
  }
  pl->n_entries = (uint32_t)t->indptr[rows];
  return st;
}

/* The span-mode router's rows (routed as runs, placed at pl->indptr): each
 * keeps the entries its runs repeat from the last build, where the rows are
 * reusable (old_start then holds the last build's row starts) and the
 * sequence unchanged; the rest is written from its runs. */
static void router_rows(ikv_runtime *rt, ikv_plan *pl, const ikv_plan_request *req, int reuse) {
  for (uint32_t b = 0; b < req->batch; b++) {
    ikv_pt_seq_view v;
    ikv_pt_seq_get_view(rt->pt, req->seqs[b], &v);
    const int32_t ob = reuse ? pl->old_seq[b] : -1;
    uint32_t d = 0;
    if (seq_unchanged(pl, &v, ob))
      d = same_runs(pl->runs + pl->run_at[b], pl->run_at[b + 1] - pl->run_at[b], pl->old_runs + pl->old_run_at[ob],
                    pl->old_run_at[ob + 1] - pl->old_run_at[ob]);
    pl->fresh[b] = d ? settled_prefix(pl, (uint32_t)ob, pl->old_start[ob], (int32_t)d) : 0;
  }
  if (reuse) keep_rows(rt, pl, req->batch, 1, pl->indptr);
  else
    for (uint32_t b = 0; b < req->batch; b++) pl->fresh[b] = pl->indptr[b];
  for (uint32_t b = 0; b < req->batch; b++) {
    ikv_pt_seq_view v;
    ikv_pt_seq_get_view(rt->pt, req->seqs[b], &v);
    rt_route_emit(pl, pl->runs + pl->run_at[b], pl->run_at[b + 1] - pl->run_at[b],
                  (uint32_t)(pl->fresh[b] - pl->indptr[b]), v.pages, (uint32_t)pl->fresh[b]);
  }
}

/* What the next build may keep: the sequences' versions and pages now (and
 * the router's runs). */
static void remember_rows(ikv_runtime *rt, ikv_plan *pl, const ikv_plan_request *req) {
  if (req->mode == IKV_PLAN_ROUTER && req->router.score_mode != IKV_SCORE_SPAN) return;
  pl->reuse_ok = 1, pl->reuse_batch = req->batch, pl->reuse_mode = req->mode;
  pl->reuse_per_head = req->tables.per_kv_head != 0, pl->reuse_masks = req->tables.first != NULL;
  memcpy(pl->reuse_seqs, req->seqs, sizeof(ikv_seq_id) * req->batch);
  for (uint32_t b = 0; b < req->batch; b++) {
    ikv_pt_seq_view v;
    ikv_pt_seq_get_view(rt->pt, req->seqs[b], &v);
    pl->reuse_version[b] = v.version, pl->reuse_pages[b] = v.n_pages;
  }
  if (req->mode != IKV_PLAN_ROUTER) return;
  rt_run *runs = pl->runs; /* this build's runs are the next one's old runs */
  uint32_t *at = pl->run_at;
  pl->runs = pl->old_runs, pl->run_at = pl->old_run_at;
  pl->old_runs = runs, pl->old_run_at = at;
}

void rt_stamp_plan(ikv_runtime *rt) {
  if (rt->stamped) stamp_last(rt, rt->stamped, rt->stamped->n_entries);
}

/* ---- effects --------------------------------------------------------------- */

static void forget_touched(ikv_plan *pl) {
  for (uint32_t k = 0; k < pl->n_touched; k++) pl->page_want[pl->touched[k]] = UNSEEN;
  pl->n_touched = 0;
}

/* Entries whose page is already on the GPU tier in a precision the row
 * accepts get their slot now; the rest (a downgrade or a fetch to do) are
 * counted in *pending. `settled`: after the slow path, read what is stored.
 * Also fills seq_len and the statistics. */
static void resolve(ikv_runtime *rt, ikv_plan *pl, const ikv_plan_request *req, int settled, int narrow,
                    uint32_t *pending, uint32_t *absent) {
  const uint32_t H = rt->cfg.geometry.kv_heads, rows_per_seq = pl->view.per_kv_head ? H : 1;
  ikv_plan_stats *s = &pl->stats;
  uint32_t todo = 0, off_gpu = 0;
  s->pages_skipped = 0, s->bytes_read = s->bytes_dense_fp16 = 0;
  memset(s->pages_by_precision, 0, sizeof(s->pages_by_precision));
  for (uint32_t b = 0; b < req->batch; b++) {
    ikv_pt_seq_view v;
    ikv_pt_seq_get_view(rt->pt, req->seqs[b], &v);
    pl->seq_len[b] = (int32_t)v.tokens;
    s->bytes_dense_fp16 += (uint64_t)v.n_pages * rt->page_bytes[IKV_FP16];
    int32_t begin = pl->indptr[b * rows_per_seq], end = pl->indptr[(b + 1) * rows_per_seq];
    s->pages_skipped += v.n_pages * rows_per_seq - (uint32_t)(end - begin);
    /* the hot loop: locals, so the stores cannot alias what is read */
    const int32_t *restrict index = pl->page_index;
    const uint8_t *restrict want = pl->want, *restrict precisions = v.precisions;
    const int32_t *restrict gpu_slots = v.gpu_slots;
    int32_t *restrict out_slot = pl->slot;
    uint8_t *restrict out_precision = pl->precision;
    uint8_t lo = 0xff, hi = 0;
    uint32_t done = 0, kept = 0, todo_before = todo;
    const int skip_seq = narrow && !pl->seq_pending[b]; /* after moves that touched none of its pages */
    uint32_t row_todo = 0, row_off = 0, row_done = 0; /* the last row's */
    for (uint32_t r = b * rows_per_seq; r < (b + 1) * rows_per_seq; r++) {
      /* entries a kept row holds from the last build are resolved already */
      const int32_t from = skip_seq ? pl->indptr[r + 1] : settled ? pl->indptr[r] : pl->fresh[r];
      const uint32_t todo_row = todo, off_row = off_gpu, done_row = done;
      kept += (uint32_t)(from - pl->indptr[r]);
      if (pl->dsel && r > b * rows_per_seq && from == pl->indptr[r]) { /* device selection: the row is the last one's */
        const int32_t len = pl->indptr[r + 1] - from, prev = pl->indptr[r - 1];
        memcpy(out_slot + from, out_slot + prev, sizeof(int32_t) * (size_t)len);
        memcpy(out_precision + from, out_precision + prev, (size_t)len);
        todo += row_todo, off_gpu += row_off, done += row_done;
        if (!settled) pl->row_settled[r] = pl->row_settled[r - 1];
        continue;
      }
      for (int32_t e = from; e < pl->indptr[r + 1]; e++) {
        uint8_t stored = precisions[index[e]];
        int32_t slot = gpu_slots[index[e]];
        if (slot < 0 || (!settled && rt_rank[want[e]] < rt_rank[stored])) {
          todo++;
          off_gpu += slot < 0;
          out_precision[e] = IKV_SKIP;
          continue;
        }
        out_slot[e] = slot;
        out_precision[e] = stored;
        lo = stored < lo ? stored : lo, hi = stored > hi ? stored : hi; /* no store chain: counted below */
        done++;
      }
      if (!settled) pl->row_settled[r] = todo == todo_row; /* its kept entries were */
      row_todo = todo - todo_row, row_off = off_gpu - off_row, row_done = done - done_row;
    }
    if (!settled) pl->seq_pending[b] = todo != todo_before;
    if (kept) { /* kept entries: of the one precision their rows had (the last build's rows they continue;
                   after the slow path, this build's first pass), if they had one */
      const uint8_t had = settled ? pl->row_precision[b * rows_per_seq]
                                  : pl->old_row_precision[(uint32_t)pl->old_seq[b] * rows_per_seq];
      const int one = had < IKV_PRECISION_COUNT && todo == todo_before && (!done || (lo == had && hi == had));
      lo = one ? had : 0xff, hi = one ? had : 0, done = one ? (uint32_t)(end - begin) : 0;
    }
    /* the rows' one precision, which spares the partition a pass */
    memset(pl->row_precision + b * rows_per_seq, lo == hi && done == (uint32_t)(end - begin) ? lo : 0xff, rows_per_seq);
    if (lo == hi) { /* one precision, the usual case */
      s->pages_by_precision[lo] += done;
      s->bytes_read += (uint64_t)done * rt->page_bytes[lo];
    } else { /* entries left for the slow path (IKV_SKIP) count nowhere */
      uint32_t c[IKV_PRECISION_COUNT];
      ikv_count_formats(out_precision, begin, end, c);
      for (int p = 0; p < IKV_PRECISION_COUNT; p++)
        s->pages_by_precision[p] += c[p], s->bytes_read += (uint64_t)c[p] * rt->page_bytes[p];
    }
  }
  if (pl->view.per_kv_head) s->bytes_read /= rt->cfg.geometry.kv_heads; /* an entry reads one head's tiles */
  s->pages_selected = pl->n_entries;
  *pending = todo;
  *absent = off_gpu;
}

/* The slow path, phase A (no changes): the distinct pages, the precision each
 * ends up in (a downgrade only where the target pools have room), and
 * whether the GPU tier can hold them all. narrow (see narrow_effects): only
 * the sequences with entries left pending, whose pages no other sequence
 * holds, and all of them on the GPU tier: then nothing is fetched or
 * evicted, conversions move only their pages, and the tier holds the plan
 * as it held it before (a conversion needs room in its target pool). */
static ikv_status settle_pages(ikv_runtime *rt, ikv_plan *pl, const ikv_plan_request *req, int narrow) {
  const uint32_t H = rt->cfg.geometry.kv_heads, rows_per_seq = pl->view.per_kv_head ? H : 1;
  for (uint32_t b = 0; b < req->batch; b++) {
    if (narrow && !pl->seq_pending[b]) continue;
    ikv_pt_seq_view v;
    ikv_pt_seq_get_view(rt->pt, req->seqs[b], &v);
    for (int32_t e = pl->indptr[b * rows_per_seq]; e < pl->indptr[(b + 1) * rows_per_seq]; e++) {
      ikv_page_id p = pl->page[e];
      if (pl->page_want[p] != UNSEEN) {
        pl->page_want[p] = rt_best(pl->page_want[p], pl->want[e]);
        continue;
      }
      uint32_t k = pl->n_touched++;
      pl->touched[k] = p;
      pl->touched_stored[k] = v.precisions[pl->page_index[e]];
      pl->touched_on_gpu[k] = v.gpu_slots[pl->page_index[e]] != IKV_NO_SLOT;
      pl->page_want[p] = pl->want[e];
    }
  }
  ikv_pt_stats ps;
  ikv_pt_get_stats(rt->pt, &ps);
  uint32_t reserved[IKV_TIER_COUNT][IKV_PRECISION_COUNT] = {{0}}, on_gpu[IKV_PRECISION_COUNT] = {0};
  for (uint32_t k = 0; k < pl->n_touched; k++) {
    ikv_page_id p = pl->touched[k];
    uint8_t stored = pl->touched_stored[k], target = rt_effective(pl->page_want[p], stored);
    if (target != stored && rt->unwritten_layers[p] && rt->unwritten_plan[p] == rt->build_seq)
      target = stored; /* rows appended, not yet written: converted by a later plan */
    if (target != stored) {
      ikv_pt_page_info info;
      ikv_pt_page_get_info(rt->pt, p, &info);
      int room = 1;
      for (int t = 0; t < IKV_TIER_COUNT; t++)
        room &= info.slot[t] == IKV_NO_SLOT || ps.pages_free[t][target] > reserved[t][target];
      if (room)
        for (int t = 0; t < IKV_TIER_COUNT; t++) reserved[t][target] += info.slot[t] != IKV_NO_SLOT;
      else
        target = stored;
    }
    pl->page_want[p] = target;
    on_gpu[target]++;
  }
  for (int p = 0; p < IKV_PRECISION_COUNT; p++)
    if (on_gpu[p] > rt->cfg.capacity[IKV_TIER_GPU][p]) {
      forget_touched(pl);
      return rt_fail(rt, IKV_E_CAPACITY, "ikv_plan_build: the plan reads %u %s pages; the GPU tier holds %u", on_gpu[p],
                     ikv_precision_name(p), rt->cfg.capacity[IKV_TIER_GPU][p]);
    }
  return IKV_OK;
}

/* Whether the slow path may look at the sequences with pending entries
 * alone: every page left pending is on the GPU tier (absent: none) and
 * held by one sequence, so only that sequence's rows read it. */
static int narrow_effects(ikv_runtime *rt, ikv_plan *pl, const ikv_plan_request *req, uint32_t absent) {
  if (absent) return 0;
  const uint32_t rows_per_seq = pl->view.per_kv_head ? rt->cfg.geometry.kv_heads : 1;
  for (uint32_t b = 0; b < req->batch; b++) {
    if (!pl->seq_pending[b]) continue;
    for (int32_t e = pl->indptr[b * rows_per_seq]; e < pl->indptr[(b + 1) * rows_per_seq]; e++) {
      ikv_pt_page_info info;
      if (pl->precision[e] == IKV_SKIP && (ikv_pt_page_get_info(rt->pt, pl->page[e], &info) != IKV_OK || info.refcount > 1))
        return 0;
    }
  }
  return 1;
}

/* Phase B: conversions, demand fetches (evicting as needed), recency. */
static ikv_status apply_effects(ikv_runtime *rt, ikv_plan *pl) {
  for (uint32_t k = 0; k < pl->n_touched; k++) {
    ikv_page_id p = pl->touched[k];
    if (pl->page_want[p] == pl->touched_stored[k]) continue;
    ikv_pt_move mv;
    ikv_status st = ikv_pt_page_set_precision(rt->pt, p, (ikv_precision)pl->page_want[p], &mv);
    if (st == IKV_OK) st = rt->be->convert_page(rt, &mv, rt->fill[p]);
    if (st != IKV_OK) return rt_fail(rt, st, "ikv_plan_build: converting page %u: %s", p, ikv_status_str(st));
    pl->stats.conversions++;
    rt->stats.conversions++;
  }
  /* fetches: room for all of them in one eviction batch, then one fetch batch */
  uint32_t need[IKV_PRECISION_COUNT] = {0}, freed[IKV_PRECISION_COUNT], n_fetch = 0;
  for (uint32_t k = 0; k < pl->n_touched; k++)
    if (!pl->touched_on_gpu[k]) need[pl->page_want[pl->touched[k]]]++;
  ikv_status st = rt_make_room(rt, pl, need, 1, freed);
  for (int p = 0; p < IKV_PRECISION_COUNT && st == IKV_OK; p++)
    if (freed[p] < need[p]) { /* what the cache keeps is a preference; this plan's reads are not */
      st = rt_make_room(rt, pl, need, 0, freed);
      break;
    }
  for (int p = 0; p < IKV_PRECISION_COUNT && st == IKV_OK; p++)
    if (freed[p] < need[p])
      st = rt_fail(rt, IKV_E_CAPACITY, "ikv_plan_build: no %s page can leave the GPU tier to make room",
                   ikv_precision_name(p));
  if (st != IKV_OK) return st;
  ikv_page_id *fetch = pl->order; /* free scratch here */
  for (uint32_t k = 0; k < pl->n_touched; k++)
    if (!pl->touched_on_gpu[k]) {
      fetch[n_fetch++] = pl->touched[k];
      if (pl->n_hints < pl->cap_entries) pl->hints[pl->n_hints++] = pl->touched[k];
    }
  st = rt_fetch(rt, pl, fetch, n_fetch, RT_MOVE_DEMAND);
  if (st != IKV_OK) return st;
  pl->stats.demand_fetches += n_fetch;
  rt->stats.demand_fetches += n_fetch;
  return IKV_OK;
}

/* The work partition. A row at the place it had in the last partition,
 * with the same formats entry by entry, has its order in work_entries
 * already (a step that keeps its rows then writes only their items); the
 * plan's formats are kept for the next build's comparison. */
static void partition_rows(ikv_plan *pl) {
  for (uint32_t r = 0; r < pl->n_rows; r++) {
    const int32_t begin = pl->indptr[r], end = pl->indptr[r + 1];
    pl->placed[r] = r < pl->parted_rows && pl->parted_indptr[r] == begin && pl->parted_indptr[r + 1] == end &&
                    !memcmp(pl->precision + begin, pl->parted_precision + begin, (size_t)(end - begin));
  }
  ikv_plan_partition(&pl->view, pl->n_rows, pl->pages_per_item, pl->row_precision, pl->placed, pl->work_entries,
                     pl->work, &pl->n_work);
  for (uint32_t r = 0; r < pl->n_rows; r++) /* a placed row's formats are there already */
    if (!pl->placed[r])
      memcpy(pl->parted_precision + pl->indptr[r], pl->precision + pl->indptr[r], (size_t)(pl->indptr[r + 1] - pl->indptr[r]));
  memcpy(pl->parted_indptr, pl->indptr, sizeof(int32_t) * (pl->n_rows + 1));
  pl->parted_rows = pl->n_rows;
}

/* Device selection: the items of each row's precision groups, for the GPU to
 * end early over reserved entries it leaves empty. */
static void reserved_groups(ikv_plan *pl) {
  int32_t *g = pl->dsel_groups;
  for (uint32_t i = 0; i < pl->n_rows * IKV_PRECISION_COUNT; i++) g[3 * i] = -1, g[3 * i + 1] = g[3 * i + 2] = 0;
  for (uint32_t i = 0; i < pl->n_work; i++) { /* ordered by row, then precision */
    int32_t *x = g + 3 * ((size_t)pl->work[i].row * IKV_PRECISION_COUNT + pl->work[i].precision);
    if (x[0] < 0) x[0] = (int32_t)i;
    x[1]++, x[2] = (int32_t)pl->work[i].end;
  }
}

/* Query-aware plans ranked on the host: when the backend ranks a batch at
 * once (a GPU: one round trip instead of one a sequence), every sequence's
 * candidates are listed first and ranked together. Falls back to ranking
 * one sequence at a time where the batch's candidates outgrow the list. */
static ikv_status rank_batch(ikv_runtime *rt, ikv_plan *pl, const ikv_plan_request *req) {
  const ikv_router_params *rp = &req->router;
  pl->ranked_batch = 0;
  if (req->mode != IKV_PLAN_ROUTER || rp->score_mode == IKV_SCORE_SPAN || rp->select_on_device ||
      !rt->be->rank_pages_batch || req->batch < 2)
    return IKV_OK;
  ikv_status st = IKV_OK;
  uint32_t longest = 0;
  for (uint32_t b = 0; b < req->batch && st == IKV_OK; b++) {
    st = rt_route_candidates(rt, pl, req, b);
    if (st == IKV_OK && pl->dsel_seq[b + 1] - pl->dsel_seq[b] > longest) longest = pl->dsel_seq[b + 1] - pl->dsel_seq[b];
  }
  if (st == IKV_E_CAPACITY) return IKV_OK; /* rank one sequence at a time */
  if (st != IKV_OK) return st;
  const uint32_t want = rp->topk_pages && rp->topk_pages < longest ? rp->topk_pages : longest;
  st = rt->be->rank_pages_batch(rt, rp->score_mode == IKV_SCORE_QUERY_BOUND, pl->dsel_pages, pl->dsel_seq, req->batch,
                                rp->score_q, want, pl->rank_keys);
  if (st != IKV_OK) return rt_fail(rt, st, "ikv_plan_build: ranking the batch's pages: %s", ikv_status_str(st));
  pl->ranked_batch = 1;
  return IKV_OK;
}

/* The spans the scheduler said it will read soon: their pages not on the GPU
 * tier lead the prefetch hints (spans gone since are passed over). */
static void scheduler_hints(ikv_runtime *rt, ikv_plan *pl) {
  for (uint32_t h = 0; h < rt->n_span_hints; h++) {
    uint32_t n;
    if (ikv_pt_span_pages(rt->pt, rt->span_hints[h].seq, rt->span_hints[h].span, pl->extents, pl->scratch_pages, &n) !=
        IKV_OK)
      continue;
    for (uint32_t i = 0; i < n && pl->n_hints < pl->cap_entries; i++) {
      ikv_pt_page_info info;
      if (ikv_pt_page_get_info(rt->pt, pl->extents[i].page, &info) == IKV_OK && info.slot[IKV_TIER_GPU] < 0)
        pl->hints[pl->n_hints++] = pl->extents[i].page;
    }
  }
}

ikv_status ikv_plan_build(ikv_runtime *rt, ikv_plan *pl, const ikv_plan_request *req) {
  if (!rt) return IKV_E_NULL;
  if (!pl || !req) return rt_fail(rt, IKV_E_NULL, "ikv_plan_build: NULL argument");
  ikv_status st = check_request(rt, pl, req);
  if (st != IKV_OK) return st;
  if (rt->be->plan_reclaim && (st = rt->be->plan_reclaim(rt, pl)) != IKV_OK)
    return rt_fail(rt, st, "ikv_plan_build: waiting for the last plan's uploads: %s", ikv_status_str(st));
  /* a build that rewrites the plan (or another plan's) stamps the last one's pages first */
  const int reuse = rows_reusable(pl, req);
  if (rt->stamped && (rt->stamped != pl || !reuse)) rt_stamp_plan(rt);
  if (reuse) { /* the last build's rows, and which of them this build's rows continue */
    memcpy(pl->old_start, pl->indptr, sizeof(int32_t) * (pl->n_rows + 1));
    memcpy(pl->old_row_precision, pl->row_precision, pl->n_rows);
    pl->old_rows = pl->n_rows;
    match_seqs(pl, req);
  }
  const uint32_t old_entries = reuse ? pl->n_entries : 0;
  pl->reuse_ok = pl->kept_pending = 0;
  pl->n_entries = pl->n_rows = pl->n_decisions = pl->n_hints = pl->n_work = pl->n_touched = 0;
  pl->run_at[0] = 0;
  memset(&pl->stats, 0, sizeof(pl->stats));
  rt->build_seq++;
  pl->dsel = req->mode == IKV_PLAN_ROUTER && req->router.select_on_device;
  pl->n_dsel = 0, pl->dsel_seq[0] = 0;
  if (pl->dsel) {
    pl->dsel_k = req->router.topk_pages, pl->dsel_q = req->router.score_q;
    pl->dsel_bound = req->router.score_mode == IKV_SCORE_QUERY_BOUND;
  }
  pl->view.batch = req->batch;
  pl->view.per_kv_head = req->mode == IKV_PLAN_TABLES ? (req->tables.per_kv_head != 0)
                                                        : req->router.score_mode != IKV_SCORE_SPAN;
  scheduler_hints(rt, pl);
  pl->n_sched_hints = pl->n_hints;
  st = rank_batch(rt, pl, req);
  /* span-mode router rows are routed first (as runs), then placed */
  const int span_router = req->mode == IKV_PLAN_ROUTER && req->router.score_mode == IKV_SCORE_SPAN;
  int reused = 0;
  if (st == IKV_OK && reuse && !span_router) st = tables_reuse(rt, pl, req, &reused, old_entries);
  for (uint32_t b = 0; b < req->batch && st == IKV_OK && !reused; b++)
    st = req->mode == IKV_PLAN_TABLES ? tables_sequence(rt, pl, req, b) : rt_route_sequence(rt, pl, req, b);
  if (span_router && st == IKV_OK) router_rows(rt, pl, req, reuse);
  else if (span_router) stamp_last(rt, pl, old_entries); /* its rows were not placed: the last build's leave */
  else if (!reused)
    for (uint32_t r = 0; r < pl->n_rows; r++) pl->fresh[r] = pl->indptr[r]; /* all new */
  for (uint32_t r = 0; r < pl->n_rows && st == IKV_OK; r++)
    pl->stats.entries_kept += (uint32_t)(pl->fresh[r] - pl->indptr[r]);
  pl->n_margin_hints = pl->n_hints - pl->n_sched_hints;
  /* The common step changes no page: every entry resolves at once. */
  uint32_t pending = 0, absent = 0;
  if (st == IKV_OK) resolve(rt, pl, req, 0, 0, &pending, &absent);
  pl->misses = absent, pl->hits = pl->n_entries - absent;
  pl->stats.pages_hit = pl->hits, pl->stats.pages_missed = pl->misses;
  const int narrow = st == IKV_OK && pending && narrow_effects(rt, pl, req, absent);
  if (st == IKV_OK && pending) st = settle_pages(rt, pl, req, narrow);
  if (st != IKV_OK) {
    stamp_kept(rt, pl);
    pl->n_entries = pl->n_rows = pl->view.batch = 0;
    return st;
  }
  if (pending) {
    st = apply_effects(rt, pl);
    resolve(rt, pl, req, 1, narrow, &pending, &absent);
  }
  if (st == IKV_OK) st = rt_await_landing(rt, pl);
  /* the plan's pages count as used now, in entry order: their recency is
   * reserved and stamped when something next reads the order (an eviction)
   * or the plan changes, so a build that keeps rows writes nothing for them */
  if (st == IKV_OK) { /* the kept rows' stamps from the last build are superseded */
    pl->kept_pending = 0;
    ikv_pt_clock_reserve(rt->pt, pl->n_entries, &pl->stamp_base);
    rt->stamped = pl;
  } else {
    stamp_kept(rt, pl);
  }
  const uint32_t heads_per_row = pl->view.per_kv_head ? 1 : rt->cfg.geometry.kv_heads;
  uint32_t formats = 0; /* the page formats the plan reads (resolve counted them) */
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) formats += pl->stats.pages_by_precision[p] != 0;
  pl->pages_per_item =
      rt->be->pages_per_item(rt, pl->n_rows, heads_per_row, pl->n_rows ? pl->n_entries / pl->n_rows + 1 : 1, formats);
  partition_rows(pl);
  if (pl->dsel) reserved_groups(pl);
  if (st == IKV_OK) {
    st = rt->be->plan_publish(rt, pl);
    if (st != IKV_OK) rt_fail(rt, st, "ikv_plan_build: publishing the plan: %s", ikv_status_str(st));
  }
  rt->active = pl;
  if (st != IKV_OK) { /* pages were moved (nothing lost); the plan is void */
    ikv_step_end(rt, pl);
    rt_stamp_plan(rt);
    pl->n_entries = pl->n_rows = pl->view.batch = 0;
    return st;
  }
  remember_rows(rt, pl, req);
  rt->n_span_hints = 0; /* served */
  rt_prefetch_next(rt, pl);
  rt->errmsg[0] = 0;
  return IKV_OK;
}

/* ---- getters and the end of the step --------------------------------------- */

const ikv_decode_plan *ikv_plan_view(const ikv_plan *pl) { return pl ? &pl->view : NULL; }

const ikv_work_item *ikv_plan_work(const ikv_plan *pl, uint32_t *n) {
  if (n) *n = pl ? pl->n_work : 0;
  return pl ? pl->work : NULL;
}

const int32_t *ikv_plan_work_entries(const ikv_plan *pl) { return pl ? pl->work_entries : NULL; }

const ikv_page_id *ikv_plan_prefetch_hints(const ikv_plan *pl, uint32_t *n) {
  if (n) *n = pl ? pl->n_hints : 0;
  return pl ? pl->hints : NULL;
}

const ikv_span_decision *ikv_plan_decisions(const ikv_plan *pl, uint32_t *n) {
  if (n) *n = pl ? pl->n_decisions : 0;
  return pl ? pl->decisions : NULL;
}

ikv_status ikv_plan_get_stats(const ikv_plan *pl, ikv_plan_stats *out) {
  if (!pl || !out) return IKV_E_NULL;
  *out = pl->stats;
  return IKV_OK;
}

ikv_status ikv_plan_count_selected(ikv_runtime *rt, ikv_plan *pl, void *stream) {
  if (!rt || !pl) return IKV_E_NULL;
  if (rt->active != pl) return rt_fail(rt, IKV_E_INVALID, "ikv_plan_count_selected: the plan is not in flight");
  if (!pl->dsel) return IKV_OK;
  if (!rt->be->read_spans) return rt_fail(rt, IKV_E_UNSUPPORTED, "ikv_plan_count_selected: no device selection here");
  const uint32_t n = pl->n_entries;
  uint16_t *span = malloc(sizeof(uint16_t) * 2 * (n ? n : 1)); /* first[n], then last[n] */
  if (!span) return rt_fail(rt, IKV_E_NO_MEMORY, "ikv_plan_count_selected: out of memory");
  const ikv_status st = rt->be->read_spans(rt, pl, stream, span, span + n);
  if (st == IKV_OK) { /* an entry the GPU left empty reads nothing (first 1, last 0) */
    ikv_plan_stats *s = &pl->stats;
    const uint32_t reserved = s->pages_selected;
    s->pages_selected = 0, s->bytes_read = 0;
    memset(s->pages_by_precision, 0, sizeof(s->pages_by_precision));
    for (uint32_t e = 0; e < n; e++) {
      if (span[e] > span[n + e]) continue;
      const uint8_t p = pl->precision[e];
      s->pages_selected++, s->pages_by_precision[p]++, s->bytes_read += rt->page_bytes[p];
    }
    if (pl->view.per_kv_head) s->bytes_read /= rt->cfg.geometry.kv_heads; /* as resolve counts them */
    /* the empty ones stood in for candidates, all on the GPU tier: hits */
    pl->hits -= reserved - s->pages_selected, s->pages_hit = pl->hits;
  }
  free(span);
  return st == IKV_OK ? IKV_OK : rt_fail(rt, st, "ikv_plan_count_selected: %s", ikv_status_str(st));
}

ikv_status ikv_step_end(ikv_runtime *rt, ikv_plan *pl) {
  if (!rt) return IKV_E_NULL;
  if (!pl || rt->active != pl) return rt_fail(rt, IKV_E_INVALID, "ikv_step_end: the plan is not in flight");
  rt->stats.steps++;
  rt->stats.pages_read += pl->n_entries;
  rt->stats.pages_hit += pl->hits;
  rt->stats.pages_missed += pl->misses;
  rt->stats.bytes_read += pl->stats.bytes_read;
  rt_poll_stalls(rt);
  forget_touched(pl);
  rt->active = NULL;
  return IKV_OK;
}
