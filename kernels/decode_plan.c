/* The work partition of a decode plan, shared by the runtime and the kernels' launchers. */
#include "kernels/decode_plan.h"

void ikv_plan_partition(const ikv_decode_plan *plan, uint32_t rows, uint32_t pages_per_item,
                        const uint8_t *row_precision, int32_t *restrict entries, ikv_work_item *items,
                        uint32_t *n_items) {
  const uint8_t *restrict precision = plan->precision;
  uint32_t n = 0;
  for (uint32_t r = 0; r < rows; r++) {
    uint32_t start[IKV_PRECISION_COUNT + 1] = {0}, at[IKV_PRECISION_COUNT];
    int32_t begin = plan->indptr[r], end = plan->indptr[r + 1];
    uint8_t lo = 0xff, hi = 0;
    if (row_precision && row_precision[r] < IKV_PRECISION_COUNT)
      lo = hi = row_precision[r];
    else
      for (int32_t e = begin; e < end; e++)
        lo = precision[e] < lo ? precision[e] : lo, hi = precision[e] > hi ? precision[e] : hi;
    if (lo == hi) { /* one precision, the usual case: the identity */
      start[lo + 1] = (uint32_t)(end - begin);
      for (int32_t e = begin; e < end; e++) entries[e] = e;
    } else {
      for (int32_t e = begin; e < end; e++) start[precision[e] + 1]++;
    }
    start[0] = (uint32_t)begin;
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) start[p + 1] += start[p], at[p] = start[p];
    if (lo != hi)
      for (int32_t e = begin; e < end; e++) entries[at[precision[e]]++] = e;
    for (int p = 0; p < IKV_PRECISION_COUNT; p++)
      for (uint32_t w = start[p]; w < start[p + 1]; w += pages_per_item)
        items[n++] = (ikv_work_item){.row = r, .precision = (uint8_t)p, .begin = w,
                                     .end = w + pages_per_item < start[p + 1] ? w + pages_per_item : start[p + 1]};
  }
  *n_items = n;
}
