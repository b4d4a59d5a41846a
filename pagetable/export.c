/* Batch exports into vLLM block tables and FlashInfer CSR page tables. */
#include <string.h>

#include "pagetable/pt_internal.h"

/* Validates the batch before anything is written: every sequence live, the
 * tier valid, and for the GPU tier every page resident (from the sequences'
 * export caches, refreshed here if stale). *total_pages and *max_pages receive
 * the batch's page counts. Host-tier residency is checked while gathering. */
static ikv_status batch_shape(ikv_pagetable *pt, const ikv_seq_id *seqs, uint32_t batch,
                              ikv_tier tier, uint64_t *total_pages, uint32_t *max_pages) {
  if ((unsigned)tier >= IKV_TIER_COUNT) return IKV_E_INVALID;
  uint64_t total = 0;
  uint32_t widest = 0;
  for (uint32_t b = 0; b < batch; b++) {
    pt_seq *s = pt_seq_lookup(pt, seqs[b]);
    if (!s) return IKV_E_UNKNOWN_SEQ;
    if (tier == IKV_TIER_GPU && pt_seq_refresh_cache(pt, s) < 0) return IKV_E_NOT_RESIDENT;
    total += s->n_pages;
    if (s->n_pages > widest) widest = s->n_pages;
  }
  *total_pages = total;
  *max_pages = widest;
  return IKV_OK;
}

/* Writes one sequence's slots (and precisions) in logical page order and
 * returns the OR of the slots: negative if some page is not in the tier.
 * GPU slots come from the export cache (a copy); host slots are gathered. */
static int32_t emit_pages(const ikv_pagetable *pt, const pt_seq *s, ikv_tier tier,
                          int32_t *restrict slots, uint8_t *restrict precisions) {
  if (tier == IKV_TIER_GPU) {
    memcpy(slots, s->gpu_slots, sizeof(int32_t) * s->n_pages);
    if (precisions) memcpy(precisions, s->precisions, s->n_pages);
    return s->missing;
  }
  const int32_t *restrict slot = pt->slot[tier];
  const ikv_page_id *restrict pages = s->pages;
  int32_t missing = 0;
  for (uint32_t i = 0; i < s->n_pages; i++) missing |= slots[i] = slot[pages[i]];
  if (precisions)
    for (uint32_t i = 0; i < s->n_pages; i++) precisions[i] = pt->precision[pages[i]];
  return missing;
}

static uint32_t last_page_tokens(const pt_seq *s, uint32_t page_size) {
  if (!s->tokens) return 0;
  uint32_t r = s->tokens & (page_size - 1);
  return r ? r : page_size;
}

ikv_status ikv_pt_export_block_table(ikv_pagetable *pt, const ikv_seq_id *seqs,
                                     uint32_t batch, ikv_tier tier, int32_t *block_table,
                                     uint32_t max_pages, int32_t *seq_lens,
                                     uint8_t *precisions) {
  if (!pt || (batch && (!seqs || !block_table || !seq_lens))) return IKV_E_NULL;
  uint64_t total;
  uint32_t widest;
  ikv_status st = batch_shape(pt, seqs, batch, tier, &total, &widest);
  if (st != IKV_OK) return st;
  if (widest > max_pages) return IKV_E_CAPACITY;
  for (uint32_t b = 0; b < batch; b++) {
    const pt_seq *s = pt_seq_lookup(pt, seqs[b]);
    int32_t *row = block_table + (size_t)b * max_pages;
    uint8_t *prow = precisions ? precisions + (size_t)b * max_pages : NULL;
    if (emit_pages(pt, s, tier, row, prow) < 0) return IKV_E_NOT_RESIDENT;
    for (uint32_t i = s->n_pages; i < max_pages; i++) row[i] = -1;
    if (prow) memset(prow + s->n_pages, IKV_SKIP, max_pages - s->n_pages);
    seq_lens[b] = (int32_t)s->tokens;
  }
  return IKV_OK;
}

ikv_status ikv_pt_export_csr(ikv_pagetable *pt, const ikv_seq_id *seqs, uint32_t batch,
                             ikv_tier tier, int32_t *indptr, int32_t *indices,
                             uint32_t indices_cap, int32_t *last_page_len,
                             uint8_t *precisions) {
  if (!pt || !indptr || (batch && (!seqs || !last_page_len))) return IKV_E_NULL;
  uint64_t total;
  uint32_t widest;
  ikv_status st = batch_shape(pt, seqs, batch, tier, &total, &widest);
  if (st != IKV_OK) return st;
  if (total > indices_cap || total > INT32_MAX) return IKV_E_CAPACITY;
  if (total && !indices) return IKV_E_NULL;
  int32_t offset = 0;
  indptr[0] = 0;
  for (uint32_t b = 0; b < batch; b++) {
    const pt_seq *s = pt_seq_lookup(pt, seqs[b]);
    if (emit_pages(pt, s, tier, indices + offset, precisions ? precisions + offset : NULL) < 0)
      return IKV_E_NOT_RESIDENT;
    offset += (int32_t)s->n_pages;
    indptr[b + 1] = offset;
    last_page_len[b] = (int32_t)last_page_tokens(s, pt->geometry.page_size);
  }
  return IKV_OK;
}
