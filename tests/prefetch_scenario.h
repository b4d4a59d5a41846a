/* A multi-step agentic workload driven through the public API on either
 * backend, recording every decode output, so runs with the prefetcher on,
 * off and under forced thrash can be compared bit for bit (prefetching must
 * never change results). Three sequences with a system prompt (ALWAYS), two
 * documents and a tool output (ATTEND, scores drifting), two of them read
 * each step in turn, a token appended to each every step, and a scheduler
 * hint now and then. */
#ifndef IKV_TESTS_PREFETCH_SCENARIO_H
#define IKV_TESTS_PREFETCH_SCENARIO_H

#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/intentkv.h"
#include "tests/cmocka_all.h"
#include "tests/test_rng.h"

enum { SC_L = 2, SC_H = 2, SC_HQ = 8, SC_D = 64, SC_P = 16, SC_SEQS = 3, SC_TOKENS = 1024, SC_STEPS = 14,
       SC_BATCH = 2 };
#define SC_CHECK_CUDA(call) assert_int_equal((call), cudaSuccess)

typedef struct sc_result {
  float *out;                 /* [steps][layers][batch][q_heads][head_dim] */
  size_t n_out;
  ikv_runtime_stats stats;
  uint32_t kept_evicted;      /* pages the previous plan kept (system prompt, recent window) of the
                                 sequence the current plan does not read, found off the GPU after it */
} sc_result;

/* Host data to where the backend's kernels read it (device copies for CUDA). */
static inline const void *sc_to_backend(ikv_backend be, const float *host, size_t n, void *dev) {
  if (be == IKV_BACKEND_CPU) return host;
  SC_CHECK_CUDA(cudaMemcpy(dev, host, sizeof(float) * n, cudaMemcpyHostToDevice));
  return dev;
}

static inline void sc_grow(ikv_runtime *rt, ikv_backend be, const ikv_seq_id *seqs, uint32_t per_seq, test_rng *rng,
                           float *k, float *v, void *dk, void *dv) {
  uint32_t n_tokens[SC_SEQS];
  for (int s = 0; s < SC_SEQS; s++) n_tokens[s] = per_seq;
  const uint32_t n = per_seq * SC_SEQS;
  int64_t *slots = malloc(sizeof(int64_t) * n);
  uint8_t *precs = malloc(n);
  assert_int_equal(ikv_append(rt, seqs, n_tokens, SC_SEQS, slots, precs), IKV_OK);
  const size_t count = (size_t)n * SC_H * SC_D;
  for (uint32_t l = 0; l < SC_L; l++) {
    rng_fill_gauss(rng, k, count, 1.0f);
    rng_fill_gauss(rng, v, count, 1.0f);
    const void *bk = sc_to_backend(be, k, count, dk), *bv = sc_to_backend(be, v, count, dv);
    assert_int_equal(ikv_write_kv(rt, l, bk, bv, IKV_DTYPE_F32, slots, precs, n, NULL), IKV_OK);
  }
  free(slots), free(precs);
}

/* Pages of the system prompt and the recent window not on the GPU tier. */
static inline uint32_t sc_kept_off_gpu(ikv_runtime *rt, ikv_seq_id seq, uint32_t tokens, uint32_t recent) {
  const ikv_pagetable *pt = ikv_runtime_pagetable(rt);
  uint32_t off = 0, n_pages = (tokens + SC_P - 1) / SC_P;
  for (uint32_t i = 0; i < n_pages; i++) {
    if (i >= 64 / SC_P && i < (tokens - recent) / SC_P) continue; /* kept: the first 64 tokens and the window */
    ikv_page_id page;
    ikv_pt_page_info info;
    assert_int_equal(ikv_pt_seq_pages(pt, seq, i, 1, &page), IKV_OK);
    assert_int_equal(ikv_pt_page_get_info(pt, page, &info), IKV_OK);
    off += info.slot[IKV_TIER_GPU] == IKV_NO_SLOT;
  }
  return off;
}

static inline void sc_run(ikv_backend be, uint32_t gpu_pages, ikv_prefetch_config pf, sc_result *res) {
  ikv_runtime_config c = {.geometry = {.layers = SC_L, .kv_heads = SC_H, .head_dim = SC_D, .page_size = SC_P},
                          .q_heads = SC_HQ, .max_sequences = 8, .max_batch = SC_BATCH, .max_plan_pages = 1024,
                          .backend = be, .prefetch = pf};
  c.capacity[IKV_TIER_GPU][IKV_FP16] = gpu_pages;
  c.capacity[IKV_TIER_HOST][IKV_FP16] = 256;
  ikv_runtime *rt;
  ikv_plan *plan;
  assert_int_equal(ikv_runtime_create(&c, &rt), IKV_OK);
  assert_int_equal(ikv_plan_create(rt, &plan), IKV_OK);
  test_rng rng = {0x5eed0707};
  const size_t big = (size_t)SC_SEQS * SC_TOKENS * SC_H * SC_D;
  float *k = malloc(sizeof(float) * big), *v = malloc(sizeof(float) * big);
  void *dk = NULL, *dv = NULL, *dq = NULL, *dout = NULL, *dlse = NULL;
  const size_t nq = (size_t)SC_BATCH * SC_HQ * SC_D;
  if (be == IKV_BACKEND_CUDA) {
    SC_CHECK_CUDA(cudaMalloc(&dk, sizeof(float) * big));
    SC_CHECK_CUDA(cudaMalloc(&dv, sizeof(float) * big));
    SC_CHECK_CUDA(cudaMalloc(&dq, sizeof(float) * nq));
    SC_CHECK_CUDA(cudaMalloc(&dout, sizeof(float) * nq));
    SC_CHECK_CUDA(cudaMalloc(&dlse, sizeof(float) * SC_BATCH * SC_HQ));
  }
  ikv_seq_id seqs[SC_SEQS];
  ikv_span_id spans[SC_SEQS][4];
  for (int s = 0; s < SC_SEQS; s++) assert_int_equal(ikv_seq_create(rt, IKV_FP16, &seqs[s]), IKV_OK);
  /* the prompt of 768 tokens: the GPU tier holds a part; the rest starts on the host */
  const uint32_t prompt = 768;
  for (uint32_t chunk = 0; chunk < prompt; chunk += 128) {
    sc_grow(rt, be, seqs, 128, &rng, k, v, dk, dv);
    for (int s = 0; s < SC_SEQS; s++) /* older chunks leave the GPU, as a preempted scheduler would move them */
      if (chunk >= 256 && chunk % 256 == 0) assert_int_equal(ikv_seq_offload(rt, seqs[s], (chunk - 256) / SC_P, 256 / SC_P), IKV_OK);
  }
  const ikv_span layout[4] = {{0, 64, IKV_SPAN_SYSTEM, IKV_POLICY_ALWAYS, 1.0f, IKV_UNPINNED_PRECISION},
                              {64, 320, IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.9f, IKV_UNPINNED_PRECISION},
                              {320, 576, IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.2f, IKV_UNPINNED_PRECISION},
                              {576, 704, IKV_SPAN_TOOL_OUTPUT, IKV_POLICY_ATTEND, 0.5f, IKV_UNPINNED_PRECISION}};
  for (int s = 0; s < SC_SEQS; s++)
    for (int i = 0; i < 4; i++) assert_int_equal(ikv_span_add(rt, seqs[s], &layout[i], &spans[s][i]), IKV_OK);
  res->n_out = (size_t)SC_STEPS * SC_L * nq;
  res->out = malloc(sizeof(float) * res->n_out);
  res->kept_evicted = 0;
  float q[SC_BATCH * SC_HQ * SC_D], lse[SC_BATCH * SC_HQ];
  uint32_t tokens = prompt;
  for (uint32_t step = 0; step < SC_STEPS; step++) {
    sc_grow(rt, be, seqs, 1, &rng, k, v, dk, dv);
    tokens++;
    const ikv_seq_id batch[SC_BATCH] = {seqs[step % SC_SEQS], seqs[(step + 1) % SC_SEQS]};
    for (int b = 0; b < SC_BATCH; b++) { /* the topic drifts between the documents */
      const uint32_t s = (step + b) % SC_SEQS;
      ikv_span sp = layout[1 + step % 2];
      sp.score = 0.9f;
      assert_int_equal(ikv_span_update(rt, seqs[s], spans[s][1 + step % 2], &sp), IKV_OK);
      sp = layout[2 - step % 2];
      sp.score = 0.2f;
      assert_int_equal(ikv_span_update(rt, seqs[s], spans[s][2 - step % 2], &sp), IKV_OK);
    }
    if (step % 4 == 3) /* the scheduler will feed a tool output back next step */
      assert_int_equal(ikv_span_hint(rt, seqs[(step + 1) % SC_SEQS], spans[(step + 1) % SC_SEQS][3]), IKV_OK);
    ikv_plan_request req = {.seqs = batch, .batch = SC_BATCH, .mode = IKV_PLAN_ROUTER};
    req.router = (ikv_router_params){.recent_tokens = 128, .sink_tokens = 16, .token_budget = 448, .default_score = 0.1f};
    assert_int_equal(ikv_plan_build(rt, plan, &req), IKV_OK);
    if (step) res->kept_evicted += sc_kept_off_gpu(rt, seqs[(step + 2) % SC_SEQS], tokens, 128);
    for (uint32_t l = 0; l < SC_L; l++) {
      float *out = res->out + ((size_t)step * SC_L + l) * nq;
      rng_fill_gauss(&rng, q, nq, 1.0f);
      for (size_t i = 0; i < nq; i++) out[i] = NAN;
      if (be == IKV_BACKEND_CPU) {
        assert_int_equal(ikv_decode(rt, plan, l, q, out, lse, IKV_DTYPE_F32, NULL), IKV_OK);
      } else {
        SC_CHECK_CUDA(cudaMemcpy(dq, q, sizeof(q), cudaMemcpyHostToDevice));
        SC_CHECK_CUDA(cudaMemset(dout, 0xff, sizeof(float) * nq)); /* poisoned: NaN */
        assert_int_equal(ikv_decode(rt, plan, l, dq, dout, dlse, IKV_DTYPE_F32, NULL), IKV_OK);
        SC_CHECK_CUDA(cudaMemcpy(out, dout, sizeof(float) * nq, cudaMemcpyDeviceToHost));
      }
    }
    assert_int_equal(ikv_step_end(rt, plan), IKV_OK);
  }
  if (be == IKV_BACKEND_CUDA) SC_CHECK_CUDA(cudaDeviceSynchronize());
  assert_int_equal(ikv_runtime_get_stats(rt, &res->stats), IKV_OK);
  free(k), free(v);
  if (be == IKV_BACKEND_CUDA) cudaFree(dk), cudaFree(dv), cudaFree(dq), cudaFree(dout), cudaFree(dlse);
  ikv_plan_destroy(plan);
  ikv_runtime_destroy(rt);
}

/* Every predictor, with room and under thrash, against no prefetching with
 * room: the same outputs bit for bit; the statistics add up; the pages the
 * cache keeps stay. */
static inline void sc_check_all(ikv_backend be) {
  const uint32_t roomy = 256, tight = 96, thrash = 72; /* a plan reads up to ~66 pages */
  sc_result base;
  sc_run(be, roomy, (ikv_prefetch_config){IKV_PREDICT_NONE, 0}, &base);
  for (size_t i = 0; i < base.n_out; i++) assert_false(isnan(base.out[i]));
  const uint64_t page_bytes = (uint64_t)SC_L * 2 * SC_P * SC_H * SC_D * 2; /* fp16 K and V, all layers */
  const ikv_predictor predictors[] = {IKV_PREDICT_NONE, IKV_PREDICT_HISTORY, IKV_PREDICT_POLICY, IKV_PREDICT_MARGIN,
                                      IKV_PREDICT_HINTS};
  const uint32_t sizes[] = {roomy, tight, thrash};
  uint64_t demand_none = 0, demand_margin = 0, history_hits = 0;
  for (size_t p = 0; p < sizeof(predictors) / sizeof(predictors[0]); p++)
    for (size_t z = 0; z < 3; z++)
      for (int limited = 0; limited < 2; limited++) {
        sc_result r;
        sc_run(be, sizes[z], (ikv_prefetch_config){predictors[p], limited ? 8 * page_bytes : 0}, &r);
        if (memcmp(r.out, base.out, sizeof(float) * base.n_out))
          fail_msg("%s, %u GPU pages, budget %d: outputs differ from no prefetching", ikv_predictor_name(predictors[p]),
                   sizes[z], limited);
        const ikv_runtime_stats *s = &r.stats;
        assert_int_equal(s->pages_read, base.stats.pages_read);
        assert_int_equal(s->bytes_h2d, (s->demand_fetches + s->prefetched) * page_bytes);
        assert_true(s->prefetch_hits + s->prefetch_late <= s->pages_read);
        assert_int_equal(s->pages_missed, s->demand_fetches); /* no page read twice in a plan here */
        if (predictors[p] == IKV_PREDICT_NONE) assert_int_equal(s->prefetched, 0);
        else if (sizes[z] != roomy && !s->prefetched) fail_msg("%s, %u pages: nothing prefetched (%llu demand)", ikv_predictor_name(predictors[p]), sizes[z], (unsigned long long)s->demand_fetches);
        if (limited) assert_true(s->prefetched <= 8 * SC_STEPS);
        if (sizes[z] == thrash) assert_true(s->evictions > 0);
        if (sizes[z] != thrash && r.kept_evicted) fail_msg("%s, %u pages, budget %d: %u kept pages evicted", ikv_predictor_name(predictors[p]), sizes[z], limited, r.kept_evicted); /* thrash: this plan's reads come first */
        if (sizes[z] == roomy && !limited && predictors[p] == IKV_PREDICT_NONE) demand_none = s->demand_fetches;
        if (sizes[z] == roomy && !limited && predictors[p] == IKV_PREDICT_MARGIN) demand_margin = s->demand_fetches;
        if (sizes[z] == tight && !limited && predictors[p] == IKV_PREDICT_HISTORY) history_hits = s->prefetch_hits;
        free(r.out);
      }
  /* with room, the near misses prefetched are read later instead of fetched
   * on demand; in the tight cache what history brings is read too (there
   * its evictions cost as much as it saves, as the simulator also finds) */
  if (!(demand_margin < demand_none))
    fail_msg("demand fetches with score_margin %llu, without prefetching %llu", (unsigned long long)demand_margin,
             (unsigned long long)demand_none);
  assert_true(history_hits > 0);
  free(base.out);
}

#endif /* IKV_TESTS_PREFETCH_SCENARIO_H */
