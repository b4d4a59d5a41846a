/*
 * The decode plan as a kernel reads it: per sequence (or per sequence and KV
 * head) a CSR list of selected pages, each with its precision, pool slot,
 * logical position and valid-token mask. The runtime builds it once per step;
 * every layer's decode (the C reference and the CUDA kernel alike) reads it
 * unchanged. All arrays are owned by the caller and only read.
 */
#ifndef IKV_DECODE_PLAN_H
#define IKV_DECODE_PLAN_H

#include <string.h>

#include "runtime/ikv_base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ikv_decode_plan {
  uint32_t batch;       /* sequences */
  uint32_t per_kv_head; /* 0: one page list per sequence, read by all its KV heads;
                           1: one list per (sequence, KV head), row b * kv_heads + h */
  const int32_t *indptr;     /* [rows + 1], nondecreasing, indptr[0] == 0 */
  const int32_t *page_slot;  /* [nnz] slot in the layer pool of the entry's precision */
  const uint8_t *precision;  /* [nnz] storable ikv_precision */
  const int32_t *page_index; /* [nnz] logical page index: token t of the entry sits at
                                position page_index * page_size + t */
  const uint16_t *first;     /* [nnz] first valid token offset in the page */
  const uint16_t *last;      /* [nnz] last valid token offset (inclusive), first <= last;
                                first == last + 1: an empty entry, read as nothing (device
                                selection leaves the entries it does not fill so) */
  const int32_t *seq_len;    /* [batch] tokens; the query sits at position seq_len - 1,
                                and every selected token lies before seq_len */
} ikv_decode_plan;

typedef struct ikv_attn_params {
  uint32_t q_heads;    /* a multiple of the geometry's kv_heads (GQA group = q/kv) */
  float softmax_scale; /* finite, > 0 (usually 1/sqrt(head_dim)) */
  int32_t window;      /* > 0: sliding window, keys at positions <= query - window
                          are dropped except the first `sinks` positions; 0: off */
  int32_t sinks;       /* >= 0; only meaningful with a window */
} ikv_attn_params;

/* A unit of decode work: entries of one row (sequence, or sequence x KV head)
 * that share one precision, as positions [begin, end) into a permutation of
 * the plan's entries. A kernel block handles one item (for one KV head when
 * rows are shared by all heads) and one page format. */
typedef struct ikv_work_item {
  uint32_t row;
  uint8_t precision;
  uint32_t begin, end;
} ikv_work_item;

/* The end of the run of entries from e on that hold precision[e] (before
 * end): eight codes compared at a time, as a row's formats come in long
 * runs (most of a mixed row is one format). */
static inline int32_t ikv_format_run_end(const uint8_t *precision, int32_t e, int32_t end) {
  const uint8_t p = precision[e];
  const uint64_t all_p = 0x0101010101010101ull * p;
  int32_t run = e + 1;
  for (uint64_t w; run + 8 <= end && (memcpy(&w, precision + run, 8), w == all_p);) run += 8;
  while (run < end && precision[run] == p) run++;
  return run;
}

/* How many of precision[begin, end) hold each storable format (other codes,
 * such as IKV_SKIP, count nowhere), run by run. */
static inline void ikv_count_formats(const uint8_t *precision, int32_t begin, int32_t end,
                                     uint32_t count[IKV_PRECISION_COUNT]) {
  memset(count, 0, sizeof(uint32_t) * IKV_PRECISION_COUNT);
  for (int32_t e = begin; e < end;) {
    const int32_t run = ikv_format_run_end(precision, e, end);
    if (precision[e] < IKV_PRECISION_COUNT) count[precision[e]] += (uint32_t)(run - e);
    e = run;
  }
}

/* Partitions a plan: for each of its `rows` rows, a counting sort of the
 * entries by precision into entries[] (logical order kept inside a
 * precision), cut into items of at most pages_per_item entries. items must
 * hold nnz + rows * IKV_PRECISION_COUNT; *n_items receives the count.
 * row_precision (optional, [rows]): the one precision of each row's
 * entries where the caller knows it (any other value: look), which spares
 * a pass over them. placed (optional, [rows]): nonzero where entries[]
 * holds the row's order already (the row as it was when last partitioned,
 * at the same place): only its items are cut. */
void ikv_plan_partition(const ikv_decode_plan *plan, uint32_t rows, uint32_t pages_per_item,
                        const uint8_t *row_precision, const uint8_t *placed, int32_t *entries, ikv_work_item *items,
                        uint32_t *n_items);

#ifdef __cplusplus
}
#endif
#endif /* IKV_DECODE_PLAN_H */
