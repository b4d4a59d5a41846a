/* The reference decode attention against the dense FP64 oracle on random
 * mixed-precision plans: GQA groups, page subsets, token masks, per-KV-head
 * tables, sliding windows with sinks, empty selections, split-KV merges, and
 * invalid plans. Outputs are poisoned before every call. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/plan_fixture.h"

/* The oracle: gather the plan's kept tokens (dequantized) and run dense FP64
 * attention for every query head. */
static void oracle(const fixture *f, const float *q, double *out, double *lse) {
  const uint32_t P = f->g.page_size, D = f->g.head_dim, H = f->g.kv_heads, G = f->params.q_heads / H;
  double *k = malloc(sizeof(double) * 1024 * D), *v = malloc(sizeof(double) * 1024 * D), qd[512];
  float row[512];
  for (uint32_t b = 0; b < f->plan.batch; b++)
    for (uint32_t h = 0; h < H; h++) {
      uint32_t r = f->plan.per_kv_head ? b * H + h : b, n = 0;
      int64_t query = f->seq_len[b] - 1;
      for (int32_t e = f->indptr[r]; e < f->indptr[r + 1]; e++) {
        ikv_precision p = (ikv_precision)f->prec[e];
        const uint8_t *page = (const uint8_t *)f->pools.base[p] + (size_t)f->slot[e] * ikv_page_layer_bytes(&f->g, p);
        for (uint32_t t = f->first[e]; t <= f->last[e]; t++) {
          int64_t pos = (int64_t)f->page_index[e] * P + t;
          if (f->params.window > 0 && pos <= query - f->params.window && pos >= f->params.sinks) continue;
          ikv_ref_tile_read(p, IKV_KEYS, P, D, page + ikv_tile_offset(&f->g, p, h, IKV_KEYS), t, 1, row, D);
          for (uint32_t d = 0; d < D; d++) k[(size_t)n * D + d] = row[d];
          ikv_ref_tile_read(p, IKV_VALUES, P, D, page + ikv_tile_offset(&f->g, p, h, IKV_VALUES), t, 1, row, D);
          for (uint32_t d = 0; d < D; d++) v[(size_t)n * D + d] = row[d];
          n++;
        }
      }
      for (uint32_t j = 0; j < G; j++) {
        size_t qh = (size_t)b * f->params.q_heads + h * G + j;
        for (uint32_t d = 0; d < D; d++) qd[d] = q[qh * D + d];
        ikv_oracle_attention(qd, k, v, n, D, f->params.softmax_scale, out + qh * D, &lse[qh]);
      }
    }
  free(k), free(v);
}

static void poison(float *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = NAN;
}

static void check_against_oracle(fixture *f, test_rng *r, uint32_t split) {
  const uint32_t D = f->g.head_dim, Hq = f->params.q_heads;
  size_t nq = (size_t)f->plan.batch * Hq;
  float *q = malloc(sizeof(float) * nq * D), *out = malloc(sizeof(float) * nq * D), *lse = malloc(sizeof(float) * nq);
  double *oo = malloc(sizeof(double) * nq * D), *ol = malloc(sizeof(double) * nq);
  rng_fill_gauss(r, q, nq * D, 1.0f);
  poison(out, nq * D);
  poison(lse, nq);
  assert_int_equal(ikv_ref_decode(&f->g, &f->pools, &f->plan, &f->params, q, out, lse, split), IKV_OK);
  oracle(f, q, oo, ol);
  for (size_t i = 0; i < nq; i++) {
    if (ol[i] == -INFINITY) {
      assert_true(lse[i] == -INFINITY);
      for (uint32_t d = 0; d < D; d++) assert_true(out[i * D + d] == 0.0f);
      continue;
    }
    assert_true(fabs(lse[i] - ol[i]) <= 1e-5 * (1.0 + fabs(ol[i])));
    for (uint32_t d = 0; d < D; d++)
      if (!(fabs(out[i * D + d] - oo[i * D + d]) <= 1e-5)) fail_msg("out[%zu][%u] %g vs %g", i, d, out[i * D + d], oo[i * D + d]);
  }
  free(q), free(out), free(lse), free(oo), free(ol);
}

static void random_plans_match_the_oracle(void **state) {
  (void)state;
  test_rng r = {0x5eed0201};
  uint32_t groups[] = {1, 4, 8}, dims[] = {64, 128};
  for (int gi = 0; gi < 3; gi++)
    for (int di = 0; di < 2; di++) {
      fixture *f = calloc(1, sizeof(fixture));
      f->g = (ikv_geometry){.layers = 1, .kv_heads = 2, .head_dim = dims[di], .page_size = 16};
      make_pools(f, &r);
      for (int trial = 0; trial < 12; trial++) {
        f->params = (ikv_attn_params){.q_heads = 2 * groups[gi], .softmax_scale = 1.0f / sqrtf((float)dims[di])};
        if (trial % 3 == 2) f->params.window = 1 + (int32_t)rng_below(&r, 60), f->params.sinks = (int32_t)rng_below(&r, 5);
        make_plan(f, &r, 1 + rng_below(&r, MAX_BATCH), trial % 2, trial % 4 == 3);
        check_against_oracle(f, &r, 0);
      }
      free_pools(f);
      free(f);
    }
}

static void masks_at_the_edges(void **state) {
  (void)state;
  test_rng r = {0x5eed0202};
  fixture *f = calloc(1, sizeof(fixture));
  f->g = (ikv_geometry){.layers = 1, .kv_heads = 1, .head_dim = 64, .page_size = 32};
  make_pools(f, &r);
  f->params = (ikv_attn_params){.q_heads = 4, .softmax_scale = 0.125f};
  /* one page, one token; then a span starting mid-page and crossing into the next */
  for (int c = 0; c < 2; c++) {
    memset(&f->plan, 0, sizeof(f->plan));
    f->plan.batch = 1;
    f->seq_len[0] = 70;
    f->indptr[0] = 0;
    f->slot[0] = 3, f->prec[0] = IKV_INT4, f->page_index[0] = 1;
    f->first[0] = c ? 17 : 9, f->last[0] = c ? 31 : 9;
    f->slot[1] = 5, f->prec[1] = IKV_FP8_E4M3, f->page_index[1] = 2, f->first[1] = 0, f->last[1] = 4;
    f->indptr[1] = c ? 2 : 1;
    f->plan.indptr = f->indptr, f->plan.page_slot = f->slot, f->plan.precision = f->prec;
    f->plan.page_index = f->page_index, f->plan.first = f->first, f->plan.last = f->last;
    f->plan.seq_len = f->seq_len;
    check_against_oracle(f, &r, 0);
  }
  free_pools(f);
  free(f);
}

static void split_kv_merges_exactly(void **state) {
  (void)state;
  test_rng r = {0x5eed0203};
  fixture *f = calloc(1, sizeof(fixture));
  f->g = (ikv_geometry){.layers = 1, .kv_heads = 2, .head_dim = 128, .page_size = 16};
  make_pools(f, &r);
  f->params = (ikv_attn_params){.q_heads = 8, .softmax_scale = 0.088f};
  for (int trial = 0; trial < 6; trial++) {
    make_plan(f, &r, 3, trial % 2, 1);
    size_t nq = 3 * 8, D = 128;
    float *q = malloc(sizeof(float) * nq * D), *o0 = malloc(sizeof(float) * nq * D), *o1 = malloc(sizeof(float) * nq * D);
    float l0[24], l1[24];
    rng_fill_gauss(&r, q, nq * D, 1.0f);
    assert_int_equal(ikv_ref_decode(&f->g, &f->pools, &f->plan, &f->params, q, o0, l0, 0), IKV_OK);
    uint32_t splits[] = {1, 2, 3, 7};
    for (int s = 0; s < 4; s++) {
      poison(o1, nq * D);
      poison(l1, nq);
      assert_int_equal(ikv_ref_decode(&f->g, &f->pools, &f->plan, &f->params, q, o1, l1, splits[s]), IKV_OK);
      for (size_t i = 0; i < nq; i++) {
        assert_true(l0[i] == l1[i] || fabsf(l0[i] - l1[i]) <= 1e-6f * (1.0f + fabsf(l0[i])));
        for (size_t d = 0; d < D; d++) assert_true(fabsf(o0[i * D + d] - o1[i * D + d]) <= 1e-6f);
      }
    }
    check_against_oracle(f, &r, 2);
    free(q), free(o0), free(o1);
  }
  free_pools(f);
  free(f);
}

static void lse_merge_is_associative(void **state) {
  (void)state;
  test_rng r = {0x5eed0204};
  enum { D = 32, N = 30 };
  double q[D], k[N * D], v[N * D];
  for (int trial = 0; trial < 50; trial++) {
    for (int i = 0; i < D; i++) q[i] = rng_gauss(&r);
    for (int i = 0; i < N * D; i++) k[i] = rng_gauss(&r) * 2.0, v[i] = rng_gauss(&r);
    uint32_t a = 1 + rng_below(&r, N - 2), b = a + 1 + rng_below(&r, N - a - 1);
    double oa[D], ob[D], oc[D], la, lb, lc, full[D], lf;
    ikv_oracle_attention(q, k, v, a, D, 0.3, oa, &la);
    ikv_oracle_attention(q, k + a * D, v + a * D, b - a, D, 0.3, ob, &lb);
    ikv_oracle_attention(q, k + b * D, v + b * D, N - b, D, 0.3, oc, &lc);
    ikv_oracle_attention(q, k, v, N, D, 0.3, full, &lf);
    double left[D], ll, right[D], lr, empty[D] = {0};
    ikv_ref_merge(oa, la, ob, lb, D, left, &ll);
    ikv_ref_merge(left, ll, oc, lc, D, left, &ll);
    ikv_ref_merge(ob, lb, oc, lc, D, right, &lr);
    ikv_ref_merge(oa, la, right, lr, D, right, &lr);
    assert_true(fabs(ll - lr) <= 1e-12 && fabs(ll - lf) <= 1e-12);
    for (int d = 0; d < D; d++) assert_true(fabs(left[d] - right[d]) <= 1e-12 && fabs(left[d] - full[d]) <= 1e-12);
    /* an empty part changes nothing */
    ikv_ref_merge(full, lf, empty, -INFINITY, D, right, &lr);
    assert_true(lr == lf);
    for (int d = 0; d < D; d++) assert_true(right[d] == full[d]);
  }
}

static void invalid_plans_are_refused(void **state) {
  (void)state;
  test_rng r = {0x5eed0205};
  fixture *f = calloc(1, sizeof(fixture));
  f->g = (ikv_geometry){.layers = 1, .kv_heads = 2, .head_dim = 64, .page_size = 16};
  make_pools(f, &r);
  f->params = (ikv_attn_params){.q_heads = 4, .softmax_scale = 0.125f};
  make_plan(f, &r, 2, 0, 0);
  float q[2 * 4 * 64], out[2 * 4 * 64], lse[8];
  rng_fill_gauss(&r, q, 2 * 4 * 64, 1.0f);
  assert_int_equal(ikv_ref_decode(&f->g, &f->pools, &f->plan, &f->params, q, out, lse, 0), IKV_OK);
  poison(out, 2 * 4 * 64);
  ikv_decode_plan good = f->plan;
  ikv_attn_params gp = f->params;
#define EXPECT(status)                                                                 \
  assert_int_equal(ikv_ref_decode(&f->g, &f->pools, &f->plan, &f->params, q, out, lse, 0), status); \
  f->plan = good, f->params = gp
  uint8_t p0 = f->prec[0];
  f->prec[0] = 9;
  EXPECT(IKV_E_PRECISION);
  f->prec[0] = IKV_SKIP;
  EXPECT(IKV_E_PRECISION);
  f->prec[0] = p0;
  uint16_t l0 = f->last[0], f0 = f->first[0];
  f->last[0] = 16; /* past the page */
  EXPECT(IKV_E_RANGE);
  f->last[0] = l0;
  f->first[0] = (uint16_t)(l0 + 2); /* first past last + 1 (last + 1 is the empty entry) */
  EXPECT(IKV_E_RANGE);
  f->first[0] = f0;
  int32_t s0 = f->slot[0];
  f->slot[0] = POOL_PAGES;
  EXPECT(IKV_E_RANGE);
  f->slot[0] = s0;
  int32_t len0 = f->seq_len[0];
  f->seq_len[0] = f->page_index[0] * 16 + f->last[0]; /* token at seq_len */
  EXPECT(IKV_E_RANGE);
  f->seq_len[0] = len0;
  f->params.q_heads = 3;
  EXPECT(IKV_E_INVALID);
  f->params.softmax_scale = NAN;
  EXPECT(IKV_E_INVALID);
  f->params.window = -1;
  EXPECT(IKV_E_INVALID);
  f->plan.indptr = NULL;
  EXPECT(IKV_E_NULL);
  int32_t bad_indptr[3] = {0, 5, 2};
  f->plan.indptr = bad_indptr;
  EXPECT(IKV_E_INVALID);
  assert_int_equal(ikv_ref_decode(&f->g, &f->pools, &f->plan, &f->params, NULL, out, lse, 0), IKV_E_NULL);
  for (int i = 0; i < 2 * 4 * 64; i++) assert_true(isnan(out[i])); /* nothing written */
#undef EXPECT
  free_pools(f);
  free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(random_plans_match_the_oracle),
      cmocka_unit_test(masks_at_the_edges),
      cmocka_unit_test(split_kv_merges_exactly),
      cmocka_unit_test(lse_merge_is_associative),
      cmocka_unit_test(invalid_plans_are_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
