/* Creation, destruction and statistics of a block-table manager. */
#include <stdlib.h>

#include "kernels/page_format.h"
#include "pagetable/pt_internal.h"

ikv_status ikv_pt_create(const ikv_pagetable_config *config, ikv_pagetable **out) {
  if (!config || !out) return IKV_E_NULL;
  ikv_status st = ikv_geometry_check(&config->geometry);
  if (st != IKV_OK) return st;
  if (config->max_sequences == 0) return IKV_E_INVALID;
  ikv_pagetable *pt = calloc(1, sizeof(*pt));
  if (!pt) return IKV_E_NO_MEMORY;
  pt->geometry = config->geometry;
  pt->max_seqs = config->max_sequences;
  pt->gpu_epoch = 1; /* 0 marks a stale export cache */
  for (int p = 0; p < IKV_PRECISION_COUNT; p++)
    pt->page_bytes[p] = ikv_page_bytes(&pt->geometry, (ikv_precision)p);
  for (int t = 0; t < IKV_TIER_COUNT && st == IKV_OK; t++)
    for (int p = 0; p < IKV_PRECISION_COUNT && st == IKV_OK; p++)
      st = pt_pool_init(&pt->pools[t][p], config->capacity[t][p]);
  if (st == IKV_OK) st = pt_pages_init(pt);
  if (st == IKV_OK) st = pt_seqs_init(pt);
  if (st != IKV_OK) {
    ikv_pt_destroy(pt);
    return st;
  }
  *out = pt;
  return IKV_OK;
}

void ikv_pt_destroy(ikv_pagetable *pt) {
  if (!pt) return;
  pt_seqs_release(pt);
  pt_pages_release(pt);
  for (int t = 0; t < IKV_TIER_COUNT; t++)
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) pt_pool_release(&pt->pools[t][p]);
  free(pt);
}

const ikv_geometry *ikv_pt_geometry(const ikv_pagetable *pt) { return pt ? &pt->geometry : NULL; }

ikv_status ikv_pt_get_stats(const ikv_pagetable *pt, ikv_pt_stats *out) {
  if (!pt || !out) return IKV_E_NULL;
  for (int t = 0; t < IKV_TIER_COUNT; t++)
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
      const pt_pool *pool = &pt->pools[t][p];
      out->pages_free[t][p] = pool->n_free;
      out->pages_used[t][p] = pool->capacity - pool->n_free;
      out->bytes_used[t][p] = (uint64_t)out->pages_used[t][p] * pt->page_bytes[p];
    }
  out->live_pages = pt->live_pages;
  out->shared_pages = pt->shared_pages;
  out->sequences = pt->live_seqs;
  out->cow_copies = pt->cow_copies;
  out->precision_changes = pt->precision_changes;
  return IKV_OK;
}
