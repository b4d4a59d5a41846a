/*
 * intentkv: the runtime a serving scheduler drives every decode step.
 *
 *   ikv_append      reserve slots for each sequence's new tokens (slot mapping)
 *   ikv_write_kv    per layer: the model's new K/V into their pages, quantized
 *                   to each page's precision; page key summaries kept current
 *   ikv_plan_build  once per step: validate scheduler tables, or let the
 *                   router derive them from semantic spans; convert pages the
 *                   plan downgrades, fetch pages it needs onto the GPU tier
 *   ikv_decode      per layer: paged decode attention over the plan
 *   ikv_step_end    release the step's pages, account hits and misses
 *
 * Conventions as in runtime/ikv_base.h (one status type, errors change
 * nothing, opaque handles, caller-owned buffers). In addition
 * ikv_runtime_errmsg() describes the last error in words. A runtime is used by
 * one thread at a time. Backends: CPU (the C reference kernels; pools in host
 * memory) and CUDA (GPU tier in device memory, host tier pinned; the CUDA
 * kernels; see docs/runtime.md for its streams).
 */
#ifndef INTENTKV_H
#define INTENTKV_H

/* Spans (and implicit regions) one sequence of a plan can report decisions for. */
#define IKV_PLAN_MAX_DECISIONS_PER_SEQ 256

#include "kernels/decode_plan.h"
#include "kernels/quantize_ref.h"
#include "pagetable/pagetable.h"
#include "prefetch/host_tier.h"
#include "prefetch/predict.h"
#include "runtime/ikv_base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ikv_runtime ikv_runtime;
typedef struct ikv_plan ikv_plan;

typedef enum ikv_backend { IKV_BACKEND_CPU = 0, IKV_BACKEND_CUDA } ikv_backend;

/* The prefetcher (docs/prefetch.md): after each plan it predicts the next
 * step's pages and copies those off the GPU tier there, host -> GPU, on its
 * own stream; the next decode waits only for the copies of pages it reads. */
typedef struct ikv_prefetch_config {
  ikv_predictor predictor;  /* IKV_PREDICT_NONE (0): no prefetching; IKV_PREDICT_BELADY is refused
                               (it needs the future) */
  uint64_t bytes_per_step;  /* most bytes (all layers) copied after one plan; 0: no limit but the
                               GPU tier's room */
} ikv_prefetch_config;

typedef struct ikv_runtime_config {
  ikv_geometry geometry;
  uint32_t q_heads;       /* multiple of geometry.kv_heads */
  float softmax_scale;    /* 0: 1 / sqrt(head_dim) */
  int32_t window, sinks;  /* sliding window and sink tokens (0, 0: none) */
  uint32_t capacity[IKV_TIER_COUNT][IKV_PRECISION_COUNT]; /* pages per pool */
  uint32_t max_sequences;
  uint32_t max_batch;      /* sequences per plan */
  uint32_t max_plan_pages; /* selected pages per plan (plan buffers are preallocated) */
  uint32_t score_layer;    /* the layer whose keys feed the page summaries */
  ikv_backend backend;
  ikv_prefetch_config prefetch;
} ikv_runtime_config;

ikv_status ikv_runtime_create(const ikv_runtime_config *config, ikv_runtime **out);
void ikv_runtime_destroy(ikv_runtime *rt);
/* The last error of this runtime, in words ("" if none). Valid until the next call. */
const char *ikv_runtime_errmsg(const ikv_runtime *rt);
/* The block-table manager inside, for queries (sequence info, pages, spans,
 * statistics). Change sequences and spans through the ikv_* calls below: they
 * keep page bytes and summaries in step with the table. */
const ikv_pagetable *ikv_runtime_pagetable(const ikv_runtime *rt);
/* Where the host tier's pools live (NUMA node nearest the GPU, or why not). */
ikv_status ikv_runtime_host_placement(const ikv_runtime *rt, ikv_host_placement *out);

/* ---- sequences and spans (delegating to the block-table manager) --------- */
ikv_status ikv_seq_create(ikv_runtime *rt, ikv_precision precision, ikv_seq_id *out);
ikv_status ikv_seq_fork(ikv_runtime *rt, ikv_seq_id parent, ikv_seq_id *child);
ikv_status ikv_seq_free(ikv_runtime *rt, ikv_seq_id seq);
ikv_status ikv_seq_truncate(ikv_runtime *rt, ikv_seq_id seq, uint32_t n_tokens);
/* Swaps pages [first, first + count) of a sequence out to the host tier
 * (bytes copied, GPU slots released), e.g. for a preempted sequence; a later
 * plan that reads them fetches them back. Pages shared with other sequences
 * move for all of them. Pinned pages refuse (IKV_E_PINNED); all or nothing. */
ikv_status ikv_seq_offload(ikv_runtime *rt, ikv_seq_id seq, uint32_t first, uint32_t count);
ikv_status ikv_span_add(ikv_runtime *rt, ikv_seq_id seq, const ikv_span *span, ikv_span_id *out);
ikv_status ikv_span_update(ikv_runtime *rt, ikv_seq_id seq, ikv_span_id id, const ikv_span *span);
ikv_status ikv_span_remove(ikv_runtime *rt, ikv_seq_id seq, ikv_span_id id);

/* The scheduler will read this span soon (e.g. a tool output it is about to
 * feed back): the next plan's prefetch hints (ikv_plan_prefetch_hints) list
 * the span's pages that are not on the GPU tier, ahead of the router's own.
 * A hint lasts one successful ikv_plan_build; a span gone by then is passed
 * over. At most IKV_MAX_SPAN_HINTS wait at once (IKV_E_CAPACITY); an unknown
 * sequence or span is refused (IKV_E_UNKNOWN_SEQ, IKV_E_UNKNOWN_SPAN). */
#define IKV_MAX_SPAN_HINTS 64
ikv_status ikv_span_hint(ikv_runtime *rt, ikv_seq_id seq, ikv_span_id id);

/* ---- the step ------------------------------------------------------------ */

/* Reserves n_tokens[i] new tokens for seqs[i]; writes each token's slot and
 * page precision (concatenated over the batch) into slot_mapping and
 * slot_precision, both sum(n_tokens) long. Copy-on-write copies of shared
 * pages happen here, in every layer. New pages go to the GPU tier, which
 * makes room by evicting as a plan does (ikv_plan_build); such moves lose
 * nothing if the append then fails. Otherwise all or nothing, except that a
 * copy-on-write copy the device refused (IKV_E_CUDA: the appends are rolled
 * back) leaves that sequence with its own copy of the page, whose bytes are
 * not to be trusted: the device is in an error state. */
ikv_status ikv_append(ikv_runtime *rt, const ikv_seq_id *seqs, const uint32_t *n_tokens,
                      uint32_t batch, int64_t *slot_mapping, uint8_t *slot_precision);

/* One layer's new K and V ([n_tokens][kv_heads][head_dim] in dtype) into the
 * slots ikv_append returned. stream: a cudaStream_t for CUDA, NULL for CPU.
 * IKV_E_RANGE for a slot no page on the GPU tier owns; IKV_E_INVALID for
 * more tokens than the GPU tier has slots (the most one append returns). */
ikv_status ikv_write_kv(ikv_runtime *rt, uint32_t layer, const void *k, const void *v,
                        ikv_dtype dtype, const int64_t *slot_mapping,
                        const uint8_t *slot_precision, uint32_t n_tokens, void *stream);

/* How a plan chooses pages. */
typedef enum ikv_plan_mode {
  IKV_PLAN_TABLES = 0, /* the scheduler's selection and precision tables */
  IKV_PLAN_ROUTER      /* the router, from semantic spans */
} ikv_plan_mode;

/* How the router ranks ATTEND pages. */
typedef enum ikv_score_mode {
  IKV_SCORE_SPAN = 0,     /* the span's score (uncovered tokens: default_score) */
  IKV_SCORE_QUERY_BOUND,  /* Quest-style upper bound of q.k from per-channel key min/max,
                             top-k per KV head (needs score_q) */
  IKV_SCORE_MEAN_COSINE   /* cosine of q with the page's mean key, top-k per KV head */
} ikv_score_mode;

typedef struct ikv_router_params {
  float memory_pressure;   /* [0, 1]: picks the IntentQuant band (docs/router.md) */
  uint32_t recent_tokens;  /* the last N tokens are always read */
  uint32_t sink_tokens;    /* the first N tokens are always read */
  uint32_t token_budget;   /* per sequence, tokens read (0: unlimited) */
  uint64_t byte_budget;    /* per sequence, KV bytes read per layer (0: unlimited) */
  float default_score;     /* score of tokens no span covers (they compete as ATTEND) */
  ikv_score_mode score_mode;
  uint32_t topk_pages;     /* query-aware modes: ATTEND pages per KV head (0: budget only) */
  const float *score_q;    /* query-aware modes: [batch][q_heads][head_dim] floats, host memory
                              (device memory with select_on_device) */
  /* Query-aware modes on the CUDA backend: the GPU scores and ranks the
   * candidates and writes each KV head's topk_pages best straight into the
   * plan's device arrays, in ikv_decode of layer 0 (on its stream, before
   * that decode, every time layer 0 is decoded: a captured graph replays
   * it); the host never waits for a score. score_q is then device memory,
   * written before layer 0's decode in stream order. Candidates are the
   * ATTEND pages on the GPU tier when the plan is built (at most 8,192 a
   * sequence), read as stored; budgets do not apply to them (topk_pages > 0
   * required). Each KV-head row reserves min(topk_pages, candidates of a
   * precision) entries per stored precision; entries the GPU does not fill
   * read nothing, and the plan's statistics count reserved entries (an upper
   * bound; ikv_plan_count_selected counts what was read). CPU backend:
   * IKV_E_UNSUPPORTED. */
  uint32_t select_on_device;
} ikv_router_params;

/* Scheduler tables, CSR over the batch (or over batch x kv_heads when
 * per_kv_head): logical page indices, strictly increasing within a row (as
 * CSR column indices; no duplicates), the precision wanted for
 * each, and optionally a token mask per page (NULL: whole valid page). A
 * wanted precision equal to the stored one reads it; a lower one converts the
 * page now (a real downgrade, for every sequence sharing it); a higher one is
 * refused (IKV_E_PRECISION: the bits are gone). */
typedef struct ikv_plan_tables {
  uint32_t per_kv_head;
  const int32_t *indptr;
  const int32_t *page_index;
  const uint8_t *precision;
  const uint16_t *first, *last; /* both NULL, or both given */
} ikv_plan_tables;

typedef struct ikv_plan_request {
  const ikv_seq_id *seqs;
  uint32_t batch;
  ikv_plan_mode mode;
  ikv_plan_tables tables;  /* IKV_PLAN_TABLES */
  ikv_router_params router; /* IKV_PLAN_ROUTER */
} ikv_plan_request;

/* A plan's buffers are allocated once, with the runtime's max_batch and
 * max_plan_pages capacities; building never allocates. */
ikv_status ikv_plan_create(ikv_runtime *rt, ikv_plan **out);
void ikv_plan_destroy(ikv_plan *plan);
/* Builds the step's plan. Invalid requests (unknown sequence, page out of
 * range, bad precision, bad mask, capacity of the plan's buffers) are refused
 * before anything changes, and ikv_runtime_errmsg() says which sequence, page
 * or field was wrong. Then the plan's pages are pinned for the step, pages it
 * downgrades are converted (when the target pool has room; else read as
 * stored), and pages not on the GPU tier are fetched, evicting least recently
 * used pages not in the plan to the host tier; if the GPU tier cannot hold
 * the plan's pages, IKV_E_CAPACITY comes after such moves (they lose
 * nothing). A runtime has at most one plan in flight: end it (ikv_step_end)
 * before building the next. Build each step's plan with the same plan
 * object: for sequences its last build had (from scheduler tables, or by
 * the router in span mode; sequences may join and leave the batch, and
 * those that stay keep their rows where they keep their order) it keeps the
 * rows' entries that neither the request nor the sequences changed, and
 * does the work only for the rest (the result is the same as a new plan
 * object's; ikv_plan_stats.entries_kept). */
ikv_status ikv_plan_build(ikv_runtime *rt, ikv_plan *plan, const ikv_plan_request *request);

/* The plan as kernels read it (owned by the plan, valid until it is rebuilt). */
const ikv_decode_plan *ikv_plan_view(const ikv_plan *plan);

/* Work items (kernels/decode_plan.h), and the permutation of plan entries
 * they index (grouped by row and precision, logical order inside a group),
 * cut at 32 pages an item. */
const ikv_work_item *ikv_plan_work(const ikv_plan *plan, uint32_t *n_items);
const int32_t *ikv_plan_work_entries(const ikv_plan *plan);

/* Pages the prefetcher should bring to the GPU for the next step: ATTEND pages
 * ranked just below this step's cut, and selected pages that had to be
 * fetched on demand. */
const ikv_page_id *ikv_plan_prefetch_hints(const ikv_plan *plan, uint32_t *n);

/* Why the router decided what it did about a span (or the implicit regions). */
typedef enum ikv_reason {
  IKV_REASON_SINKS = 0,           /* the first sink_tokens tokens: always read */
  IKV_REASON_ALWAYS,              /* ALWAYS span: read in full */
  IKV_REASON_GLOBAL,              /* GLOBAL span: read in full */
  IKV_REASON_RECENT_WINDOW,       /* the recent window (or a RECENT span inside it): read */
  IKV_REASON_ATTEND_SELECTED,     /* ATTEND: every page fit the budget */
  IKV_REASON_ATTEND_PARTIAL,      /* ATTEND: some pages fit the budget, the rest skipped */
  IKV_REASON_ATTEND_BUDGET,       /* ATTEND: no page fit the budget */
  IKV_REASON_ATTEND_PRESSURE,     /* ATTEND: score band is SKIP at this memory pressure */
  IKV_REASON_ATTEND_NOT_TOPK,     /* query-aware: no page ranked in the top-k of any KV head */
  IKV_REASON_ATTEND_ON_DEVICE,    /* select_on_device: pages_selected of its pages are candidates
                                     the GPU ranks (it reads its top-k per KV head among them),
                                     pages_skipped are not (off the GPU tier) */
  IKV_REASON_SKIP_POLICY,         /* SKIP span: not read */
  IKV_REASON_SKIP_SHARED_PAGE,    /* SKIP span, but some of its tokens sit inside the mask
                                     of a page read for another span */
  IKV_REASON_SCHEDULER_TABLES,    /* tables mode: the scheduler chose */
  IKV_REASON_COUNT
} ikv_reason;
const char *ikv_reason_str(ikv_reason reason);

typedef struct ikv_span_decision {
  uint32_t seq_index;       /* position in the request's batch */
  ikv_span_id span;         /* 0: no span (sinks, recent window, uncovered tokens) */
  ikv_span_kind kind;       /* IKV_SPAN_KIND_COUNT for tokens no span covers */
  ikv_reason reason;
  uint32_t pages_selected, pages_skipped;
  uint8_t precision;        /* the highest precision read for the span (IKV_SKIP: none) */
} ikv_span_decision;
const ikv_span_decision *ikv_plan_decisions(const ikv_plan *plan, uint32_t *n);

typedef struct ikv_plan_stats {
  uint32_t pages_selected, pages_skipped; /* over the batch (per-KV-head rows count each) */
  uint32_t pages_by_precision[IKV_PRECISION_COUNT]; /* selected entries */
  uint64_t bytes_read;        /* KV bytes the decode of one layer reads (pages x bytes, scales included;
                                 an entry of a per-KV-head row reads that head's share) */
  uint64_t bytes_dense_fp16;  /* one layer, every page of every sequence in FP16 */
  uint32_t conversions;       /* pages downgraded by this plan */
  /* tiers (entries: as pages_selected counts them; bytes: all layers) */
  uint32_t pages_hit;         /* entries whose page was on the GPU tier when the plan was built */
  uint32_t pages_missed;      /* entries whose page was not: fetched on demand */
  uint32_t demand_fetches;    /* pages copied host -> GPU by this plan before its decode (stalls) */
  uint32_t prefetch_hits;     /* entries whose page a prefetch brought, landed in time */
  uint32_t prefetch_late;     /* entries whose page a prefetch was still bringing: the decode waits for it */
  uint32_t evictions;         /* pages this plan moved GPU -> host to make room (its own and its prefetches') */
  uint32_t prefetched;        /* pages the prefetcher copied host -> GPU after this plan, for the next */
  uint64_t bytes_h2d, bytes_d2h; /* bytes those moves copied, per direction */
  uint32_t entries_kept;      /* entries kept from the plan object's last build (scheduler tables, or
                                 the router in span mode: their row and sequence unchanged), not
                                 written or resolved again */
} ikv_plan_stats;
ikv_status ikv_plan_get_stats(const ikv_plan *plan, ikv_plan_stats *out);

/* A select_on_device plan's statistics count the entries its KV-head rows
 * reserve, an upper bound on what the GPU picks. After layer 0's decode on
 * `stream`, this waits for the stream, copies back the entries the GPU
 * filled and counts what the plan's decodes read instead (pages_selected,
 * pages_by_precision, bytes_read, pages_hit; ikv_step_end accounts those;
 * the prefetch counters, taken at the build, still count reserved
 * entries). A host round trip, for reporting. The plan must be in flight
 * (built, before ikv_step_end: else IKV_E_INVALID); other plans'
 * statistics are exact already and stay as they are. */
ikv_status ikv_plan_count_selected(ikv_runtime *rt, ikv_plan *plan, void *stream);

/* Decode attention of one layer over the plan: q and out are
 * [batch][q_heads][head_dim] in dtype, lse [batch][q_heads] float (natural
 * log). */
ikv_status ikv_decode(ikv_runtime *rt, const ikv_plan *plan, uint32_t layer, const void *q,
                      void *out, float *lse, ikv_dtype dtype, void *stream);

/* Ends the step: the plan's pages may be evicted again; hits, misses and
 * history are accounted. */
ikv_status ikv_step_end(ikv_runtime *rt, ikv_plan *plan);

/* ---- CUDA graphs across steps (CUDA backend) ------------------------------
 * A step's write_kv and decode calls, captured once on a stream, can be
 * replayed in later steps while ikv_step_graph_key gives the same key: each
 * step's slot mapping is uploaded at ikv_append and its plan at
 * ikv_plan_build into the device buffers the captured kernels read, and the
 * key covers what the launches depend on (plan shape, device selection's
 * sizes, those buffers). The decode's grid is the plan's work items rounded
 * up (at most an eighth more, padded with empty items), and device
 * selection's launches its longest sequence's candidates rounded the same
 * way, so a plan whose entries move within those buckets, as a router's
 * does when a page begins, keeps its key; the page-copy strategy chosen at
 * capture then stays.
 * Inputs (k, v, q, score_q) and outputs must stay at
 * the addresses captured. A step: ikv_append, ikv_plan_build,
 * ikv_step_graph_key (capture afresh if it changed), ikv_stream_enter,
 * cudaGraphLaunch, ikv_stream_leave, ikv_step_end; capture between enter and
 * leave the same way. The CPU backend: IKV_E_UNSUPPORTED (the key). */
ikv_status ikv_step_graph_key(const ikv_runtime *rt, const ikv_plan *plan, uint64_t *key);
/* The stream waits for the runtime's uploads and page moves (enter); the
 * runtime's later moves wait for the stream's work (leave). */
ikv_status ikv_stream_enter(ikv_runtime *rt, void *stream);
ikv_status ikv_stream_leave(ikv_runtime *rt, void *stream);

typedef struct ikv_runtime_stats {
  uint64_t steps;
  uint64_t pages_read, pages_hit, pages_missed; /* selected pages; hit = already on the GPU tier */
  uint64_t bytes_read;                          /* per layer, summed over steps */
  uint64_t conversions, demand_fetches, evictions, cow_copies;
  uint64_t prefetched, prefetch_hits, prefetch_late; /* as in ikv_plan_stats, summed */
  uint64_t bytes_h2d, bytes_d2h;                      /* tier moves, all layers */
  double stall_us; /* CUDA: device time of demand fetches, counted once they finish (ikv_step_end
                      polls, never waits); CPU: 0 */
  uint64_t device_allocations; /* CUDA: device and page-locked host allocations so far, all made by
                                  ikv_runtime_create and ikv_plan_create (none by a step: staging is
                                  sized for the largest step then); CPU: 0 */
} ikv_runtime_stats;
ikv_status ikv_runtime_get_stats(const ikv_runtime *rt, ikv_runtime_stats *out);

/* The IntentQuant table: the precision a page gets for a class of use at a
 * memory pressure (IKV_SKIP: not read). */
typedef enum ikv_use_class {
  IKV_USE_SINK = 0,
  IKV_USE_ALWAYS,       /* ALWAYS and GLOBAL spans */
  IKV_USE_RECENT,       /* the recent window */
  IKV_USE_ATTEND_HIGH,  /* ATTEND, score >= 0.7 */
  IKV_USE_ATTEND_MID,   /* ATTEND, 0.3 <= score < 0.7 */
  IKV_USE_ATTEND_LOW,   /* ATTEND, score < 0.3 */
  IKV_USE_COUNT
} ikv_use_class;
uint8_t ikv_intentquant(ikv_use_class use, float memory_pressure);
ikv_use_class ikv_attend_class(float score);

#ifdef __cplusplus
}
#endif
#endif /* INTENTKV_H */
