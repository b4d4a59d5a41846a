/* Page-selection traces: building, text I/O, and the synthetic generator. */
#include "prefetch/trace.h"

#include <stdlib.h>
#include <string.h>

#include "pagetable/pagetable.h"

ikv_status ikv_trace_init(ikv_trace *t, const ikv_geometry *g) {
  if (!t || !g) return IKV_E_NULL;
  if (ikv_geometry_check(g) != IKV_OK) return IKV_E_INVALID;
  memset(t, 0, sizeof(*t));
  t->geometry = *g;
  return IKV_OK;
}

void ikv_trace_free(ikv_trace *t) {
  if (!t) return;
  free(t->step_start);
  free(t->refs);
  free(t->hints);
  memset(t, 0, sizeof(*t));
}

ikv_status ikv_trace_step(ikv_trace *t) {
  if (!t) return IKV_E_NULL;
  if (t->n_steps + 2 > t->cap_steps) {
    size_t cap = t->cap_steps ? 2 * t->cap_steps : 64;
    uint32_t *s = realloc(t->step_start, sizeof(uint32_t) * cap);
    if (!s) return IKV_E_NO_MEMORY;
    t->step_start = s, t->cap_steps = cap;
  }
  if (t->n_refs > UINT32_MAX) return IKV_E_CAPACITY;
  t->step_start[t->n_steps] = (uint32_t)t->n_refs;
  t->n_steps++;
  t->step_start[t->n_steps] = (uint32_t)t->n_refs;
  return IKV_OK;
}

ikv_status ikv_trace_push(ikv_trace *t, ikv_trace_ref ref) {
  if (!t) return IKV_E_NULL;
  if (!t->n_steps) return IKV_E_INVALID; /* a record before any step */
  if (!ikv_precision_valid(ref.precision)) return IKV_E_PRECISION;
  if (ref.kind >= IKV_SPAN_KIND_COUNT) return IKV_E_INVALID;
  if (t->n_refs >= UINT32_MAX) return IKV_E_CAPACITY;
  if (t->n_refs == t->cap_refs) {
    size_t cap = t->cap_refs ? 2 * t->cap_refs : 1024;
    ikv_trace_ref *r = realloc(t->refs, sizeof(ikv_trace_ref) * cap);
    if (!r) return IKV_E_NO_MEMORY;
    t->refs = r, t->cap_refs = cap;
  }
  t->refs[t->n_refs++] = ref;
  t->step_start[t->n_steps] = (uint32_t)t->n_refs;
  return IKV_OK;
}

static const char *const hint_words[IKV_HINT_SOURCE_COUNT] = {"hint", "near"};

ikv_status ikv_trace_add_hint(ikv_trace *t, ikv_hint_source source, uint32_t seq, uint32_t first, uint32_t count) {
  if (!t) return IKV_E_NULL;
  if (!t->n_steps || !count || first + (uint64_t)count > UINT32_MAX || (unsigned)source >= IKV_HINT_SOURCE_COUNT)
    return IKV_E_INVALID;
  if (t->n_hints == t->cap_hints) {
    size_t cap = t->cap_hints ? 2 * t->cap_hints : 64;
    ikv_trace_hint *h = realloc(t->hints, sizeof(ikv_trace_hint) * cap);
    if (!h) return IKV_E_NO_MEMORY;
    t->hints = h, t->cap_hints = cap;
  }
  t->hints[t->n_hints++] = (ikv_trace_hint){t->n_steps - 1, seq, first, count, source};
  return IKV_OK;
}

ikv_status ikv_trace_write(const ikv_trace *t, FILE *out) {
  if (!t || !out) return IKV_E_NULL;
  const ikv_geometry *g = &t->geometry;
  fprintf(out, "ikv-trace 1 layers=%u kv_heads=%u head_dim=%u page_size=%u\n", g->layers, g->kv_heads, g->head_dim,
          g->page_size);
  size_t h = 0;
  for (uint32_t s = 0; s < t->n_steps; s++) {
    fputs("step\n", out);
    for (uint32_t i = t->step_start[s]; i < t->step_start[s + 1]; i++) {
      const ikv_trace_ref *r = &t->refs[i];
      fprintf(out, "%u %u %s %s\n", r->seq, r->page, ikv_precision_name(r->precision), ikv_span_kind_name(r->kind));
    }
    for (; h < t->n_hints && t->hints[h].step == s; h++)
      fprintf(out, "%s %u %u %u\n", hint_words[t->hints[h].source], t->hints[h].seq, t->hints[h].first,
              t->hints[h].count);
  }
  return ferror(out) ? IKV_E_IO : IKV_OK;
}

static int name_index(const char *name, const char *(*names)(int), int count) {
  for (int i = 0; i < count; i++)
    if (names(i) && !strcmp(name, names(i))) return i;
  return -1;
}

static ikv_status fail_line(char *err, size_t cap, unsigned long line, const char *what) {
  if (err && cap) snprintf(err, cap, "line %lu: %s", line, what);
  return IKV_E_INVALID;
}

ikv_status ikv_trace_read(FILE *in, ikv_trace *out, char *err, size_t err_cap) {
  if (!in || !out) return IKV_E_NULL;
  char line[256];
  unsigned long n = 0;
  ikv_geometry g;
  int version = 0;
  /* the header: the first line that is not a comment */
  while (fgets(line, sizeof(line), in) && (++n, line[0] == '#')) {
  }
  if (!n || line[0] == '#' ||
      sscanf(line, "ikv-trace %d layers=%u kv_heads=%u head_dim=%u page_size=%u", &version, &g.layers, &g.kv_heads,
             &g.head_dim, &g.page_size) != 5)
    return fail_line(err, err_cap, n, "expected 'ikv-trace 1 layers=L kv_heads=H head_dim=D page_size=P'");
  if (version != 1) return fail_line(err, err_cap, n, "unknown trace version");
  ikv_trace t;
  if (ikv_trace_init(&t, &g) != IKV_OK) return fail_line(err, err_cap, n, "invalid geometry");
  ikv_status st = IKV_OK;
  while (st == IKV_OK && fgets(line, sizeof(line), in)) {
    n++;
    if (line[0] == '#' || line[0] == '\n') continue;
    if (!strchr(line, '\n') && !feof(in)) {
      st = fail_line(err, err_cap, n, "line too long");
      break;
    }
    if (!strcmp(line, "step\n") || !strcmp(line, "step")) {
      st = ikv_trace_step(&t);
      continue;
    }
    unsigned seq, page, count;
    char prec[32], kind[32], extra;
    char word[8];
    if (sscanf(line, "%7s", word) == 1 && (!strcmp(word, hint_words[0]) || !strcmp(word, hint_words[1]))) {
      const ikv_hint_source src = strcmp(word, hint_words[0]) ? IKV_HINT_MARGIN : IKV_HINT_SCHEDULER;
      if (sscanf(line + strlen(word), " %u %u %u %c", &seq, &page, &count, &extra) != 3 || !count)
        st = fail_line(err, err_cap, n, "expected 'hint|near <seq> <first page> <count>' (count >= 1)");
      else if (!t.n_steps) st = fail_line(err, err_cap, n, "a hint before the first 'step'");
      else st = ikv_trace_add_hint(&t, src, seq, page, count);
      continue;
    }
    if (sscanf(line, "%u %u %31s %31s %c", &seq, &page, prec, kind, &extra) != 4) {
      st = fail_line(err, err_cap, n, "expected 'step' or '<seq> <page> <precision> <kind>'");
      break;
    }
    int p = name_index(prec, ikv_precision_name, IKV_PRECISION_COUNT), k = name_index(kind, ikv_span_kind_name, IKV_SPAN_KIND_COUNT);
    if (p < 0) st = fail_line(err, err_cap, n, "unknown precision");
    else if (k < 0) st = fail_line(err, err_cap, n, "unknown span kind");
    else if (!t.n_steps) st = fail_line(err, err_cap, n, "a page before the first 'step'");
    else st = ikv_trace_push(&t, (ikv_trace_ref){seq, page, (uint8_t)p, (uint8_t)k});
  }
  if (st == IKV_OK && ferror(in)) st = IKV_E_IO;
  if (st != IKV_OK) {
    ikv_trace_free(&t);
    return st;
  }
  *out = t;
  return IKV_OK;
}

/* ---- the synthetic agentic generator ------------------------------------ */

static uint64_t next(uint64_t *x) {
  *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
  return *x;
}
static uint32_t below(uint64_t *x, uint32_t n) { return n ? (uint32_t)(next(x) % n) : 0; }

enum { SYSTEM_TOKENS = 2048, MEMORY_TOKENS = 1024, DOCS = 8, DOC_TOKENS = 8192, RECENT_TOKENS = 1024,
       BURST_TOKENS = 2048, BURST_EVERY = 12, BURST_HOT_STEPS = 6, TOPIC_STEPS = 40, REREAD_EVERY = 9,
       NEAR_PAGES = 4 };

typedef struct agent {
  uint32_t reread_from; /* the next re-read's first page in its document, drawn (and hinted) a step early */
  uint32_t tokens;     /* grows every step, and by a burst every BURST_EVERY steps */
  uint32_t topic;      /* the document the agent works on */
  uint32_t focus;      /* the page inside it the agent reads around */
  uint32_t last_burst; /* first page of the latest tool output */
  uint32_t burst_step;
} agent;

/* Layout: system prompt, memory, 8 documents, then the sequence's growth
 * (tool outputs and turns, whose last RECENT_TOKENS are the recent window). */
static uint32_t doc_page(uint32_t P, uint32_t d) { return (SYSTEM_TOKENS + MEMORY_TOKENS + d * DOC_TOKENS) / P; }

static ikv_status push_range(ikv_trace *t, uint32_t seq, uint32_t first, uint32_t end, uint8_t prec, uint8_t kind,
                             uint8_t *seen) {
  for (uint32_t p = first; p < end; p++) {
    if (seen[p]) continue; /* a page once per step */
    seen[p] = 1;
    ikv_status st = ikv_trace_push(t, (ikv_trace_ref){seq, p, prec, kind});
    if (st != IKV_OK) return st;
  }
  return IKV_OK;
}

ikv_status ikv_trace_generate(const ikv_trace_gen_params *gp, ikv_trace *out) {
  if (!gp || !out) return IKV_E_NULL;
  const uint32_t P = gp->geometry.page_size, base = SYSTEM_TOKENS + MEMORY_TOKENS + DOCS * DOC_TOKENS;
  if (ikv_geometry_check(&gp->geometry) != IKV_OK || !gp->sequences || !gp->steps || gp->max_tokens < base + RECENT_TOKENS)
    return IKV_E_INVALID;
  const uint32_t bursts = gp->steps / BURST_EVERY;
  /* start so that each sequence reaches max_tokens at the last step */
  uint64_t growth = (uint64_t)gp->steps + (uint64_t)bursts * BURST_TOKENS;
  uint32_t start = gp->max_tokens > base + growth + RECENT_TOKENS ? (uint32_t)(gp->max_tokens - growth) : base + RECENT_TOKENS;
  agent *a = calloc(gp->sequences, sizeof(agent));
  uint8_t *seen = malloc(gp->max_tokens / P + growth / P + 2);
  ikv_trace t;
  ikv_status st = a && seen ? ikv_trace_init(&t, &gp->geometry) : IKV_E_NO_MEMORY;
  if (st != IKV_OK) {
    free(a), free(seen);
    return st;
  }
  uint64_t x = gp->seed * 0x9e3779b97f4a7c15ull + 1;
  for (uint32_t s = 0; s < gp->sequences; s++)
    a[s] = (agent){below(&x, DOC_TOKENS / P / 2), start, below(&x, DOCS), below(&x, DOC_TOKENS / P), 0, 0};
  const uint32_t doc_pages = DOC_TOKENS / P;
  for (uint32_t step = 0; step < gp->steps && st == IKV_OK; step++) {
    st = ikv_trace_step(&t);
    for (uint32_t s = 0; s < gp->sequences && st == IKV_OK; s++) {
      agent *ag = &a[s];
      ag->tokens++;
      if (step % BURST_EVERY == BURST_EVERY - 1) { /* a tool returns */
        ag->last_burst = ag->tokens / P, ag->burst_step = step;
        ag->tokens += BURST_TOKENS;
      }
      if (step % TOPIC_STEPS == TOPIC_STEPS - 1 && below(&x, 2)) ag->topic = below(&x, DOCS); /* drift */
      if (below(&x, 4) == 0) ag->focus = below(&x, doc_pages); /* the reading point jumps */
      else ag->focus = (ag->focus + below(&x, 3)) % doc_pages; /* or creeps */
      const uint32_t n_pages = (ag->tokens + P - 1) / P;
      memset(seen, 0, n_pages);
      st = push_range(&t, s, 0, SYSTEM_TOKENS / P, IKV_FP16, IKV_SPAN_SYSTEM, seen);
      if (st == IKV_OK)
        st = push_range(&t, s, SYSTEM_TOKENS / P, (SYSTEM_TOKENS + MEMORY_TOKENS) / P, IKV_FP16, IKV_SPAN_MEMORY, seen);
      /* the topic document around the focus, a quarter of it */
      const uint32_t d0 = doc_page(P, ag->topic), lo = ag->focus > doc_pages / 8 ? ag->focus - doc_pages / 8 : 0;
      const uint32_t hi = lo + doc_pages / 4 < doc_pages ? lo + doc_pages / 4 : doc_pages;
      if (st == IKV_OK) st = push_range(&t, s, d0 + lo, d0 + hi, IKV_INT8, IKV_SPAN_DOCUMENT, seen);
      if (st == IKV_OK && hi < doc_pages) /* the pages just past the window scored just under the cut */
        st = ikv_trace_add_hint(&t, IKV_HINT_MARGIN, s, d0 + hi, hi + NEAR_PAGES <= doc_pages ? NEAR_PAGES : doc_pages - hi);
      if (st == IKV_OK && step % REREAD_EVERY == 0) { /* another document re-read in part */
        const uint32_t d = doc_page(P, (ag->topic + 1 + step / REREAD_EVERY) % DOCS);
        st = push_range(&t, s, d + ag->reread_from, d + ag->reread_from + doc_pages / 8, IKV_INT8, IKV_SPAN_DOCUMENT, seen);
        ag->reread_from = below(&x, doc_pages / 2);
      }
      if (st == IKV_OK && (step + 1) % REREAD_EVERY == 0) /* the scheduler announces the next re-read */
        st = ikv_trace_add_hint(&t, IKV_HINT_SCHEDULER, s,
                                doc_page(P, (ag->topic + 1 + (step + 1) / REREAD_EVERY) % DOCS) + ag->reread_from,
                                doc_pages / 8);
      if (st == IKV_OK && ag->burst_step + BURST_HOT_STEPS > step && ag->last_burst) /* the latest tool output */
        st = push_range(&t, s, ag->last_burst, ag->last_burst + BURST_TOKENS / P, IKV_FP8_E4M3, IKV_SPAN_TOOL_OUTPUT, seen);
      if (st == IKV_OK) /* the recent window */
        st = push_range(&t, s, n_pages - RECENT_TOKENS / P, n_pages, IKV_FP16, IKV_SPAN_RECENT, seen);
    }
  }
  free(a), free(seen);
  if (st != IKV_OK) {
    ikv_trace_free(&t);
    return st;
  }
  *out = t;
  return IKV_OK;
}
