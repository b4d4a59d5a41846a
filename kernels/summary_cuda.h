/*
 * Page key summaries on the GPU: kept current as keys are written, and the
 * query-aware page scores computed from them, ranked per KV head. The same bits as the CPU
 * backend's (the math is kernels/page_summary.h). Summaries are three device
 * arrays (min, max, sum), each [page id][kv_heads][head_dim]: the bounds as
 * fp16 bits, the sums as floats. Asynchronous on the given stream, no
 * allocation.
 */
#ifndef IKV_SUMMARY_CUDA_H
#define IKV_SUMMARY_CUDA_H

#include "kernels/decode_plan.h"
#include "kernels/quantize_ref.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ikv_cuda_summaries {
  uint16_t *kmin, *kmax; /* device, fp16 bits */
  float *ksum;           /* device */
  uint32_t pages;            /* page ids are below this */
} ikv_cuda_summaries;

/* Folds n new keys (k: [n][kv_heads][head_dim] in dtype, device) into the
 * summaries of their pages: pages[i] (device) owns token i at slot
 * slot_mapping[i] (device), whose offset in the page is slot % page_size;
 * offset 0 starts a page's summary afresh. As with write_kv, a page may
 * appear in only one run of consecutive tokens per call. */
ikv_status ikv_cuda_summarize(const ikv_geometry *geometry, const ikv_cuda_summaries *summaries, const void *k,
                              ikv_dtype dtype, const int64_t *slot_mapping, const uint32_t *pages, uint32_t n,
                              void *stream);

/* keys[h * n + i] = ikv_rank_key(score of pages[i] for KV head h, i)
 * (kernels/page_summary.h) against q ([q_heads][head_dim] floats, device),
 * group = q_heads / kv_heads; bound as in ikv_summary_score. pages and keys
 * are device arrays. */
ikv_status ikv_cuda_page_keys(const ikv_geometry *geometry, const ikv_cuda_summaries *summaries, int bound,
                              const uint32_t *pages, uint32_t n, const float *q, uint32_t group, uint64_t *keys,
                              void *stream);

/* ikv_cuda_page_keys for `batch` sequences in one launch: sequence b's
 * candidates are pages[seq_off[b], seq_off[b + 1]) (seq_off on the device),
 * its queries q + b * q_heads * head_dim, its keys keys + kv_heads *
 * seq_off[b] laid out [kv_heads][n_b], ordinals counted within the
 * sequence. The launch covers `longest` candidates a sequence, which must
 * be at least every n_b (more only costs blocks that find nothing: a graph
 * captured with a bound serves every step whose sequences stay under it);
 * 0: nothing to score. */
ikv_status ikv_cuda_page_keys_batch(const ikv_geometry *geometry, const ikv_cuda_summaries *summaries, int bound,
                                    const uint32_t *pages, const uint32_t *seq_off, uint32_t longest, uint32_t batch,
                                    const float *q, uint32_t q_heads, uint64_t *keys, void *stream);

/* The largest n ikv_cuda_rank_keys sorts (in shared memory). */
#define IKV_CUDA_RANK_MAX 8192

/* Ranks each of the heads' rows of keys ([heads][n], device, distinct
 * within a row) in place: keys[h * n + r] for r < want becomes row h's r-th
 * smallest; the row's other entries are left unspecified. n above
 * IKV_CUDA_RANK_MAX: IKV_E_UNSUPPORTED (rank on the host). */
ikv_status ikv_cuda_rank_keys(uint32_t heads, uint64_t *keys, uint32_t n, uint32_t want, void *stream);
/* Every sequence's rows of ikv_cuda_page_keys_batch ranked in one launch,
 * the best min(want, n_b) first; longest as there (at least every n_b).
 * longest above IKV_CUDA_RANK_MAX: IKV_E_UNSUPPORTED (rank on the host). */
ikv_status ikv_cuda_rank_keys_batch(uint32_t heads, uint64_t *keys, const uint32_t *seq_off, uint32_t longest,
                                    uint32_t batch, uint32_t want, void *stream);

/* Device selection: a page the GPU may pick for a plan, and where a plan
 * entry for it points. */
typedef struct ikv_select_candidate {
  uint32_t page;        /* page id (its summaries) */
  int32_t slot;         /* slot in the GPU pool of its precision */
  int32_t page_index;   /* logical page index in its sequence */
  uint16_t first, last; /* valid tokens */
  uint8_t precision;    /* stored */
} ikv_select_candidate;

/* One plan's device selection (every array on the device). */
typedef struct ikv_cuda_selection {
  uint32_t batch, kv_heads, k;       /* k: pages per KV head */
  const uint32_t *seq_off;           /* [batch + 1]: sequence b's candidates are [seq_off[b], seq_off[b + 1]) */
  const ikv_select_candidate *cand;
  const uint64_t *keys;              /* sequence b's rows at keys + kv_heads * seq_off[b], row h n_b further
                                        each, as ikv_cuda_page_keys_batch writes them (unranked) */
  const int32_t *reserved;           /* [batch * kv_heads][IKV_PRECISION_COUNT]: the row's first entry
                                        reserved for candidates of that precision (min(k, candidates of it)
                                        entries), -1 for none */
  int32_t *page_slot, *page_index;   /* the plan's entries, written at reserved places */
  uint16_t *first, *last;
  /* the work items of each row's precision groups holding reserved entries
   * (which close their group in the partition): [rows][IKV_PRECISION_COUNT][3]
   * = first item (-1: none), items, the group's end position; items were cut
   * every pages_per_item positions */
  const int32_t *groups;
  ikv_work_item *items;
  uint32_t pages_per_item;
  uint32_t longest; /* at least the most candidates of any sequence, at most IKV_CUDA_RANK_MAX: a
                       thread's share of a row is held in registers, sized by it */
} ikv_cuda_selection;

/* Row (b, h) finds its best min(k, n_b) candidates (the smallest keys, by
 * a radix select: no ranking launch before it) and writes each, in
 * candidate order, into the next reserved entry of its precision; reserved
 * entries left over become empty (first 1, last 0), and the items over them
 * end early (empty items read nothing), so they cost no decode work. At
 * most IKV_CUDA_RANK_MAX candidates a sequence (longest above it:
 * IKV_E_UNSUPPORTED; 0 with sequences to select for: IKV_E_INVALID). */
ikv_status ikv_cuda_select_scatter(const ikv_cuda_selection *selection, void *stream);

#ifdef __cplusplus
}
#endif
#endif /* IKV_SUMMARY_CUDA_H */
