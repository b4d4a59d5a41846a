/* Sequences: logical block tables with prefix sharing and copy-on-write. */
#include <stdlib.h>
#include <string.h>

#include "pagetable/pt_internal.h"

ikv_status pt_seqs_init(ikv_pagetable *pt) {
  uint32_t n = pt->max_seqs;
  pt->seqs = calloc(n, sizeof(pt_seq));
  pt->free_seqs = malloc(sizeof(uint32_t) * n);
  if (!pt->seqs || !pt->free_seqs) return IKV_E_NO_MEMORY;
  for (uint32_t i = 0; i < n; i++) pt->free_seqs[i] = n - 1 - i;
  pt->n_free_seqs = n;
  return IKV_OK;
}

void pt_seqs_release(ikv_pagetable *pt) {
  if (pt->seqs)
    for (uint32_t i = 0; i < pt->max_seqs; i++) {
      free(pt->seqs[i].pages);
      free(pt->seqs[i].gpu_slots);
      free(pt->seqs[i].precisions);
      free(pt->seqs[i].spans);
    }
  free(pt->seqs);
  free(pt->free_seqs);
}

/* An id is (generation << 32) | index; a live slot has an odd generation, so
 * id 0 never names a sequence and a freed id never names its successor. */
pt_seq *pt_seq_lookup(const ikv_pagetable *pt, ikv_seq_id id) {
  uint32_t index = (uint32_t)id, generation = (uint32_t)(id >> 32);
  if (index >= pt->max_seqs) return NULL;
  pt_seq *s = &pt->seqs[index];
  return (s->generation == generation && (generation & 1)) ? s : NULL;
}

static ikv_seq_id seq_id_of(const ikv_pagetable *pt, const pt_seq *s) {
  return ((uint64_t)s->generation << 32) | (uint64_t)(s - pt->seqs);
}

/* Takes a free sequence slot; the caller checked n_free_seqs > 0. */
static pt_seq *seq_take(ikv_pagetable *pt, ikv_precision precision) {
  pt_seq *s = &pt->seqs[pt->free_seqs[--pt->n_free_seqs]];
  s->generation++;
  s->precision = precision;
  s->tokens = s->n_pages = s->n_spans = 0;
  s->next_span_id = 1;
  s->export_epoch = pt->gpu_epoch; /* an empty cache is exact */
  s->missing = 0;
  s->cached_pages = 0;
  pt->live_seqs++;
  return s;
}

/* Grows the block table and its export cache together. */
static ikv_status seq_reserve(pt_seq *s, uint32_t need) {
  if (need <= s->cap_pages) return IKV_OK;
  uint32_t c1 = s->cap_pages, c2 = s->cap_pages, c3 = s->cap_pages;
  ikv_status st = pt_grow((void **)&s->pages, &c1, need, sizeof(ikv_page_id));
  if (st == IKV_OK) st = pt_grow((void **)&s->gpu_slots, &c2, need, sizeof(int32_t));
  if (st == IKV_OK) st = pt_grow((void **)&s->precisions, &c3, need, sizeof(uint8_t));
  if (st == IKV_OK) s->cap_pages = c1; /* same growth rule: c1 == c2 == c3 */
  return st;
}

/* Records page i in the export cache, if the cache is exact. */
static void cache_put(const ikv_pagetable *pt, pt_seq *s, uint32_t i) {
  if (s->export_epoch != pt->gpu_epoch) return;
  int32_t slot = pt->slot[IKV_TIER_GPU][s->pages[i]];
  s->gpu_slots[i] = slot;
  s->precisions[i] = pt->precision[s->pages[i]];
  s->missing |= slot;
  if (i >= s->cached_pages) s->cached_pages = i + 1;
}

int32_t pt_seq_refresh_cache(ikv_pagetable *pt, pt_seq *s) {
  if (s->export_epoch == pt->gpu_epoch) return s->missing;
  const int32_t *restrict slot = pt->slot[IKV_TIER_GPU];
  const uint8_t *restrict precision = pt->precision;
  const ikv_page_id *restrict pages = s->pages;
  int32_t *restrict out = s->gpu_slots, missing = 0;
  uint8_t *restrict prec = s->precisions;
  /* the pages cached before: did any of them move or change precision? */
  const uint32_t known = s->cached_pages < s->n_pages ? s->cached_pages : s->n_pages;
  uint32_t moved = 0;
  for (uint32_t i = 0; i < known; i++) {
    const int32_t now = slot[pages[i]];
    moved |= (uint32_t)(out[i] ^ now) | (uint32_t)(prec[i] ^ precision[pages[i]]);
    missing |= out[i] = now;
    prec[i] = precision[pages[i]];
  }
  for (uint32_t i = known; i < s->n_pages; i++) missing |= out[i] = slot[pages[i]], prec[i] = precision[pages[i]];
  s->version += moved != 0;
  s->missing = missing;
  s->cached_pages = s->n_pages;
  s->export_epoch = pt->gpu_epoch;
  return missing;
}

void pt_page_moved(ikv_pagetable *pt, ikv_page_id page) {
  const uint32_t o = pt->owner_seq[page];
  if (o == PT_SHARED) {
    pt->gpu_epoch++;
    return;
  }
  pt_seq *s = &pt->seqs[o];
  const uint32_t i = pt->owner_at[page];
  s->version++;
  if (s->export_epoch != pt->gpu_epoch || i >= s->cached_pages) return; /* the next refresh takes it */
  const int32_t slot = pt->slot[IKV_TIER_GPU][page];
  if (slot >= 0 && s->gpu_slots[i] < 0) s->export_epoch = 0; /* back on the GPU: whether any is missing, recounted */
  s->gpu_slots[i] = slot;
  s->precisions[i] = pt->precision[page];
  s->missing |= slot;
}

ikv_status ikv_pt_seq_create(ikv_pagetable *pt, ikv_precision precision, ikv_seq_id *out) {
  if (!pt || !out) return IKV_E_NULL;
  if (!ikv_precision_valid(precision)) return IKV_E_PRECISION;
  if (pt->pools[IKV_TIER_GPU][precision].capacity == 0) return IKV_E_PRECISION;
  if (!pt->n_free_seqs) return IKV_E_CAPACITY;
  *out = seq_id_of(pt, seq_take(pt, precision));
  return IKV_OK;
}

ikv_status ikv_pt_seq_free(ikv_pagetable *pt, ikv_seq_id seq) {
  if (!pt) return IKV_E_NULL;
  pt_seq *s = pt_seq_lookup(pt, seq);
  if (!s) return IKV_E_UNKNOWN_SEQ;
  for (uint32_t i = 0; i < s->n_pages; i++) pt_page_unref(pt, s->pages[i]);
  s->n_pages = s->n_spans = s->tokens = 0;
  s->generation++;
  pt->free_seqs[pt->n_free_seqs++] = (uint32_t)(s - pt->seqs);
  pt->live_seqs--;
  return IKV_OK;
}

ikv_status ikv_pt_seq_fork(ikv_pagetable *pt, ikv_seq_id parent, ikv_seq_id *child) {
  if (!pt || !child) return IKV_E_NULL;
  pt_seq *p = pt_seq_lookup(pt, parent);
  if (!p) return IKV_E_UNKNOWN_SEQ;
  if (!pt->n_free_seqs) return IKV_E_CAPACITY;
  /* Reserve memory in the slot we will take before touching any state. */
  pt_seq *c = &pt->seqs[pt->free_seqs[pt->n_free_seqs - 1]];
  ikv_status st = seq_reserve(c, p->n_pages);
  if (st == IKV_OK) st = pt_grow((void **)&c->spans, &c->cap_spans, p->n_spans, sizeof(pt_span));
  if (st != IKV_OK) return st;
  c = seq_take(pt, p->precision);
  if (p->n_spans) memcpy(c->spans, p->spans, sizeof(pt_span) * p->n_spans);
  c->n_spans = p->n_spans;
  c->next_span_id = p->next_span_id;
  memcpy(c->pages, p->pages, sizeof(ikv_page_id) * p->n_pages);
  memcpy(c->gpu_slots, p->gpu_slots, sizeof(int32_t) * p->n_pages);
  memcpy(c->precisions, p->precisions, p->n_pages);
  c->export_epoch = p->export_epoch;
  c->missing = p->missing;
  c->cached_pages = p->cached_pages;
  c->n_pages = p->n_pages;
  c->tokens = p->tokens;
  for (uint32_t i = 0; i < c->n_pages; i++) pt_page_ref(pt, c->pages[i]);
  *child = seq_id_of(pt, c);
  return IKV_OK;
}

static uint32_t pages_for(uint64_t tokens, uint32_t page_size) {
  return (uint32_t)((tokens + page_size - 1) / page_size);
}

ikv_status ikv_pt_seq_append(ikv_pagetable *pt, ikv_seq_id seq, uint32_t n_tokens,
                             int64_t *slot_mapping, uint8_t *slot_precision,
                             ikv_pt_copy *cow) {
  if (!pt || (!slot_mapping && n_tokens)) return IKV_E_NULL;
  pt_seq *s = pt_seq_lookup(pt, seq);
  if (!s) return IKV_E_UNKNOWN_SEQ;
  if ((uint64_t)s->tokens + n_tokens > IKV_MAX_SEQ_TOKENS) return IKV_E_RANGE;
  const uint32_t P = pt->geometry.page_size;
  uint32_t offset = s->tokens & (P - 1);
  ikv_page_id last = offset ? s->pages[s->n_pages - 1] : 0;
  int need_cow = n_tokens && offset && pt->refcount[last] > 1;
  if (n_tokens && offset && pt->slot[IKV_TIER_GPU][last] == IKV_NO_SLOT) return IKV_E_NOT_RESIDENT;
  if (need_cow && !cow) return IKV_E_NULL;

  uint32_t new_pages = pages_for((uint64_t)s->tokens + n_tokens, P) - s->n_pages;
  ikv_precision cow_prec = need_cow ? (ikv_precision)pt->precision[last] : s->precision;
  uint32_t same_pool = new_pages + (need_cow && cow_prec == s->precision);
  if (!pt_has_room(pt, IKV_TIER_GPU, s->precision, same_pool) ||
      pt->n_free_pages < new_pages + (uint32_t)need_cow ||
      (need_cow && cow_prec != s->precision && !pt_has_room(pt, IKV_TIER_GPU, cow_prec, 1)))
    return IKV_E_CAPACITY;
  ikv_status st = seq_reserve(s, s->n_pages + new_pages);
  if (st != IKV_OK) return st;

  if (cow) *cow = (ikv_pt_copy){.src_page = last, .dst_page = last, .bytes = 0};
  if (need_cow) {
    ikv_page_id copy = pt_page_new(pt, cow_prec, IKV_TIER_GPU);
    *cow = (ikv_pt_copy){
        .src_page = last,
        .dst_page = copy,
        .tier = IKV_TIER_GPU,
        .precision = cow_prec,
        .src_slot = pt->slot[IKV_TIER_GPU][last],
        .dst_slot = pt->slot[IKV_TIER_GPU][copy],
        .bytes = pt->page_bytes[cow_prec],
    };
    pt_page_unref(pt, last);
    s->pages[s->n_pages - 1] = copy;
    s->version++;
    pt_page_own(pt, s, s->n_pages - 1);
    cache_put(pt, s, s->n_pages - 1);
    pt->cow_copies++;
  } else if (n_tokens && offset) {
    pt_lru_touch(pt, last);
  }
  for (uint32_t i = 0; i < new_pages; i++) {
    s->pages[s->n_pages] = pt_page_new(pt, s->precision, IKV_TIER_GPU);
    pt_page_own(pt, s, s->n_pages);
    cache_put(pt, s, s->n_pages++);
  }

  const int32_t *gpu_slot = pt->slot[IKV_TIER_GPU];
  for (uint32_t i = 0; i < n_tokens; i++) {
    uint32_t token = s->tokens + i;
    ikv_page_id page = s->pages[token / P];
    slot_mapping[i] = (int64_t)gpu_slot[page] * P + (token & (P - 1));
    if (slot_precision) slot_precision[i] = pt->precision[page];
  }
  s->tokens += n_tokens;
  return IKV_OK;
}

ikv_status ikv_pt_seq_truncate(ikv_pagetable *pt, ikv_seq_id seq, uint32_t n_tokens) {
  if (!pt) return IKV_E_NULL;
  pt_seq *s = pt_seq_lookup(pt, seq);
  if (!s) return IKV_E_UNKNOWN_SEQ;
  if (n_tokens > s->tokens) return IKV_E_RANGE;
  uint32_t keep = pages_for(n_tokens, pt->geometry.page_size);
  while (s->n_pages > keep) pt_page_unref(pt, s->pages[--s->n_pages]);
  s->version++;
  if (s->missing < 0) s->export_epoch = 0; /* the missing page may be gone: recount */
  s->tokens = n_tokens;
  pt_spans_clip(s, n_tokens);
  return IKV_OK;
}

ikv_status ikv_pt_seq_get_info(const ikv_pagetable *pt, ikv_seq_id seq, ikv_pt_seq_info *out) {
  if (!pt || !out) return IKV_E_NULL;
  const pt_seq *s = pt_seq_lookup(pt, seq);
  if (!s) return IKV_E_UNKNOWN_SEQ;
  *out = (ikv_pt_seq_info){
      .tokens = s->tokens, .pages = s->n_pages, .spans = s->n_spans, .precision = s->precision};
  return IKV_OK;
}

ikv_status ikv_pt_seq_get_view(ikv_pagetable *pt, ikv_seq_id seq, ikv_pt_seq_view *out) {
  if (!pt || !out) return IKV_E_NULL;
  pt_seq *s = pt_seq_lookup(pt, seq);
  if (!s) return IKV_E_UNKNOWN_SEQ;
  pt_seq_refresh_cache(pt, s);
  *out = (ikv_pt_seq_view){.tokens = s->tokens, .n_pages = s->n_pages, .version = s->version, .pages = s->pages,
                           .gpu_slots = s->gpu_slots, .precisions = s->precisions};
  return IKV_OK;
}

ikv_status ikv_pt_seq_pages(const ikv_pagetable *pt, ikv_seq_id seq, uint32_t first,
                            uint32_t count, ikv_page_id *out) {
  if (!pt || (!out && count)) return IKV_E_NULL;
  const pt_seq *s = pt_seq_lookup(pt, seq);
  if (!s) return IKV_E_UNKNOWN_SEQ;
  if ((uint64_t)first + count > s->n_pages) return IKV_E_RANGE;
  if (count) memcpy(out, s->pages + first, sizeof(ikv_page_id) * count);
  return IKV_OK;
}
