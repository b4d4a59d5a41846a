/* GPU test (tag `gpu`): write_kv and requantize on the GPU write the same
 * bytes as the C reference: whole pages, token-by-token appends (scale
 * refits), runs across pages and precisions in one call, fp32/fp16/bf16
 * inputs, prefill-sized calls, and every precision pair for requantize. Pools start from the same
 * random bytes on both sides, so untouched bytes are compared too. */
#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/numeric.h"
#include "kernels/quantize_cuda.h"
#include "tests/cmocka_all.h"
#include "tests/require_gpu.h"
#include "tests/test_rng.h"

#define CUDA_CHECK(call) assert_int_equal((call), cudaSuccess)

typedef struct pools2 {
  ikv_geometry g;
  ikv_layer_pools host, dev;
  size_t bytes[IKV_PRECISION_COUNT];
} pools2;

/* Pools of `pages` pages per precision, the same random bytes on both sides. */
static void pools_open(pools2 *p, ikv_geometry g, uint32_t pages, test_rng *r) {
  memset(p, 0, sizeof(*p));
  p->g = g;
  for (int q = 0; q < IKV_PRECISION_COUNT; q++) {
    p->bytes[q] = ikv_page_layer_bytes(&g, (ikv_precision)q) * pages;
    uint8_t *h = malloc(p->bytes[q]);
    for (size_t i = 0; i < p->bytes[q]; i++) h[i] = (uint8_t)rng_next(r);
    p->host.base[q] = h, p->host.pages[q] = pages;
    CUDA_CHECK(cudaMalloc(&p->dev.base[q], p->bytes[q]));
    CUDA_CHECK(cudaMemcpy(p->dev.base[q], h, p->bytes[q], cudaMemcpyHostToDevice));
    p->dev.pages[q] = pages;
  }
}

static void pools_close(pools2 *p) {
  for (int q = 0; q < IKV_PRECISION_COUNT; q++) free(p->host.base[q]), cudaFree(p->dev.base[q]);
}

static void pools_compare(const pools2 *p, const char *what) {
  CUDA_CHECK(cudaDeviceSynchronize());
  for (int q = 0; q < IKV_PRECISION_COUNT; q++) {
    uint8_t *d = malloc(p->bytes[q]);
    CUDA_CHECK(cudaMemcpy(d, p->dev.base[q], p->bytes[q], cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < p->bytes[q]; i++)
      if (d[i] != ((uint8_t *)p->host.base[q])[i])
        fail_msg("%s: %s pool differs at byte %zu (page %zu): gpu %02x, reference %02x", what, ikv_precision_name(q), i,
                 i / ikv_page_layer_bytes(&p->g, (ikv_precision)q), d[i], ((uint8_t *)p->host.base[q])[i]);
    free(d);
  }
}

/* One write_kv call on both sides: n tokens of random K/V (dtype) into
 * slots; misaligned: the device inputs start one element past a 16-byte
 * boundary (the kernel's narrow loads). */
static void write_both_at(pools2 *p, test_rng *r, ikv_dtype dt, const int64_t *slots, const uint8_t *precs, uint32_t n,
                          int misaligned) {
  const size_t count = (size_t)n * p->g.kv_heads * p->g.head_dim, es = dt == IKV_DTYPE_F32 ? 4 : 2;
  void *k = malloc(count * es), *v = malloc(count * es);
  for (size_t i = 0; i < count; i++) {
    const float a = rng_gauss(r) * 1.5f, b = rng_gauss(r);
    if (dt == IKV_DTYPE_F32) ((float *)k)[i] = a, ((float *)v)[i] = b;
    else if (dt == IKV_DTYPE_F16) ((uint16_t *)k)[i] = ikv_f32_to_f16(a), ((uint16_t *)v)[i] = ikv_f32_to_f16(b);
    else ((uint16_t *)k)[i] = ikv_f32_to_bf16(a), ((uint16_t *)v)[i] = ikv_f32_to_bf16(b);
  }
  assert_int_equal(ikv_ref_write_kv(&p->g, &p->host, k, v, dt, slots, precs, n), IKV_OK);
  void *dk, *dv, *ds, *dp;
  const size_t shift = misaligned ? es : 0;
  CUDA_CHECK(cudaMalloc(&dk, count * es + shift));
  CUDA_CHECK(cudaMalloc(&dv, count * es + shift));
  CUDA_CHECK(cudaMalloc(&ds, sizeof(int64_t) * n));
  CUDA_CHECK(cudaMalloc(&dp, n));
  CUDA_CHECK(cudaMemcpy((uint8_t *)dk + shift, k, count * es, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy((uint8_t *)dv + shift, v, count * es, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(ds, slots, sizeof(int64_t) * n, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dp, precs, n, cudaMemcpyHostToDevice));
  assert_int_equal(
      ikv_cuda_write_kv(&p->g, &p->dev, (uint8_t *)dk + shift, (uint8_t *)dv + shift, dt, ds, dp, n, NULL), IKV_OK);
  CUDA_CHECK(cudaDeviceSynchronize());
  cudaFree(dk), cudaFree(dv), cudaFree(ds), cudaFree(dp);
  free(k), free(v);
}

static void write_both(pools2 *p, test_rng *r, ikv_dtype dt, const int64_t *slots, const uint8_t *precs, uint32_t n) {
  write_both_at(p, r, dt, slots, precs, n, 0);
}

static void write_kv_matches_the_reference(void **state) {
  (void)state;
  require_gpu();
  test_rng r = {0x5eed0601};
  /* 48: rows of 6 chunks of 8 channels (lanes idle); 272: two chunks a lane,
   * the second only on two lanes */
  const uint32_t dims[] = {48, 64, 128, 272}, pages[] = {16, 32, 64}; /* 64: a run longer than a warp */
  for (int di = 0; di < 4; di++)
    for (int pi = 0; pi < 3; pi++) {
      const uint32_t P = pages[pi];
      pools2 p;
      pools_open(&p, (ikv_geometry){.layers = 1, .kv_heads = 2, .head_dim = dims[di], .page_size = P}, 12, &r);
      for (int q = 0; q < IKV_PRECISION_COUNT; q++) {
        ikv_dtype dt = (ikv_dtype)((q + di) % IKV_DTYPE_COUNT);
        /* page 0: whole; page 1: one token at a time (refits); page 2: runs
         * from misaligned inputs */
        int64_t slots[64];
        uint8_t precs[64];
        for (uint32_t t = 0; t < P; t++) slots[t] = t, precs[t] = (uint8_t)q;
        write_both(&p, &r, dt, slots, precs, P);
        for (uint32_t t = 0; t < P; t++) {
          int64_t s = P + t;
          uint8_t pr = (uint8_t)q;
          write_both(&p, &r, dt, &s, &pr, 1);
        }
        for (uint32_t t0 = 0; t0 < P;) {
          uint32_t n = 1 + rng_below(&r, P - t0);
          for (uint32_t t = 0; t < n; t++) slots[t] = 2 * P + t0 + t, precs[t] = (uint8_t)q;
          write_both_at(&p, &r, dt, slots, precs, n, 1);
          t0 += n;
        }
        pools_compare(&p, ikv_precision_name(q));
      }
      /* one call, several pages and precisions: runs of appends to pages 3..7 */
      int64_t slots[256];
      uint8_t precs[256];
      uint32_t n = 0;
      for (int q = 0; q < IKV_PRECISION_COUNT; q++)
        for (uint32_t t = 0; t < P / 2; t++) slots[n] = (3 + q) * P + t, precs[n++] = (uint8_t)q;
      write_both(&p, &r, IKV_DTYPE_F16, slots, precs, n);
      n = 0;
      for (int q = 0; q < IKV_PRECISION_COUNT; q++)
        for (uint32_t t = P / 2; t < P; t++) slots[n] = (3 + q) * P + t, precs[n++] = (uint8_t)q;
      write_both(&p, &r, IKV_DTYPE_F32, slots, precs, n);
      pools_compare(&p, "mixed runs");
      pools_close(&p);
    }
}

/* Prefill-sized calls (thousands of tokens: several tokens a block, runs
 * crossing the blocks' chunks): every page of 1,100 gets a random precision
 * and a random first part in one call, in shuffled page order, then the rest
 * of every page in a second call. */
static void large_write_kv_matches_the_reference(void **state) {
  (void)state;
  require_gpu();
  test_rng r = {0x5eed0603};
  enum { N_PAGES = 1100, P = 16 };
  pools2 p;
  pools_open(&p, (ikv_geometry){.layers = 1, .kv_heads = 2, .head_dim = 128, .page_size = P}, N_PAGES, &r);
  uint32_t *order = malloc(sizeof(uint32_t) * N_PAGES), *cut = malloc(sizeof(uint32_t) * N_PAGES);
  uint8_t *prec = malloc(N_PAGES);
  for (uint32_t i = 0; i < N_PAGES; i++) order[i] = i, cut[i] = 1 + rng_below(&r, P), prec[i] = (uint8_t)rng_below(&r, IKV_PRECISION_COUNT);
  for (uint32_t i = N_PAGES - 1; i > 0; i--) {
    uint32_t j = rng_below(&r, i + 1), t = order[i];
    order[i] = order[j], order[j] = t;
  }
  int64_t *slots = malloc(sizeof(int64_t) * N_PAGES * P);
  uint8_t *precs = malloc(N_PAGES * P);
  for (int part = 0; part < 2; part++) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < N_PAGES; i++) {
      const uint32_t pg = order[i], from = part ? cut[pg] : 0, to = part ? P : cut[pg];
      for (uint32_t t = from; t < to; t++) slots[n] = (int64_t)pg * P + t, precs[n++] = prec[pg];
    }
    assert_true(n > 2048 * 2); /* several tokens a block */
    write_both(&p, &r, part ? IKV_DTYPE_BF16 : IKV_DTYPE_F16, slots, precs, n);
  }
  pools_compare(&p, "prefill-sized calls");
  free(order), free(cut), free(prec), free(slots), free(precs);
  pools_close(&p);
}

static void requantize_matches_the_reference(void **state) {
  (void)state;
  require_gpu();
  test_rng r = {0x5eed0602};
  pools2 p;
  const ikv_geometry g = {.layers = 1, .kv_heads = 2, .head_dim = 128, .page_size = 16};
  pools_open(&p, g, 12, &r);
  size_t count = (size_t)16 * g.kv_heads * g.head_dim;
  float *k = malloc(sizeof(float) * count), *v = malloc(sizeof(float) * count);
  /* sources: page 0 of every pool, really quantized, the same on both sides */
  for (int q = 0; q < IKV_PRECISION_COUNT; q++) {
    rng_fill_gauss(&r, k, count, 1.2f);
    rng_fill_gauss(&r, v, count, 0.8f);
    uint8_t *page = p.host.base[q];
    assert_int_equal(ikv_ref_page_quantize(&g, (ikv_precision)q, k, v, IKV_DTYPE_F32, 16, page), IKV_OK);
    CUDA_CHECK(cudaMemcpy(p.dev.base[q], page, ikv_page_layer_bytes(&g, (ikv_precision)q), cudaMemcpyHostToDevice));
  }
  ikv_cuda_move moves[IKV_PRECISION_COUNT * IKV_PRECISION_COUNT];
  uint32_t n = 0;
  for (int from = 0; from < IKV_PRECISION_COUNT; from++)
    for (int to = 0; to < IKV_PRECISION_COUNT; to++) {
      const uint16_t rows = (uint16_t)(5 + rng_below(&r, 12)); /* partly filled pages too */
      const int32_t dst = 1 + from; /* page 1 + from of the target pool */
      moves[n++] = (ikv_cuda_move){(uint8_t)from, (uint8_t)to, rows, 0, dst};
      uint8_t *src_page = p.host.base[from];
      uint8_t *dst_page = (uint8_t *)p.host.base[to] + dst * ikv_page_layer_bytes(&g, (ikv_precision)to);
      assert_int_equal(ikv_ref_requantize(&g, (ikv_precision)from, src_page, (ikv_precision)to, dst_page, rows), IKV_OK);
    }
  ikv_cuda_move *dm;
  CUDA_CHECK(cudaMalloc((void **)&dm, sizeof(moves)));
  CUDA_CHECK(cudaMemcpy(dm, moves, sizeof(moves), cudaMemcpyHostToDevice));
  assert_int_equal(ikv_cuda_requantize(&g, &p.dev, dm, n, NULL), IKV_OK);
  pools_compare(&p, "requantize");
  assert_int_equal(ikv_cuda_requantize(NULL, &p.dev, dm, n, NULL), IKV_E_NULL);
  assert_int_equal(ikv_cuda_write_kv(&g, &p.dev, NULL, NULL, IKV_DTYPE_F32, NULL, NULL, 3, NULL), IKV_E_NULL);
  assert_int_equal(ikv_cuda_write_kv(&g, &p.dev, k, v, (ikv_dtype)9, (int64_t *)k, (uint8_t *)k, 3, NULL), IKV_E_INVALID);
  cudaFree(dm);
  free(k), free(v);
  pools_close(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(write_kv_matches_the_reference),
      cmocka_unit_test(large_write_kv_matches_the_reference),
      cmocka_unit_test(requantize_matches_the_reference),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
