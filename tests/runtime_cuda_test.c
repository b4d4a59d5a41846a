/* GPU test (tag `gpu`): the runtime's CUDA backend step by step against the
 * CPU backend fed the same operations: appends, write_kv, router plans,
 * scheduler-table downgrades (GPU requantize), offload and demand fetch,
 * copy-on-write after a fork, query-aware routing from page summaries kept
 * on the GPU, ranked on the host or selected on the GPU itself (no round
 * trip); every layer's decode compared (and the pages the router chose),
 * also right after its layer's write_kv (the decode then starts alongside
 * it, or not once an old page is rewritten), and a CUDA graph of a step's
 * decodes replayed against the eager result; no step allocates device or
 * page-locked memory, and a ranking of more candidates than its staging
 * holds goes in parts. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/intentkv.h"
#include "tests/cmocka_all.h"
#include "tests/gpu_hold.h"
#include "tests/require_gpu.h"
#include "tests/test_rng.h"

#define CUDA_CHECK(call) assert_int_equal((call), cudaSuccess)
enum { L = 2, H = 2, HQ = 8, D = 128, P = 16, MAX_TOKENS = 512 };

typedef struct twin { /* the same runtime on both backends */
  ikv_runtime *rt[2];
  ikv_plan *plan[2];
  ikv_seq_id seq[2][4];
  test_rng rng;
} twin;

static ikv_runtime_config twin_config(uint32_t gpu_pages, uint32_t host_pages) {
  ikv_runtime_config c = {.geometry = {.layers = L, .kv_heads = H, .head_dim = D, .page_size = P}, .q_heads = HQ,
                          .max_sequences = 8, .max_batch = 4, .max_plan_pages = 1024};
  for (int p = 0; p < IKV_PRECISION_COUNT; p++)
    c.capacity[IKV_TIER_GPU][p] = gpu_pages, c.capacity[IKV_TIER_HOST][p] = host_pages;
  return c;
}

static void twin_open_with(twin *t, ikv_runtime_config c) {
  for (int b = 0; b < 2; b++) {
    c.backend = b ? IKV_BACKEND_CUDA : IKV_BACKEND_CPU;
    assert_int_equal(ikv_runtime_create(&c, &t->rt[b]), IKV_OK);
    assert_int_equal(ikv_plan_create(t->rt[b], &t->plan[b]), IKV_OK);
  }
  t->rng.s = 0x5eed0701;
}

static void twin_open(twin *t) { twin_open_with(t, twin_config(64, 32)); }

/* Device and page-locked allocations the CUDA twin has made so far. */
static uint64_t cuda_allocations(const twin *t) {
  ikv_runtime_stats st;
  assert_int_equal(ikv_runtime_get_stats(t->rt[1], &st), IKV_OK);
  return st.device_allocations;
}

static void twin_close(twin *t) {
  for (int b = 0; b < 2; b++) ikv_plan_destroy(t->plan[b]), ikv_runtime_destroy(t->rt[b]);
}

/* n new tokens for sequence s on both: the same random K/V, device copies for CUDA. */
static void twin_grow(twin *t, int s, uint32_t n) {
  int64_t slots[2][MAX_TOKENS];
  uint8_t precs[2][MAX_TOKENS];
  for (int b = 0; b < 2; b++) assert_int_equal(ikv_append(t->rt[b], &t->seq[b][s], &n, 1, slots[b], precs[b]), IKV_OK);
  assert_memory_equal(slots[0], slots[1], sizeof(int64_t) * n); /* the same bookkeeping on both */
  const size_t count = (size_t)n * H * D;
  float *k = malloc(sizeof(float) * count), *v = malloc(sizeof(float) * count);
  void *dk, *dv;
  CUDA_CHECK(cudaMalloc(&dk, sizeof(float) * count));
  CUDA_CHECK(cudaMalloc(&dv, sizeof(float) * count));
  for (uint32_t l = 0; l < L; l++) {
    rng_fill_gauss(&t->rng, k, count, 1.0f);
    rng_fill_gauss(&t->rng, v, count, 1.0f);
    CUDA_CHECK(cudaMemcpy(dk, k, sizeof(float) * count, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dv, v, sizeof(float) * count, cudaMemcpyHostToDevice));
    assert_int_equal(ikv_write_kv(t->rt[0], l, k, v, IKV_DTYPE_F32, slots[0], precs[0], n, NULL), IKV_OK);
    assert_int_equal(ikv_write_kv(t->rt[1], l, dk, dv, IKV_DTYPE_F32, slots[1], precs[1], n, NULL), IKV_OK);
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  cudaFree(dk), cudaFree(dv), free(k), free(v);
}

/* Layer l's GPU output and LSE (out1, lse1) against the CPU backend's. */
static void expect_layer_matches(uint32_t l, const float *out0, const float *lse0, const float *out1, const float *lse1,
                                 uint32_t batch) {
  for (size_t i = 0; i < (size_t)batch * HQ * D; i++)
    if (!(fabs(out1[i] - out0[i]) <= 3e-3 + 6e-3 * fabs(out0[i]))) fail_msg("layer %u out[%zu] %g vs %g", l, i, out1[i], out0[i]);
  for (uint32_t i = 0; i < batch * HQ; i++) assert_true(fabs(lse1[i] - lse0[i]) <= 2e-3 + 2e-4 * fabs(lse0[i]));
}

/* Builds the same plan on both, decodes every layer, compares, ends the step. */
/* One step on both twins, their outputs compared (and a captured replay's,
 * with graph). Returns the entries device selection reserved and left
 * empty (0 without it). */
static uint32_t twin_step(twin *t, ikv_plan_request req0, ikv_plan_request req1, int graph) {
  assert_int_equal(ikv_plan_build(t->rt[0], t->plan[0], &req0), IKV_OK);
  assert_int_equal(ikv_plan_build(t->rt[1], t->plan[1], &req1), IKV_OK);
  const uint32_t batch = req0.batch;
  const size_t nq = (size_t)batch * HQ * D;
  float *q = malloc(sizeof(float) * nq), *out0 = malloc(sizeof(float) * nq), *out1 = malloc(sizeof(float) * nq);
  float lse0[4 * HQ], lse1[4 * HQ];
  void *dq, *dout;
  float *dlse;
  CUDA_CHECK(cudaMalloc(&dq, sizeof(float) * nq));
  CUDA_CHECK(cudaMalloc(&dout, sizeof(float) * nq * L));
  CUDA_CHECK(cudaMalloc((void **)&dlse, sizeof(float) * batch * HQ * L));
  rng_fill_gauss(&t->rng, q, nq, 1.0f);
  CUDA_CHECK(cudaMemcpy(dq, q, sizeof(float) * nq, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemset(dout, 0xff, sizeof(float) * nq * L));
  for (uint32_t l = 0; l < L; l++)
    assert_int_equal(ikv_decode(t->rt[1], t->plan[1], l, dq, (float *)dout + l * nq, dlse + l * batch * HQ, IKV_DTYPE_F32, NULL),
                     IKV_OK);
  CUDA_CHECK(cudaDeviceSynchronize());
  for (uint32_t l = 0; l < L; l++) {
    assert_int_equal(ikv_decode(t->rt[0], t->plan[0], l, q, out0, lse0, IKV_DTYPE_F32, NULL), IKV_OK);
    CUDA_CHECK(cudaMemcpy(out1, (float *)dout + l * nq, sizeof(float) * nq, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(lse1, dlse + l * batch * HQ, sizeof(float) * batch * HQ, cudaMemcpyDeviceToHost));
    expect_layer_matches(l, out0, lse0, out1, lse1, batch);
  }
  /* what the twins' decodes read: device selection's statistics, counted
   * from the entries the GPU filled, are the CPU's host-ranked plan's */
  ikv_plan_stats s0, reserved, s1;
  assert_int_equal(ikv_plan_get_stats(t->plan[1], &reserved), IKV_OK);
  assert_int_equal(ikv_plan_count_selected(t->rt[1], t->plan[1], NULL), IKV_OK);
  assert_int_equal(ikv_plan_get_stats(t->plan[0], &s0), IKV_OK);
  assert_int_equal(ikv_plan_get_stats(t->plan[1], &s1), IKV_OK);
  assert_int_equal(s1.pages_selected, s0.pages_selected);
  assert_memory_equal(s1.pages_by_precision, s0.pages_by_precision, sizeof(s0.pages_by_precision));
  assert_int_equal(s1.bytes_read, s0.bytes_read);
  assert_int_equal(s1.pages_hit, s0.pages_hit);
  if (!(req1.mode == IKV_PLAN_ROUTER && req1.router.select_on_device))
    assert_memory_equal(&reserved, &s1, sizeof(s1)); /* exact already */
  assert_true(reserved.pages_selected >= s1.pages_selected);
  if (graph) { /* the step's decodes captured once and replayed: the same bytes as eager */
    cudaStream_t s;
    cudaGraph_t gr;
    cudaGraphExec_t ex;
    void *gout;
    CUDA_CHECK(cudaStreamCreate(&s));
    CUDA_CHECK(cudaMalloc(&gout, sizeof(float) * nq * L));
    CUDA_CHECK(cudaMemset(gout, 0xff, sizeof(float) * nq * L));
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (uint32_t l = 0; l < L; l++)
      assert_int_equal(ikv_decode(t->rt[1], t->plan[1], l, dq, (float *)gout + l * nq, dlse + l * batch * HQ, IKV_DTYPE_F32, s),
                       IKV_OK);
    CUDA_CHECK(cudaStreamEndCapture(s, &gr));
    CUDA_CHECK(cudaGraphInstantiate(&ex, gr, 0));
    for (int r = 0; r < 3; r++) CUDA_CHECK(cudaGraphLaunch(ex, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    float *a = malloc(sizeof(float) * nq * L), *b = malloc(sizeof(float) * nq * L);
    CUDA_CHECK(cudaMemcpy(a, dout, sizeof(float) * nq * L, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(b, gout, sizeof(float) * nq * L, cudaMemcpyDeviceToHost));
    assert_memory_equal(a, b, sizeof(float) * nq * L);
    free(a), free(b);
    cudaGraphExecDestroy(ex), cudaGraphDestroy(gr), cudaStreamDestroy(s), cudaFree(gout);
  }
  for (int b = 0; b < 2; b++) assert_int_equal(ikv_step_end(t->rt[b], t->plan[b]), IKV_OK);
  cudaFree(dq), cudaFree(dout), cudaFree(dlse);
  free(q), free(out0), free(out1);
  return reserved.pages_selected - s1.pages_selected;
}

static ikv_plan_request router(const ikv_seq_id *seqs, uint32_t batch, float pressure) {
  ikv_plan_request r = {.seqs = seqs, .batch = batch, .mode = IKV_PLAN_ROUTER};
  r.router.memory_pressure = pressure;
  r.router.recent_tokens = 32;
  r.router.default_score = 0.5f;
  return r;
}

/* The twins' last query-aware plans read the same pages, and the scores
 * decided something (pages were left out). */
static void expect_same_picks(const twin *t) {
  const ikv_decode_plan *v0 = ikv_plan_view(t->plan[0]), *v1 = ikv_plan_view(t->plan[1]);
  const uint32_t rows = v0->per_kv_head ? v0->batch * H : v0->batch;
  assert_int_equal(v1->per_kv_head, v0->per_kv_head);
  assert_memory_equal(v0->indptr, v1->indptr, sizeof(int32_t) * (rows + 1));
  assert_memory_equal(v0->page_index, v1->page_index, sizeof(int32_t) * v0->indptr[rows]);
  ikv_plan_stats ps;
  assert_int_equal(ikv_plan_get_stats(t->plan[1], &ps), IKV_OK);
  assert_true(ps.pages_skipped > 0);
}

static void cuda_backend_matches_cpu(void **state) {
  (void)state;
  require_gpu();
  twin t;
  twin_open(&t);
  const uint64_t allocated = cuda_allocations(&t); /* by creating the runtime and its plan */
  assert_true(allocated > 0);
  for (int s = 0; s < 2; s++)
    for (int b = 0; b < 2; b++) assert_int_equal(ikv_seq_create(t.rt[b], IKV_FP16, &t.seq[b][s]), IKV_OK);
  twin_grow(&t, 0, 200);
  twin_grow(&t, 1, 77);
  /* a plain step, with a graph replay */
  twin_step(&t, router(t.seq[0], 2, 0.0f), router(t.seq[1], 2, 0.0f), 1);
  /* pressure 0.8: the router downgrades pages (GPU requantize vs the reference) */
  twin_grow(&t, 0, 1);
  twin_step(&t, router(t.seq[0], 2, 0.8f), router(t.seq[1], 2, 0.8f), 0);
  /* scheduler tables: int4 for the first pages of both sequences, int8 for
   * one more of sequence 1 */
  int32_t indptr[3] = {0, 2, 5}, index[5] = {0, 1, 0, 1, 4};
  uint8_t prec[5] = {IKV_INT4, IKV_INT4, IKV_INT4, IKV_INT4, IKV_INT8};
  ikv_plan_request tab = {.batch = 2, .mode = IKV_PLAN_TABLES, .tables = {.indptr = indptr, .page_index = index, .precision = prec}};
  ikv_plan_request tab0 = tab, tab1 = tab;
  tab0.seqs = t.seq[0], tab1.seqs = t.seq[1];
  twin_step(&t, tab0, tab1, 0);
  /* device selection: the GPU scores and ranks the candidates and writes
   * each head's top-2 into the plan itself (at layer 0's decode, also inside
   * the captured graph); the pages stored at several precisions after the
   * tables' downgrades leave reserved entries empty. The CPU ranks on the
   * host: the outputs agree only if the same pages win. */
  float dsel_q[2 * HQ * D];
  void *d_dsel_q;
  rng_fill_gauss(&t.rng, dsel_q, 2 * HQ * D, 1.0f);
  CUDA_CHECK(cudaMalloc(&d_dsel_q, sizeof(dsel_q)));
  CUDA_CHECK(cudaMemcpy(d_dsel_q, dsel_q, sizeof(dsel_q), cudaMemcpyHostToDevice));
  uint32_t left_empty = 0;
  for (int mode = IKV_SCORE_QUERY_BOUND; mode <= IKV_SCORE_MEAN_COSINE; mode++) {
    ikv_plan_request host = router(t.seq[0], 2, 0.0f), dev = router(t.seq[1], 2, 0.0f);
    host.router.score_mode = dev.router.score_mode = (ikv_score_mode)mode;
    host.router.topk_pages = dev.router.topk_pages = 2;
    host.router.score_q = dsel_q;
    dev.router.score_q = (const float *)d_dsel_q, dev.router.select_on_device = 1;
    left_empty += twin_step(&t, host, dev, mode == IKV_SCORE_QUERY_BOUND);
  }
  assert_true(left_empty > 0); /* the count read back did not just repeat the reservations */
  ikv_plan_request bad = router(t.seq[1], 2, 0.0f);
  bad.router.score_q = (const float *)d_dsel_q, bad.router.select_on_device = 1;
  assert_int_equal(ikv_plan_build(t.rt[1], t.plan[1], &bad), IKV_E_INVALID); /* span scores: nothing to rank */
  bad.router.score_mode = IKV_SCORE_QUERY_BOUND;
  assert_int_equal(ikv_plan_build(t.rt[1], t.plan[1], &bad), IKV_E_INVALID); /* no topk_pages */
  bad.router.topk_pages = 2, bad.seqs = t.seq[0];
  assert_int_equal(ikv_plan_build(t.rt[0], t.plan[0], &bad), IKV_E_UNSUPPORTED); /* the CPU backend */
  cudaFree(d_dsel_q);
  /* offload sequence 0, fork sequence 1 and append to the fork (copy-on-write) */
  for (int b = 0; b < 2; b++) {
    assert_int_equal(ikv_seq_offload(t.rt[b], t.seq[b][0], 0, 6), IKV_OK);
    assert_int_equal(ikv_seq_fork(t.rt[b], t.seq[b][1], &t.seq[b][2]), IKV_OK);
  }
  twin_grow(&t, 2, 9);
  ikv_seq_id s0[3] = {t.seq[0][0], t.seq[0][1], t.seq[0][2]}, s1[3] = {t.seq[1][0], t.seq[1][1], t.seq[1][2]};
  twin_step(&t, router(s0, 3, 0.0f), router(s1, 3, 0.0f), 1);
  ikv_runtime_stats st[2];
  for (int b = 0; b < 2; b++) assert_int_equal(ikv_runtime_get_stats(t.rt[b], &st[b]), IKV_OK);
  assert_int_equal(st[1].demand_fetches, st[0].demand_fetches);
  assert_int_equal(st[1].conversions, st[0].conversions);
  assert_int_equal(st[1].cow_copies, 1);
  assert_true(st[1].demand_fetches >= 6 && st[1].conversions > 0);
  /* query-aware routing: page summaries kept by GPU write_kv (and copied on
   * copy-on-write), scores on the GPU; the same pages must win on both */
  float score_q[3 * HQ * D];
  rng_fill_gauss(&t.rng, score_q, 3 * HQ * D, 1.0f);
  for (int mode = IKV_SCORE_QUERY_BOUND; mode <= IKV_SCORE_MEAN_COSINE; mode++) {
    ikv_plan_request qa0 = router(s0, 3, 0.0f), qa1 = router(s1, 3, 0.0f);
    qa0.router.score_mode = qa1.router.score_mode = (ikv_score_mode)mode;
    qa0.router.score_q = qa1.router.score_q = score_q;
    qa0.router.topk_pages = qa1.router.topk_pages = 2;
    twin_step(&t, qa0, qa1, 0);
    expect_same_picks(&t);
  }
  /* every kind of step above (prefill, requantize, device selection, tables,
   * offload and demand fetch, copy-on-write, host-ranked scores, graphs)
   * without one device or page-locked allocation */
  assert_int_equal(cuda_allocations(&t), allocated);
  twin_close(&t);
}

/* A host-ranked query plan whose candidates outnumber the pages (forks
 * share theirs: each of four sequences offers all eight pages of the GPU
 * tier) is ranked in parts, a sequence at a time, and picks what the CPU
 * backend picks, allocating nothing. */
static void ranks_more_candidates_than_pages_in_parts(void **state) {
  (void)state;
  require_gpu();
  twin t;
  ikv_runtime_config c = twin_config(0, 0);
  c.capacity[IKV_TIER_GPU][IKV_FP16] = 8;
  twin_open_with(&t, c);
  const uint64_t allocated = cuda_allocations(&t);
  for (int b = 0; b < 2; b++) assert_int_equal(ikv_seq_create(t.rt[b], IKV_FP16, &t.seq[b][0]), IKV_OK);
  twin_grow(&t, 0, 8 * P);
  for (int b = 0; b < 2; b++)
    for (int f = 1; f < 4; f++) assert_int_equal(ikv_seq_fork(t.rt[b], t.seq[b][0], &t.seq[b][f]), IKV_OK);
  float score_q[4 * HQ * D];
  rng_fill_gauss(&t.rng, score_q, 4 * HQ * D, 1.0f);
  ikv_plan_request qa0 = router(t.seq[0], 4, 0.0f), qa1 = router(t.seq[1], 4, 0.0f);
  qa0.router.score_mode = qa1.router.score_mode = IKV_SCORE_QUERY_BOUND;
  qa0.router.score_q = qa1.router.score_q = score_q;
  qa0.router.recent_tokens = qa1.router.recent_tokens = 0;
  qa0.router.topk_pages = qa1.router.topk_pages = 3;
  twin_step(&t, qa0, qa1, 0);
  expect_same_picks(&t);
  assert_int_equal(cuda_allocations(&t), allocated);
  twin_close(&t);
}

/* Two CUDA runtimes fed the same steps: one runs each step eagerly, the
 * other replays one captured graph of a step (write_kv and decode of every
 * layer) for as long as ikv_step_graph_key holds; every step's outputs must
 * be the same bytes. Scheduler tables of a fixed shape, then the router with
 * selection on the GPU (which the graph replays with each step's queries),
 * then the router ranking on the host over steps that add a page to every
 * KV-head row (the plan's entries move; its padded launch, hence the key,
 * holds). */
/* Fresh random K/V of count tokens into layer l of both twins, through each
 * one's slot mapping (k, v: host scratch; dk, dv: device scratch, read by
 * the CUDA twin's write_kv on stream, which may run later). */
static void write_both(twin *t, uint32_t l, int64_t *const slots[2], uint8_t *const precs[2], uint32_t count, float *k,
                       float *v, void *dk, void *dv, cudaStream_t stream) {
  const size_t n = (size_t)count * H * D;
  rng_fill_gauss(&t->rng, k, n, 1.0f), rng_fill_gauss(&t->rng, v, n, 1.0f);
  CUDA_CHECK(cudaMemcpy(dk, k, sizeof(float) * n, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dv, v, sizeof(float) * n, cudaMemcpyHostToDevice));
  assert_int_equal(ikv_write_kv(t->rt[0], l, k, v, IKV_DTYPE_F32, slots[0], precs[0], count, NULL), IKV_OK);
  assert_int_equal(ikv_write_kv(t->rt[1], l, dk, dv, IKV_DTYPE_F32, slots[1], precs[1], count, stream), IKV_OK);
}

/* The usual order within a step: append, plan, then for each layer its
 * write_kv and its decode, so each decode follows its write_kv on the
 * stream and starts alongside it: its items put their pages in flight, but
 * none loads a page written this step before the write_kv is done. A kernel
 * that lets them start at once and holds the write_kv back (tests/gpu_hold.h)
 * makes any early load of such a page read its old bytes every time. Three
 * steps: scheduler tables of every page in order (the new token's page last
 * in its item, which waits before that page), the router's plan, and the
 * router's again with every write_kv also rewriting a token of an old page
 * (one no item waits for), after which the decodes wait in full. Each gives
 * the CPU backend's result. */
static void decodes_follow_their_write_kv(void **state) {
  (void)state;
  require_gpu();
  twin t;
  twin_open(&t);
  enum { FIRST = 100, HOLD_NS = 2000000 }; /* 2 ms: longer than the host takes to enqueue what follows */
  uint32_t n = FIRST, one = 1;
  int64_t old_slots[2][FIRST], new_slot[2];
  uint8_t old_precs[2][FIRST], new_prec[2];
  int64_t *const olds[2] = {old_slots[0], old_slots[1]}, *const news[2] = {&new_slot[0], &new_slot[1]};
  uint8_t *const oldp[2] = {old_precs[0], old_precs[1]}, *const newp[2] = {&new_prec[0], &new_prec[1]};
  for (int b = 0; b < 2; b++) {
    assert_int_equal(ikv_seq_create(t.rt[b], IKV_FP16, &t.seq[b][0]), IKV_OK);
    assert_int_equal(ikv_append(t.rt[b], &t.seq[b][0], &n, 1, old_slots[b], old_precs[b]), IKV_OK);
  }
  const size_t row = (size_t)H * D, nq = (size_t)HQ * D;
  float *k = malloc(sizeof(float) * FIRST * row), *v = malloc(sizeof(float) * FIRST * row), *q = malloc(sizeof(float) * nq);
  float *out0 = malloc(sizeof(float) * nq), *out1 = malloc(sizeof(float) * nq), lse0[HQ], lse1[HQ];
  void *dk, *dv, *dq, *dout;
  float *dlse;
  CUDA_CHECK(cudaMalloc(&dk, sizeof(float) * FIRST * row));
  CUDA_CHECK(cudaMalloc(&dv, sizeof(float) * FIRST * row));
  CUDA_CHECK(cudaMalloc(&dq, sizeof(float) * nq));
  CUDA_CHECK(cudaMalloc(&dout, sizeof(float) * nq));
  CUDA_CHECK(cudaMalloc((void **)&dlse, sizeof(float) * HQ));
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (uint32_t l = 0; l < L; l++) write_both(&t, l, olds, oldp, FIRST, k, v, dk, dv, NULL);
  enum { TABLES, ROUTER, REWRITE };
  for (int step = TABLES; step <= REWRITE; step++) {
    const int rewrite = step == REWRITE;
    for (int b = 0; b < 2; b++)
      assert_int_equal(ikv_append(t.rt[b], &t.seq[b][0], &one, 1, &new_slot[b], &new_prec[b]), IKV_OK);
    const uint32_t pages = (FIRST + step + 1 + P - 1) / P, fresh = (FIRST + step) / P;
    int32_t indptr[2] = {0, (int32_t)pages}, index[16];
    uint8_t prec[16];
    for (uint32_t i = 0; i < pages; i++) index[i] = (int32_t)i, prec[i] = IKV_FP16;
    for (int b = 0; b < 2; b++) {
      ikv_plan_request req = router(t.seq[b], 1, 0.0f);
      if (step == TABLES)
        req.mode = IKV_PLAN_TABLES, req.tables = (ikv_plan_tables){.indptr = indptr, .page_index = index, .precision = prec};
      assert_int_equal(ikv_plan_build(t.rt[b], t.plan[b], &req), IKV_OK);
    }
    if (step == TABLES) { /* the new token's page is not its item's first */
      uint32_t n_items;
      const ikv_work_item *items = ikv_plan_work(t.plan[1], &n_items);
      const int32_t *order = ikv_plan_work_entries(t.plan[1]);
      uint32_t position = 0;
      for (uint32_t i = 0; i < n_items; i++)
        for (uint32_t x = items[i].begin; x < items[i].end; x++)
          if (ikv_plan_view(t.plan[1])->page_index[order[x]] == (int32_t)fresh) position = x - items[i].begin;
      assert_true(position > 0);
    }
    for (uint32_t l = 0; l < L; l++) {
      rng_fill_gauss(&t.rng, q, nq, 1.0f);
      CUDA_CHECK(cudaDeviceSynchronize()); /* the scratch is free */
      CUDA_CHECK(cudaMemcpy(dq, q, sizeof(float) * nq, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemset(dout, 0xff, sizeof(float) * nq));
      assert_true(test_gpu_hold(s, HOLD_NS));
      /* token 0, on page 0: no item waits for it (its K/V at the scratch's second row) */
      if (rewrite) write_both(&t, l, olds, oldp, 1, k, v, (float *)dk + row, (float *)dv + row, s);
      write_both(&t, l, news, newp, 1, k, v, dk, dv, s);
      assert_int_equal(ikv_decode(t.rt[1], t.plan[1], l, dq, dout, dlse, IKV_DTYPE_F32, s), IKV_OK);
      CUDA_CHECK(cudaStreamSynchronize(s));
      assert_int_equal(ikv_decode(t.rt[0], t.plan[0], l, q, out0, lse0, IKV_DTYPE_F32, NULL), IKV_OK);
      CUDA_CHECK(cudaMemcpy(out1, dout, sizeof(float) * nq, cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(lse1, dlse, sizeof(float) * HQ, cudaMemcpyDeviceToHost));
      expect_layer_matches(l, out0, lse0, out1, lse1, 1);
    }
    for (int b = 0; b < 2; b++) assert_int_equal(ikv_step_end(t.rt[b], t.plan[b]), IKV_OK);
  }
  cudaStreamDestroy(s);
  cudaFree(dk), cudaFree(dv), cudaFree(dq), cudaFree(dout), cudaFree(dlse);
  free(k), free(v), free(q), free(out0), free(out1);
  twin_close(&t);
}

static void graph_replays_across_steps(void **state) {
  (void)state;
  require_gpu();
  enum { SEQS = 2, STEPS = 6 };
  ikv_runtime_config c = {.geometry = {.layers = L, .kv_heads = H, .head_dim = D, .page_size = P}, .q_heads = HQ,
                          .max_sequences = 4, .max_batch = SEQS, .max_plan_pages = 1024, .backend = IKV_BACKEND_CUDA};
  c.capacity[IKV_TIER_GPU][IKV_FP16] = 64;
  ikv_runtime *rt[2];
  ikv_plan *plan[2];
  ikv_seq_id seq[2][SEQS];
  for (int r = 0; r < 2; r++) {
    assert_int_equal(ikv_runtime_create(&c, &rt[r]), IKV_OK);
    assert_int_equal(ikv_plan_create(rt[r], &plan[r]), IKV_OK);
    for (int b = 0; b < SEQS; b++) assert_int_equal(ikv_seq_create(rt[r], IKV_FP16, &seq[r][b]), IKV_OK);
  }
  test_rng rng = {0x5eed0a11};
  const size_t kv = (size_t)MAX_TOKENS * H * D, nq = (size_t)SEQS * HQ * D;
  float *host = malloc(sizeof(float) * kv), *out[2];
  void *dk, *dv, *dq, *dsq, *dout[2];
  float *dlse;
  CUDA_CHECK(cudaMalloc(&dk, sizeof(float) * kv));
  CUDA_CHECK(cudaMalloc(&dv, sizeof(float) * kv));
  CUDA_CHECK(cudaMalloc(&dq, sizeof(float) * nq));
  CUDA_CHECK(cudaMalloc(&dsq, sizeof(float) * nq));
  CUDA_CHECK(cudaMalloc((void **)&dlse, sizeof(float) * L * SEQS * HQ));
  for (int r = 0; r < 2; r++) {
    CUDA_CHECK(cudaMalloc(&dout[r], sizeof(float) * L * nq));
    out[r] = malloc(sizeof(float) * L * nq);
  }
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  /* the context: 200 tokens each, written eagerly */
  const uint32_t ctx[SEQS] = {200, 200};
  int64_t slots[2][512];
  uint8_t precs[2][512];
  for (int r = 0; r < 2; r++)
    assert_int_equal(ikv_append(rt[r], seq[r], ctx, SEQS, slots[r], precs[r]), IKV_OK);
  for (uint32_t l = 0; l < L; l++) {
    rng_fill_gauss(&rng, host, 400 * H * D, 1.0f);
    CUDA_CHECK(cudaMemcpy(dk, host, sizeof(float) * 400 * H * D, cudaMemcpyHostToDevice));
    rng_fill_gauss(&rng, host, 400 * H * D, 1.0f);
    CUDA_CHECK(cudaMemcpy(dv, host, sizeof(float) * 400 * H * D, cudaMemcpyHostToDevice));
    for (int r = 0; r < 2; r++)
      assert_int_equal(ikv_write_kv(rt[r], l, dk, dv, IKV_DTYPE_F32, slots[r], precs[r], 400, s), IKV_OK);
  }
  CUDA_CHECK(cudaStreamSynchronize(s));
  int32_t indptr[SEQS + 1] = {0, 3, 6}, index[6];
  uint8_t prec[6] = {IKV_FP16, IKV_FP16, IKV_FP16, IKV_FP16, IKV_FP16, IKV_FP16};
  const uint32_t ones[SEQS] = {1, 1};
  uint32_t tokens = ctx[0];
  float *sq = malloc(sizeof(float) * nq); /* the host ranking's queries */
  /* each mode's first step: 1 (224 tokens) keeps the candidates (the pages
   * before the 32-token window), 2 (from 237) crosses into a new page */
  const uint32_t start[3] = {0, 224, 237};
  for (int mode = 0; mode < 3; mode++) { /* 0: tables, 1: router selecting on the GPU, 2: ranking on the host */
    uint32_t entries_seen[2] = {0, 0}; /* mode 2: the fewest and the most entries a step's plan held */
    if (mode) {
      const uint32_t top[SEQS] = {start[mode] - tokens, start[mode] - tokens};
      for (int r = 0; r < 2; r++) assert_int_equal(ikv_append(rt[r], seq[r], top, SEQS, slots[r], precs[r]), IKV_OK);
      for (uint32_t l = 0; l < L; l++)
        for (int r = 0; r < 2; r++)
          assert_int_equal(ikv_write_kv(rt[r], l, dk, dv, IKV_DTYPE_F32, slots[r], precs[r], 2 * top[0], s), IKV_OK);
      tokens = start[mode];
    }
    cudaGraphExec_t exec = NULL;
    uint64_t captured_key = 0;
    int captures = 0;
    for (int step = 0; step < STEPS; step++) {
      for (int r = 0; r < 2; r++) assert_int_equal(ikv_append(rt[r], seq[r], ones, SEQS, slots[r], precs[r]), IKV_OK);
      rng_fill_gauss(&rng, host, 2 * H * D, 1.0f); /* the new tokens' K and V, and the queries, in place */
      CUDA_CHECK(cudaMemcpy(dk, host, sizeof(float) * 2 * H * D, cudaMemcpyHostToDevice));
      rng_fill_gauss(&rng, host, 2 * H * D, 1.0f);
      CUDA_CHECK(cudaMemcpy(dv, host, sizeof(float) * 2 * H * D, cudaMemcpyHostToDevice));
      rng_fill_gauss(&rng, host, nq, 1.0f);
      CUDA_CHECK(cudaMemcpy(dq, host, sizeof(float) * nq, cudaMemcpyHostToDevice));
      rng_fill_gauss(&rng, sq, nq, 1.0f);
      CUDA_CHECK(cudaMemcpy(dsq, sq, sizeof(float) * nq, cudaMemcpyHostToDevice));
      tokens++;
      const uint32_t last = (tokens + P - 1) / P - 1;
      for (int b = 0; b < SEQS; b++) index[3 * b] = 0, index[3 * b + 1] = 3 + step, index[3 * b + 2] = (int32_t)last;
      for (int r = 0; r < 2; r++) {
        ikv_plan_request req = {.seqs = seq[r], .batch = SEQS, .mode = mode ? IKV_PLAN_ROUTER : IKV_PLAN_TABLES};
        if (mode)
          req.router = (ikv_router_params){.recent_tokens = 32, .default_score = 0.5f, .score_mode = IKV_SCORE_QUERY_BOUND,
                                           .topk_pages = 2, .score_q = mode == 1 ? (const float *)dsq : sq,
                                           .select_on_device = mode == 1};
        else
          req.tables = (ikv_plan_tables){.indptr = indptr, .page_index = index, .precision = prec};
        assert_int_equal(ikv_plan_build(rt[r], plan[r], &req), IKV_OK);
      }
      ikv_plan_stats ps;
      assert_int_equal(ikv_plan_get_stats(plan[1], &ps), IKV_OK);
      if (!step || ps.pages_selected < entries_seen[0]) entries_seen[0] = ps.pages_selected;
      if (ps.pages_selected > entries_seen[1]) entries_seen[1] = ps.pages_selected;
      CUDA_CHECK(cudaMemsetAsync(dout[0], 0xff, sizeof(float) * L * nq, s)); /* poison, in the stream's order */
      CUDA_CHECK(cudaMemsetAsync(dout[1], 0xff, sizeof(float) * L * nq, s));
      for (uint32_t l = 0; l < L; l++) { /* runtime 0: eager */
        assert_int_equal(ikv_write_kv(rt[0], l, dk, dv, IKV_DTYPE_F32, slots[0], precs[0], SEQS, s), IKV_OK);
        assert_int_equal(ikv_decode(rt[0], plan[0], l, dq, (float *)dout[0] + l * nq, dlse, IKV_DTYPE_F32, s), IKV_OK);
      }
      uint64_t key;
      assert_int_equal(ikv_step_graph_key(rt[1], plan[1], &key), IKV_OK);
      assert_int_equal(ikv_stream_enter(rt[1], s), IKV_OK);
      if (!exec || key != captured_key) { /* runtime 1: capture the step once, replay it after */
        cudaGraph_t graph;
        if (exec) cudaGraphExecDestroy(exec);
        CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        for (uint32_t l = 0; l < L; l++) {
          assert_int_equal(ikv_write_kv(rt[1], l, dk, dv, IKV_DTYPE_F32, slots[1], precs[1], SEQS, s), IKV_OK);
          assert_int_equal(ikv_decode(rt[1], plan[1], l, dq, (float *)dout[1] + l * nq, dlse, IKV_DTYPE_F32, s), IKV_OK);
        }
        CUDA_CHECK(cudaStreamEndCapture(s, &graph));
        CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
        cudaGraphDestroy(graph);
        captured_key = key, captures++;
      }
      CUDA_CHECK(cudaGraphLaunch(exec, s));
      assert_int_equal(ikv_stream_leave(rt[1], s), IKV_OK);
      CUDA_CHECK(cudaStreamSynchronize(s));
      for (int r = 0; r < 2; r++) {
        CUDA_CHECK(cudaMemcpy(out[r], dout[r], sizeof(float) * L * nq, cudaMemcpyDeviceToHost));
        assert_int_equal(ikv_step_end(rt[r], plan[r]), IKV_OK);
      }
      for (size_t i = 0; i < L * nq; i++) assert_false(isnan(out[0][i]));
      for (size_t i = 0; i < L * nq; i++)
        if (memcmp(&out[0][i], &out[1][i], sizeof(float)))
          fail_msg("mode %d, step %d: replay out[%zu] %a, eager %a", mode, step, i, out[1][i], out[0][i]);
    }
    assert_int_equal(captures, 1); /* the shape held: one capture served every step */
    if (mode == 2) assert_true(entries_seen[0] < entries_seen[1]); /* ... while the plan's entries grew */
    cudaGraphExecDestroy(exec);
  }
  free(sq);
  /* selection on the GPU launches for its longest sequence's candidates
   * rounded up: a candidate page more keeps the key, eight more move it
   * (each growth ends in a decode step's append of a token a sequence, as
   * the key was taken after: the staged token count is part of it) */
  uint64_t before, after;
  ikv_plan_request req = {.seqs = seq[1], .batch = SEQS, .mode = IKV_PLAN_ROUTER};
  req.router = (ikv_router_params){.recent_tokens = 32, .default_score = 0.5f, .score_mode = IKV_SCORE_QUERY_BOUND,
                                   .topk_pages = 2, .score_q = (const float *)dsq, .select_on_device = 1};
  assert_int_equal(ikv_plan_build(rt[1], plan[1], &req), IKV_OK);
  assert_int_equal(ikv_step_graph_key(rt[1], plan[1], &before), IKV_OK);
  assert_int_equal(ikv_step_end(rt[1], plan[1]), IKV_OK);
  const uint32_t pages[2][SEQS] = {{P, P}, {8 * P, 8 * P}};
  for (int grow = 0; grow < 2; grow++) {
    assert_int_equal(ikv_append(rt[1], seq[1], pages[grow], SEQS, slots[1], precs[1]), IKV_OK);
    assert_int_equal(ikv_append(rt[1], seq[1], ones, SEQS, slots[1], precs[1]), IKV_OK);
    assert_int_equal(ikv_plan_build(rt[1], plan[1], &req), IKV_OK);
    assert_int_equal(ikv_step_graph_key(rt[1], plan[1], &after), IKV_OK);
    assert_int_equal(before != after, grow);
    assert_int_equal(ikv_step_end(rt[1], plan[1]), IKV_OK);
  }
  assert_int_equal(ikv_step_graph_key(NULL, plan[1], &after), IKV_E_NULL);
  cudaStreamDestroy(s);
  cudaFree(dk), cudaFree(dv), cudaFree(dq), cudaFree(dsq), cudaFree(dlse), cudaFree(dout[0]), cudaFree(dout[1]);
  free(host), free(out[0]), free(out[1]);
  for (int r = 0; r < 2; r++) ikv_plan_destroy(plan[r]), ikv_runtime_destroy(rt[r]);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(cuda_backend_matches_cpu),
                                     cmocka_unit_test(ranks_more_candidates_than_pages_in_parts),
                                     cmocka_unit_test(decodes_follow_their_write_kv),
                                     cmocka_unit_test(graph_replays_across_steps)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
