/* Page descriptors: lifecycle, refcounts and per-tier LRU order. */
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
  int ok = pt->free_pages && pt->precision && pt->refcount && pt->pins;
  for (int t = 0; t < IKV_TIER_COUNT; t++) {
    pt->slot[t] = malloc(sizeof(int32_t) * n);
    pt->lru_prev[t] = malloc(sizeof(uint32_t) * (n + 1));
    pt->lru_next[t] = malloc(sizeof(uint32_t) * (n + 1));
    ok = ok && pt->slot[t] && pt->lru_prev[t] && pt->lru_next[t];
  }
  if (!ok) return IKV_E_NO_MEMORY;
  for (uint32_t i = 0; i < n; i++) pt->free_pages[i] = n - 1 - i;
  for (int t = 0; t < IKV_TIER_COUNT; t++) {
    for (uint32_t i = 0; i < n; i++) pt->slot[t][i] = IKV_NO_SLOT;
    pt->lru_prev[t][n] = pt->lru_next[t][n] = n;
  }
  return IKV_OK;
}

void pt_pages_release(ikv_pagetable *pt) {
  free(pt->free_pages);
  free(pt->precision);
  free(pt->refcount);
  free(pt->pins);
  for (int t = 0; t < IKV_TIER_COUNT; t++) {
    free(pt->slot[t]);
    free(pt->lru_prev[t]);
    free(pt->lru_next[t]);
  }
}

int pt_page_live(const ikv_pagetable *pt, ikv_page_id page) {
  return page < pt->max_pages && pt->refcount[page] > 0;
}

int pt_has_room(const ikv_pagetable *pt, ikv_tier tier, ikv_precision precision,
                uint32_t pages) {
  return pt->pools[tier][precision].n_free >= pages && pt->n_free_pages >= pages;
}

static void lru_unlink(ikv_pagetable *pt, int tier, ikv_page_id page) {
  uint32_t *prev = pt->lru_prev[tier], *next = pt->lru_next[tier];
  next[prev[page]] = next[page];
  prev[next[page]] = prev[page];
}

/* Appends at the most-recently-used end (just before the sentinel). */
static void lru_push(ikv_pagetable *pt, int tier, ikv_page_id page) {
  uint32_t s = pt->max_pages, *prev = pt->lru_prev[tier], *next = pt->lru_next[tier];
  prev[page] = prev[s];
  next[page] = s;
  next[prev[s]] = page;
  prev[s] = page;
}

void pt_lru_touch(ikv_pagetable *pt, ikv_page_id page) {
  for (int t = 0; t < IKV_TIER_COUNT; t++) {
    if (pt->slot[t][page] == IKV_NO_SLOT) continue;
    lru_unlink(pt, t, page);
    lru_push(pt, t, page);
  }
}

void pt_tier_attach(ikv_pagetable *pt, ikv_page_id page, ikv_tier tier) {
  pt->slot[tier][page] = pt_slot_take(&pt->pools[tier][pt->precision[page]], page);
  lru_push(pt, tier, page);
}

void pt_tier_detach(ikv_pagetable *pt, ikv_page_id page, ikv_tier tier) {
  pt_slot_give(&pt->pools[tier][pt->precision[page]], pt->slot[tier][page]);
  pt->slot[tier][page] = IKV_NO_SLOT;
  lru_unlink(pt, tier, page);
}

ikv_page_id pt_page_new(ikv_pagetable *pt, ikv_precision precision, ikv_tier tier) {
  ikv_page_id page = pt->free_pages[--pt->n_free_pages];
  pt->precision[page] = (uint8_t)precision;
  pt->refcount[page] = 1;
  pt->pins[page] = 0;
  pt_tier_attach(pt, page, tier);
  pt->live_pages++;
  return page;
}

void pt_page_ref(ikv_pagetable *pt, ikv_page_id page) {
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
