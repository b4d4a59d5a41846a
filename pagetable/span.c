/* Semantic spans of a sequence and the pages (with token masks) they cover. */
#include <math.h>
#include <string.h>

#include "pagetable/pt_internal.h"

static const char *const kind_names[IKV_SPAN_KIND_COUNT] = {
    [IKV_SPAN_SYSTEM] = "system",         [IKV_SPAN_USER] = "user",
    [IKV_SPAN_RECENT] = "recent",         [IKV_SPAN_DOCUMENT] = "document",
    [IKV_SPAN_TOOL_OUTPUT] = "tool_output", [IKV_SPAN_MEMORY] = "memory",
    [IKV_SPAN_SCRATCHPAD] = "scratchpad", [IKV_SPAN_REASONING] = "reasoning",
    [IKV_SPAN_OTHER] = "other",
};

static const char *const policy_names[IKV_POLICY_COUNT] = {
    [IKV_POLICY_ALWAYS] = "always", [IKV_POLICY_ATTEND] = "attend",
    [IKV_POLICY_SKIP] = "skip",     [IKV_POLICY_RECENT] = "recent",
    [IKV_POLICY_GLOBAL] = "global",
};

const char *ikv_span_kind_name(int kind) {
  return kind >= 0 && kind < IKV_SPAN_KIND_COUNT ? kind_names[kind] : NULL;
}

const char *ikv_span_policy_name(int policy) {
  return policy >= 0 && policy < IKV_POLICY_COUNT ? policy_names[policy] : NULL;
}

static ikv_status span_check(const pt_seq *s, const ikv_span *span) {
  if (span->start >= span->end || span->end > s->tokens) return IKV_E_RANGE;
  if ((unsigned)span->kind >= IKV_SPAN_KIND_COUNT) return IKV_E_INVALID;
  if ((unsigned)span->policy >= IKV_POLICY_COUNT) return IKV_E_INVALID;
  if (!isfinite(span->score)) return IKV_E_INVALID;
  if (span->pinned_precision != IKV_UNPINNED_PRECISION &&
      !ikv_precision_valid(span->pinned_precision))
    return IKV_E_PRECISION;
  return IKV_OK;
}

static pt_span *span_find(const pt_seq *s, ikv_span_id id) {
  for (uint32_t i = 0; i < s->n_spans; i++)
    if (s->spans[i].id == id) return &s->spans[i];
  return NULL;
}

/* Looks up sequence and span together: the common prologue of span calls. */
static ikv_status span_lookup(const ikv_pagetable *pt, ikv_seq_id seq, ikv_span_id id,
                              pt_seq **s, pt_span **span) {
  *s = pt_seq_lookup(pt, seq);
  if (!*s) return IKV_E_UNKNOWN_SEQ;
  *span = span_find(*s, id);
  return *span ? IKV_OK : IKV_E_UNKNOWN_SPAN;
}

ikv_status ikv_pt_span_add(ikv_pagetable *pt, ikv_seq_id seq, const ikv_span *span,
                           ikv_span_id *out) {
  if (!pt || !span || !out) return IKV_E_NULL;
  pt_seq *s = pt_seq_lookup(pt, seq);
  if (!s) return IKV_E_UNKNOWN_SEQ;
  ikv_status st = span_check(s, span);
  if (st == IKV_OK && s->next_span_id == UINT32_MAX) st = IKV_E_CAPACITY;
  if (st == IKV_OK) st = pt_grow((void **)&s->spans, &s->cap_spans, s->n_spans + 1, sizeof(pt_span));
  if (st != IKV_OK) return st;
  s->spans[s->n_spans++] = (pt_span){.id = s->next_span_id, .span = *span};
  *out = s->next_span_id++;
  return IKV_OK;
}

ikv_status ikv_pt_span_update(ikv_pagetable *pt, ikv_seq_id seq, ikv_span_id id,
                              const ikv_span *span) {
  if (!pt || !span) return IKV_E_NULL;
  pt_seq *s;
  pt_span *found;
  ikv_status st = span_lookup(pt, seq, id, &s, &found);
  if (st == IKV_OK) st = span_check(s, span);
  if (st == IKV_OK) found->span = *span;
  return st;
}

ikv_status ikv_pt_span_remove(ikv_pagetable *pt, ikv_seq_id seq, ikv_span_id id) {
  if (!pt) return IKV_E_NULL;
  pt_seq *s;
  pt_span *found;
  ikv_status st = span_lookup(pt, seq, id, &s, &found);
  if (st != IKV_OK) return st;
  /* Keep insertion order: span_list promises it. */
  size_t tail = (size_t)(s->spans + s->n_spans - (found + 1));
  memmove(found, found + 1, tail * sizeof(pt_span));
  s->n_spans--;
  return IKV_OK;
}

ikv_status ikv_pt_span_get(const ikv_pagetable *pt, ikv_seq_id seq, ikv_span_id id,
                           ikv_span *out) {
  if (!pt || !out) return IKV_E_NULL;
  pt_seq *s;
  pt_span *found;
  ikv_status st = span_lookup(pt, seq, id, &s, &found);
  if (st == IKV_OK) *out = found->span;
  return st;
}

ikv_status ikv_pt_span_list(const ikv_pagetable *pt, ikv_seq_id seq, ikv_span_id *out,
                            ikv_span *spans, uint32_t cap, uint32_t *n) {
  if (!pt || !n || (!out && cap)) return IKV_E_NULL;
  const pt_seq *s = pt_seq_lookup(pt, seq);
  if (!s) return IKV_E_UNKNOWN_SEQ;
  *n = s->n_spans;
  if (cap < s->n_spans) return IKV_E_CAPACITY;
  for (uint32_t i = 0; i < s->n_spans; i++) {
    out[i] = s->spans[i].id;
    if (spans) spans[i] = s->spans[i].span;
  }
  return IKV_OK;
}

ikv_status ikv_pt_span_pages(const ikv_pagetable *pt, ikv_seq_id seq, ikv_span_id id,
                             ikv_page_extent *out, uint32_t cap, uint32_t *n) {
  if (!pt || !n || (!out && cap)) return IKV_E_NULL;
  pt_seq *s;
  pt_span *found;
  ikv_status st = span_lookup(pt, seq, id, &s, &found);
  if (st != IKV_OK) return st;
  const uint32_t P = pt->geometry.page_size;
  uint32_t first_page = found->span.start / P, last_page = (found->span.end - 1) / P;
  *n = last_page - first_page + 1;
  if (cap < *n) return IKV_E_CAPACITY;
  for (uint32_t p = first_page; p <= last_page; p++) {
    uint32_t lo = p == first_page ? found->span.start % P : 0;
    uint32_t hi = p == last_page ? (found->span.end - 1) % P : P - 1;
    out[p - first_page] = (ikv_page_extent){
        .page_index = p, .page = s->pages[p], .first = (uint16_t)lo, .last = (uint16_t)hi};
  }
  return IKV_OK;
}

void pt_spans_clip(pt_seq *s, uint32_t tokens) {
  uint32_t kept = 0;
  for (uint32_t i = 0; i < s->n_spans; i++) {
    pt_span sp = s->spans[i];
    if (sp.span.start >= tokens) continue;
    if (sp.span.end > tokens) sp.span.end = tokens;
    s->spans[kept++] = sp;
  }
  s->n_spans = kept;
}
