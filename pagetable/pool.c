/* Slot pools: one per (tier, precision), a stack of free slot numbers. */
#include <stdlib.h>

#include "pagetable/pt_internal.h"

ikv_status pt_pool_init(pt_pool *pool, uint32_t capacity) {
  pool->capacity = capacity;
  pool->n_free = capacity;
  pool->free_slots = NULL;
  pool->owner = NULL;
  if (!capacity) return IKV_OK;
  pool->free_slots = malloc(sizeof(uint32_t) * capacity);
  pool->owner = malloc(sizeof(ikv_page_id) * capacity);
  if (!pool->free_slots || !pool->owner) return IKV_E_NO_MEMORY;
  /* Pop order 0, 1, 2, ... so a fresh pool hands out ascending slots. */
  for (uint32_t i = 0; i < capacity; i++) {
    pool->free_slots[i] = capacity - 1 - i;
    pool->owner[i] = IKV_NO_PAGE;
  }
  return IKV_OK;
}

void pt_pool_release(pt_pool *pool) {
  free(pool->free_slots);
  free(pool->owner);
  pool->free_slots = NULL;
  pool->owner = NULL;
  pool->capacity = pool->n_free = 0;
}

int32_t pt_slot_take(pt_pool *pool, ikv_page_id owner) {
  uint32_t slot = pool->free_slots[--pool->n_free];
  pool->owner[slot] = owner;
  return (int32_t)slot;
}

void pt_slot_give(pt_pool *pool, int32_t slot) {
  pool->owner[slot] = IKV_NO_PAGE;
  pool->free_slots[pool->n_free++] = (uint32_t)slot;
}

ikv_status pt_grow(void **array, uint32_t *cap, uint32_t need, size_t elem) {
  if (need <= *cap) return IKV_OK;
  uint64_t want = *cap ? (uint64_t)*cap * 2 : 8;
  while (want < need) want *= 2;
  if (want > UINT32_MAX) want = UINT32_MAX;
  void *grown = realloc(*array, (size_t)want * elem);
  if (!grown) return IKV_E_NO_MEMORY;
  *array = grown;
  *cap = (uint32_t)want;
  return IKV_OK;
}
