/* Page descriptors: lifecycle, refcounts, tier slots and recency. */
#include <stdlib.h>

#include "pagetable/pt_internal.h"

ikv_status pt_pages_init(ikv_pagetable *pt) {
  uint64_t total = 0;
  for (int t = 0; t < IKV_TIER_COUNT; t++)
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) total += pt->pools[t][p].capacity;
  /* Every live page holds at least one slot, so slots bound the page count. */
  if (total == 0 || total >= UINT32_MAX) return IKV_E_INVALID;
  uint32_t n = (uint32_t)total;
  pt->max_pages = n;
  pt->n_free_pages = n;
  pt->free_pages = malloc(sizeof(ikv_page_id) * n);
  pt->precision = malloc(n);
  pt->refcount = calloc(n, sizeof(uint32_t));
  pt->pins = calloc(n, sizeof(uint32_t));
  pt->last_use = calloc(n, sizeof(uint64_t));
  pt->owner_seq = malloc(sizeof(uint32_t) * n);
  pt->owner_at = malloc(sizeof(uint32_t) * n);
  int ok = pt->free_pages && pt->precision && pt->refcount && pt->pins && pt->last_use && pt->owner_seq && pt->owner_at;
  for (int t = 0; t < IKV_TIER_COUNT; t++) {
    pt->slot[t] = malloc(sizeof(int32_t) * n);
    ok = ok && pt->slot[t];
  }
  if (!ok) return IKV_E_NO_MEMORY;
  for (uint32_t i = 0; i < n; i++) pt->free_pages[i] = n - 1 - i;
  for (int t = 0; t < IKV_TIER_COUNT; t++)
    for (uint32_t i = 0; i < n; i++) pt->slot[t][i] = IKV_NO_SLOT;
  return IKV_OK;
}

void pt_pages_release(ikv_pagetable *pt) {
  free(pt->free_pages);
  free(pt->precision);
  free(pt->refcount);
  free(pt->pins);
  free(pt->last_use);
  free(pt->owner_seq);
  free(pt->owner_at);
  for (int t = 0; t < IKV_TIER_COUNT; t++) free(pt->slot[t]);
}

int pt_has_room(const ikv_pagetable *pt, ikv_tier tier, ikv_precision precision,
                uint32_t pages) {
  return pt->pools[tier][precision].n_free >= pages && pt->n_free_pages >= pages;
}

void pt_tier_attach(ikv_pagetable *pt, ikv_page_id page, ikv_tier tier) {
  pt->slot[tier][page] = pt_slot_take(&pt->pools[tier][pt->precision[page]], page);
  pt_lru_touch(pt, page);
}

void pt_tier_detach(ikv_pagetable *pt, ikv_page_id page, ikv_tier tier) {
  pt_slot_give(&pt->pools[tier][pt->precision[page]], pt->slot[tier][page]);
  pt->slot[tier][page] = IKV_NO_SLOT;
}

ikv_page_id pt_page_new(ikv_pagetable *pt, ikv_precision precision, ikv_tier tier) {
  ikv_page_id page = pt->free_pages[--pt->n_free_pages];
  pt->precision[page] = (uint8_t)precision;
  pt->refcount[page] = 1;
  pt->pins[page] = 0;
  pt->owner_seq[page] = PT_SHARED; /* until the sequence taking it says so (pt_page_own) */
  pt_tier_attach(pt, page, tier);
  pt->live_pages++;
  return page;
}

void pt_page_ref(ikv_pagetable *pt, ikv_page_id page) {
  pt->owner_seq[page] = PT_SHARED; /* for good: unsharing does not say which sequence is left */
  if (++pt->refcount[page] == 2) pt->shared_pages++;
}

void pt_page_unref(ikv_pagetable *pt, ikv_page_id page) {
  uint32_t rc = --pt->refcount[page];
  if (rc == 1) pt->shared_pages--;
  if (rc) return;
  for (int t = 0; t < IKV_TIER_COUNT; t++)
    if (pt->slot[t][page] != IKV_NO_SLOT) pt_tier_detach(pt, page, (ikv_tier)t);
  pt->pins[page] = 0;
  pt->free_pages[pt->n_free_pages++] = page;
  pt->live_pages--;
}
