/* GPU test (tag `gpu`): the fused paged decode kernel against the C reference
 * on fresh random pages and plans: head_dim 64/128/256, page sizes 16/32/64,
 * GQA groups 1/4/8, mixed precisions, masks (one-token, mid-page), per-KV-head
 * rows, empty rows, rows of 70 items beside short ones, sliding windows with
 * sinks, split sizes 1/3/32 pages, and fp16/bf16/f32 queries and outputs.
 * Each plan is decoded twice, the second time with per-item wait flags
 * (a programmatic dependent launch). Outputs are poisoned before each launch
 * and every element is checked. The kernel feeds tensor cores fp16 (q, the
 * dequantized K and V, the softmax weights) and accumulates in fp32, so the
 * tolerances (out, per element, against the double-precision reference over
 * the same quantized pages) are: f32 and fp16 I/O 3e-3 + 6e-3 |ref|; bf16
 * 1e-2 + 1.6e-2 |ref|; lse 2e-3 + 2e-4 |lse|, and -inf exactly where no key
 * is selected. */
#include <cuda_runtime_api.h>

#include "kernels/decode_cuda.h"
#include "kernels/numeric.h"
#include "tests/plan_fixture.h"
#include "tests/require_gpu.h"

#define CUDA_CHECK(call) assert_int_equal((call), cudaSuccess)

typedef struct device_pools {
  ikv_layer_pools pools; /* device bases */
} device_pools;

static device_pools upload_pools(const fixture *f) {
  device_pools d;
  memset(&d, 0, sizeof(d));
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
    size_t bytes = ikv_page_layer_bytes(&f->g, (ikv_precision)p) * POOL_PAGES;
    CUDA_CHECK(cudaMalloc(&d.pools.base[p], bytes));
    CUDA_CHECK(cudaMemcpy(d.pools.base[p], f->pools.base[p], bytes, cudaMemcpyHostToDevice));
    d.pools.pages[p] = POOL_PAGES;
  }
  return d;
}

static void free_device_pools(device_pools *d) {
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) cudaFree(d->pools.base[p]);
}

static size_t dtype_size(ikv_dtype t) { return t == IKV_DTYPE_F32 ? 4 : 2; }

static float dtype_get(const void *x, ikv_dtype t, size_t i) {
  if (t == IKV_DTYPE_F32) return ((const float *)x)[i];
  uint16_t h = ((const uint16_t *)x)[i];
  return t == IKV_DTYPE_F16 ? ikv_f16_to_f32(h) : ikv_bf16_to_f32(h);
}

static void dtype_set(void *x, ikv_dtype t, size_t i, float v) {
  if (t == IKV_DTYPE_F32) ((float *)x)[i] = v;
  else ((uint16_t *)x)[i] = t == IKV_DTYPE_F16 ? ikv_f32_to_f16(v) : ikv_f32_to_bf16(v);
}

/* out and lse as the GPU wrote them (dout, dlse), against the reference's. */
static void check_outputs(const fixture *f, ikv_dtype dt, uint32_t pages_per_item, const char *launch,
                          const void *dout, const float *dlse, const float *ref, const float *ref_lse) {
  const uint32_t D = f->g.head_dim, Hq = f->params.q_heads;
  const size_t nq = (size_t)f->plan.batch * Hq, n = nq * D;
  void *out = malloc(n * dtype_size(dt));
  float *lse = malloc(sizeof(float) * nq);
  CUDA_CHECK(cudaMemcpy(out, dout, n * dtype_size(dt), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(lse, dlse, sizeof(float) * nq, cudaMemcpyDeviceToHost));
  const double atol = dt == IKV_DTYPE_BF16 ? 1e-2 : 3e-3, rtol = dt == IKV_DTYPE_BF16 ? 1.6e-2 : 6e-3;
  for (size_t i = 0; i < nq; i++) {
    if (ref_lse[i] == -INFINITY) assert_true(lse[i] == -INFINITY);
    else if (!(fabs(lse[i] - ref_lse[i]) <= 2e-3 + 2e-4 * fabs(ref_lse[i])))
      fail_msg("lse[%zu] %g vs %g (%s)", i, lse[i], ref_lse[i], launch);
    for (uint32_t d = 0; d < D; d++) {
      double got = dtype_get(out, dt, i * D + d), want = ref[i * D + d];
      if (!(fabs(got - want) <= atol + rtol * fabs(want)))
        fail_msg("out[%zu][%u] %g vs %g (D=%u P=%u G=%u dtype=%d split=%u, %s)", i, d, got, want, D, f->g.page_size,
                 Hq / f->g.kv_heads, dt, pages_per_item, launch);
    }
  }
  free(out), free(lse);
}

/* One plan's launches against the reference; returns the number of elements
 * checked. */
static size_t check_launch(fixture *f, const device_pools *dp, test_rng *r, ikv_dtype dt, uint32_t pages_per_item) {
  const uint32_t D = f->g.head_dim, Hq = f->params.q_heads;
  const size_t nq = (size_t)f->plan.batch * Hq, n = nq * D, es = dtype_size(dt);
  assert_int_equal(ikv_plan_check(&f->g, &f->pools, &f->plan, &f->params), IKV_OK);
  /* queries in the I/O type; the reference reads the same values */
  void *q = malloc(n * es);
  float *qf = malloc(sizeof(float) * n), *ref = malloc(sizeof(float) * n), *ref_lse = malloc(sizeof(float) * nq);
  float *ref2 = malloc(sizeof(float) * n), *ref2_lse = malloc(sizeof(float) * nq);
  for (size_t i = 0; i < n; i++) {
    dtype_set(q, dt, i, rng_gauss(r));
    qf[i] = dtype_get(q, dt, i);
  }
  assert_int_equal(ikv_ref_decode(&f->g, &f->pools, &f->plan, &f->params, qf, ref, ref_lse, 0), IKV_OK);
  ikv_cuda_plan *cp;
  assert_int_equal(ikv_cuda_plan_create(&f->plan, f->g.kv_heads, pages_per_item, &cp), IKV_OK);
  size_t ws_bytes = ikv_cuda_decode_workspace(&f->g, &f->params, cp);
  void *dq, *dout, *dout2, *dws = NULL;
  float *dlse, *dlse2;
  CUDA_CHECK(cudaMalloc(&dq, n * es));
  CUDA_CHECK(cudaMalloc(&dout, n * es));
  CUDA_CHECK(cudaMalloc(&dout2, n * es));
  CUDA_CHECK(cudaMalloc((void **)&dlse, sizeof(float) * nq));
  CUDA_CHECK(cudaMalloc((void **)&dlse2, sizeof(float) * nq));
  if (ws_bytes) CUDA_CHECK(cudaMalloc(&dws, ws_bytes));
  CUDA_CHECK(cudaMemcpy(dq, q, n * es, cudaMemcpyHostToDevice));
  /* three times: the second launch finds the plan as the first left it, and
   * is launched as a programmatic dependent whose items wait in each way
   * item_waits offers (nothing before it writes what it reads); the third,
   * prefetching pages, is followed by a second prefetching decode whose
   * queries are the first one's output and which shares its workspace: it
   * must wait for the first one's merge before reading either. The first
   * loads FP16 and FP8 pages by cp.async, the others by bulk tensor copies
   * (the automatic choice takes them only on launches larger than these). */
  uint8_t *waits = malloc(cp->n_items + 1), *d_waits;
  /* items that start early, wait on entry, wait before their second and before their fifth entry */
  static const uint8_t wait_kinds[4] = {0, 1, 2, 5};
  for (uint32_t i = 0; i < cp->n_items; i++) waits[i] = wait_kinds[i % 4];
  CUDA_CHECK(cudaMalloc((void **)&d_waits, cp->n_items + 1));
  CUDA_CHECK(cudaMemcpy(d_waits, waits, cp->n_items + 1, cudaMemcpyHostToDevice));
  static const char *const launches[3] = {"ordinary launch, cp.async", "item waits, bulk copies",
                                          "prefetching pages, bulk copies"};
  for (int launch = 0; launch < 3; launch++) {
    cp->item_waits = launch ? d_waits : NULL;
    cp->prefetch_pages = launch == 2;
    cp->page_copies = launch ? IKV_CUDA_COPIES_BULK : IKV_CUDA_COPIES_ASYNC;
    CUDA_CHECK(cudaMemset(dout, 0xff, n * es)); /* poison: NaN in every type */
    CUDA_CHECK(cudaMemset(dlse, 0xff, sizeof(float) * nq));
    CUDA_CHECK(cudaMemset(dout2, 0xff, n * es));
    CUDA_CHECK(cudaMemset(dlse2, 0xff, sizeof(float) * nq));
    if (ws_bytes) CUDA_CHECK(cudaMemset(dws, 0xff, ws_bytes));
    assert_int_equal(ikv_cuda_decode(&f->g, &dp->pools, cp, &f->params, dq, dout, dlse, dt, dws, ws_bytes, NULL),
                     IKV_OK);
    if (launch == 2)
      assert_int_equal(
          ikv_cuda_decode(&f->g, &dp->pools, cp, &f->params, dout, dout2, dlse2, dt, dws, ws_bytes, NULL), IKV_OK);
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaGetLastError());
    check_outputs(f, dt, pages_per_item, launches[launch], dout, dlse, ref, ref_lse);
  }
  /* the chained decode: its reference reads the first one's output as queries */
  CUDA_CHECK(cudaMemcpy(q, dout, n * es, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < n; i++) qf[i] = dtype_get(q, dt, i);
  assert_int_equal(ikv_ref_decode(&f->g, &f->pools, &f->plan, &f->params, qf, ref2, ref2_lse, 0), IKV_OK);
  check_outputs(f, dt, pages_per_item, "prefetching pages, chained", dout2, dlse2, ref2, ref2_lse);
  cudaFree(dq), cudaFree(dout), cudaFree(dout2), cudaFree(dlse), cudaFree(dlse2), cudaFree(dws), cudaFree(d_waits);
  free(waits);
  ikv_cuda_plan_destroy(cp);
  free(q), free(qf), free(ref), free(ref_lse), free(ref2), free(ref2_lse);
  return 2 * n;
}

static void shape_sweep_matches_the_reference(void **state) {
  (void)state;
  require_gpu();
  test_rng r = {0x5eed0501};
  const uint32_t dims[] = {64, 128, 256}, pages[] = {16, 32, 64}, groups[] = {1, 4, 8}, splits[] = {1, 3, 32};
  size_t checked = 0;
  for (int di = 0; di < 3; di++)
    for (int pi = 0; pi < 3; pi++) {
      fixture *f = calloc(1, sizeof(fixture));
      f->g = (ikv_geometry){.layers = 1, .kv_heads = 2, .head_dim = dims[di], .page_size = pages[pi]};
      make_pools(f, &r);
      device_pools dp = upload_pools(f);
      for (int gi = 0; gi < 3; gi++)
        for (int trial = 0; trial < 4; trial++) {
          f->params = (ikv_attn_params){.q_heads = 2 * groups[gi], .softmax_scale = 1.0f / sqrtf((float)dims[di])};
          if (trial == 3) f->params.window = 1 + (int32_t)rng_below(&r, 80), f->params.sinks = (int32_t)rng_below(&r, 6);
          make_plan(f, &r, 1 + rng_below(&r, MAX_BATCH), trial % 2, trial >= 2);
          checked += check_launch(f, &dp, &r, (ikv_dtype)(trial % 3), splits[(gi + trial) % 3]);
        }
      free_device_pools(&dp);
      free_pools(f);
      free(f);
    }
  print_message("checked %zu output elements\n", checked);
}

/* The fixture for plans written by hand: head_dim 128, 16-token pages, 2 KV
 * heads, 8 query heads, random pools on the device. */
static fixture *hand_made_plans_open(test_rng *r, device_pools *dp) {
  fixture *f = calloc(1, sizeof(fixture));
  f->g = (ikv_geometry){.layers = 1, .kv_heads = 2, .head_dim = 128, .page_size = 16};
  make_pools(f, r);
  *dp = upload_pools(f);
  f->params = (ikv_attn_params){.q_heads = 8, .softmax_scale = 0.088f};
  return f;
}

/* A hand-made plan of `batch` sequences over the fixture's arrays (filled by the caller). */
static void hand_made_plan_reset(fixture *f, uint32_t batch, uint32_t per_kv_head) {
  memset(&f->plan, 0, sizeof(f->plan));
  f->plan.batch = batch, f->plan.per_kv_head = per_kv_head;
  f->plan.indptr = f->indptr, f->plan.page_slot = f->slot, f->plan.precision = f->prec;
  f->plan.page_index = f->page_index, f->plan.first = f->first, f->plan.last = f->last, f->plan.seq_len = f->seq_len;
}

static void hand_made_plans_close(fixture *f, device_pools *dp) {
  free_device_pools(dp);
  free_pools(f);
  free(f);
}

static void edge_plans(void **state) {
  (void)state;
  require_gpu();
  test_rng r = {0x5eed0502};
  device_pools dp;
  fixture *f = hand_made_plans_open(&r, &dp);
  /* one token of one page; an odd sequence length; an empty second row */
  hand_made_plan_reset(f, 2, 0);
  f->seq_len[0] = 37, f->seq_len[1] = 5;
  f->indptr[0] = 0, f->indptr[1] = 2, f->indptr[2] = 2;
  f->slot[0] = 3, f->prec[0] = IKV_INT4, f->page_index[0] = 2, f->first[0] = 4, f->last[0] = 4;
  f->slot[1] = 7, f->prec[1] = IKV_FP8_E4M3, f->page_index[1] = 0, f->first[1] = 9, f->last[1] = 15;
  check_launch(f, &dp, &r, IKV_DTYPE_F16, 1);
  /* nothing selected at all */
  f->indptr[1] = f->indptr[2] = 0;
  check_launch(f, &dp, &r, IKV_DTYPE_BF16, 32);
  hand_made_plans_close(f, &dp);
}

/* Long rows beside short ones in one plan, shared and per KV head: a row of
 * 70 one-page items (the merge spreads them over its warps, several loads
 * in flight each), rows of a few items, of one, and of none. */
static void long_and_short_rows(void **state) {
  (void)state;
  require_gpu();
  test_rng r = {0x5eed0503};
  device_pools dp;
  fixture *f = hand_made_plans_open(&r, &dp);
  const uint32_t lengths[3] = {70, 3, 0}; /* pages a row: at one page an item, 70 items */
  for (int per_head = 0; per_head < 2; per_head++) {
    hand_made_plan_reset(f, 3, (uint32_t)per_head);
    uint32_t e = 0, rows = per_head ? 6 : 3;
    f->indptr[0] = 0;
    for (uint32_t row = 0; row < rows; row++) {
      const uint32_t b = per_head ? row / 2 : row, n = lengths[b] - (per_head && row % 2 && lengths[b] ? 1 : 0);
      f->seq_len[b] = (int32_t)(lengths[b] ? lengths[b] * 16 - 5 : 1);
      for (uint32_t i = 0; i < n; i++, e++) {
        f->slot[e] = (int32_t)rng_below(&r, POOL_PAGES), f->prec[e] = (uint8_t)rng_below(&r, IKV_PRECISION_COUNT);
        f->page_index[e] = (int32_t)i, f->first[e] = 0, f->last[e] = i + 1 == lengths[b] ? 10 : 15;
      }
      f->indptr[row + 1] = (int32_t)e;
    }
    check_launch(f, &dp, &r, IKV_DTYPE_F16, 1); /* 70 items in the long row */
    check_launch(f, &dp, &r, IKV_DTYPE_F32, 2); /* 35 */
  }
  hand_made_plans_close(f, &dp);
}

static void arguments_are_checked(void **state) {
  (void)state;
  require_gpu();
  ikv_geometry g = {.layers = 1, .kv_heads = 2, .head_dim = 128, .page_size = 16};
  ikv_attn_params p = {.q_heads = 4, .softmax_scale = 0.1f};
  int32_t indptr[2] = {0, 0}, len[1] = {1};
  ikv_decode_plan host = {.batch = 1, .indptr = indptr, .seq_len = len};
  ikv_cuda_plan *cp;
  assert_int_equal(ikv_cuda_plan_create(&host, 2, 0, &cp), IKV_E_INVALID);
  assert_int_equal(ikv_cuda_plan_create(NULL, 2, 4, &cp), IKV_E_NULL);
  assert_int_equal(ikv_cuda_plan_create(&host, 2, 4, &cp), IKV_OK);
  ikv_layer_pools pools;
  memset(&pools, 0, sizeof(pools));
  float x[512], lse[4];
  assert_int_equal(ikv_cuda_decode(NULL, &pools, cp, &p, x, x, lse, IKV_DTYPE_F32, NULL, 0, NULL), IKV_E_NULL);
  ikv_attn_params bad = p;
  bad.q_heads = 3;
  assert_int_equal(ikv_cuda_decode(&g, &pools, cp, &bad, x, x, lse, IKV_DTYPE_F32, NULL, 0, NULL), IKV_E_INVALID);
  bad = p, bad.q_heads = 2 * 16; /* group of 16 */
  assert_int_equal(ikv_cuda_decode(&g, &pools, cp, &bad, x, x, lse, IKV_DTYPE_F32, NULL, 0, NULL), IKV_E_UNSUPPORTED);
  ikv_geometry g96 = g;
  g96.head_dim = 96;
  assert_int_equal(ikv_cuda_decode(&g96, &pools, cp, &p, x, x, lse, IKV_DTYPE_F32, NULL, 0, NULL), IKV_E_UNSUPPORTED);
  assert_int_equal(ikv_cuda_decode(&g, &pools, cp, &p, x, x, lse, (ikv_dtype)7, NULL, 0, NULL), IKV_E_INVALID);
  assert_int_equal(ikv_cuda_decode(&g, &pools, cp, &p, NULL, x, lse, IKV_DTYPE_F32, NULL, 0, NULL), IKV_E_NULL);
  cp->page_copies = IKV_CUDA_COPIES_BULK + 1; /* no such load path */
  assert_int_equal(ikv_cuda_decode(&g, &pools, cp, &p, x, x, lse, IKV_DTYPE_F32, NULL, 0, NULL), IKV_E_INVALID);
  cp->page_copies = -1;
  assert_int_equal(ikv_cuda_decode(&g, &pools, cp, &p, x, x, lse, IKV_DTYPE_F32, NULL, 0, NULL), IKV_E_INVALID);
  ikv_cuda_plan_destroy(cp);
  ikv_cuda_plan_destroy(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(shape_sweep_matches_the_reference),
      cmocka_unit_test(edge_plans),
      cmocka_unit_test(long_and_short_rows),
      cmocka_unit_test(arguments_are_checked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
