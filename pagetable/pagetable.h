/*
 * The block-table manager: page pools per (tier, precision), sequences with
 * refcounted prefix sharing and copy-on-write, page residency and eviction
 * order, semantic spans, and exports to vLLM and FlashInfer page-table layouts.
 *
 * It manages slots, not bytes: moving or converting a page's bytes is kernel
 * work. Operations that need bytes moved say so through an ikv_pt_copy (which
 * slot to copy from and to); the caller performs the copy in stream order
 * before any later write to the released slot.
 *
 * Threading: an ikv_pagetable is not thread-safe; call it from one thread at a
 * time (or hold your own lock). Distinct handles share no state and may be used
 * from different threads concurrently. There is no global mutable state.
 *
 * Every function returns IKV_OK or an error and, on error, leaves the table
 * exactly as it was. Output arguments are written only on success unless a
 * comment says otherwise.
 */
#ifndef IKV_PAGETABLE_H
#define IKV_PAGETABLE_H

#include "runtime/ikv_base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ikv_pagetable ikv_pagetable;

/* A sequence id is never 0 and never reused for another sequence. */
typedef uint64_t ikv_seq_id;
/* A page id names one page of tokens (all layers); the id is reused once freed. */
typedef uint32_t ikv_page_id;

#define IKV_NO_SLOT (-1)
#define IKV_NO_PAGE UINT32_MAX
#define IKV_MAX_SEQ_TOKENS 0x7fffffffu /* exports use int32 lengths */

typedef struct ikv_pagetable_config {
  ikv_geometry geometry;
  /* pages per pool; 0 means that pool is not provisioned */
  uint32_t capacity[IKV_TIER_COUNT][IKV_PRECISION_COUNT];
  uint32_t max_sequences; /* live sequences at once, >= 1 */
} ikv_pagetable_config;

/* Creates a table. On success *out owns it; release with ikv_pt_destroy. */
ikv_status ikv_pt_create(const ikv_pagetable_config *config, ikv_pagetable **out);
/* Frees the table and everything in it. NULL is a no-op. */
void ikv_pt_destroy(ikv_pagetable *pt);
/* The geometry the table was created with (pointer valid until destroy). */
const ikv_geometry *ikv_pt_geometry(const ikv_pagetable *pt);

/* ---- sequences ---------------------------------------------------------- */

/* New empty sequence whose new pages are stored in `precision` on the GPU tier. */
ikv_status ikv_pt_seq_create(ikv_pagetable *pt, ikv_precision precision, ikv_seq_id *out);
/* Drops the sequence's page references (a page is freed when its last
 * reference goes) and its spans. A second free returns IKV_E_UNKNOWN_SEQ. */
ikv_status ikv_pt_seq_free(ikv_pagetable *pt, ikv_seq_id seq);
/* Prefix sharing: the child references every page of the parent (refcounts
 * rise, nothing is copied) and inherits its spans and precision. */
ikv_status ikv_pt_seq_fork(ikv_pagetable *pt, ikv_seq_id parent, ikv_seq_id *child);

/* A copy the caller must perform: the bytes of src_slot into dst_slot, both in
 * the pool (tier, precision). `bytes` is the size of one page in that pool. */
typedef struct ikv_pt_copy {
  ikv_page_id src_page, dst_page;
  ikv_tier tier;
  ikv_precision precision;
  int32_t src_slot, dst_slot;
  size_t bytes; /* 0: no copy needed */
} ikv_pt_copy;

/* Reserves n_tokens new tokens at the end of the sequence and writes, for each
 * one, its physical slot (vLLM convention: gpu_slot * page_size + offset) into
 * slot_mapping[n_tokens] and, if slot_precision is not NULL, the precision of
 * its page. The partly filled last page must be GPU-resident. If that page is
 * shared with another sequence it is first copied (copy-on-write): *cow says
 * what to copy (cow->bytes == 0 when nothing). cow may be NULL only if the
 * caller has made sure no copy is needed (otherwise IKV_E_NULL). */
ikv_status ikv_pt_seq_append(ikv_pagetable *pt, ikv_seq_id seq, uint32_t n_tokens,
                             int64_t *slot_mapping, uint8_t *slot_precision,
                             ikv_pt_copy *cow);
/* Shortens the sequence to n_tokens (<= its length), e.g. to roll back
 * rejected speculative tokens. Whole pages past the end are released; spans
 * are clipped (a span left empty is removed). */
ikv_status ikv_pt_seq_truncate(ikv_pagetable *pt, ikv_seq_id seq, uint32_t n_tokens);

typedef struct ikv_pt_seq_info {
  uint32_t tokens;
  uint32_t pages;
  uint32_t spans;
  ikv_precision precision; /* of new pages */
} ikv_pt_seq_info;
ikv_status ikv_pt_seq_get_info(const ikv_pagetable *pt, ikv_seq_id seq, ikv_pt_seq_info *out);
/* Copies page ids [first, first + count) of the logical block table into out. */
ikv_status ikv_pt_seq_pages(const ikv_pagetable *pt, ikv_seq_id seq, uint32_t first,
                            uint32_t count, ikv_page_id *out);

/* A sequence's block table and export cache, borrowed: pages[n], each page's
 * GPU slot (IKV_NO_SLOT if not on the GPU) and precision. The pointers are
 * valid until the next call that changes the table. O(1) unless a page's GPU
 * slot or precision changed since the sequence's last view or export. */
typedef struct ikv_pt_seq_view {
  uint32_t tokens, n_pages;
  /* changes when a page the sequence had moves, changes precision or is
   * replaced (pages appended leave it): a plan built earlier from the same
   * version and at most n_pages pages still holds their right slots */
  uint32_t version;
  const ikv_page_id *pages;
  const int32_t *gpu_slots;
  const uint8_t *precisions;
} ikv_pt_seq_view;
ikv_status ikv_pt_seq_get_view(ikv_pagetable *pt, ikv_seq_id seq, ikv_pt_seq_view *out);

/* ---- pages: precision, residency, eviction order ------------------------ */

/* The page whose copy occupies `slot` of pool (tier, precision), or
 * IKV_E_NOT_RESIDENT if the slot is free. */
ikv_status ikv_pt_slot_owner(const ikv_pagetable *pt, ikv_tier tier, ikv_precision precision,
                             int32_t slot, ikv_page_id *page);

typedef struct ikv_pt_page_info {
  ikv_precision precision;
  uint32_t refcount; /* sequences referencing the page */
  uint32_t pins;
  int32_t slot[IKV_TIER_COUNT]; /* IKV_NO_SLOT where not resident */
} ikv_pt_page_info;
ikv_status ikv_pt_page_get_info(const ikv_pagetable *pt, ikv_page_id page, ikv_pt_page_info *out);

/* A change of precision: in every tier where the page is resident, a slot of
 * the target pool is reserved and the old one released, all or nothing.
 * The caller converts old_slot's bytes (pool tier/from) into new_slot's
 * (pool tier/to) before anything else is written to the old slot. */
typedef struct ikv_pt_move {
  ikv_page_id page;
  ikv_precision from, to;
  int32_t old_slot[IKV_TIER_COUNT], new_slot[IKV_TIER_COUNT]; /* IKV_NO_SLOT: not resident */
} ikv_pt_move;
ikv_status ikv_pt_page_set_precision(ikv_pagetable *pt, ikv_page_id page, ikv_precision to,
                                     ikv_pt_move *move);

/* Gives the page a copy in `tier` (a slot in that tier's pool of its precision).
 * *copy says what to transfer (copy->bytes == 0 if it was already there); its
 * src/dst slots are in different tiers: src in the other tier, dst in `tier`. */
ikv_status ikv_pt_page_make_resident(ikv_pagetable *pt, ikv_page_id page, ikv_tier tier,
                                     ikv_pt_copy *copy);
/* Drops the page's copy in `tier`. Errors: IKV_E_NOT_RESIDENT (no copy there),
 * IKV_E_LAST_COPY (only copy), IKV_E_PINNED (pinned page's GPU copy). */
ikv_status ikv_pt_page_release(ikv_pagetable *pt, ikv_page_id page, ikv_tier tier);
/* Pinned pages keep their GPU copy and are never eviction candidates. Pins nest. */
ikv_status ikv_pt_page_pin(ikv_pagetable *pt, ikv_page_id page);
ikv_status ikv_pt_page_unpin(ikv_pagetable *pt, ikv_page_id page); /* IKV_E_INVALID if not pinned */
/* Marks the page most recently used in every tier where it is resident. */
ikv_status ikv_pt_page_touch(ikv_pagetable *pt, ikv_page_id page);
/* The same for n pages, in order (the last is the most recent); all or none. */
ikv_status ikv_pt_pages_touch(ikv_pagetable *pt, const ikv_page_id *pages, uint32_t n);
/* Deferred touches: ikv_pt_clock_reserve advances the recency clock by n
 * and gives the value before (*base); ikv_pt_pages_stamp later gives pages[i]
 * the recency base + i + 1 unless it has been used since. Reserving at a
 * plan build and stamping before anything reads the order (an eviction)
 * orders pages exactly as touching them at the build would, and a plan
 * that is built again over the same pages stamps nothing in between. Pages
 * freed since are passed over. */
ikv_status ikv_pt_clock_reserve(ikv_pagetable *pt, uint32_t n, uint64_t *base);
ikv_status ikv_pt_pages_stamp(ikv_pagetable *pt, const ikv_page_id *pages, uint32_t n, uint64_t base);
/* Up to `cap` pages resident in `tier`, least recently used first, pinned pages
 * left out; *n receives how many were written. One pass over the table's
 * pages (O(pages log cap)): ask for all the victims a step needs at once. */
ikv_status ikv_pt_evict_candidates(const ikv_pagetable *pt, ikv_tier tier, ikv_page_id *out,
                                   uint32_t cap, uint32_t *n);

/* ---- semantic spans ------------------------------------------------------ */

typedef enum ikv_span_kind {
  IKV_SPAN_SYSTEM = 0,
  IKV_SPAN_USER,
  IKV_SPAN_RECENT,
  IKV_SPAN_DOCUMENT,    /* retrieved document */
  IKV_SPAN_TOOL_OUTPUT,
  IKV_SPAN_MEMORY,      /* memory summary */
  IKV_SPAN_SCRATCHPAD,
  IKV_SPAN_REASONING,
  IKV_SPAN_OTHER,
  IKV_SPAN_KIND_COUNT
} ikv_span_kind;

typedef enum ikv_span_policy {
  IKV_POLICY_ALWAYS = 0, /* always read, highest allowed precision */
  IKV_POLICY_ATTEND,     /* competes for the budget by score */
  IKV_POLICY_SKIP,       /* never read */
  IKV_POLICY_RECENT,     /* read while within the recent window */
  IKV_POLICY_GLOBAL,     /* always read (global context) */
  IKV_POLICY_COUNT
} ikv_span_policy;

const char *ikv_span_kind_name(int kind);
const char *ikv_span_policy_name(int policy);

#define IKV_UNPINNED_PRECISION (-1)

typedef struct ikv_span {
  uint32_t start, end; /* token range [start, end), end <= sequence length */
  ikv_span_kind kind;
  ikv_span_policy policy;
  float score;              /* finite */
  int32_t pinned_precision; /* a storable ikv_precision, or IKV_UNPINNED_PRECISION */
} ikv_span;

typedef uint32_t ikv_span_id;

ikv_status ikv_pt_span_add(ikv_pagetable *pt, ikv_seq_id seq, const ikv_span *span,
                           ikv_span_id *out);
ikv_status ikv_pt_span_update(ikv_pagetable *pt, ikv_seq_id seq, ikv_span_id id,
                              const ikv_span *span);
ikv_status ikv_pt_span_remove(ikv_pagetable *pt, ikv_seq_id seq, ikv_span_id id);
ikv_status ikv_pt_span_get(const ikv_pagetable *pt, ikv_seq_id seq, ikv_span_id id,
                           ikv_span *out);
/* Span ids of the sequence in the order they were added, and the spans
 * themselves where `spans` is not NULL (one call instead of a get per id).
 * If cap is too small returns IKV_E_CAPACITY with *n set to the number
 * needed (out and spans untouched). */
ikv_status ikv_pt_span_list(const ikv_pagetable *pt, ikv_seq_id seq, ikv_span_id *out,
                            ikv_span *spans, uint32_t cap, uint32_t *n);

/* One page a span covers, with the first and last valid token inside the page
 * (0-based offsets, inclusive): partial pages at the span's edges say so. */
typedef struct ikv_page_extent {
  uint32_t page_index; /* logical index in the sequence's block table */
  ikv_page_id page;
  uint16_t first, last;
} ikv_page_extent;
/* Pages covered by the span in logical order. Capacity rule as span_list. */
ikv_status ikv_pt_span_pages(const ikv_pagetable *pt, ikv_seq_id seq, ikv_span_id id,
                             ikv_page_extent *out, uint32_t cap, uint32_t *n);

/* ---- exports for a batch (caller buffers; slots are in `tier`) ----------- */
/* Exports change nothing observable. Each sequence keeps a cache of its
 * pages' GPU slots and precisions, so a GPU export is a copy per sequence; a
 * cache is rebuilt by the next export after a GPU slot or precision of one of
 * the table's pages changed (hence the non-const handle). For the GPU tier
 * every check happens before anything is written; for the host tier,
 * residency is checked while writing, so on IKV_E_NOT_RESIDENT the buffers
 * hold partial content. */

/* vLLM layout: block_table[batch][max_pages] of slots (unused entries -1),
 * seq_lens[batch] in tokens, precisions[batch][max_pages] (may be NULL; unused
 * entries IKV_SKIP). Every page must be resident in tier (else
 * IKV_E_NOT_RESIDENT) and fit in max_pages (else IKV_E_CAPACITY). */
ikv_status ikv_pt_export_block_table(ikv_pagetable *pt, const ikv_seq_id *seqs,
                                     uint32_t batch, ikv_tier tier, int32_t *block_table,
                                     uint32_t max_pages, int32_t *seq_lens,
                                     uint8_t *precisions);
/* FlashInfer CSR: indptr[batch + 1], indices[indptr[batch]] slots,
 * last_page_len[batch] (tokens in each last page, 0 for an empty sequence),
 * precisions[indptr[batch]] (may be NULL). indices_cap bounds indices and
 * precisions; if too small, IKV_E_CAPACITY. */
ikv_status ikv_pt_export_csr(ikv_pagetable *pt, const ikv_seq_id *seqs, uint32_t batch,
                             ikv_tier tier, int32_t *indptr, int32_t *indices,
                             uint32_t indices_cap, int32_t *last_page_len,
                             uint8_t *precisions);

/* ---- statistics ---------------------------------------------------------- */

typedef struct ikv_pt_stats {
  uint32_t pages_used[IKV_TIER_COUNT][IKV_PRECISION_COUNT];
  uint32_t pages_free[IKV_TIER_COUNT][IKV_PRECISION_COUNT];
  uint64_t bytes_used[IKV_TIER_COUNT][IKV_PRECISION_COUNT];
  uint32_t live_pages;   /* distinct pages referenced by some sequence */
  uint32_t shared_pages; /* pages referenced by more than one sequence */
  uint32_t sequences;
  uint64_t cow_copies;        /* since creation */
  uint64_t precision_changes; /* since creation */
} ikv_pt_stats;
ikv_status ikv_pt_get_stats(const ikv_pagetable *pt, ikv_pt_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* IKV_PAGETABLE_H */
