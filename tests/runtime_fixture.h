/* A small runtime for tests, with the original K/V it was fed, so every
 * decode can be checked against dense FP64 attention over the true values. */
#ifndef IKV_TESTS_RUNTIME_FIXTURE_H
#define IKV_TESTS_RUNTIME_FIXTURE_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention_ref.h"
#include "kernels/numeric.h"
#include "runtime/intentkv.h"
#include "tests/cmocka_all.h"
#include "tests/test_rng.h"

#define FX_LAYERS 2
#define FX_H 2
#define FX_HQ 8
#define FX_D 64
#define FX_P 16
#define FX_MAX_TOKENS 2048
#define FX_MAX_SEQS 8

typedef struct fixture {
  ikv_runtime *rt;
  ikv_plan *plan;
  test_rng rng;
  uint32_t n_seqs;
  ikv_seq_id ids[FX_MAX_SEQS];
  uint32_t tokens[FX_MAX_SEQS];
  float *k[FX_MAX_SEQS][FX_LAYERS], *v[FX_MAX_SEQS][FX_LAYERS]; /* [token][H][D] */
} fixture;

static inline ikv_runtime_config fx_config(uint32_t gpu_pages, uint32_t host_pages) {
  ikv_runtime_config c = {.geometry = {.layers = FX_LAYERS, .kv_heads = FX_H, .head_dim = FX_D, .page_size = FX_P},
                          .q_heads = FX_HQ, .max_sequences = 16, .max_batch = FX_MAX_SEQS, .max_plan_pages = 4096,
                          .backend = IKV_BACKEND_CPU};
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
    c.capacity[IKV_TIER_GPU][p] = gpu_pages;
    c.capacity[IKV_TIER_HOST][p] = host_pages;
  }
  return c;
}

static inline void fx_open(fixture *f, ikv_runtime_config c, uint64_t seed) {
  memset(f, 0, sizeof(*f));
  f->rng.s = seed;
  assert_int_equal(ikv_runtime_create(&c, &f->rt), IKV_OK);
  assert_int_equal(ikv_plan_create(f->rt, &f->plan), IKV_OK);
}

static inline void fx_close(fixture *f) {
  ikv_plan_destroy(f->plan);
  ikv_runtime_destroy(f->rt);
  for (uint32_t s = 0; s < f->n_seqs; s++)
    for (int l = 0; l < FX_LAYERS; l++) free(f->k[s][l]), free(f->v[s][l]);
}

static inline uint32_t fx_new_seq(fixture *f, ikv_precision precision) {
  uint32_t s = f->n_seqs++;
  assert_int_equal(ikv_seq_create(f->rt, precision, &f->ids[s]), IKV_OK);
  for (int l = 0; l < FX_LAYERS; l++) {
    f->k[s][l] = malloc(sizeof(float) * FX_MAX_TOKENS * FX_H * FX_D);
    f->v[s][l] = malloc(sizeof(float) * FX_MAX_TOKENS * FX_H * FX_D);
  }
  return s;
}

/* Appends n tokens to sequence s and writes random K/V in every layer. */
/* Appends n tokens to sequence s; their slot mapping into slots and precs. */
static inline void fx_append(fixture *f, uint32_t s, uint32_t n, int64_t *slots, uint8_t *precs) {
  assert_int_equal(ikv_append(f->rt, &f->ids[s], &n, 1, slots, precs), IKV_OK);
}

/* Writes random K/V of the n tokens appended last to s into every layer. */
static inline void fx_write(fixture *f, uint32_t s, uint32_t n, const int64_t *slots, const uint8_t *precs) {
  size_t row = FX_H * FX_D;
  for (int l = 0; l < FX_LAYERS; l++) {
    float *k = f->k[s][l] + f->tokens[s] * row, *v = f->v[s][l] + f->tokens[s] * row;
    rng_fill_gauss(&f->rng, k, n * row, 1.0f);
    rng_fill_gauss(&f->rng, v, n * row, 1.0f);
    assert_int_equal(ikv_write_kv(f->rt, (uint32_t)l, k, v, IKV_DTYPE_F32, slots, precs, n, NULL), IKV_OK);
  }
  f->tokens[s] += n;
}

static inline void fx_grow(fixture *f, uint32_t s, uint32_t n) {
  int64_t *slots = malloc(sizeof(int64_t) * n);
  uint8_t *precs = malloc(n);
  fx_append(f, s, n, slots, precs);
  fx_write(f, s, n, slots, precs);
  free(slots), free(precs);
}

/* Relative error ||out - oracle|| / ||oracle|| of one layer's decode over the
 * plan in flight, the oracle reading the plan's selected tokens (masks
 * included) at their true values. */
static inline double fx_decode_error(fixture *f, const uint32_t *seq_of_row_batch, uint32_t layer) {
  const ikv_decode_plan *pv = ikv_plan_view(f->plan);
  size_t nq = (size_t)pv->batch * FX_HQ;
  float *q = malloc(sizeof(float) * nq * FX_D), *out = malloc(sizeof(float) * nq * FX_D), *lse = malloc(sizeof(float) * nq);
  rng_fill_gauss(&f->rng, q, nq * FX_D, 1.0f);
  for (size_t i = 0; i < nq * FX_D; i++) out[i] = NAN;
  assert_int_equal(ikv_decode(f->rt, f->plan, layer, q, out, lse, IKV_DTYPE_F32, NULL), IKV_OK);
  double *kd = malloc(sizeof(double) * FX_MAX_TOKENS * FX_D), *vd = malloc(sizeof(double) * FX_MAX_TOKENS * FX_D);
  double num = 0, den = 0, qd[FX_D], od[FX_D], l;
  for (uint32_t b = 0; b < pv->batch; b++) {
    uint32_t s = seq_of_row_batch[b];
    for (uint32_t h = 0; h < FX_H; h++) {
      uint32_t r = pv->per_kv_head ? b * FX_H + h : b, n = 0;
      for (int32_t e = pv->indptr[r]; e < pv->indptr[r + 1]; e++)
        for (uint32_t t = pv->first[e]; t <= pv->last[e]; t++) {
          size_t tok = (size_t)pv->page_index[e] * FX_P + t;
          for (int d = 0; d < FX_D; d++) {
            kd[n * FX_D + d] = f->k[s][layer][(tok * FX_H + h) * FX_D + d];
            vd[n * FX_D + d] = f->v[s][layer][(tok * FX_H + h) * FX_D + d];
          }
          n++;
        }
      for (uint32_t j = 0; j < FX_HQ / FX_H; j++) {
        size_t qh = (size_t)b * FX_HQ + h * (FX_HQ / FX_H) + j;
        for (int d = 0; d < FX_D; d++) qd[d] = q[qh * FX_D + d];
        ikv_oracle_attention(qd, kd, vd, n, FX_D, 1.0 / sqrt((double)FX_D), od, &l);
        for (int d = 0; d < FX_D; d++) {
          assert_false(isnan(out[qh * FX_D + d]));
          num += (out[qh * FX_D + d] - od[d]) * (out[qh * FX_D + d] - od[d]);
          den += od[d] * od[d];
        }
      }
    }
  }
  free(q), free(out), free(lse), free(kd), free(vd);
  return den > 0 ? sqrt(num / den) : 0.0;
}

#endif
