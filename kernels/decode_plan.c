/* The work partition of a decode plan, shared by the runtime and the kernels' launchers. */
#include "kernels/decode_plan.h"


void ikv_plan_partition(const ikv_decode_plan *plan, uint32_t rows, uint32_t pages_per_item,
                        const uint8_t *row_precision, const uint8_t *placed, int32_t *restrict entries,
                        ikv_work_item *items, uint32_t *n_items) {
  const uint8_t *restrict precision = plan->precision;
  uint32_t n = 0;
  for (uint32_t r = 0; r < rows; r++) {
    uint32_t count[IKV_PRECISION_COUNT] = {0}, start[IKV_PRECISION_COUNT + 1];
    const int32_t begin = plan->indptr[r], end = plan->indptr[r + 1];
    const uint32_t len = (uint32_t)(end - begin);
    if (row_precision && row_precision[r] < IKV_PRECISION_COUNT) count[row_precision[r]] = len;
    else ikv_count_formats(precision, begin, end, count);
    int single = len == 0;
    start[0] = (uint32_t)begin;
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
      single |= count[p] == len;
      start[p + 1] = start[p] + count[p];
    }
    if (placed && placed[r]) {
      /* entries[] holds the row's order already: only its items below */
    } else if (single) { /* one precision, the usual case: the identity, 8 at a time (fixed trips vectorize at -O2) */
      int32_t e = begin;
      for (; e + 8 <= end; e += 8)
        for (int32_t k = 0; k < 8; k++) entries[e + k] = e + k;
      for (; e < end; e++) entries[e] = e;
    } else { /* the counting sort's placing pass by runs of one format (rows hold long runs: a
                mixed row is mostly one format with a few pages of another), each run's
                positions written as a block where a switch an entry cost a few ns each */
      uint32_t at[IKV_PRECISION_COUNT];
      memcpy(at, start, sizeof(at));
      for (int32_t e = begin; e < end;) {
        const uint8_t p = precision[e];
        const int32_t run = ikv_format_run_end(precision, e, end);
        if (p < IKV_PRECISION_COUNT) { /* valid plans hold no other code */
          int32_t *restrict out = entries + at[p];
          for (int32_t k = 0; k < run - e; k++) out[k] = e + k;
          at[p] += (uint32_t)(run - e);
        }
        e = run;
      }
    }
    for (int p = 0; p < IKV_PRECISION_COUNT; p++)
      for (uint32_t w = start[p]; w < start[p + 1]; w += pages_per_item)
        items[n++] = (ikv_work_item){.row = r, .precision = (uint8_t)p, .begin = w,
                                     .end = w + pages_per_item < start[p + 1] ? w + pages_per_item : start[p + 1]};
  }
  *n_items = n;
}
