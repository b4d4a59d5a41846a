/* Internal state of the block-table manager, shared by its source files. */
#ifndef IKV_PT_INTERNAL_H
#define IKV_PT_INTERNAL_H

#include "pagetable/pagetable.h"

/* Free slots of one (tier, precision) pool: a stack, O(1) both ways; and
 * the page owning each slot (IKV_NO_PAGE when free). */
typedef struct pt_pool {
  uint32_t capacity;
  uint32_t n_free;
  uint32_t *free_slots;
  ikv_page_id *owner;
} pt_pool;

typedef struct pt_span {
  ikv_span_id id;
  ikv_span span;
} pt_span;

typedef struct pt_seq {
  uint32_t generation; /* odd while live; bumps on create and free */
  ikv_precision precision;
  uint32_t tokens;
  uint32_t n_pages, cap_pages;
  ikv_page_id *pages;
  /* Export cache, parallel to pages: each page's GPU slot and precision,
   * exact while export_epoch equals the table's gpu_epoch. `missing` is the
   * OR of the cached slots (negative: some page is not on the GPU). */
  int32_t *gpu_slots;
  uint8_t *precisions;
  uint64_t export_epoch;
  int32_t missing;
  uint32_t cached_pages; /* pages whose cache entries were exact when last written */
  /* Bumped when a page the sequence already had changes its GPU slot or
   * precision, or is replaced (copy on write, truncation): what a plan
   * built from it earlier may still hold is then stale. */
  uint32_t version;
  uint32_t n_spans, cap_spans;
  ikv_span_id next_span_id;
  pt_span *spans;
} pt_seq;

struct ikv_pagetable {
  ikv_geometry geometry;
  size_t page_bytes[IKV_PRECISION_COUNT];
  pt_pool pools[IKV_TIER_COUNT][IKV_PRECISION_COUNT];

  /* Page descriptors as parallel arrays (exports gather slots in a tight loop). */
  uint32_t max_pages;
  uint32_t n_free_pages;
  ikv_page_id *free_pages;
  int32_t *slot[IKV_TIER_COUNT];
  uint8_t *precision;
  uint32_t *refcount; /* 0: page id is free */
  /* The sequence (index into seqs) holding a page and the page's place in
   * it, while one sequence alone ever held it (PT_SHARED once another one
   * did): a move of such a page updates that sequence's export cache in
   * place instead of making every sequence's stale. */
  uint32_t *owner_seq, *owner_at;
  uint32_t *pins;
  /* Recency: a page's last use on a logical clock (a use is one store, so a
   * plan can touch every page it reads; eviction order is derived on demand). */
  uint64_t *last_use;
  uint64_t clock;

  uint32_t max_seqs;
  uint32_t n_free_seqs;
  uint32_t *free_seqs;
  pt_seq *seqs;

  /* Bumped whenever an existing page's GPU slot or precision changes: every
   * sequence's export cache is then stale (rebuilt by its next export). */
  uint64_t gpu_epoch;

  uint32_t live_pages, shared_pages, live_seqs;
  uint64_t cow_copies, precision_changes;
};

/* pool.c */
ikv_status pt_pool_init(pt_pool *pool, uint32_t capacity);
void pt_pool_release(pt_pool *pool);
int32_t pt_slot_take(pt_pool *pool, ikv_page_id owner); /* caller checked n_free > 0 */
void pt_slot_give(pt_pool *pool, int32_t slot);

#define PT_SHARED UINT32_MAX

/* page.c: page descriptors, refcounts and LRU order */
ikv_status pt_pages_init(ikv_pagetable *pt);
void pt_pages_release(ikv_pagetable *pt);
static inline int pt_page_live(const ikv_pagetable *pt, ikv_page_id page) {
  return page < pt->max_pages && pt->refcount[page] > 0;
}
/* A new page with refcount 1 and one slot in (tier, precision); the caller
 * checked that a page id and a slot are free. */
ikv_page_id pt_page_new(ikv_pagetable *pt, ikv_precision precision, ikv_tier tier);
void pt_page_ref(ikv_pagetable *pt, ikv_page_id page);
void pt_page_unref(ikv_pagetable *pt, ikv_page_id page);
static inline void pt_lru_touch(ikv_pagetable *pt, ikv_page_id page) { pt->last_use[page] = ++pt->clock; }
/* Takes / returns the page's slot in tier (pool of its precision); a page new
 * to a tier counts as just used. */
void pt_tier_attach(ikv_pagetable *pt, ikv_page_id page, ikv_tier tier);
void pt_tier_detach(ikv_pagetable *pt, ikv_page_id page, ikv_tier tier);
/* Free slots in (tier, precision) and free page ids, as a single "room" test. */
int pt_has_room(const ikv_pagetable *pt, ikv_tier tier, ikv_precision precision,
                uint32_t pages);

/* sequence.c */
pt_seq *pt_seq_lookup(const ikv_pagetable *pt, ikv_seq_id id);
/* Makes the sequence's export cache exact; returns its `missing`. */
int32_t pt_seq_refresh_cache(ikv_pagetable *pt, pt_seq *s);
/* A page's GPU slot or precision changed: its one sequence's cache entry
 * follows (and that sequence's version moves), or, for a page sequences
 * share, every sequence's cache goes stale. */
void pt_page_moved(ikv_pagetable *pt, ikv_page_id page);
/* Page i of sequence s is s's alone (new, or its copy on write). */
static inline void pt_page_own(ikv_pagetable *pt, const pt_seq *s, uint32_t i) {
  pt->owner_seq[s->pages[i]] = (uint32_t)(s - pt->seqs), pt->owner_at[s->pages[i]] = i;
}
ikv_status pt_seqs_init(ikv_pagetable *pt);
void pt_seqs_release(ikv_pagetable *pt);

/* span.c */
void pt_spans_clip(pt_seq *s, uint32_t tokens);

/* Grows *array (element size elem) to hold at least need elements. */
ikv_status pt_grow(void **array, uint32_t *cap, uint32_t need, size_t elem);

#endif /* IKV_PT_INTERNAL_H */
