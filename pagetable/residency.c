/* Where a page's bytes live: precision changes, tier copies, pins, LRU order. */
#include "pagetable/pt_internal.h"

ikv_status ikv_pt_page_get_info(const ikv_pagetable *pt, ikv_page_id page, ikv_pt_page_info *out) {
  if (!pt || !out) return IKV_E_NULL;
  if (!pt_page_live(pt, page)) return IKV_E_UNKNOWN_PAGE;
  out->precision = (ikv_precision)pt->precision[page];
  out->refcount = pt->refcount[page];
  out->pins = pt->pins[page];
  for (int t = 0; t < IKV_TIER_COUNT; t++) out->slot[t] = pt->slot[t][page];
  return IKV_OK;
}

ikv_status ikv_pt_slot_owner(const ikv_pagetable *pt, ikv_tier tier, ikv_precision precision,
                             int32_t slot, ikv_page_id *page) {
  if (!pt || !page) return IKV_E_NULL;
  if ((unsigned)tier >= IKV_TIER_COUNT) return IKV_E_INVALID;
  if (!ikv_precision_valid(precision)) return IKV_E_PRECISION;
  const pt_pool *pool = &pt->pools[tier][precision];
  if (slot < 0 || (uint32_t)slot >= pool->capacity) return IKV_E_RANGE;
  if (pool->owner[slot] == IKV_NO_PAGE) return IKV_E_NOT_RESIDENT;
  *page = pool->owner[slot];
  return IKV_OK;
}

ikv_status ikv_pt_page_set_precision(ikv_pagetable *pt, ikv_page_id page, ikv_precision to,
                                     ikv_pt_move *move) {
  if (!pt || !move) return IKV_E_NULL;
  if (!pt_page_live(pt, page)) return IKV_E_UNKNOWN_PAGE;
  if (!ikv_precision_valid(to)) return IKV_E_PRECISION;
  ikv_precision from = (ikv_precision)pt->precision[page];
  if (from != to)
    for (int t = 0; t < IKV_TIER_COUNT; t++)
      if (pt->slot[t][page] != IKV_NO_SLOT && pt->pools[t][to].n_free == 0) return IKV_E_CAPACITY;
  move->page = page;
  move->from = from;
  move->to = to;
  for (int t = 0; t < IKV_TIER_COUNT; t++) {
    int32_t old = pt->slot[t][page];
    move->old_slot[t] = old;
    if (old != IKV_NO_SLOT && from != to) {
      pt->slot[t][page] = pt_slot_take(&pt->pools[t][to], page);
      pt_slot_give(&pt->pools[t][from], old);
    }
    move->new_slot[t] = pt->slot[t][page];
  }
  if (from != to) {
    pt->precision[page] = (uint8_t)to;
    pt->precision_changes++;
    pt_page_moved(pt, page);
  }
  return IKV_OK;
}

ikv_status ikv_pt_page_make_resident(ikv_pagetable *pt, ikv_page_id page, ikv_tier tier,
                                     ikv_pt_copy *copy) {
  if (!pt || !copy) return IKV_E_NULL;
  if ((unsigned)tier >= IKV_TIER_COUNT) return IKV_E_INVALID;
  if (!pt_page_live(pt, page)) return IKV_E_UNKNOWN_PAGE;
  ikv_precision prec = (ikv_precision)pt->precision[page];
  ikv_tier other = tier == IKV_TIER_GPU ? IKV_TIER_HOST : IKV_TIER_GPU;
  int resident = pt->slot[tier][page] != IKV_NO_SLOT;
  if (!resident && pt->pools[tier][prec].n_free == 0) return IKV_E_CAPACITY;
  if (!resident) pt_tier_attach(pt, page, tier);
  if (!resident && tier == IKV_TIER_GPU) pt_page_moved(pt, page);
  *copy = (ikv_pt_copy){
      .src_page = page,
      .dst_page = page,
      .tier = tier,
      .precision = prec,
      .src_slot = resident ? pt->slot[tier][page] : pt->slot[other][page],
      .dst_slot = pt->slot[tier][page],
      .bytes = resident ? 0 : pt->page_bytes[prec],
  };
  return IKV_OK;
}

ikv_status ikv_pt_page_release(ikv_pagetable *pt, ikv_page_id page, ikv_tier tier) {
  if (!pt) return IKV_E_NULL;
  if ((unsigned)tier >= IKV_TIER_COUNT) return IKV_E_INVALID;
  if (!pt_page_live(pt, page)) return IKV_E_UNKNOWN_PAGE;
  if (pt->slot[tier][page] == IKV_NO_SLOT) return IKV_E_NOT_RESIDENT;
  ikv_tier other = tier == IKV_TIER_GPU ? IKV_TIER_HOST : IKV_TIER_GPU;
  if (pt->slot[other][page] == IKV_NO_SLOT) return IKV_E_LAST_COPY;
  if (tier == IKV_TIER_GPU && pt->pins[page]) return IKV_E_PINNED;
  pt_tier_detach(pt, page, tier);
  if (tier == IKV_TIER_GPU) pt_page_moved(pt, page);
  return IKV_OK;
}

ikv_status ikv_pt_page_pin(ikv_pagetable *pt, ikv_page_id page) {
  if (!pt) return IKV_E_NULL;
  if (!pt_page_live(pt, page)) return IKV_E_UNKNOWN_PAGE;
  if (pt->pins[page] == UINT32_MAX) return IKV_E_CAPACITY;
  pt->pins[page]++;
  return IKV_OK;
}

ikv_status ikv_pt_page_unpin(ikv_pagetable *pt, ikv_page_id page) {
  if (!pt) return IKV_E_NULL;
  if (!pt_page_live(pt, page)) return IKV_E_UNKNOWN_PAGE;
  if (!pt->pins[page]) return IKV_E_INVALID;
  pt->pins[page]--;
  return IKV_OK;
}

ikv_status ikv_pt_page_touch(ikv_pagetable *pt, ikv_page_id page) {
  if (!pt) return IKV_E_NULL;
  if (!pt_page_live(pt, page)) return IKV_E_UNKNOWN_PAGE;
  pt_lru_touch(pt, page);
  return IKV_OK;
}

ikv_status ikv_pt_pages_touch(ikv_pagetable *pt, const ikv_page_id *pages, uint32_t n) {
  if (!pt || (!pages && n)) return IKV_E_NULL;
  for (uint32_t i = 0; i < n; i++)
    if (!pt_page_live(pt, pages[i])) return IKV_E_UNKNOWN_PAGE;
  /* pt_lru_touch's steps with the clock in a register: a store to last_use
   * could alias pt->clock, which would make every step wait for the last */
  uint64_t clock = pt->clock, *restrict last_use = pt->last_use;
  for (uint32_t i = 0; i < n; i++) last_use[pages[i]] = ++clock;
  pt->clock = clock;
  return IKV_OK;
}

ikv_status ikv_pt_clock_reserve(ikv_pagetable *pt, uint32_t n, uint64_t *base) {
  if (!pt || !base) return IKV_E_NULL;
  *base = pt->clock;
  pt->clock += n;
  return IKV_OK;
}

ikv_status ikv_pt_pages_stamp(ikv_pagetable *pt, const ikv_page_id *pages, uint32_t n, uint64_t base) {
  if (!pt || (!pages && n)) return IKV_E_NULL;
  if (base + n > pt->clock) return IKV_E_INVALID; /* not reserved */
  /* a page freed since needs no recency, and one whose id was taken again
   * was touched when it was made, after the reservation: neither changes */
  uint64_t *restrict last_use = pt->last_use;
  for (uint32_t i = 0; i < n; i++)
    if (pt_page_live(pt, pages[i]) && last_use[pages[i]] < base + i + 1) last_use[pages[i]] = base + i + 1;
  return IKV_OK;
}

/* Max-heap of page ids on last_use, held in the caller's buffer. */
static void heap_sift_down(const uint64_t *key, ikv_page_id *h, uint32_t n, uint32_t i) {
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && key[h[l]] > key[h[m]]) m = l;
    if (r < n && key[h[r]] > key[h[m]]) m = r;
    if (m == i) return;
    ikv_page_id t = h[i];
    h[i] = h[m], h[m] = t, i = m;
  }
}

static void heap_sift_up(const uint64_t *key, ikv_page_id *h, uint32_t i) {
  while (i && key[h[(i - 1) / 2]] < key[h[i]]) {
    ikv_page_id t = h[i];
    h[i] = h[(i - 1) / 2], h[(i - 1) / 2] = t, i = (i - 1) / 2;
  }
}

/* The `cap` least recently used unpinned pages of the tier: one pass keeping
 * the best so far in a max-heap in `out`, then a heap sort into LRU order. */
ikv_status ikv_pt_evict_candidates(const ikv_pagetable *pt, ikv_tier tier, ikv_page_id *out,
                                   uint32_t cap, uint32_t *n) {
  if (!pt || !n || (!out && cap)) return IKV_E_NULL;
  if ((unsigned)tier >= IKV_TIER_COUNT) return IKV_E_INVALID;
  const uint64_t *key = pt->last_use;
  uint32_t count = 0;
  for (ikv_page_id p = 0; p < pt->max_pages && cap; p++) {
    if (!pt->refcount[p] || pt->slot[tier][p] == IKV_NO_SLOT || pt->pins[p]) continue;
    if (count < cap) {
      out[count] = p;
      heap_sift_up(key, out, count++);
    } else if (key[p] < key[out[0]]) {
      out[0] = p;
      heap_sift_down(key, out, count, 0);
    }
  }
  for (uint32_t end = count; end > 1; end--) {
    ikv_page_id t = out[0];
    out[0] = out[end - 1], out[end - 1] = t;
    heap_sift_down(key, out, end - 1, 0);
  }
  *n = count;
  return IKV_OK;
}
