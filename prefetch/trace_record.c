/* Recording real plans as a trace (prefetch/trace_record.h). */
#include "prefetch/trace_record.h"

#include <stdlib.h>
#include <string.h>

typedef struct read { /* one plan entry */
  uint32_t b, page; /* batch position, logical page */
  uint8_t precision;
} read;

static int by_seq_page(const void *x, const void *y) {
  const read *a = x, *b = y;
  if (a->b != b->b) return a->b < b->b ? -1 : 1;
  return a->page < b->page ? -1 : a->page > b->page;
}

/* The kind of the first span (in the order added) covering tokens
 * [first, end); IKV_SPAN_OTHER if none. */
static uint8_t kind_at(const ikv_span *spans, uint32_t n, uint32_t first, uint32_t end) {
  for (uint32_t i = 0; i < n; i++)
    if (spans[i].start < end && first < spans[i].end) return (uint8_t)spans[i].kind;
  return IKV_SPAN_OTHER;
}

/* A sequence's spans in the order added, into *spans (grown as needed). */
static ikv_status load_spans(const ikv_pagetable *pt, ikv_seq_id seq, ikv_span_id **ids, ikv_span **spans,
                             uint32_t *cap, uint32_t *n) {
  ikv_status st = ikv_pt_span_list(pt, seq, *ids, *spans, *cap, n);
  if (st == IKV_E_CAPACITY) {
    ikv_span_id *more_ids = realloc(*ids, sizeof(ikv_span_id) * *n);
    if (more_ids) *ids = more_ids;
    ikv_span *more = more_ids ? realloc(*spans, sizeof(ikv_span) * *n) : NULL;
    if (!more) return IKV_E_NO_MEMORY;
    *spans = more, *cap = *n;
    st = ikv_pt_span_list(pt, seq, *ids, *spans, *cap, n);
  }
  return st;
}

ikv_status ikv_trace_record_plan(ikv_trace *t, const ikv_runtime *rt, const ikv_plan *plan, const ikv_seq_id *seqs,
                                 const uint32_t *trace_seqs) {
  if (!t || !rt || !plan) return IKV_E_NULL;
  const ikv_pagetable *pt = ikv_runtime_pagetable(rt);
  const ikv_geometry *g = ikv_pt_geometry(pt);
  if (memcmp(g, &t->geometry, sizeof(*g))) return IKV_E_INVALID;
  const ikv_decode_plan *v = ikv_plan_view(plan);
  if (v->batch && (!seqs || !trace_seqs)) return IKV_E_NULL;
  const uint32_t rows = v->per_kv_head ? v->batch * g->kv_heads : v->batch, n = rows ? (uint32_t)v->indptr[rows] : 0;
  read *reads = malloc(sizeof(read) * (n ? n : 1));
  ikv_trace_ref *refs = malloc(sizeof(ikv_trace_ref) * (n ? n : 1));
  uint32_t cap_spans = 64, n_spans = 0;
  ikv_span_id *ids = malloc(sizeof(ikv_span_id) * cap_spans);
  ikv_span *spans = malloc(sizeof(ikv_span) * cap_spans);
  ikv_status st = reads && refs && ids && spans ? IKV_OK : IKV_E_NO_MEMORY;
  for (uint32_t r = 0, e = 0; st == IKV_OK && r < rows; r++)
    for (; e < (uint32_t)v->indptr[r + 1]; e++)
      reads[e] = (read){v->per_kv_head ? r / g->kv_heads : r, (uint32_t)v->page_index[e], v->precision[e]};
  if (st == IKV_OK) qsort(reads, n, sizeof(read), by_seq_page);
  uint32_t m = 0; /* unique, with kinds */
  for (uint32_t i = 0; st == IKV_OK && i < n; i++) {
    const read *rd = &reads[i];
    const int new_seq = !i || reads[i - 1].b != rd->b;
    if (!new_seq && reads[i - 1].page == rd->page) continue;
    if (new_seq && (st = load_spans(pt, seqs[rd->b], &ids, &spans, &cap_spans, &n_spans)) != IKV_OK) break;
    refs[m++] = (ikv_trace_ref){trace_seqs[rd->b], rd->page, rd->precision,
                                kind_at(spans, n_spans, rd->page * g->page_size, (rd->page + 1) * g->page_size)};
  }
  /* all or nothing: the step goes in only once every page is ready */
  const uint32_t steps = t->n_steps;
  const size_t before = t->n_refs;
  if (st == IKV_OK) st = ikv_trace_step(t);
  for (uint32_t i = 0; st == IKV_OK && i < m; i++) st = ikv_trace_push(t, refs[i]);
  if (st != IKV_OK && t->n_steps > steps) t->n_steps = steps, t->n_refs = before; /* take the partial step back */
  free(reads), free(refs), free(ids), free(spans);
  return st;
}
