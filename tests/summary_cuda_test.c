/* GPU test (tag `gpu`): page key summaries folded on the GPU and the page
 * scores computed from them carry the same bits as the host math of
 * kernels/page_summary.h (the CPU backend's): random keys in fp32/fp16/bf16,
 * pages started afresh and continued, runs of several tokens, outputs
 * poisoned first; scores at head_dim 16 to 512; the GPU's per-head ranking
 * equals the host's selection at every row length up to the longest, and so
 * does device selection's top-k written into a plan's reserved entries. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/page_summary.h"
#include "kernels/summary_cuda.h"
#include "tests/cmocka_all.h"
#include "tests/require_gpu.h"
#include "tests/test_rng.h"

#define CUDA_CHECK(call) assert_int_equal((call), cudaSuccess)
enum { H = 4, D = 128, P = 16, PAGES = 40, HQ = 16, N_MAX = PAGES * P };

/* Each sequence's rows of got ([heads][n_b] at heads * off[b], ranked by the
 * GPU) against the host's selection of the same keys in want (permuted in
 * place): the best min(n_b, k) of each row, in order. */
static void expect_ranked(const uint64_t *got, uint64_t *want, const uint32_t *off, uint32_t batch, uint32_t heads,
                          uint32_t k) {
  for (uint32_t b = 0; b < batch; b++)
    for (uint32_t h = 0; h < heads; h++) {
      const uint32_t n_b = off[b + 1] - off[b], best = n_b < k ? n_b : k;
      uint64_t *row = want + heads * off[b] + h * n_b;
      ikv_rank_smallest(row, n_b, best);
      assert_memory_equal(got + heads * off[b] + h * n_b, row, sizeof(uint64_t) * best);
    }
}

static void summaries_and_scores_match_the_host(void **state) {
  (void)state;
  require_gpu();
  test_rng r = {0x5eed0801};
  const ikv_geometry g = {.layers = 1, .kv_heads = H, .head_dim = D, .page_size = P};
  const size_t m = (size_t)H * D, cells = PAGES * m;
  /* host[a] and the device's array a: min and max (fp16 bits), sum (floats) */
  ikv_cuda_summaries dev = {.pages = PAGES};
  void **darr[3] = {(void **)&dev.kmin, (void **)&dev.kmax, (void **)&dev.ksum}, *host[3];
  const size_t es_sum[3] = {sizeof(uint16_t), sizeof(uint16_t), sizeof(float)};
  uint8_t *got = malloc(sizeof(float) * cells);
  for (int a = 0; a < 3; a++) {
    host[a] = malloc(es_sum[a] * cells);
    CUDA_CHECK(cudaMalloc(darr[a], es_sum[a] * cells));
    CUDA_CHECK(cudaMemset(*darr[a], 0xff, es_sum[a] * cells)); /* poison: NaN */
    memset(host[a], 0xff, es_sum[a] * cells);
  }
  uint16_t *hmin = host[0], *hmax = host[1];
  float *hsum = host[2];
  int64_t *slots = malloc(sizeof(int64_t) * N_MAX), *d_slots;
  uint32_t *pages = malloc(sizeof(uint32_t) * N_MAX), *d_pages;
  float *k = malloc(sizeof(float) * N_MAX * m), *kf = malloc(sizeof(float) * m);
  uint16_t *k16 = malloc(sizeof(uint16_t) * N_MAX * m);
  void *d_k;
  CUDA_CHECK(cudaMalloc((void **)&d_slots, sizeof(int64_t) * N_MAX));
  CUDA_CHECK(cudaMalloc((void **)&d_pages, sizeof(uint32_t) * N_MAX));
  CUDA_CHECK(cudaMalloc(&d_k, sizeof(float) * N_MAX * m));
  uint16_t fill[PAGES] = {0};
  /* three calls: every page gets a first part, then the rest in two steps;
   * pages sit at shuffled slots, page ids in their own order */
  for (int call = 0; call < 3; call++) {
    const ikv_dtype dt = (ikv_dtype)call;
    uint32_t n = 0;
    for (uint32_t pg = 0; pg < PAGES; pg++) {
      uint32_t add = call == 2 ? (uint32_t)(P - fill[pg]) : rng_below(&r, (uint32_t)(P - fill[pg]) / 2 + 1);
      const uint32_t slot_page = (pg * 17) % PAGES;
      for (uint32_t t = 0; t < add; t++) slots[n] = (int64_t)slot_page * P + fill[pg] + t, pages[n++] = pg;
      fill[pg] = (uint16_t)(fill[pg] + add);
    }
    rng_fill_gauss(&r, k, n * m, 1.5f);
    for (size_t i = 0; i < n * m; i++) k16[i] = dt == IKV_DTYPE_F16 ? ikv_f32_to_f16(k[i]) : ikv_f32_to_bf16(k[i]);
    const void *src = dt == IKV_DTYPE_F32 ? (const void *)k : (const void *)k16;
    const size_t es = dt == IKV_DTYPE_F32 ? 4 : 2;
    for (uint32_t i = 0; i < n; i++) {
      assert_int_equal(ikv_ref_to_float((const uint8_t *)src + es * m * i, dt, m, kf), IKV_OK);
      uint16_t *mn = hmin + pages[i] * m, *mx = hmax + pages[i] * m;
      float *sum = hsum + pages[i] * m;
      for (size_t c = 0; c < m; c++) {
        if (slots[i] % P == 0) ikv_summary_reset(mn + c, mx + c, sum + c);
        ikv_summary_fold(mn + c, mx + c, sum + c, kf[c]);
      }
    }
    CUDA_CHECK(cudaMemcpy(d_slots, slots, sizeof(int64_t) * n, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_pages, pages, sizeof(uint32_t) * n, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_k, src, es * n * m, cudaMemcpyHostToDevice));
    assert_int_equal(ikv_cuda_summarize(&g, &dev, d_k, dt, d_slots, d_pages, n, NULL), IKV_OK);
    CUDA_CHECK(cudaDeviceSynchronize());
    for (int a = 0; a < 3; a++) { /* every cell's bits (untouched cells keep the poison on both sides) */
      CUDA_CHECK(cudaMemcpy(got, *darr[a], es_sum[a] * cells, cudaMemcpyDeviceToHost));
      for (size_t i = 0; i < cells; i++)
        if (memcmp(got + es_sum[a] * i, (const uint8_t *)host[a] + es_sum[a] * i, es_sum[a]))
          fail_msg("call %d: summary %d, cell %zu differs from the host's", call, a, i);
    }
  }
  /* rank keys of every page in a shuffled order, both modes */
  float q[HQ * D], *d_q;
  uint64_t *want = malloc(sizeof(uint64_t) * H * PAGES), *keys = malloc(sizeof(uint64_t) * H * PAGES), *d_keys;
  rng_fill_gauss(&r, q, HQ * D, 1.0f);
  for (uint32_t i = 0; i < PAGES; i++) pages[i] = (i * 7 + 3) % PAGES;
  CUDA_CHECK(cudaMalloc((void **)&d_q, sizeof(q)));
  CUDA_CHECK(cudaMalloc((void **)&d_keys, sizeof(uint64_t) * H * PAGES));
  CUDA_CHECK(cudaMemcpy(d_q, q, sizeof(q), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(d_pages, pages, sizeof(uint32_t) * PAGES, cudaMemcpyHostToDevice));
  for (int bound = 0; bound < 2; bound++) {
    for (uint32_t h = 0; h < H; h++)
      for (uint32_t i = 0; i < PAGES; i++) {
        const size_t at = pages[i] * m + h * D;
        want[h * PAGES + i] = ikv_rank_key(
            ikv_summary_score(bound, hmin + at, hmax + at, hsum + at, q + h * (HQ / H) * D, HQ / H, D), i);
      }
    CUDA_CHECK(cudaMemset(d_keys, 0xff, sizeof(uint64_t) * H * PAGES));
    assert_int_equal(ikv_cuda_page_keys(&g, &dev, bound, d_pages, PAGES, d_q, HQ / H, d_keys, NULL), IKV_OK);
    CUDA_CHECK(cudaMemcpy(keys, d_keys, sizeof(uint64_t) * H * PAGES, cudaMemcpyDeviceToHost));
    for (uint32_t i = 0; i < H * PAGES; i++)
      if (keys[i] != want[i]) fail_msg("bound %d: key %u: gpu %016llx, host %016llx", bound, i,
                                       (unsigned long long)keys[i], (unsigned long long)want[i]);
    /* each head's best 7, then the whole row, against the host's selection
     * (a rank leaves the rest of its rows unspecified: start each afresh) */
    for (uint32_t k = 7; k <= PAGES; k += PAGES - 7) {
      CUDA_CHECK(cudaMemcpy(d_keys, want, sizeof(uint64_t) * H * PAGES, cudaMemcpyHostToDevice));
      assert_int_equal(ikv_cuda_rank_keys(H, d_keys, PAGES, k, NULL), IKV_OK);
      CUDA_CHECK(cudaMemcpy(keys, d_keys, sizeof(uint64_t) * H * PAGES, cudaMemcpyDeviceToHost));
      for (uint32_t h = 0; h < H; h++) {
        ikv_rank_smallest(want + h * PAGES, PAGES, k); /* a permutation of the row */
        assert_memory_equal(keys + h * PAGES, want + h * PAGES, sizeof(uint64_t) * k);
      }
    }
  }
  /* three sequences in one launch (one of a single page), each with its own
   * queries: the keys and the ranking of each, as if alone; the launches
   * sized for more candidates than the longest has (as a graph captured
   * for a bucket is) */
  {
    const uint32_t off[4] = {0, 1, PAGES / 3, PAGES}, *d_off, longest = PAGES - PAGES / 3 + 300;
    float q3[3 * HQ * D], *d_q3;
    rng_fill_gauss(&r, q3, 3 * HQ * D, 1.0f);
    CUDA_CHECK(cudaMalloc((void **)&d_off, sizeof(off)));
    CUDA_CHECK(cudaMalloc((void **)&d_q3, sizeof(q3)));
    CUDA_CHECK(cudaMemcpy((void *)d_off, off, sizeof(off), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_q3, q3, sizeof(q3), cudaMemcpyHostToDevice));
    for (uint32_t b = 0; b < 3; b++)
      for (uint32_t h = 0; h < H; h++)
        for (uint32_t i = off[b]; i < off[b + 1]; i++) {
          const size_t at = pages[i] * m + h * D, n_b = off[b + 1] - off[b];
          want[H * off[b] + h * n_b + (i - off[b])] = ikv_rank_key(
              ikv_summary_score(1, hmin + at, hmax + at, hsum + at, q3 + (b * HQ + h * (HQ / H)) * D, HQ / H, D),
              i - off[b]);
        }
    CUDA_CHECK(cudaMemset(d_keys, 0xff, sizeof(uint64_t) * H * PAGES));
    assert_int_equal(ikv_cuda_page_keys_batch(&g, &dev, 1, d_pages, d_off, longest, 3, d_q3, HQ, d_keys, NULL), IKV_OK);
    CUDA_CHECK(cudaMemcpy(keys, d_keys, sizeof(uint64_t) * H * PAGES, cudaMemcpyDeviceToHost));
    assert_memory_equal(keys, want, sizeof(uint64_t) * H * PAGES);
    assert_int_equal(ikv_cuda_rank_keys_batch(H, d_keys, d_off, longest, 3, 5, NULL), IKV_OK);
    CUDA_CHECK(cudaMemcpy(keys, d_keys, sizeof(uint64_t) * H * PAGES, cudaMemcpyDeviceToHost));
    expect_ranked(keys, want, off, 3, H, 5);
    assert_int_equal(ikv_cuda_page_keys_batch(&g, &dev, 1, d_pages, NULL, longest, 3, d_q3, HQ, d_keys, NULL), IKV_E_NULL);
    assert_int_equal(ikv_cuda_page_keys_batch(&g, &dev, 1, d_pages, d_off, longest, 3, d_q3, HQ + 1, d_keys, NULL),
                     IKV_E_INVALID);
    assert_int_equal(ikv_cuda_rank_keys_batch(H, d_keys, NULL, longest, 3, 5, NULL), IKV_E_NULL);
    assert_int_equal(ikv_cuda_rank_keys_batch(H, NULL, d_off, longest, 3, 5, NULL), IKV_E_NULL);
    assert_int_equal(ikv_cuda_rank_keys_batch(H, d_keys, d_off, IKV_CUDA_RANK_MAX + 1, 1, 5, NULL), IKV_E_UNSUPPORTED);
    cudaFree((void *)d_off), cudaFree(d_q3);
  }
  /* the selection scatter's arguments */
  assert_int_equal(ikv_cuda_select_scatter(NULL, NULL), IKV_E_NULL);
  ikv_cuda_selection sel = {.batch = 1, .kv_heads = H, .k = 2};
  assert_int_equal(ikv_cuda_select_scatter(&sel, NULL), IKV_E_NULL); /* no arrays */
  /* every array given (refused before any launch reads them) */
  sel.seq_off = (const uint32_t *)d_keys, sel.cand = (const ikv_select_candidate *)d_keys, sel.keys = d_keys;
  sel.reserved = sel.groups = (const int32_t *)d_keys, sel.page_slot = sel.page_index = (int32_t *)d_keys;
  sel.first = sel.last = (uint16_t *)d_keys, sel.items = (ikv_work_item *)d_keys;
  assert_int_equal(ikv_cuda_select_scatter(&sel, NULL), IKV_E_INVALID); /* items of no pages */
  sel.pages_per_item = 4;
  assert_int_equal(ikv_cuda_select_scatter(&sel, NULL), IKV_E_INVALID); /* no longest row */
  sel.longest = IKV_CUDA_RANK_MAX + 1;
  assert_int_equal(ikv_cuda_select_scatter(&sel, NULL), IKV_E_UNSUPPORTED);
  sel.batch = 0;
  assert_int_equal(ikv_cuda_select_scatter(&sel, NULL), IKV_OK); /* nothing to do */
  /* a row longer than the GPU sort takes, with ties (equal scores rank by ordinal) */
  const uint32_t big = IKV_CUDA_RANK_MAX + 1;
  assert_int_equal(ikv_cuda_rank_keys(1, d_keys, big, 1, NULL), IKV_E_UNSUPPORTED);
  for (uint32_t i = 0; i < PAGES; i++) want[i] = ikv_rank_key(i % 3 ? 1.0f : -0.0f, i), keys[i] = want[i];
  CUDA_CHECK(cudaMemcpy(d_keys, keys, sizeof(uint64_t) * PAGES, cudaMemcpyHostToDevice));
  assert_int_equal(ikv_cuda_rank_keys(1, d_keys, PAGES, PAGES, NULL), IKV_OK);
  CUDA_CHECK(cudaMemcpy(keys, d_keys, sizeof(uint64_t) * PAGES, cudaMemcpyDeviceToHost));
  for (uint32_t i = 1; i < PAGES; i++) assert_true(keys[i - 1] < keys[i]);
  assert_int_equal((uint32_t)keys[0], 1); /* the first 1.0 */
  assert_int_equal(ikv_rank_key(-0.0f, 5), ikv_rank_key(0.0f, 5));
  /* arguments */
  assert_int_equal(ikv_cuda_summarize(&g, NULL, d_k, IKV_DTYPE_F32, d_slots, d_pages, 1, NULL), IKV_E_NULL);
  assert_int_equal(ikv_cuda_summarize(&g, &dev, d_k, (ikv_dtype)7, d_slots, d_pages, 1, NULL), IKV_E_INVALID);
  assert_int_equal(ikv_cuda_page_keys(&g, &dev, 1, d_pages, 1, d_q, 0, d_keys, NULL), IKV_E_INVALID);
  assert_int_equal(ikv_cuda_page_keys(&g, &dev, 1, NULL, 1, d_q, 4, d_keys, NULL), IKV_E_NULL);
  assert_int_equal(ikv_cuda_rank_keys(1, NULL, 4, 1, NULL), IKV_E_NULL);
  assert_int_equal(ikv_cuda_rank_keys(1, d_keys, 4, 5, NULL), IKV_E_INVALID);
  for (int a = 0; a < 3; a++) cudaFree(*darr[a]), free(host[a]);
  cudaFree(d_slots), cudaFree(d_pages), cudaFree(d_k), cudaFree(d_q), cudaFree(d_keys);
  free(got), free(slots), free(pages), free(k), free(kf), free(k16), free(want), free(keys);
}

/* Scores of n pages at head_dim Dd (H KV heads, four query heads each),
 * both modes, against the host's bits, from random summaries uploaded as
 * they are; keys poisoned first. */
static void expect_scores(test_rng *r, uint32_t Dd, uint32_t n) {
  const uint32_t G = 4, HQ2 = H * G;
  const ikv_geometry g = {.layers = 1, .kv_heads = H, .head_dim = Dd, .page_size = P};
  const size_t cells = (size_t)n * H * Dd;
  float *q = malloc(sizeof(float) * HQ2 * Dd), *d_q, *sum = malloc(sizeof(float) * cells);
  uint16_t *mn = malloc(sizeof(uint16_t) * cells), *mx = malloc(sizeof(uint16_t) * cells);
  uint32_t *pages = malloc(sizeof(uint32_t) * n), *d_pages;
  uint64_t *want = malloc(sizeof(uint64_t) * H * n), *got = malloc(sizeof(uint64_t) * H * n), *d_keys;
  ikv_cuda_summaries dev = {.pages = n};
  void **darr[3] = {(void **)&dev.kmin, (void **)&dev.kmax, (void **)&dev.ksum};
  const void *arr[3] = {mn, mx, sum};
  const size_t bytes[3] = {sizeof(uint16_t) * cells, sizeof(uint16_t) * cells, sizeof(float) * cells};
  rng_fill_gauss(r, sum, cells, 1.0f);
  for (size_t c = 0; c < cells; c++) { /* a box: min <= max */
    const float x = rng_gauss(r), y = rng_gauss(r);
    mn[c] = ikv_f32_to_f16_down(fminf(x, y)), mx[c] = ikv_f32_to_f16_up(fmaxf(x, y));
  }
  rng_fill_gauss(r, q, HQ2 * Dd, 1.0f);
  for (uint32_t i = 0; i < n; i++) pages[i] = (i * 5 + 2) % n;
  for (int a = 0; a < 3; a++) {
    CUDA_CHECK(cudaMalloc(darr[a], bytes[a]));
    CUDA_CHECK(cudaMemcpy(*darr[a], arr[a], bytes[a], cudaMemcpyHostToDevice));
  }
  CUDA_CHECK(cudaMalloc((void **)&d_q, sizeof(float) * HQ2 * Dd));
  CUDA_CHECK(cudaMalloc((void **)&d_pages, sizeof(uint32_t) * n));
  CUDA_CHECK(cudaMalloc((void **)&d_keys, sizeof(uint64_t) * H * n));
  CUDA_CHECK(cudaMemcpy(d_q, q, sizeof(float) * HQ2 * Dd, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(d_pages, pages, sizeof(uint32_t) * n, cudaMemcpyHostToDevice));
  for (int bound = 0; bound < 2; bound++) {
    for (uint32_t h = 0; h < H; h++)
      for (uint32_t i = 0; i < n; i++) {
        const size_t at = ((size_t)pages[i] * H + h) * Dd;
        want[h * n + i] = ikv_rank_key(ikv_summary_score(bound, mn + at, mx + at, sum + at, q + h * G * Dd, G, Dd), i);
      }
    CUDA_CHECK(cudaMemset(d_keys, 0xff, sizeof(uint64_t) * H * n));
    assert_int_equal(ikv_cuda_page_keys(&g, &dev, bound, d_pages, n, d_q, G, d_keys, NULL), IKV_OK);
    CUDA_CHECK(cudaMemcpy(got, d_keys, sizeof(uint64_t) * H * n, cudaMemcpyDeviceToHost));
    for (uint32_t i = 0; i < H * n; i++)
      if (got[i] != want[i])
        fail_msg("head_dim %u, %u pages, bound %d: key %u: gpu %016llx, host %016llx", Dd, n, bound, i,
                 (unsigned long long)got[i], (unsigned long long)want[i]);
  }
  for (int a = 0; a < 3; a++) cudaFree(*darr[a]);
  cudaFree(d_q), cudaFree(d_pages), cudaFree(d_keys);
  free(q), free(mn), free(mx), free(sum), free(pages), free(want), free(got);
}

/* Scores at every head_dim the geometry allows a few of (multiples of 16,
 * up to 512): the chunked lane order of kernels/page_summary.h, lanes
 * holding fewer chunks than others (16, 48) and all alike (the rest); and
 * a grid of more blocks than the GPU holds at once, which the launch gives
 * fewer registers a thread. */
static void scores_match_the_host_at_every_head_dim(void **state) {
  (void)state;
  require_gpu();
  test_rng r = {0x5eed0802};
  const uint32_t dims[] = {16, 48, 64, 128, 256, 512};
  for (int di = 0; di < 6; di++) expect_scores(&r, dims[di], 37);
  /* 2,048 blocks each (256 / lanes a page pages a block) */
  const uint32_t big_dims[] = {48, 128, 256, 512}, big_n[] = {16384, 16384, 8192, 4096};
  for (int di = 0; di < 4; di++) expect_scores(&r, big_dims[di], big_n[di]);
}

/* The ranking at every row length that changes how the sort splits its
 * work (keys a thread 1, 2, 4, 8; rows shorter than a warp's worth, just
 * over a power of two, and the longest), random distinct keys, against the
 * host's selection; then rows of very different lengths in one launch. */
static void ranks_rows_of_every_length(void **state) {
  (void)state;
  require_gpu();
  test_rng r = {0x5eed0803};
  const uint32_t lengths[] = {1, 2, 31, 33, 40, 257, 1000, 1024, 1025, 2048, 3000, 4096, 5000, 8191, 8192};
  const uint32_t heads = 2, cap = heads * IKV_CUDA_RANK_MAX;
  uint64_t *src = malloc(sizeof(uint64_t) * cap), *want = malloc(sizeof(uint64_t) * cap),
           *got = malloc(sizeof(uint64_t) * cap), *d_keys;
  CUDA_CHECK(cudaMalloc((void **)&d_keys, sizeof(uint64_t) * cap));
  for (size_t li = 0; li < sizeof(lengths) / sizeof(lengths[0]); li++) {
    const uint32_t n = lengths[li], ks[3] = {1, n / 8 + 1, n};
    for (uint32_t i = 0; i < heads * n; i++) /* distinct: the ordinal in the low half, as rank keys have */
      src[i] = ikv_rank_key(rng_gauss(&r), i % n);
    for (int ki = 0; ki < 3; ki++) {
      const uint32_t k = ks[ki] < n ? ks[ki] : n;
      memcpy(want, src, sizeof(uint64_t) * heads * n);
      CUDA_CHECK(cudaMemcpy(d_keys, src, sizeof(uint64_t) * heads * n, cudaMemcpyHostToDevice));
      assert_int_equal(ikv_cuda_rank_keys(heads, d_keys, n, k, NULL), IKV_OK);
      CUDA_CHECK(cudaMemcpy(got, d_keys, sizeof(uint64_t) * heads * n, cudaMemcpyDeviceToHost));
      for (uint32_t h = 0; h < heads; h++) {
        ikv_rank_smallest(want + h * n, n, k);
        if (memcmp(got + h * n, want + h * n, sizeof(uint64_t) * k))
          fail_msg("row of %u keys, head %u: the best %u differ from the host's", n, h, k);
      }
    }
  }
  /* one launch: rows of 5,000, 1 and 300 keys (the short rows idle most of the block) */
  const uint32_t off[4] = {0, 5000, 5001, 5301}, *d_off;
  for (uint32_t b = 0; b < 3; b++)
    for (uint32_t i = heads * off[b]; i < heads * off[b + 1]; i++)
      src[i] = ikv_rank_key(rng_gauss(&r), (i - heads * off[b]) % (off[b + 1] - off[b]));
  memcpy(want, src, sizeof(uint64_t) * heads * off[3]);
  CUDA_CHECK(cudaMalloc((void **)&d_off, sizeof(off)));
  CUDA_CHECK(cudaMemcpy((void *)d_off, off, sizeof(off), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(d_keys, src, sizeof(uint64_t) * heads * off[3], cudaMemcpyHostToDevice));
  assert_int_equal(ikv_cuda_rank_keys_batch(heads, d_keys, d_off, 5000, 3, 200, NULL), IKV_OK);
  CUDA_CHECK(cudaMemcpy(got, d_keys, sizeof(uint64_t) * heads * off[3], cudaMemcpyDeviceToHost));
  expect_ranked(got, want, off, 3, heads, 200);
  cudaFree((void *)d_off), cudaFree(d_keys);
  free(src), free(want), free(got);
}

/* One launch of device selection's top-k and scatter over `batch` sequences
 * of the given lengths with `heads` KV heads, candidates in four page formats
 * at random, every other row of three scores only (the ordinal decides
 * among equals, so the radix select runs into the low digits), against the
 * host's selection: each row's chosen candidates must fill its reserved
 * entries of their format in candidate order, the rest empty (first 1,
 * last 0), the items over them ended early. Outputs poisoned first. */
static void expect_selection(test_rng *r, const uint32_t *lengths, uint32_t batch, uint32_t heads, uint32_t k) {
  enum { PPI = 4 };
  const uint8_t formats[4] = {IKV_FP16, IKV_FP8_E4M3, IKV_INT8, IKV_INT4};
  const uint32_t rows = batch * heads, cells = rows * IKV_PRECISION_COUNT;
  uint32_t *off = calloc(batch + 1, sizeof(uint32_t));
  for (uint32_t b = 0; b < batch; b++) off[b + 1] = off[b] + lengths[b];
  const uint32_t total = off[batch];
  ikv_select_candidate *cand = malloc(sizeof(ikv_select_candidate) * total);
  uint64_t *keys = malloc(sizeof(uint64_t) * heads * total), *best = malloc(sizeof(uint64_t) * IKV_CUDA_RANK_MAX);
  int32_t *reserved = malloc(sizeof(int32_t) * cells), *groups = malloc(sizeof(int32_t) * 3 * cells);
  ikv_work_item *items = malloc(sizeof(ikv_work_item) * (heads * total + cells));
  for (uint32_t i = 0; i < total; i++)
    cand[i] = (ikv_select_candidate){.page = i, .slot = (int32_t)(1000000 + i), .page_index = (int32_t)(i * 3),
                                     .first = (uint16_t)rng_below(r, 4), .last = (uint16_t)(8 + rng_below(r, 8)),
                                     .precision = formats[rng_below(r, 4)]};
  for (uint32_t b = 0; b < batch; b++)
    for (uint32_t h = 0; h < heads; h++)
      for (uint32_t i = 0; i < lengths[b]; i++) {
        const float score = (b + h) % 2 ? (float)rng_below(r, 3) : rng_gauss(r);
        keys[heads * off[b] + h * lengths[b] + i] = ikv_rank_key(score, i);
      }
  /* each row reserves min(k, candidates of the format) entries a format, items every PPI */
  uint32_t n_entries = 0, n_items = 0;
  for (uint32_t row = 0; row < rows; row++) {
    const uint32_t b = row / heads;
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
      uint32_t of_p = 0;
      for (uint32_t i = off[b]; i < off[b + 1]; i++) of_p += cand[i].precision == p;
      const uint32_t take = of_p < k ? of_p : k, c = row * IKV_PRECISION_COUNT + p;
      reserved[c] = take ? (int32_t)n_entries : -1;
      groups[3 * c] = take ? (int32_t)n_items : -1, groups[3 * c + 1] = 0, groups[3 * c + 2] = (int32_t)(n_entries + take);
      for (uint32_t e = n_entries; e < n_entries + take; e += PPI, groups[3 * c + 1]++)
        items[n_items++] = (ikv_work_item){.row = row, .precision = (uint8_t)p, .begin = e, .end = 0xdeadbeefu};
      n_entries += take;
    }
  }
  void *d_off, *d_cand, *d_keys, *d_res, *d_groups, *d_items, *d_slot, *d_index, *d_first, *d_last;
  const void *src[6] = {off, cand, keys, reserved, groups, items};
  void **dst[6] = {&d_off, &d_cand, &d_keys, &d_res, &d_groups, &d_items};
  const size_t bytes[6] = {sizeof(uint32_t) * (batch + 1), sizeof(ikv_select_candidate) * total,
                           sizeof(uint64_t) * heads * total, sizeof(int32_t) * cells, sizeof(int32_t) * 3 * cells,
                           sizeof(ikv_work_item) * n_items};
  for (int a = 0; a < 6; a++) {
    CUDA_CHECK(cudaMalloc(dst[a], bytes[a] ? bytes[a] : 1));
    CUDA_CHECK(cudaMemcpy(*dst[a], src[a], bytes[a], cudaMemcpyHostToDevice));
  }
  void **outs[4] = {&d_slot, &d_index, &d_first, &d_last};
  for (int a = 0; a < 4; a++) {
    CUDA_CHECK(cudaMalloc(outs[a], sizeof(int32_t) * (n_entries + 1)));
    CUDA_CHECK(cudaMemset(*outs[a], 0xa5, sizeof(int32_t) * (n_entries + 1))); /* poison */
  }
  uint32_t longest = 0;
  for (uint32_t b = 0; b < batch; b++) longest = lengths[b] > longest ? lengths[b] : longest;
  const ikv_cuda_selection sel = {batch, heads, k, d_off, d_cand, d_keys, d_res, d_slot, d_index, d_first, d_last,
                                  d_groups, d_items, PPI, longest};
  assert_int_equal(ikv_cuda_select_scatter(&sel, NULL), IKV_OK);
  CUDA_CHECK(cudaDeviceSynchronize());
  int32_t *slot = malloc(sizeof(int32_t) * (n_entries + 1)), *index = malloc(sizeof(int32_t) * (n_entries + 1));
  uint16_t *first = malloc(sizeof(uint16_t) * (n_entries + 1)), *last = malloc(sizeof(uint16_t) * (n_entries + 1));
  ikv_work_item *got_items = malloc(sizeof(ikv_work_item) * (n_items + 1));
  CUDA_CHECK(cudaMemcpy(slot, d_slot, sizeof(int32_t) * n_entries, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(index, d_index, sizeof(int32_t) * n_entries, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(first, d_first, sizeof(uint16_t) * n_entries, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(last, d_last, sizeof(uint16_t) * n_entries, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(got_items, d_items, sizeof(ikv_work_item) * n_items, cudaMemcpyDeviceToHost));
  for (uint32_t row = 0; row < rows; row++) {
    const uint32_t b = row / heads, h = row % heads, n = lengths[b], want = n < k ? n : k;
    memcpy(best, keys + heads * off[b] + h * n, sizeof(uint64_t) * n);
    ikv_rank_smallest(best, n, want);
    uint8_t *chosen = calloc(n + 1, 1);
    for (uint32_t j = 0; j < want; j++) chosen[(uint32_t)best[j]] = 1;
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
      const uint32_t c = row * IKV_PRECISION_COUNT + p;
      if (reserved[c] < 0) continue;
      const uint32_t end = (uint32_t)groups[3 * c + 2];
      uint32_t e = (uint32_t)reserved[c];
      for (uint32_t i = 0; i < n; i++) {
        const ikv_select_candidate x = cand[off[b] + i];
        if (!chosen[i] || x.precision != p) continue;
        if (e >= end || slot[e] != x.slot || index[e] != x.page_index || first[e] != x.first || last[e] != x.last)
          fail_msg("k %u, row %u (%u candidates), format %d: entry %u is not candidate %u", k, row, n, p, e, i);
        e++;
      }
      const uint32_t filled_to = e;
      for (; e < end; e++)
        if (first[e] != 1 || last[e] != 0) fail_msg("k %u, row %u, format %d: entry %u not left empty", k, row, p, e);
      for (int32_t it = groups[3 * c]; it < groups[3 * c] + groups[3 * c + 1]; it++) {
        const uint32_t begin = items[it].begin, cut = begin + PPI < end ? begin + PPI : end;
        const uint32_t expect = cut < filled_to ? cut : (filled_to > begin ? filled_to : begin);
        if (got_items[it].end != expect)
          fail_msg("k %u, row %u, format %d: item %d ends at %u, not %u", k, row, p, it, got_items[it].end, expect);
      }
    }
    free(chosen);
  }
  for (int a = 0; a < 6; a++) cudaFree(*dst[a]);
  for (int a = 0; a < 4; a++) cudaFree(*outs[a]);
  free(off), free(cand), free(keys), free(best), free(reserved), free(groups), free(items);
  free(slot), free(index), free(first), free(last), free(got_items);
}

/* Device selection's top-k at every row length up to the longest, k below,
 * at and above the formats' counts, with the few rows of a batch-1 step (a
 * block of 1,024 threads a row) and with more rows than SMs (256 threads
 * where every row fits 8 keys a thread), each launch's longest row
 * choosing how many keys a thread holds (1, 2, 4 or 8). */
static void selects_the_best_of_rows_of_every_length(void **state) {
  (void)state;
  require_gpu();
  test_rng r = {0x5eed0804};
  const uint32_t lengths[8] = {1, 2, 33, 257, 2048, 3000, 5000, IKV_CUDA_RANK_MAX}, ks[3] = {1, 300, IKV_CUDA_RANK_MAX};
  for (int ki = 0; ki < 3; ki++) expect_selection(&r, lengths, 8, 2, ks[ki]);
  const uint32_t up_to_1024[3] = {1000, 1, 1024}, up_to_2048[3] = {2048, 5, 1500}, up_to_4096[2] = {3000, 4096};
  expect_selection(&r, up_to_1024, 3, 2, 100);
  expect_selection(&r, up_to_2048, 3, 2, 700);
  expect_selection(&r, up_to_4096, 2, 2, 1000);
  enum { MANY = 160 };
  const uint32_t longest[4] = {256, 512, 2048, 3000};
  uint32_t many[MANY];
  for (int li = 0; li < 4; li++) {
    for (uint32_t b = 0; b < MANY; b++) many[b] = 1 + rng_below(&r, b % 16 ? longest[li] / 4 : longest[li]);
    many[7] = longest[li];
    expect_selection(&r, many, MANY, 1, 40);
    expect_selection(&r, many, MANY / 2, 2, 300);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(summaries_and_scores_match_the_host),
                                     cmocka_unit_test(scores_match_the_host_at_every_head_dim),
                                     cmocka_unit_test(ranks_rows_of_every_length),
                                     cmocka_unit_test(selects_the_best_of_rows_of_every_length)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
