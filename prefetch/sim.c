/* The trace-driven hit-rate simulator (prefetch/sim.h). */
#include "prefetch/sim.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/page_format.h"
#include "pagetable/pagetable.h"

#define NEVER UINT32_MAX
#define NONE UINT32_MAX
enum { LOOKAHEAD_STEPS = 8 };

typedef struct sim {
  const ikv_trace *t;
  ikv_sim_params p;
  uint32_t n_ids;
  uint32_t *id;        /* [ref] dense page id */
  uint32_t *next_ref;  /* [ref] next step its page is read after this one (NEVER) */
  uint32_t *next_use;  /* [id] the next step the page is read, as of now */
  uint64_t *bytes;     /* [id] */
  uint8_t *pinned;     /* [id] policy: system and memory pages */
  uint8_t *born;       /* [id] 1: written on the GPU when first read (not fetched) */
  /* per hint source, CSR by step: ids of the pages hinted during it (those read at some point) */
  uint32_t *hint_start[IKV_HINT_SOURCE_COUNT], *hint_id[IKV_HINT_SOURCE_COUNT];
  uint8_t *resident;   /* [id] */
  uint32_t *guard;     /* [id] step whose reads it serves: not evicted while that step is on */
  ikv_history *history; /* decayed read frequencies, the last steps' reads */
  uint32_t *prev, *next, head, tail; /* LRU list of resident pages, most recent at head */
  uint64_t *heap;      /* belady: (next_use << 32 | id), a max-heap with stale entries */
  size_t heap_n, heap_cap;
  uint64_t used, cap;
} sim;

/* ---- page ids ---------------------------------------------------------------- */

/* Open addressing from a 64-bit key to a slot holding NONE until set. */
typedef struct idmap {
  uint64_t *key;
  uint32_t *val;
  size_t mask;
} idmap;

static int idmap_init(idmap *m, size_t n) {
  size_t slots = 1024;
  while (slots < 2 * n) slots <<= 1;
  m->key = malloc(sizeof(uint64_t) * slots), m->val = malloc(sizeof(uint32_t) * slots), m->mask = slots - 1;
  if (m->val) memset(m->val, 0xff, sizeof(uint32_t) * slots);
  return m->key && m->val;
}

static uint32_t *idmap_at(idmap *m, uint64_t k) {
  size_t h = (size_t)((k * 0x9e3779b97f4a7c15ull) >> 20) & m->mask;
  while (m->val[h] != NONE && m->key[h] != k) h = (h + 1) & m->mask;
  m->key[h] = k;
  return &m->val[h];
}

/* Dense page ids; and which pages were born on the GPU: first read past
 * every page their sequence had in earlier steps (tokens write_kv just
 * wrote), rather than fetched. Pages of step 0 start on the host. */
static ikv_status assign_ids(sim *s) {
  const ikv_trace *t = s->t;
  idmap pages, seqs;
  ikv_status st = idmap_init(&pages, t->n_refs) && idmap_init(&seqs, t->n_refs) ? IKV_OK : IKV_E_NO_MEMORY;
  s->born = st == IKV_OK ? calloc(t->n_refs, 1) : NULL; /* by id; ids never outnumber refs */
  if (st == IKV_OK && !s->born) st = IKV_E_NO_MEMORY;
  for (uint32_t step = 0; st == IKV_OK && step < t->n_steps; step++) {
    for (uint32_t r = t->step_start[step]; r < t->step_start[step + 1]; r++) {
      const ikv_trace_ref *ref = &t->refs[r];
      uint32_t *v = idmap_at(&pages, (uint64_t)ref->seq << 32 | ref->page);
      if (*v == NONE) {
        const uint32_t high = *idmap_at(&seqs, ref->seq); /* pages 0 .. high - 1 existed before this step */
        *v = s->n_ids++;
        s->born[*v] = step > 0 && high != NONE && ref->page >= high;
      }
      s->id[r] = *v;
    }
    for (uint32_t r = t->step_start[step]; r < t->step_start[step + 1]; r++) {
      uint32_t *high = idmap_at(&seqs, t->refs[r].seq);
      if (*high == NONE || t->refs[r].page + 1 > *high) *high = t->refs[r].page + 1;
    }
  }
  /* the hinted pages that the trace reads at some point, by source and step */
  for (int src = 0; st == IKV_OK && src < IKV_HINT_SOURCE_COUNT; src++) {
    size_t n_hinted = 0;
    for (size_t h = 0; h < t->n_hints; h++) n_hinted += t->hints[h].source == (uint32_t)src ? t->hints[h].count : 0;
    uint32_t *start = s->hint_start[src] = calloc(t->n_steps + 1, sizeof(uint32_t));
    uint32_t *ids = s->hint_id[src] = malloc(sizeof(uint32_t) * (n_hinted + 1));
    if (!start || !ids || n_hinted > UINT32_MAX) {
      st = IKV_E_NO_MEMORY;
      break;
    }
    uint32_t n = 0;
    for (size_t h = 0; h < t->n_hints; h++) {
      const ikv_trace_hint *hn = &t->hints[h];
      if (hn->source != (uint32_t)src) continue;
      for (uint64_t p = hn->first; p < (uint64_t)hn->first + hn->count; p++) {
        const uint32_t id = *idmap_at(&pages, (uint64_t)hn->seq << 32 | (uint32_t)p);
        if (id != NONE) ids[n++] = id;
      }
      start[hn->step + 1] = n;
    }
    for (uint32_t step = 1; step <= t->n_steps; step++)
      if (start[step] < start[step - 1]) start[step] = start[step - 1];
  }
  free(pages.key), free(pages.val), free(seqs.key), free(seqs.val);
  return st;
}

/* ---- the LRU list ------------------------------------------------------------ */

static void lru_unlink(sim *s, uint32_t i) {
  if (s->prev[i] != NONE) s->next[s->prev[i]] = s->next[i];
  else s->head = s->next[i];
  if (s->next[i] != NONE) s->prev[s->next[i]] = s->prev[i];
  else s->tail = s->prev[i];
}

static void lru_front(sim *s, uint32_t i) {
  s->prev[i] = NONE, s->next[i] = s->head;
  if (s->head != NONE) s->prev[s->head] = i;
  s->head = i;
  if (s->tail == NONE) s->tail = i;
}

/* ---- the Belady heap ------------------------------------------------------ */

static int heap_push(sim *s, uint32_t i) {
  if (s->heap_n == s->heap_cap) {
    size_t cap = s->heap_cap ? 2 * s->heap_cap : 1024;
    uint64_t *h = realloc(s->heap, sizeof(uint64_t) * cap);
    if (!h) return 0;
    s->heap = h, s->heap_cap = cap;
  }
  size_t c = s->heap_n++;
  s->heap[c] = (uint64_t)s->next_use[i] << 32 | i;
  while (c && s->heap[(c - 1) / 2] < s->heap[c]) {
    uint64_t x = s->heap[c];
    s->heap[c] = s->heap[(c - 1) / 2], s->heap[(c - 1) / 2] = x, c = (c - 1) / 2;
  }
  return 1;
}

static uint64_t heap_pop(sim *s) {
  uint64_t top = s->heap[0];
  s->heap[0] = s->heap[--s->heap_n];
  for (size_t c = 0;;) {
    size_t l = 2 * c + 1, r = l + 1, m = c;
    if (l < s->heap_n && s->heap[l] > s->heap[m]) m = l;
    if (r < s->heap_n && s->heap[r] > s->heap[m]) m = r;
    if (m == c) break;
    uint64_t x = s->heap[c];
    s->heap[c] = s->heap[m], s->heap[m] = x, c = m;
  }
  return top;
}

/* ---- the cache ----------------------------------------------------------------- */

/* The page to evict, never one guarded for step `protect`, or NONE: LRU
 * order (pinned pages stay under the policy predictor), or for Belady the
 * page read farthest ahead, and only if that is later than `needed_at`
 * (else keeping the newcomer would not pay). */
static uint32_t victim(sim *s, uint32_t protect, uint32_t needed_at) {
  if (s->p.predictor == IKV_PREDICT_BELADY) {
    while (s->heap_n) {
      const uint64_t top = s->heap[0];
      const uint32_t i = (uint32_t)top, at = (uint32_t)(top >> 32);
      if (!s->resident[i] || s->next_use[i] != at) { /* stale */
        heap_pop(s);
        continue;
      }
      if (at <= needed_at || s->guard[i] == protect) return NONE;
      heap_pop(s);
      return i;
    }
    return NONE;
  }
  for (uint32_t i = s->tail; i != NONE; i = s->prev[i])
    if (s->guard[i] != protect && !(s->p.predictor == IKV_PREDICT_POLICY && s->pinned[i])) return i;
  return NONE;
}

/* Brings page i in for step `serves` (whose pages are not evicted for it),
 * evicting what it must; 0 if it does not go in. */
static int insert(sim *s, uint32_t i, uint32_t serves) {
  if (s->bytes[i] > s->cap) return 0;
  while (s->used + s->bytes[i] > s->cap) {
    uint32_t v = victim(s, serves, s->next_use[i]);
    if (v == NONE) return 0;
    s->resident[v] = 0, s->used -= s->bytes[v];
    if (s->p.predictor != IKV_PREDICT_BELADY) lru_unlink(s, v);
  }
  s->resident[i] = 1, s->used += s->bytes[i], s->guard[i] = serves;
  if (s->p.predictor == IKV_PREDICT_BELADY) return heap_push(s, i);
  lru_front(s, i);
  return 1;
}

static void touch(sim *s, uint32_t i, uint32_t step) {
  s->guard[i] = step;
  if (s->p.predictor == IKV_PREDICT_BELADY) heap_push(s, i); /* its next use moved */
  else lru_unlink(s, i), lru_front(s, i);
}

/* ---- prefetch ------------------------------------------------------------------ */

/* After step `step`: candidates for step + 1, best first, into cand. */
static uint32_t predict(sim *s, uint32_t step, uint32_t *cand, uint8_t *mark) {
  const ikv_trace *t = s->t;
  uint32_t n = 0;
  if (s->p.predictor == IKV_PREDICT_BELADY) { /* the next steps' pages, soonest first */
    for (uint32_t st = step + 1; st < t->n_steps && st <= step + LOOKAHEAD_STEPS; st++)
      for (uint32_t r = t->step_start[st]; r < t->step_start[st + 1]; r++)
        if (!mark[s->id[r]]) mark[s->id[r]] = 1, cand[n++] = s->id[r];
    for (uint32_t k = 0; k < n; k++) mark[cand[k]] = 0;
    return n;
  }
  const uint32_t *first = NULL;
  uint32_t n_first = 0;
  if (s->p.predictor == IKV_PREDICT_HINTS || s->p.predictor == IKV_PREDICT_MARGIN) { /* what the step said, first */
    const int src = s->p.predictor == IKV_PREDICT_HINTS ? IKV_HINT_SCHEDULER : IKV_HINT_MARGIN;
    first = s->hint_id[src] + s->hint_start[src][step];
    n_first = s->hint_start[src][step + 1] - s->hint_start[src][step];
  }
  return ikv_predict_next(s->history, first, n_first, cand, (uint32_t)t->n_refs);
}

ikv_status ikv_sim_run(const ikv_trace *t, const ikv_sim_params *p, ikv_sim_result *out) {
  if (!t || !p || !out) return IKV_E_NULL;
  if (!t->n_steps || !t->n_refs || !(p->cache_fraction > 0.0 && p->cache_fraction <= 1.0) || !(p->link_gbs > 0.0) ||
      !(p->step_us >= 0.0) || (unsigned)p->predictor >= IKV_PREDICTOR_COUNT)
    return IKV_E_INVALID;
  sim s;
  memset(&s, 0, sizeof(s));
  s.t = t, s.p = *p, s.head = s.tail = NONE;
  const size_t R = t->n_refs;
  s.id = malloc(sizeof(uint32_t) * R);
  s.next_ref = malloc(sizeof(uint32_t) * R);
  ikv_status st = s.id && s.next_ref ? assign_ids(&s) : IKV_E_NO_MEMORY;
  const uint32_t N = s.n_ids;
  uint32_t *cand = NULL;
  uint8_t *mark = NULL;
  if (st == IKV_OK) {
    s.next_use = malloc(sizeof(uint32_t) * N), s.bytes = malloc(sizeof(uint64_t) * N);
    s.pinned = calloc(N, 1), s.resident = calloc(N, 1), s.guard = malloc(sizeof(uint32_t) * N);
    uint32_t widest = 1;
    for (uint32_t step = 0; step < t->n_steps; step++)
      if (t->step_start[step + 1] - t->step_start[step] > widest) widest = t->step_start[step + 1] - t->step_start[step];
    if (ikv_history_create(N, widest, &s.history) != IKV_OK) st = IKV_E_NO_MEMORY;
    s.prev = malloc(sizeof(uint32_t) * N), s.next = malloc(sizeof(uint32_t) * N);
    cand = malloc(sizeof(uint32_t) * R), mark = calloc(N, 1); /* a step's reads, or distinct pages */
    if (!s.next_use || !s.bytes || !s.pinned || !s.resident || !s.guard || !s.history || !s.prev || !s.next || !cand || !mark)
      st = IKV_E_NO_MEMORY;
  }
  if (st == IKV_OK) {
    memset(s.bytes, 0, sizeof(uint64_t) * N);
    memset(s.guard, 0xff, sizeof(uint32_t) * N);
    uint64_t total = 0;
    for (size_t r = 0; r < R; r++) {
      const uint32_t i = s.id[r];
      if (s.bytes[i]) continue; /* its first record decides */
      s.bytes[i] = (uint64_t)t->geometry.layers * ikv_page_layer_bytes(&t->geometry, (ikv_precision)t->refs[r].precision);
      s.pinned[i] = t->refs[r].kind == IKV_SPAN_SYSTEM || t->refs[r].kind == IKV_SPAN_MEMORY;
      total += s.bytes[i];
    }
    /* next uses, walking back */
    for (uint32_t i = 0; i < N; i++) s.next_use[i] = NEVER;
    for (uint32_t step = t->n_steps; step-- > 0;) {
      for (uint32_t r = t->step_start[step]; r < t->step_start[step + 1]; r++) s.next_ref[r] = s.next_use[s.id[r]];
      for (uint32_t r = t->step_start[step]; r < t->step_start[step + 1]; r++) s.next_use[s.id[r]] = step;
    }
    s.cap = (uint64_t)(p->cache_fraction * (double)total);
    memset(out, 0, sizeof(*out));
    out->trace_bytes = total, out->cache_bytes = s.cap;
  }
  const double bytes_per_us = p->link_gbs * 1e3, budget = p->step_us * bytes_per_us;
  double stall = 0.0;
  for (uint32_t step = 0; st == IKV_OK && step < t->n_steps; step++) {
    uint64_t demand = 0;
    const uint32_t r0 = t->step_start[step], r1 = t->step_start[step + 1];
    for (uint32_t r = r0; r < r1; r++) /* what the step reads stays while it runs */
      if (s.resident[s.id[r]]) s.guard[s.id[r]] = step;
    for (uint32_t r = r0; r < r1; r++) { /* pages write_kv just made: in without a transfer */
      const uint32_t i = s.id[r];
      if (s.born[i] != 1) continue;
      s.born[i] = 2;
      if (!insert(&s, i, step)) s.guard[i] = step; /* written and read, not kept */
    }
    for (uint32_t r = r0; r < r1; r++) { /* what this step finds */
      const uint32_t i = s.id[r];
      out->refs++;
      if (s.resident[i] || s.born[i]) out->hits++;
    }
    for (uint32_t r = r0; r < r1; r++) s.born[s.id[r]] = 0;
    for (uint32_t r = t->step_start[step]; r < t->step_start[step + 1]; r++) {
      const uint32_t i = s.id[r];
      s.next_use[i] = s.next_ref[r];
      if (s.resident[i]) {
        touch(&s, i, step);
      } else if (s.guard[i] != step) { /* first read of a missing page this step */
        demand += s.bytes[i];
        if (!insert(&s, i, step)) s.guard[i] = step; /* read through, not kept */
      }
    }
    stall += (double)demand / bytes_per_us;
    out->bytes_demand += demand;
    ikv_history_record(s.history, s.id + r0, r1 - r0);
    ikv_history_end_step(s.history);
    if (p->predictor == IKV_PREDICT_NONE) continue;
    const uint32_t n = predict(&s, step, cand, mark);
    double moved = 0.0;
    for (uint32_t k = 0; k < n; k++) {
      const uint32_t i = cand[k];
      if (s.born[i]) continue; /* the next step writes it */
      if (s.resident[i]) {
        s.guard[i] = step + 1; /* keep what the next step will read */
        continue;
      }
      if (moved + (double)s.bytes[i] > budget) break;
      if (!insert(&s, i, step + 1)) { /* (next_use[i] is already its next read) */
        if (p->predictor == IKV_PREDICT_BELADY) continue; /* nothing worth evicting for it */
        break;
      }
      moved += (double)s.bytes[i];
      out->bytes_prefetch += s.bytes[i];
    }
  }
  if (st == IKV_OK) {
    out->hit_rate = (double)out->hits / (double)out->refs;
    out->stall_us_per_step = stall / t->n_steps;
  }
  free(s.id), free(s.next_ref), free(s.next_use), free(s.bytes), free(s.pinned), free(s.born), free(s.resident), free(s.guard);
  ikv_history_destroy(s.history), free(s.prev), free(s.next), free(s.heap), free(cand), free(mark);
  for (int src = 0; src < IKV_HINT_SOURCE_COUNT; src++) free(s.hint_start[src]), free(s.hint_id[src]);
  return st;
}
