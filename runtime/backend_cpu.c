/* The CPU backend: pools in host memory, page bytes moved and converted by
 * the C reference kernels. Both tiers live in host memory here; the slot
 * bookkeeping and the bytes moved are the same as on a GPU. */
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime_internal.h"

static size_t pool_index(const ikv_runtime *rt, uint32_t layer, ikv_tier tier, ikv_precision p) {
  (void)rt;
  return ((size_t)layer * IKV_TIER_COUNT + tier) * IKV_PRECISION_COUNT + p;
}

ikv_status rt_pools_create(ikv_runtime *rt) {
  size_t n = (size_t)rt->cfg.geometry.layers * IKV_TIER_COUNT * IKV_PRECISION_COUNT;
  rt->pools = calloc(n, sizeof(uint8_t *));
  if (!rt->pools) return IKV_E_NO_MEMORY;
  for (uint32_t l = 0; l < rt->cfg.geometry.layers; l++)
    for (int t = 0; t < IKV_TIER_COUNT; t++)
      for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
        size_t bytes = rt->page_bytes[p] * rt->cfg.capacity[t][p];
        if (!bytes) continue;
        uint8_t *pool = malloc(bytes);
        if (!pool) return IKV_E_NO_MEMORY;
        rt->pools[pool_index(rt, l, (ikv_tier)t, (ikv_precision)p)] = pool;
      }
  return IKV_OK;
}

void rt_pools_destroy(ikv_runtime *rt) {
  if (!rt->pools) return;
  size_t n = (size_t)rt->cfg.geometry.layers * IKV_TIER_COUNT * IKV_PRECISION_COUNT;
  for (size_t i = 0; i < n; i++) free(rt->pools[i]);
  free(rt->pools);
}

uint8_t *rt_page(const ikv_runtime *rt, uint32_t layer, ikv_tier tier, ikv_precision p, int32_t slot) {
  return rt->pools[pool_index(rt, layer, tier, p)] + (size_t)slot * rt->page_bytes[p];
}

ikv_layer_pools rt_layer_pools(const ikv_runtime *rt, uint32_t layer, ikv_tier tier) {
  ikv_layer_pools lp;
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
    lp.base[p] = rt->pools[pool_index(rt, layer, tier, (ikv_precision)p)];
    lp.pages[p] = rt->cfg.capacity[tier][p];
  }
  return lp;
}

void rt_copy_page(ikv_runtime *rt, ikv_tier src_tier, int32_t src_slot, ikv_tier dst_tier,
                  int32_t dst_slot, ikv_precision p) {
  for (uint32_t l = 0; l < rt->cfg.geometry.layers; l++)
    memcpy(rt_page(rt, l, dst_tier, p, dst_slot), rt_page(rt, l, src_tier, p, src_slot), rt->page_bytes[p]);
}

ikv_status rt_convert_page(ikv_runtime *rt, const ikv_pt_move *mv, uint32_t rows) {
  for (int t = 0; t < IKV_TIER_COUNT; t++) {
    if (mv->old_slot[t] == IKV_NO_SLOT) continue;
    for (uint32_t l = 0; l < rt->cfg.geometry.layers; l++) {
      ikv_status st = ikv_ref_requantize(&rt->cfg.geometry, mv->from, rt_page(rt, l, (ikv_tier)t, mv->from, mv->old_slot[t]),
                                         mv->to, rt_page(rt, l, (ikv_tier)t, mv->to, mv->new_slot[t]), rows);
      if (st != IKV_OK) return st;
    }
  }
  return IKV_OK;
}
