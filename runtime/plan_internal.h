/* The plan object and the router's per-sequence selection, shared by
 * plan.c (validation, effects, emission) and router.c (span rules). */
#ifndef IKV_PLAN_INTERNAL_H
#define IKV_PLAN_INTERNAL_H

#include "kernels/summary_cuda.h"
#include "runtime/runtime_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Decode work is split into items of at most this many pages (split-KV). */
#define IKV_WORK_PAGES 32u
#define IKV_HINTS_PER_SEQ 8u
#define UNSEEN 0xfe /* page_want of a page no row of the plan reads */

/* A token range competing for the budget: an ATTEND span, the part of a
 * RECENT span outside the window, or tokens no span covers. */
typedef struct rt_chunk {
  uint32_t start, end; /* tokens */
  float score;
  uint8_t precision;   /* IKV_SKIP: its band skips it at this pressure */
  uint32_t decision;   /* index into the plan's decisions */
} rt_chunk;

/* Mandatory reads (sinks, the recent window, ALWAYS and GLOBAL spans). */
typedef struct rt_mark {
  uint32_t start, end; /* tokens */
  uint8_t precision;
} rt_mark;

/* The router works on segments, not pages: the boundaries of every token
 * range it marks cut a sequence's pages into runs of pages that every rule
 * treats alike (a range's partly covered edge page is a segment of its own),
 * so a rule costs a step per segment. sel_*: what the mandatory rules and the
 * span-score selection read; cand_*: what the ATTEND ranges offer to
 * query-aware ranking. IKV_SKIP: nothing. */
typedef struct rt_seg {
  uint32_t first, end; /* pages [first, end) */
  uint32_t cand_at;    /* query-aware: the index of its first page among the ranked candidates */
  uint32_t offered;    /* device selection: its pages on the GPU tier, offered as candidates */
  uint16_t sel_lo, sel_hi, cand_lo, cand_hi;
  uint8_t sel_want, cand_want;
} rt_seg;

/* A sequence of a batch and its place in it. */
typedef struct rt_seq_at {
  ikv_seq_id seq;
  uint32_t at;
} rt_seq_at;

/* A run of a span-mode row: pages [first, first + count), all read with the
 * same mask and precision. A sequence's runs describe its row; comparing them
 * with the last build's says which entries the row keeps. */
typedef struct rt_run {
  uint32_t first, count;
  uint16_t lo, hi;
  uint8_t want;
} rt_run;

/* Segments a sequence with S spans can have: up to 2S + 3 ranges with four
 * cuts each, plus a budget's cut in each of the 2S + 1 competing ranges. */
#define RT_SEGMENTS(S) (10u * (S) + 16u)

struct ikv_plan {
  ikv_runtime *rt;
  void *dev; /* the backend's copy of the plan (CUDA: device buffers) */
  uint32_t cap_batch, cap_entries, cap_rows, cap_decisions;
  /* entries (CSR over rows) */
  int32_t *indptr, *slot, *page_index, *seq_len;
  uint8_t *precision, *want;
  uint16_t *first, *last;
  ikv_page_id *page;
  uint32_t n_entries, n_rows;
  ikv_decode_plan view;
  /* work partition */
  uint8_t *row_precision; /* [rows]: the row's one precision (resolve), else 0xff */
  ikv_work_item *work;
  uint32_t n_work;
  int32_t *work_entries;
  /* prefetch hints, decisions, statistics */
  ikv_page_id *hints; /* the scheduler's (n_sched_hints), the router's near misses
                         (n_margin_hints), then pages fetched on demand */
  ikv_page_extent *extents; /* [pages]: a hinted span's pages */
  uint32_t n_hints, n_sched_hints, n_margin_hints;
  ikv_span_decision *decisions;
  uint32_t n_decisions;
  ikv_plan_stats stats;
  /* slow path only (a page to convert or fetch): the distinct pages of the
   * plan and the precision each ends up in (indexed by page id; 0xfe: not in
   * the plan, so eviction passes it by) */
  ikv_page_id *touched;
  uint8_t *touched_stored, *touched_on_gpu;
  uint32_t n_touched, hits, misses;
  uint8_t *page_want;
  /* router scratch for one sequence, sized for the longest possible one */
  rt_seg *segs;      /* [RT_SEGMENTS(spans)] */
  rt_mark *marks;    /* [spans + 2] */
  uint64_t *cuts;    /* [pages / 64 + 1] bit i: a segment starts at page i */
  uint32_t *cand_seg; /* [pages]: the segment of each ranked candidate */
  uint64_t *picked;   /* [kv_heads + 1][pages / 64 + 1] bits over the candidates: each KV head's picks,
                         then the candidates some head picked */
  uint64_t *rank_keys;  /* [kv_heads][candidates]: one sequence's candidates ranked per head */
  uint32_t *order;      /* [2 * pages]: candidates, then their page ids */
  uint32_t *span_order; /* [2 * spans]: SKIP spans, then spans by start */
  rt_chunk *chunks;
  ikv_span *spans;
  ikv_span_id *span_ids;
  uint32_t scratch_pages, scratch_spans;
  /* device selection (router select_on_device): the candidates the GPU
   * ranks, per sequence (CSR by dsel_seq), and each row's reserved entries */
  int dsel, dsel_bound;
  int ranked_batch; /* query-aware on the host: every sequence's candidates ranked at once, keys in rank_keys
                       (sequence b's at kv_heads * dsel_seq[b]; its candidates listed in dsel_pages) */
  uint32_t dsel_k, n_dsel;
  const float *dsel_q;                /* device */
  uint32_t *dsel_seq, *dsel_pages;    /* [batch + 1], [candidates] */
  ikv_select_candidate *dsel_cand;    /* [candidates] */
  int32_t *dsel_reserved;             /* [rows][IKV_PRECISION_COUNT], -1: none */
  int32_t *dsel_groups;               /* [rows][IKV_PRECISION_COUNT][3]: ikv_cuda_selection.groups */
  uint32_t pages_per_item;            /* the partition's cut */
  /* Rebuilding only what changed (scheduler tables): the last build's
   * request as far as its rows depend on it. A row whose sequence is at the
   * same version with no fewer pages keeps the entries its table still
   * lists; only the rest is checked, written and resolved. */
  int reuse_ok, reuse_per_head, reuse_masks;
  ikv_plan_mode reuse_mode;
  uint32_t reuse_batch;
  ikv_seq_id *reuse_seqs;   /* [batch] */
  uint32_t *reuse_version;  /* [batch] ikv_pt_seq_view.version */
  uint32_t *reuse_pages;    /* [batch] the sequence's pages */
  int32_t *old_start;       /* [rows + 1] scratch: the last build's row starts (old_rows of them) */
  uint32_t old_rows, rows_per_seq; /* the last build's rows; this build's rows a sequence (keep_rows) */
  int32_t *old_seq;         /* [batch] where sequence b was in the last build's batch, -1: nowhere (match_seqs) */
  rt_seq_at *seq_at;        /* [batch] scratch: the last batch's sequences by id */
  uint8_t *old_row_precision; /* [rows] the last build's row_precision */
  int32_t *fresh;           /* [rows] each row's first entry written by this build */
  uint8_t *seq_pending;     /* [batch] resolve left some of the sequence's entries for the slow path */
  uint8_t *row_settled;     /* [rows] resolve found every entry of the row in a precision it accepts */
  /* the last partition's rows and formats: a row found the same needs no new order (partition_rows) */
  uint8_t *parted_precision, *placed; /* [entries], [rows] */
  int32_t *parted_indptr;             /* [rows + 1] */
  uint32_t parted_rows;               /* 0: none to compare with */
  /* span-mode router rows as runs (rt_route_sequence): this build's, and the
   * last build's that it compares them with; sequence b's from run_at[b] */
  rt_run *runs, *old_runs;     /* [cap_runs] */
  uint32_t *run_at, *old_run_at; /* [batch + 1] */
  uint32_t cap_runs;
  uint64_t stamp_base;      /* entry e's recency is stamp_base + e + 1 (runtime stamped == this plan) */
  int kept_pending;         /* rows kept by this build still owe the last build's stamps (stamp_base,
                               unchanged until this build reserves its own) */
};

/* The plan's entry arrays, fetched once into a local for a loop that writes
 * entries: a store to one of them (a byte array may alias anything) then
 * cannot make the loop reload the plan's fields. */
typedef struct plan_entries {
  ikv_page_id *page;
  int32_t *page_index;
  uint16_t *first, *last;
  uint8_t *want;
} plan_entries;

static inline plan_entries plan_entries_of(const ikv_plan *pl) {
  return (plan_entries){pl->page, pl->page_index, pl->first, pl->last, pl->want};
}

static inline void plan_entry_set(plan_entries o, uint32_t e, ikv_page_id page, int32_t page_index, uint16_t first,
                                  uint16_t last, uint8_t want) {
  o.page[e] = page, o.page_index[e] = page_index, o.first[e] = first, o.last[e] = last, o.want[e] = want;
}

/* Entries [from, from + n) of the plan moved (or copied) to `to`, every array. */
void plan_move_entries(ikv_plan *plan, int32_t from, int32_t to, int32_t n);

/* Adds a decision; IKV_E_CAPACITY when the plan's decision buffer is full. */
ikv_status plan_decide(ikv_plan *plan, ikv_span_decision d, uint32_t *index);

/* router.c: sequence b of the request routed. Query-aware modes: its rows
 * (one per KV head) appended to the plan. Span mode: its one row left as
 * runs at runs[run_at[b]..run_at[b + 1]) (run_at[b] set by the caller), for
 * rt_route_emit to write where the plan places the row. */
ikv_status rt_route_sequence(ikv_runtime *rt, ikv_plan *plan, const ikv_plan_request *req, uint32_t b);
/* router.c: a span-mode row's entries from its runs, skipping its first
 * `skip` pages, written from entry e on (pages: the sequence's). */
void rt_route_emit(ikv_plan *plan, const rt_run *runs, uint32_t n_runs, uint32_t skip, const ikv_page_id *pages,
                   uint32_t e);
/* router.c: sequence b's query-aware candidates (the pages its rows rank),
 * appended to dsel_pages[dsel_seq[b]..] with dsel_seq[b + 1] set, and
 * nothing else of the pass kept; IKV_E_CAPACITY (no message) when the batch's
 * candidates outgrow the list. */
ikv_status rt_route_candidates(ikv_runtime *rt, ikv_plan *plan, const ikv_plan_request *req, uint32_t b);

#ifdef __cplusplus
}
#endif
#endif /* IKV_PLAN_INTERNAL_H */
