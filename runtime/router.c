/* The router: one sequence's semantic spans, budgets and memory pressure
 * turned into the pages its rows read, each with a precision and a token mask.
 * Rules (docs/router.md): sinks and the recent window are always read; ALWAYS
 * and GLOBAL spans are read in full; SKIP spans never (a page shared with a
 * read span says so); ATTEND spans, RECENT spans outside the window and tokens
 * no span covers compete for the budgets by score (span mode) or by
 * query-aware page score, top-k per KV head; IntentQuant picks precisions.
 * Every rule is a token range, so the router works on the segments those
 * ranges cut the pages into (rt_seg): a step per segment, not per page,
 * except where pages differ (a byte budget over stored precisions, ranking). */
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
  uint32_t P, b, n_chunks, n_marks, n_segs, hints;
  int picks;      /* the host picks each KV head's pages (query-aware, not select_on_device) */
  uint32_t words; /* a KV head's row of picked: words of 64 candidates */
  uint64_t tokens_used, bytes_used;
  /* device selection: this sequence's candidates of each precision, and the first of them */
  uint32_t dsel_count[IKV_PRECISION_COUNT], dsel_first[IKV_PRECISION_COUNT];
} route;

static uint16_t min16(uint16_t a, uint16_t b) { return a < b ? a : b; }
static uint16_t max16(uint16_t a, uint16_t b) { return a > b ? a : b; }

static uint32_t first_page(const route *r, uint32_t start) { return start / r->P; }
static uint32_t last_page(const route *r, uint32_t end) { return (end - 1) / r->P; }
static uint32_t pages_of(const route *r, uint32_t start, uint32_t end) {
  return last_page(r, end) - first_page(r, start) + 1;
}

/* A mandatory rule reads tokens [a, b) at `prec` (painted on the segments
 * once they are cut); returns the pages it touches. */
static uint32_t mark(route *r, uint32_t a, uint32_t b, uint8_t prec) {
  r->plan->marks[r->n_marks++] = (rt_mark){a, b, prec};
  return pages_of(r, a, b);
}

/* Pages of tokens [a, b) the GPU page cache keeps while this plan is the
 * latest (sinks, recent window, ALWAYS and GLOBAL spans). */
static void keep(const route *r, uint32_t a, uint32_t b) {
  uint32_t *restrict stamp = r->rt->keep_stamp;
  const ikv_page_id *restrict pages = r->v.pages;
  const uint32_t now = r->rt->build_seq, end = a < b ? last_page(r, b) + 1 : 0;
  for (uint32_t i = first_page(r, a); i < end; i++) stamp[pages[i]] = now;
}

static uint64_t page_cost_bytes(const route *r, uint32_t i, uint8_t want) {
  return r->rt->page_bytes[rt_effective(want, r->v.precisions[i])];
}

/* ---- segments ---------------------------------------------------------------- */

static void set_cut(uint64_t *cuts, uint32_t page) { cuts[page / 64] |= 1ull << (page % 64); }

/* The cuts tokens [a, b) make: at their first page and after their last,
 * and around an edge page they cover in part. */
static void cut(const route *r, uint64_t *cuts, uint32_t a, uint32_t b) {
  set_cut(cuts, first_page(r, a)), set_cut(cuts, last_page(r, b) + 1);
  if (a % r->P) set_cut(cuts, first_page(r, a) + 1);
  if (b % r->P) set_cut(cuts, last_page(r, b));
}

/* The segments between the cuts, in page order: the cuts as bits (a word
 * covers 64 pages), so that no sort is needed. */
static void cut_segments(route *r) {
  ikv_plan *pl = r->plan;
  const uint32_t N = r->v.n_pages, words = N / 64 + 1;
  uint64_t *cuts = pl->cuts;
  memset(cuts, 0, sizeof(uint64_t) * words);
  for (uint32_t m = 0; m < r->n_marks; m++) cut(r, cuts, pl->marks[m].start, pl->marks[m].end);
  for (uint32_t c = 0; c < r->n_chunks; c++) cut(r, cuts, pl->chunks[c].start, pl->chunks[c].end);
  set_cut(cuts, N);
  r->n_segs = 0;
  uint32_t from = 0;
  for (uint32_t w = 0; w < words; w++)
    for (uint64_t bits = cuts[w]; bits; bits &= bits - 1) {
      const uint32_t at = w * 64 + (uint32_t)__builtin_ctzll(bits);
      if (at == from) continue; /* page 0, or an empty sequence */
      pl->segs[r->n_segs++] = (rt_seg){.first = from, .end = at, .sel_lo = UINT16_MAX, .sel_hi = 0, .cand_lo = UINT16_MAX,
                                       .cand_hi = 0, .sel_want = IKV_SKIP, .cand_want = IKV_SKIP};
      from = at;
    }
}

/* The segment holding page i. */
static uint32_t seg_at(const route *r, uint32_t i) {
  const rt_seg *s = r->plan->segs;
  uint32_t lo = 0, hi = r->n_segs;
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (s[mid].first <= i) lo = mid;
    else hi = mid;
  }
  return lo;
}

/* The mask tokens [a, b) give each page of segment s, one of the segments
 * they cover (a partly covered page is a segment of its own). */
static uint16_t seg_lo(const route *r, const rt_seg *s, uint32_t a) {
  return (uint16_t)(s->first == first_page(r, a) ? a % r->P : 0);
}
static uint16_t seg_hi(const route *r, const rt_seg *s, uint32_t b) {
  return (uint16_t)(s->end - 1 == last_page(r, b) ? (b - 1) % r->P : r->P - 1);
}

/* Tokens [a, b) read (cand = 0) or offered for ranking (cand = 1) at `prec`. */
static void paint(route *r, uint32_t a, uint32_t b, uint8_t prec, int cand) {
  const uint32_t last = last_page(r, b);
  for (uint32_t k = seg_at(r, first_page(r, a)); k < r->n_segs && r->plan->segs[k].first <= last; k++) {
    rt_seg *s = &r->plan->segs[k];
    uint8_t *want = cand ? &s->cand_want : &s->sel_want;
    uint16_t *lo = cand ? &s->cand_lo : &s->sel_lo, *hi = cand ? &s->cand_hi : &s->sel_hi;
    *want = rt_best(*want, prec);
    *lo = min16(*lo, seg_lo(r, s, a)), *hi = max16(*hi, seg_hi(r, s, b));
  }
}

/* Segment k cut before page `at` (a budget took the pages before it). */
static void split(route *r, uint32_t k, uint32_t at) {
  rt_seg *s = r->plan->segs;
  memmove(s + k + 2, s + k + 1, sizeof(rt_seg) * (r->n_segs - k - 1));
  s[k + 1] = s[k];
  s[k + 1].first = s[k].end = at;
  r->n_segs++;
}

/* Whether segment s competes for the budget: an ATTEND candidate that no
 * mandatory rule already reads. */
static int competes(const rt_seg *s) { return s->cand_want != IKV_SKIP && s->sel_want == IKV_SKIP; }

/* ---- picks: a bit per candidate ------------------------------------------------ */

static const uint64_t *picks_of(const route *r, uint32_t h) { return r->plan->picked + (size_t)h * r->words; }
static const uint64_t *picked_by_any(const route *r) { return picks_of(r, r->rt->cfg.geometry.kv_heads); }

static int bit(const uint64_t *bits, uint32_t c) { return (int)(bits[c / 64] >> (c % 64) & 1); }

/* The first set bit at c or after it, below `to` (else to). */
static uint32_t next_bit(const uint64_t *bits, uint32_t c, uint32_t to) {
  if (c >= to) return to;
  uint32_t w = c / 64;
  uint64_t word = bits[w] & ~0ull << (c % 64);
  while (!word) {
    if (++w * 64 >= to) return to;
    word = bits[w];
  }
  const uint32_t at = w * 64 + (uint32_t)__builtin_ctzll(word);
  return at < to ? at : to;
}

/* Set bits in [from, to). */
static uint32_t count_bits(const uint64_t *bits, uint32_t from, uint32_t to) {
  uint32_t n = 0;
  for (uint32_t c = from; c < to;) {
    const uint32_t w = c / 64, end = (w + 1) * 64 < to ? (w + 1) * 64 : to;
    uint64_t word = bits[w] >> (c % 64);
    if (end - c < 64) word &= (1ull << (end - c)) - 1;
    n += (uint32_t)__builtin_popcountll(word);
    c = end;
  }
  return n;
}

/* Of competing segment s's pages, those bits picks (by candidate index). */
static uint32_t seg_picks(const rt_seg *s, const uint64_t *bits) {
  return count_bits(bits, s->cand_at, s->cand_at + (s->end - s->first));
}

/* ---- decisions and chunks ---------------------------------------------------- */

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

/* ---- span mode ---------------------------------------------------------------- */

/* How many of segment s's pages, in order, fit the budgets read at t tokens
 * each and at `prec`; they are counted as used. */
static uint32_t fitting(route *r, const rt_seg *s, uint64_t t, uint8_t prec) {
  const ikv_router_params *rp = r->rp;
  uint32_t n = s->end - s->first;
  if (rp->token_budget) {
    const uint64_t room = r->tokens_used < rp->token_budget ? rp->token_budget - r->tokens_used : 0;
    if (room / t < n) n = (uint32_t)(room / t);
  }
  uint32_t k = n;
  if (rp->byte_budget) /* pages cost what they are stored as: one at a time */
    for (k = 0; k < n; k++) {
      const uint64_t bytes = page_cost_bytes(r, s->first + k, prec);
      if (r->bytes_used + bytes > rp->byte_budget) break;
      r->bytes_used += bytes;
    }
  r->tokens_used += k * t;
  return k;
}

/* Chunks by score, pages in logical order, until a budget says no. */
static void select_by_span_score(route *r) {
  ikv_plan *pl = r->plan;
  qsort(pl->chunks, r->n_chunks, sizeof(rt_chunk), by_score);
  for (uint32_t c = 0; c < r->n_chunks; c++) {
    rt_chunk *ch = &pl->chunks[c];
    ikv_span_decision *d = &pl->decisions[ch->decision];
    const uint32_t last = last_page(r, ch->end), total = pages_of(r, ch->start, ch->end);
    if (ch->precision == IKV_SKIP) {
      d->reason = IKV_REASON_ATTEND_PRESSURE;
      d->pages_skipped += total;
      continue;
    }
    uint32_t taken = 0;
    int stopped = 0;
    for (uint32_t k = seg_at(r, first_page(r, ch->start)); k < r->n_segs && pl->segs[k].first <= last; k++) {
      rt_seg *s = &pl->segs[k];
      const uint16_t lo = seg_lo(r, s, ch->start), hi = seg_hi(r, s, ch->end);
      const uint32_t n = s->end - s->first;
      if (s->sel_want != IKV_SKIP) { /* already read: widen its mask */
        const uint16_t nlo = min16(s->sel_lo, lo), nhi = max16(s->sel_hi, hi);
        r->tokens_used += (uint64_t)n * ((uint64_t)(nhi - nlo) - (s->sel_hi - s->sel_lo));
        s->sel_lo = nlo, s->sel_hi = nhi;
        s->sel_want = rt_best(s->sel_want, ch->precision);
        taken += n;
        continue;
      }
      if (!stopped) {
        const uint32_t fit = fitting(r, s, (uint64_t)(hi - lo) + 1, ch->precision);
        if (fit) {
          if (fit < n) split(r, k, s->first + fit); /* the rest is the next segment */
          s->sel_want = ch->precision, s->sel_lo = lo, s->sel_hi = hi;
          taken += fit;
        }
        stopped = fit < n;
        if (fit) continue;
      }
      for (uint32_t i = s->first; i < s->end && r->hints < IKV_HINTS_PER_SEQ && pl->n_hints < pl->cap_entries; i++) {
        pl->hints[pl->n_hints++] = r->v.pages[i]; /* next in line: likely soon */
        r->hints++;
      }
    }
    d->pages_selected += taken;
    d->pages_skipped += total - taken;
    d->precision = rt_best(d->precision, taken ? ch->precision : IKV_SKIP);
    d->reason = taken == total ? IKV_REASON_ATTEND_SELECTED : taken ? IKV_REASON_ATTEND_PARTIAL : IKV_REASON_ATTEND_BUDGET;
  }
}

/* The row as runs: the segments read, neighbours read alike merged (so a
 * row's runs do not depend on where rules cut it). */
static void record_runs(route *r) {
  ikv_plan *pl = r->plan;
  const uint32_t from = pl->run_at[r->b];
  uint32_t n = from;
  for (uint32_t k = 0; k < r->n_segs; k++) {
    const rt_seg *s = &pl->segs[k];
    if (s->sel_want == IKV_SKIP) continue;
    rt_run *prev = n > from ? &pl->runs[n - 1] : NULL;
    if (prev && prev->first + prev->count == s->first && prev->lo == s->sel_lo && prev->hi == s->sel_hi &&
        prev->want == s->sel_want)
      prev->count += s->end - s->first;
    else
      pl->runs[n++] = (rt_run){s->first, s->end - s->first, s->sel_lo, s->sel_hi, s->sel_want};
  }
  pl->run_at[r->b + 1] = n;
}

/* ---- query-aware modes ---------------------------------------------------------- */

/* The ATTEND chunks offered for ranking (painted as candidates); pressure
 * bands that skip a chunk say so. */
static void mark_candidates(route *r) {
  ikv_plan *pl = r->plan;
  for (uint32_t c = 0; c < r->n_chunks; c++) {
    rt_chunk *ch = &pl->chunks[c];
    if (ch->precision == IKV_SKIP) {
      pl->decisions[ch->decision].reason = IKV_REASON_ATTEND_PRESSURE;
      continue;
    }
    paint(r, ch->start, ch->end, ch->precision, 1);
  }
}

/* Each chunk's decision in the query-aware modes: of its pages, `read` counts
 * those a mandatory rule reads and those on_device or a KV head took. */
static void chunk_decisions(route *r, int on_device) {
  ikv_plan *pl = r->plan;
  for (uint32_t c = 0; c < r->n_chunks; c++) {
    rt_chunk *ch = &pl->chunks[c];
    const uint32_t last = last_page(r, ch->end), total = pages_of(r, ch->start, ch->end);
    if (ch->precision == IKV_SKIP) {
      pl->decisions[ch->decision].pages_skipped += total;
      continue;
    }
    uint32_t read = 0;
    for (uint32_t k = seg_at(r, first_page(r, ch->start)); k < r->n_segs && pl->segs[k].first <= last; k++) {
      const rt_seg *s = &pl->segs[k];
      if (s->sel_want != IKV_SKIP) {
        read += s->end - s->first;
        continue;
      }
      read += on_device ? s->offered : seg_picks(s, picked_by_any(r));
    }
    ikv_span_decision *d = &pl->decisions[ch->decision];
    d->pages_selected += read;
    d->pages_skipped += total - read;
    d->precision = rt_best(d->precision, read ? ch->precision : IKV_SKIP);
    d->reason = on_device        ? IKV_REASON_ATTEND_ON_DEVICE
                : read == total ? IKV_REASON_ATTEND_SELECTED
                : read          ? IKV_REASON_ATTEND_PARTIAL
                                : IKV_REASON_ATTEND_NOT_TOPK;
  }
}

/* Device selection: the candidates on the GPU tier (not already read for a
 * mandatory rule) go to the GPU, which ranks them at decode time; each row
 * reserves entries for them (emit_rows). They stay on the GPU for the step. */
static ikv_status offer_to_device(route *r) {
  ikv_plan *pl = r->plan;
  ikv_runtime *rt = r->rt;
  const uint32_t base = pl->n_dsel;
  const int32_t *slots = r->v.gpu_slots;
  mark_candidates(r);
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) r->dsel_first[p] = UINT32_MAX;
  uint32_t n = 0; /* the competing pages; where they might not fit, those on the GPU tier alone */
  for (uint32_t k = 0; k < r->n_segs; k++) n += competes(&pl->segs[k]) ? pl->segs[k].end - pl->segs[k].first : 0;
  if (n > IKV_CUDA_RANK_MAX || base + n > pl->scratch_pages) {
    n = 0;
    for (uint32_t k = 0; k < r->n_segs; k++)
      for (uint32_t i = pl->segs[k].first; competes(&pl->segs[k]) && i < pl->segs[k].end; i++) n += slots[i] != IKV_NO_SLOT;
  }
  if (n > IKV_CUDA_RANK_MAX)
    return rt_fail(rt, IKV_E_UNSUPPORTED, "ikv_plan_build: sequence %u: %u candidates; the GPU ranks at most %d",
                   r->b, n, IKV_CUDA_RANK_MAX);
  if (base + n > pl->scratch_pages)
    return rt_fail(rt, IKV_E_CAPACITY, "ikv_plan_build: %u candidates over the batch; a plan holds %u", base + n,
                   pl->scratch_pages);
  /* the lists' ends and counts in locals: stored through the plan's
   * pointers they would be reloaded after every store (they may alias) */
  const ikv_page_id *restrict pages = r->v.pages;
  const uint8_t *restrict precisions = r->v.precisions;
  ikv_page_id *restrict dsel_pages = pl->dsel_pages;
  ikv_select_candidate *restrict cand = pl->dsel_cand;
  uint32_t *restrict read_stamp = rt->read_stamp;
  const uint32_t stamp = rt->build_seq;
  uint32_t at = pl->n_dsel, count[IKV_PRECISION_COUNT] = {0};
  for (uint32_t k = 0; k < r->n_segs; k++) {
    rt_seg *s = &pl->segs[k];
    const uint32_t from = at;
    for (uint32_t i = s->first; competes(s) && i < s->end; i++) {
      if (slots[i] == IKV_NO_SLOT) continue;
      const uint8_t prec = precisions[i];
      if (!count[prec]++) r->dsel_first[prec] = at;
      dsel_pages[at] = pages[i];
      cand[at++] = (ikv_select_candidate){pages[i], slots[i], (int32_t)i, s->cand_lo, s->cand_hi, prec};
      read_stamp[pages[i]] = stamp; /* the GPU may read it: it stays */
    }
    s->offered = at - from;
  }
  memcpy(r->dsel_count, count, sizeof(count));
  pl->n_dsel = at;
  pl->dsel_seq[r->b + 1] = at;
  chunk_decisions(r, 1);
  return IKV_OK;
}

/* The pages that compete, in logical order, into order[] (with their
 * segments in cand_seg[], and each competing segment's first one in its
 * cand_at); returns how many. */
static uint32_t list_candidates(route *r) {
  ikv_plan *pl = r->plan;
  uint32_t n = 0;
  for (uint32_t k = 0; k < r->n_segs; k++) {
    pl->segs[k].cand_at = n;
    for (uint32_t i = pl->segs[k].first; competes(&pl->segs[k]) && i < pl->segs[k].end; i++)
      pl->cand_seg[n] = k, pl->order[n++] = i;
  }
  return n;
}

/* Query-aware modes: candidate pages ranked per KV head by page score; each
 * head takes its top-k within the budgets. */
static ikv_status select_by_query(route *r) {
  ikv_plan *pl = r->plan;
  ikv_runtime *rt = r->rt;
  const ikv_router_params *rp = r->rp;
  const uint32_t H = rt->cfg.geometry.kv_heads, D = rt->cfg.geometry.head_dim;
  mark_candidates(r);
  const uint32_t n_cand = list_candidates(r);
  r->words = n_cand / 64 + 1;
  memset(pl->picked, 0, sizeof(uint64_t) * (H + 1) * r->words);
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
      const uint32_t c = (uint32_t)keys[(size_t)h * n_cand + k], i = pl->order[c];
      const rt_seg *s = &pl->segs[pl->cand_seg[c]];
      uint64_t t = (uint64_t)(s->cand_hi - s->cand_lo) + 1, by = page_cost_bytes(r, i, s->cand_want);
      if ((rp->token_budget && tokens + t > rp->token_budget) || (rp->byte_budget && bytes + by > rp->byte_budget)) break;
      uint64_t *mine = pl->picked + (size_t)h * r->words, *any = pl->picked + (size_t)H * r->words;
      mine[c / 64] |= 1ull << (c % 64), any[c / 64] |= 1ull << (c % 64);
      tokens += t, bytes += by;
    }
  }
  chunk_decisions(r, 0);
  return IKV_OK;
}

/* ---- the rules ------------------------------------------------------------------ */

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
    uint32_t n = mark(r, 0, sinks, ikv_intentquant(IKV_USE_SINK, pressure));
    keep(r, 0, sinks);
    st = decide(r, 0, IKV_SPAN_KIND_COUNT, IKV_REASON_SINKS, n, 0, ikv_intentquant(IKV_USE_SINK, pressure), NULL);
  }
  if (st == IKV_OK && rp->recent_tokens && L) {
    uint8_t prec = ikv_intentquant(IKV_USE_RECENT, pressure);
    uint32_t n = mark(r, window_start, L, prec);
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
        uint32_t n = mark(r, sp->start, sp->end, prec);
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
        uint32_t in_pages = inside_from < sp->end ? pages_of(r, inside_from, sp->end) : 0;
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

/* Whether some row reads page i of segment s, and the widest mask any row
 * reads it with. */
static int page_read(const route *r, const rt_seg *s, uint32_t i, int query_mode, uint16_t *lo, uint16_t *hi) {
  const int sel = s->sel_want != IKV_SKIP,
            cand = r->picks && competes(s) && bit(picked_by_any(r), s->cand_at + (i - s->first));
  *lo = UINT16_MAX, *hi = 0;
  if (sel) *lo = s->sel_lo, *hi = s->sel_hi;
  if (query_mode && s->cand_want != IKV_SKIP && (sel || cand))
    *lo = min16(*lo, s->cand_lo), *hi = max16(*hi, s->cand_hi);
  return sel || cand;
}

/* Whether page i, read with mask [lo, hi], holds some of span sp's tokens. */
static int holds(const route *r, uint32_t i, uint16_t lo, uint16_t hi, const ikv_span *sp) {
  return i * r->P + lo < sp->end && i * r->P + hi + 1 > sp->start;
}

/* SKIP spans: never selected for themselves; say so when a page read for
 * another span carries some of their tokens inside its mask. A page the
 * span covers in full does under any mask: only its edge pages are tested,
 * and only where a KV head's picks differ page by page is every page. */
static ikv_status skip_spans(route *r, uint32_t n_skip, int query_mode) {
  ikv_plan *pl = r->plan;
  ikv_status st = IKV_OK;
  for (uint32_t k = 0; k < n_skip && st == IKV_OK; k++) {
    const ikv_span *sp = &pl->spans[pl->span_order[k]];
    const uint32_t first = first_page(r, sp->start), last = last_page(r, sp->end);
    uint32_t shared = 0;
    for (uint32_t j = seg_at(r, first); j < r->n_segs && pl->segs[j].first <= last; j++) {
      const rt_seg *s = &pl->segs[j];
      const uint32_t from = s->first > first ? s->first : first, to = s->end <= last ? s->end : last + 1;
      uint16_t lo, hi;
      if (r->picks && s->sel_want == IKV_SKIP) { /* the heads' picks, page by page */
        for (uint32_t i = from; i < to; i++) shared += page_read(r, s, i, 1, &lo, &hi) && holds(r, i, lo, hi, sp);
        continue;
      }
      if (!page_read(r, s, from, query_mode, &lo, &hi)) continue;
      shared += to - from;
      shared -= from == first && !holds(r, first, lo, hi, sp);
      shared -= last != first && to == last + 1 && !holds(r, last, lo, hi, sp);
    }
    st = decide(r, pl->span_ids[pl->span_order[k]], sp->kind,
                shared ? IKV_REASON_SKIP_SHARED_PAGE : IKV_REASON_SKIP_POLICY, shared, last - first + 1 - shared,
                IKV_SKIP, NULL);
  }
  return st;
}

/* ---- rows ------------------------------------------------------------------------- */

/* Entries e.. for pages [first, first + count), all read alike. */
static uint32_t put_run(plan_entries o, uint32_t e, const ikv_page_id *pages, uint32_t first, uint32_t count,
                        uint16_t lo, uint16_t hi, uint8_t want) {
  memcpy(o.page + e, pages + first, sizeof(ikv_page_id) * count);
  memset(o.want + e, want, count);
  for (uint32_t j = 0; j < count; j++)
    o.page_index[e + j] = (int32_t)(first + j), o.first[e + j] = lo, o.last[e + j] = hi;
  return e + count;
}

void rt_route_emit(ikv_plan *plan, const rt_run *runs, uint32_t n_runs, uint32_t skip, const ikv_page_id *pages,
                   uint32_t e) {
  const plan_entries out = plan_entries_of(plan);
  for (uint32_t k = 0; k < n_runs; k++) {
    if (skip >= runs[k].count) {
      skip -= runs[k].count;
      continue;
    }
    e = put_run(out, e, pages, runs[k].first + skip, runs[k].count - skip, runs[k].lo, runs[k].hi, runs[k].want);
    skip = 0;
  }
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

/* Another row like the plan's last, which starts at entry `from` (its
 * entries and its reserved entries' places). */
static void copy_row(ikv_plan *pl, int32_t from) {
  const uint32_t n = pl->n_entries - (uint32_t)from, at = pl->n_entries;
  plan_move_entries(pl, from, (int32_t)at, (int32_t)n);
  const int32_t *prev = pl->dsel_reserved + (size_t)(pl->n_rows - 1) * IKV_PRECISION_COUNT;
  int32_t *reserved = pl->dsel_reserved + (size_t)pl->n_rows * IKV_PRECISION_COUNT;
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) reserved[p] = prev[p] < 0 ? -1 : prev[p] + (int32_t)n;
  pl->n_entries = at + n;
  pl->indptr[++pl->n_rows] = (int32_t)pl->n_entries;
}

/* The entries row h (a KV head's, or span mode's one row) reads. */
static uint32_t row_pages(const route *r, uint32_t h) {
  const ikv_plan *pl = r->plan;
  uint32_t n = 0;
  for (uint32_t k = 0; k < r->n_segs; k++) {
    const rt_seg *s = &pl->segs[k];
    if (s->sel_want != IKV_SKIP) n += s->end - s->first;
    else if (r->picks && s->cand_want != IKV_SKIP) n += seg_picks(s, picks_of(r, h));
  }
  return n;
}

/* Room for the rows; span mode: the row placed (its entries are written
 * where the plan puts it, rt_route_emit), query-aware modes: written. */
static ikv_status emit_rows(route *r, int query_mode) {
  ikv_plan *pl = r->plan;
  const uint32_t N = r->v.n_pages, H = r->rt->cfg.geometry.kv_heads;
  const int dsel = r->rp->select_on_device != 0;
  const uint32_t rows = query_mode ? H : 1;
  uint32_t need = dsel ? rows * reserved_per_row(r) : 0;
  if (!query_mode || pl->n_entries + rows * N + need > pl->cap_entries) /* count only when it might not fit */
    for (uint32_t h = 0; h < rows; h++) need += row_pages(r, h);
  if (pl->n_entries + need > pl->cap_entries)
    return rt_fail(r->rt, IKV_E_CAPACITY, "ikv_plan_build: sequence %u: plan holds %u pages (max_plan_pages), needs %u more",
                   r->b, pl->cap_entries, pl->n_entries + need - pl->cap_entries);
  if (!query_mode) {
    record_runs(r);
    pl->n_entries += need;
    pl->indptr[++pl->n_rows] = (int32_t)pl->n_entries;
    return IKV_OK;
  }
  /* a row per KV head: the mandatory pages and the head's picks */
  const ikv_page_id *restrict pages = r->v.pages;
  for (uint32_t h = 0; h < rows; h++) {
    if (h && !r->picks) { /* no picks on the host (device selection): every head's row is the first's */
      copy_row(pl, pl->indptr[pl->n_rows - 1]);
      continue;
    }
    const uint64_t *picked = r->picks ? picks_of(r, h) : NULL;
    const plan_entries out = plan_entries_of(pl);
    uint32_t n = pl->n_entries;
    for (uint32_t k = 0; k < r->n_segs; k++) {
      const rt_seg *s = &pl->segs[k];
      if (s->sel_want != IKV_SKIP) {
        uint16_t lo = s->sel_lo, hi = s->sel_hi;
        uint8_t want = s->sel_want;
        if (s->cand_want != IKV_SKIP) lo = min16(lo, s->cand_lo), hi = max16(hi, s->cand_hi), want = rt_best(want, s->cand_want);
        n = put_run(out, n, pages, s->first, s->end - s->first, lo, hi, want);
      } else if (picked && s->cand_want != IKV_SKIP) { /* the head's picks among its candidates */
        const uint32_t to = s->cand_at + (s->end - s->first);
        for (uint32_t c = next_bit(picked, s->cand_at, to); c < to; c = next_bit(picked, c + 1, to)) {
          const uint32_t i = s->first + (c - s->cand_at);
          plan_entry_set(out, n++, pages[i], (int32_t)i, s->cand_lo, s->cand_hi, s->cand_want);
        }
      }
    }
    pl->n_entries = n;
    if (dsel) push_reserved(r);
    pl->indptr[++pl->n_rows] = (int32_t)pl->n_entries;
  }
  return IKV_OK;
}

/* What every plan of sequence b starts from: its spans read, the mandatory
 * rules and the competing chunks listed, the segments cut and the mandatory
 * reads painted on them, their cost counted. */
static ikv_status route_open(route *r, uint32_t *n_skip) {
  ikv_runtime *rt = r->rt;
  ikv_plan *plan = r->plan;
  const ikv_plan_request *req = r->req;
  const uint32_t b = r->b;
  ikv_pt_seq_get_view(rt->pt, req->seqs[b], &r->v); /* the sequence was validated */
  uint32_t n_spans;
  if (ikv_pt_span_list(rt->pt, req->seqs[b], plan->span_ids, plan->spans, plan->scratch_spans, &n_spans) != IKV_OK)
    return rt_fail(rt, IKV_E_CAPACITY, "ikv_plan_build: sequence %u has %u spans; a plan takes %u per sequence", b,
                   n_spans, plan->scratch_spans);
  ikv_status st = mandatory_and_chunks(r, n_spans, n_skip);
  /* gaps() sorts span indices after the SKIP list in the order array */
  if (st == IKV_OK) st = gaps(r, n_spans);
  if (st != IKV_OK) return st;
  cut_segments(r);
  for (uint32_t m = 0; m < r->n_marks; m++) paint(r, plan->marks[m].start, plan->marks[m].end, plan->marks[m].precision, 0);
  for (uint32_t k = 0; k < r->n_segs; k++) { /* what the mandatory rules cost (bytes: only a byte budget asks) */
    const rt_seg *s = &plan->segs[k];
    if (s->sel_want == IKV_SKIP) continue;
    r->tokens_used += (uint64_t)(s->end - s->first) * ((uint64_t)(s->sel_hi - s->sel_lo) + 1);
    for (uint32_t i = s->first; r->rp->byte_budget && i < s->end; i++) r->bytes_used += page_cost_bytes(r, i, s->sel_want);
  }
  return IKV_OK;
}

ikv_status rt_route_candidates(ikv_runtime *rt, ikv_plan *plan, const ikv_plan_request *req, uint32_t b) {
  route r = {.rt = rt, .plan = plan, .rp = &req->router, .req = req, .P = rt->cfg.geometry.page_size, .b = b};
  const uint32_t decisions = plan->n_decisions;
  uint32_t n_skip;
  ikv_status st = route_open(&r, &n_skip);
  if (st == IKV_OK) {
    mark_candidates(&r);
    const uint32_t n = list_candidates(&r), at = plan->dsel_seq[b];
    if (at + n > plan->scratch_pages) st = IKV_E_CAPACITY;
    for (uint32_t k = 0; st == IKV_OK && k < n; k++) plan->dsel_pages[at + k] = r.v.pages[plan->order[k]]; /* the order select_by_query ranks them in */
    plan->dsel_seq[b + 1] = at + n;
  }
  plan->n_decisions = decisions; /* the sequence's real pass makes them again */
  return st;
}

ikv_status rt_route_sequence(ikv_runtime *rt, ikv_plan *plan, const ikv_plan_request *req, uint32_t b) {
  route r = {.rt = rt, .plan = plan, .rp = &req->router, .req = req, .P = rt->cfg.geometry.page_size, .b = b,
             .picks = req->router.score_mode != IKV_SCORE_SPAN && !req->router.select_on_device};
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
