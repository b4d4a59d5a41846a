/* Internal state of the runtime, shared by its source files. */
#ifndef IKV_RUNTIME_INTERNAL_H
#define IKV_RUNTIME_INTERNAL_H

#include "runtime/backend.h"
#include "runtime/intentkv.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ikv_runtime {
  ikv_runtime_config cfg;
  const rt_backend *be;
  void *dev; /* the backend's own state */
  ikv_attn_params attn;
  ikv_pagetable *pt;
  size_t page_bytes[IKV_PRECISION_COUNT]; /* one layer */
  uint32_t max_pages;                     /* page ids are below this */
  uint8_t **pools;                        /* [layer][tier][precision] base, NULL if 0 pages */
  uint16_t *fill;                         /* [page] rows written */
  /* A page an append reserved rows of keeps its precision through the next
   * plan until every layer's write_kv has written them (the caller holds
   * the append's slot mapping): layers still to write, and that plan's number. */
  uint16_t *unwritten_layers; /* [page] */
  uint32_t *unwritten_plan;   /* [page] */
  ikv_page_id *token_pages;               /* write_kv: each token's page (scratch) */
  uint32_t gpu_tokens;                    /* tokens the GPU tier holds: the most one append or write_kv
                                             takes (every such token has a slot there); token_pages and the
                                             backends' staging hold that many from creation on */
  /* CPU backend: key summaries of score_layer, [page][kv_head][head_dim]
   * (kernels/page_summary.h: fp16 bounds, fp32 sums) */
  uint16_t *kmin, *kmax;
  float *ksum;
  struct {
    ikv_seq_id seq;
    ikv_span_id span;
  } span_hints[IKV_MAX_SPAN_HINTS]; /* ikv_span_hint: read by the next plan */
  uint32_t n_span_hints;
  ikv_runtime_stats stats;
  ikv_host_tier *host; /* where the host tier's pools come from */
  /* tiering.c: the GPU page cache and the prefetcher */
  uint32_t build_seq; /* plan builds begun */
  uint32_t *read_stamp;  /* [page] build_seq of the last plan reading it (or a prefetch protecting it;
                            build_seq + 1: appended to, kept through the next plan) */
  uint32_t *keep_stamp;  /* [page] build_seq of the last plan reading it as a sink, ALWAYS, GLOBAL
                            or recent-window page (0: none): kept a few plans (tiering.c) */
  uint32_t *landing;     /* [page] prefetch batch that brought it to the GPU tier, until its first
                            read (0: none) */
  uint32_t n_landing;    /* pages with a landing batch */
  uint32_t batches, landed; /* prefetch batches issued; every batch up to `landed` has landed */
  ikv_history *history;
  ikv_page_id *victims;  /* [gpu_pages] scratch: eviction candidates */
  uint32_t gpu_pages;    /* pages the GPU tier holds, all precisions */
  uint32_t *cand;        /* [cap_cand] scratch: predicted pages */
  uint32_t cap_cand;
  rt_move *moves;        /* [gpu_pages] scratch: one batch */
  uint32_t *pairs;       /* [4 * gpu_pages] scratch: victims with their LRU rank */
  uint8_t *mark;         /* [page] scratch, all 0 between uses */
  ikv_plan *active;
  ikv_plan *stamped; /* the last plan built: its pages' recency not yet stamped (plan.c) */
  char errmsg[256];
};

/* Records a message for ikv_runtime_errmsg and returns status. */
ikv_status rt_fail(ikv_runtime *rt, ikv_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* backend_cpu.c: pool addressing, shared by the backends */
size_t rt_pool_index(const ikv_runtime *rt, uint32_t layer, ikv_tier tier, ikv_precision precision);
uint8_t *rt_page(const ikv_runtime *rt, uint32_t layer, ikv_tier tier, ikv_precision precision,
                 int32_t slot);
ikv_layer_pools rt_layer_pools(const ikv_runtime *rt, uint32_t layer, ikv_tier tier);

/* scoring.c: the CPU backend's page key summaries and page scores (the
 * backend table's summarize, copy_summary and rank_pages) */
ikv_status rt_summaries_create(ikv_runtime *rt);
void rt_summaries_destroy(ikv_runtime *rt);
ikv_status rt_summarize(ikv_runtime *rt, const void *k, ikv_dtype dtype, const int64_t *slots,
                        const ikv_page_id *pages, uint32_t n, void *stream);
ikv_status rt_summary_copy(ikv_runtime *rt, ikv_page_id dst, ikv_page_id src);
ikv_status rt_rank_pages(ikv_runtime *rt, int bound, const ikv_page_id *pages, uint32_t n, const float *q,
                         uint32_t want, uint64_t *keys);

/* tiering.c: the GPU page cache (intent-aware LRU eviction, batched moves)
 * and the prefetcher */
ikv_status rt_tiering_open(ikv_runtime *rt);
void rt_tiering_close(ikv_runtime *rt);
/* Frees GPU slots so that need[p] more pages of each precision fit, moving
 * victims to the host tier in one batch: least recently used pages first,
 * never a page the plan being built reads nor a partly filled one, and with
 * spare_kept none the last few plans keep (sinks, ALWAYS, GLOBAL, recent
 * window); among the
 * oldest, lower history scores leave first. freed[p] (optional): the slots
 * now free for the need, up to need[p]. pl: the plan being built, or NULL. */
ikv_status rt_make_room(ikv_runtime *rt, ikv_plan *pl, const uint32_t need[IKV_PRECISION_COUNT], int spare_kept,
                        uint32_t freed[IKV_PRECISION_COUNT]);
/* Moves pages[0, n) off the GPU tier (bytes copied where the host tier has
 * no copy yet) in one batch; passes over pages gone, not on the GPU, pinned,
 * or with no room in the host pool. pl: the plan being built, or NULL. */
ikv_status rt_evict(ikv_runtime *rt, ikv_plan *pl, const ikv_page_id *pages, uint32_t n, uint32_t *evicted);
/* Copies pages[0, n) (not on the GPU tier; room made) host -> GPU as `kind`. */
ikv_status rt_fetch(ikv_runtime *rt, ikv_plan *pl, const ikv_page_id *pages, uint32_t n, rt_move_kind kind);
/* The plan's entries whose page is still landing: counted, and the decode
 * made to wait for the latest batch among them (only those). */
ikv_status rt_await_landing(ikv_runtime *rt, ikv_plan *pl);
/* After a successful build: the history learns the plan, and the
 * prefetcher copies the predicted pages of the next step. */
void rt_prefetch_next(ikv_runtime *rt, ikv_plan *pl);
/* plan.c: gives the pages of the last plan built (rt->stamped) the recency
 * its build reserved; before anything reads the recency order. */
void rt_stamp_plan(ikv_runtime *rt);
/* Polls finished stall timings into the statistics. */
void rt_poll_stalls(ikv_runtime *rt);

/* intentquant.c: fidelity of each precision code (fp16/bf16 4, int8 3,
 * fp8 2, int4 1, skip and anything else 0); a table, as planning asks it
 * for every page. */
extern const uint8_t rt_rank[256];
static inline int rt_precision_rank(uint8_t precision) { return rt_rank[precision]; }
/* The better of two wanted precisions (IKV_SKIP is the worst). */
static inline uint8_t rt_best(uint8_t a, uint8_t b) { return rt_rank[b] > rt_rank[a] ? b : a; }
/* Precision of a page read for `want` when stored as `stored`: a lower
 * fidelity converts, a higher one reads what is stored. */
static inline uint8_t rt_effective(uint8_t want, uint8_t stored) { return rt_rank[want] < rt_rank[stored] ? want : stored; }

#ifdef __cplusplus
}
#endif
#endif /* IKV_RUNTIME_INTERNAL_H */
