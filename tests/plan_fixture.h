/* Random pools of real quantized pages in every precision, and random decode
 * plans over them: any subset of each sequence's pages, in any order, with
 * masks that start and end mid-page, optionally per KV head and with empty
 * rows. Shared by the reference and the GPU decode tests. */
#ifndef IKV_TESTS_PLAN_FIXTURE_H
#define IKV_TESTS_PLAN_FIXTURE_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention_ref.h"
#include "tests/cmocka_all.h"
#include "tests/test_rng.h"

#define POOL_PAGES 24
#define MAX_BATCH 4
#define MAX_SEQ_PAGES 12

typedef struct fixture {
  ikv_geometry g;
  ikv_layer_pools pools;
  /* the plan's arrays */
  int32_t indptr[MAX_BATCH * 8 + 1], slot[1024], page_index[1024], seq_len[MAX_BATCH];
  uint8_t prec[1024];
  uint16_t first[1024], last[1024];
  ikv_decode_plan plan;
  ikv_attn_params params;
  /* each sequence's logical pages */
  uint8_t seq_prec[MAX_BATCH][MAX_SEQ_PAGES];
  int32_t seq_slot[MAX_BATCH][MAX_SEQ_PAGES];
  uint32_t seq_pages[MAX_BATCH];
} fixture;

static inline void make_pools(fixture *f, test_rng *r) {
  size_t count = (size_t)f->g.page_size * f->g.kv_heads * f->g.head_dim;
  float *k = malloc(sizeof(float) * count), *v = malloc(sizeof(float) * count);
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
    size_t bytes = ikv_page_layer_bytes(&f->g, (ikv_precision)p);
    uint8_t *pool = malloc(bytes * POOL_PAGES);
    for (int s = 0; s < POOL_PAGES; s++) {
      rng_fill_gauss(r, k, count, 1.0f);
      rng_fill_gauss(r, v, count, 1.0f);
      assert_int_equal(ikv_ref_page_quantize(&f->g, (ikv_precision)p, k, v, IKV_DTYPE_F32, f->g.page_size,
                                             pool + bytes * s), IKV_OK);
    }
    f->pools.base[p] = pool;
    f->pools.pages[p] = POOL_PAGES;
  }
  free(k), free(v);
}

static inline void free_pools(fixture *f) {
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) free(f->pools.base[p]);
}

/* Random sequences and a random plan over them: any subset of pages, any
 * order, masks that start and end mid-page. */
static inline void make_plan(fixture *f, test_rng *r, uint32_t batch, int per_kv_head, int allow_empty) {
  const uint32_t P = f->g.page_size;
  memset(&f->plan, 0, sizeof(f->plan));
  f->plan.batch = batch;
  f->plan.per_kv_head = (uint32_t)per_kv_head;
  for (uint32_t b = 0; b < batch; b++) {
    f->seq_pages[b] = 1 + rng_below(r, MAX_SEQ_PAGES);
    f->seq_len[b] = (int32_t)(f->seq_pages[b] * P - rng_below(r, P));
    for (uint32_t i = 0; i < f->seq_pages[b]; i++) {
      f->seq_prec[b][i] = (uint8_t)rng_below(r, IKV_PRECISION_COUNT);
      f->seq_slot[b][i] = (int32_t)rng_below(r, POOL_PAGES);
    }
  }
  uint32_t rows = per_kv_head ? batch * f->g.kv_heads : batch, nnz = 0;
  f->indptr[0] = 0;
  for (uint32_t row = 0; row < rows; row++) {
    uint32_t b = per_kv_head ? row / f->g.kv_heads : row;
    for (uint32_t i = 0; i < f->seq_pages[b]; i++) {
      if (rng_below(r, 3) == 0 && (allow_empty || i + 1 < f->seq_pages[b])) continue;
      uint32_t valid = i + 1 == f->seq_pages[b] ? (uint32_t)f->seq_len[b] - i * P : P;
      uint32_t lo = rng_below(r, 2) ? rng_below(r, valid) : 0;
      uint32_t hi = rng_below(r, 2) ? lo + rng_below(r, valid - lo) : valid - 1;
      f->slot[nnz] = f->seq_slot[b][i];
      f->prec[nnz] = f->seq_prec[b][i];
      f->page_index[nnz] = (int32_t)i;
      f->first[nnz] = (uint16_t)lo;
      f->last[nnz] = (uint16_t)hi;
      nnz++;
    }
    /* shuffle this row's entries: order must not matter */
    for (uint32_t e = nnz - 1; e > (uint32_t)f->indptr[row] && e < nnz; e--) {
      uint32_t o = (uint32_t)f->indptr[row] + rng_below(r, e - (uint32_t)f->indptr[row] + 1);
      int32_t ts = f->slot[e], ti = f->page_index[e];
      uint8_t tp = f->prec[e];
      uint16_t tf = f->first[e], tl = f->last[e];
      f->slot[e] = f->slot[o], f->page_index[e] = f->page_index[o], f->prec[e] = f->prec[o];
      f->first[e] = f->first[o], f->last[e] = f->last[o];
      f->slot[o] = ts, f->page_index[o] = ti, f->prec[o] = tp, f->first[o] = tf, f->last[o] = tl;
    }
    f->indptr[row + 1] = (int32_t)nnz;
  }
  f->plan.indptr = f->indptr;
  f->plan.page_slot = f->slot;
  f->plan.precision = f->prec;
  f->plan.page_index = f->page_index;
  f->plan.first = f->first;
  f->plan.last = f->last;
  f->plan.seq_len = f->seq_len;
}

#endif
