/* The router, rule by rule and band by band, on one agentic sequence:
 *
 *   tokens     pages   span
 *   [0, 32)    0-1     system, ALWAYS (sinks: the first 4 tokens)
 *   [32, 96)   2-5     document, ATTEND 0.9
 *   [96, 160)  6-9     document, ATTEND 0.5
 *   [160, 224) 10-13   tool output, ATTEND 0.1
 *   [224, 256) 14-15   scratchpad, SKIP
 *   [256, 320) 16-19   user, RECENT 0.8 (recent window: the last 32 tokens)
 */
#include <string.h>

#include "tests/runtime_fixture.h"

#define NONE 0xff

/* Fidelity order of the ladder: fp16 > int8 > fp8 > int4 > skip. */
static int rt_rank_of(uint8_t p) {
  return p == IKV_FP16 || p == IKV_BF16 ? 4 : p == IKV_INT8 ? 3 : p == IKV_FP8_E4M3 ? 2 : p == IKV_INT4 ? 1 : 0;
}

typedef struct agent {
  fixture f;
  uint32_t s;
  ikv_span_id ids[6];
} agent;

static void open_agent(agent *a, uint64_t seed) {
  fx_open(&a->f, fx_config(64, 16), seed);
  a->s = fx_new_seq(&a->f, IKV_FP16);
  fx_grow(&a->f, a->s, 320);
  const ikv_span spans[6] = {
      {0, 32, IKV_SPAN_SYSTEM, IKV_POLICY_ALWAYS, 1.0f, IKV_UNPINNED_PRECISION},
      {32, 96, IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.9f, IKV_UNPINNED_PRECISION},
      {96, 160, IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.5f, IKV_UNPINNED_PRECISION},
      {160, 224, IKV_SPAN_TOOL_OUTPUT, IKV_POLICY_ATTEND, 0.1f, IKV_UNPINNED_PRECISION},
      {224, 256, IKV_SPAN_SCRATCHPAD, IKV_POLICY_SKIP, 0.0f, IKV_UNPINNED_PRECISION},
      {256, 320, IKV_SPAN_USER, IKV_POLICY_RECENT, 0.8f, IKV_UNPINNED_PRECISION},
  };
  for (int i = 0; i < 6; i++) assert_int_equal(ikv_span_add(a->f.rt, a->f.ids[a->s], &spans[i], &a->ids[i]), IKV_OK);
}

static ikv_plan_request agent_request(agent *a, float pressure) {
  ikv_plan_request req = {.seqs = &a->f.ids[a->s], .batch = 1, .mode = IKV_PLAN_ROUTER};
  req.router.memory_pressure = pressure;
  req.router.recent_tokens = 32;
  req.router.sink_tokens = 4;
  req.router.default_score = 0.5f;
  return req;
}

/* The precision each page is read in (NONE: not read), from the plan. */
static void read_precisions(const ikv_plan *plan, uint8_t *prec, uint32_t n_pages) {
  const ikv_decode_plan *pv = ikv_plan_view(plan);
  memset(prec, NONE, n_pages);
  int32_t prev = -1;
  for (int32_t e = 0; e < pv->indptr[1]; e++) {
    assert_true(pv->page_index[e] > prev); /* logical order, no duplicates */
    prev = pv->page_index[e];
    prec[pv->page_index[e]] = pv->precision[e];
  }
}

static const ikv_span_decision *decision_of(const ikv_plan *plan, ikv_span_id span) {
  uint32_t n;
  const ikv_span_decision *d = ikv_plan_decisions(plan, &n);
  for (uint32_t i = 0; i < n; i++)
    if (d[i].span == span) return &d[i];
  fail_msg("no decision for span %u", span);
  return NULL;
}

static void intentquant_bands(void **state) {
  (void)state;
  const float pressures[4] = {0.0f, 0.6f, 0.8f, 0.95f};
  enum { F16 = IKV_FP16, I8 = IKV_INT8, F8 = IKV_FP8_E4M3, I4 = IKV_INT4 };
  /* expected precision per page, per band */
  static const uint8_t expect[4][20] = {
      {F16, F16, F16, F16, F16, F16, F16, F16, F16, F16, F16, F16, F16, F16, NONE, NONE, F16, F16, F16, F16},
      {F16, F16, F16, F16, F16, F16, I8, I8, I8, I8, F8, F8, F8, F8, NONE, NONE, F16, F16, F16, F16},
      {F16, I8, I8, I8, I8, I8, F8, F8, F8, F8, I4, I4, I4, I4, NONE, NONE, I8, I8, F16, F16},
      {F16, F8, F8, F8, F8, F8, I4, I4, I4, I4, NONE, NONE, NONE, NONE, NONE, NONE, F8, F8, I8, I8},
  };
  for (int band = 0; band < 4; band++) {
    agent a;
    open_agent(&a, 0x5eed0400 + (uint64_t)band);
    ikv_plan_request req = agent_request(&a, pressures[band]);
    assert_int_equal(ikv_plan_build(a.f.rt, a.f.plan, &req), IKV_OK);
    uint8_t got[20];
    read_precisions(a.f.plan, got, 20);
    for (int i = 0; i < 20; i++)
      if (got[i] != expect[band][i]) fail_msg("pressure %.2f page %d: got %s, want %s", pressures[band], i,
                                              got[i] == NONE ? "none" : ikv_precision_name(got[i]),
                                              expect[band][i] == NONE ? "none" : ikv_precision_name(expect[band][i]));
    /* the reasons are true */
    assert_int_equal(decision_of(a.f.plan, a.ids[0])->reason, IKV_REASON_ALWAYS);
    assert_int_equal(decision_of(a.f.plan, a.ids[1])->reason, IKV_REASON_ATTEND_SELECTED);
    assert_int_equal(decision_of(a.f.plan, a.ids[3])->reason,
                     band == 3 ? IKV_REASON_ATTEND_PRESSURE : IKV_REASON_ATTEND_SELECTED);
    assert_int_equal(decision_of(a.f.plan, a.ids[4])->reason, IKV_REASON_SKIP_POLICY);
    assert_int_equal(decision_of(a.f.plan, a.ids[4])->pages_selected, 0);
    const ikv_span_decision *user = decision_of(a.f.plan, a.ids[5]);
    assert_int_equal(user->pages_selected, 4);
    ikv_plan_stats st;
    assert_int_equal(ikv_plan_get_stats(a.f.plan, &st), IKV_OK);
    assert_int_equal(st.conversions, (uint32_t)(band == 0 ? 0 : band == 1 ? 8 : band == 2 ? 15 : 13));
    if (band == 3) assert_true(st.bytes_read * 2 <= st.bytes_dense_fp16);
    /* the plan still computes attention over what it reads */
    uint32_t order[1] = {a.s};
    assert_true(fx_decode_error(&a.f, order, 0) < (band == 0 ? 2e-3 : 0.15));
    assert_int_equal(ikv_step_end(a.f.rt, a.f.plan), IKV_OK);
    fx_close(&a.f);
  }
  /* the table's invariants, across the whole pressure range */
  for (float p = 0.0f; p <= 1.0f; p += 0.01f) {
    assert_true(rt_rank_of(ikv_intentquant(IKV_USE_RECENT, p)) >= rt_rank_of(IKV_FP8_E4M3));
    assert_int_equal(ikv_intentquant(IKV_USE_SINK, p), IKV_FP16);
    for (int u = 0; u < IKV_USE_COUNT; u++) /* more pressure never raises precision */
      assert_true(rt_rank_of(ikv_intentquant((ikv_use_class)u, p + 0.01f)) <= rt_rank_of(ikv_intentquant((ikv_use_class)u, p)));
  }
}

static void budgets_are_enforced_by_score(void **state) {
  (void)state;
  agent a;
  open_agent(&a, 0x5eed0410);
  ikv_plan_request req = agent_request(&a, 0.0f);
  /* mandatory: system 32 + window 32 = 64 tokens; then by score: document 0.9
   * (64 tokens), user outside the window 0.8 (32), document 0.5, tool 0.1 */
  req.router.token_budget = 64 + 64 + 16;
  assert_int_equal(ikv_plan_build(a.f.rt, a.f.plan, &req), IKV_OK);
  uint8_t got[20];
  read_precisions(a.f.plan, got, 20);
  for (int i = 2; i <= 5; i++) assert_int_equal(got[i], IKV_FP16);
  assert_int_equal(got[16], IKV_FP16);
  assert_int_equal(got[17], NONE);
  for (int i = 6; i <= 13; i++) assert_int_equal(got[i], NONE);
  assert_int_equal(decision_of(a.f.plan, a.ids[1])->reason, IKV_REASON_ATTEND_SELECTED);
  assert_int_equal(decision_of(a.f.plan, a.ids[5])->reason, IKV_REASON_ATTEND_PARTIAL);
  assert_int_equal(decision_of(a.f.plan, a.ids[2])->reason, IKV_REASON_ATTEND_BUDGET);
  assert_int_equal(decision_of(a.f.plan, a.ids[3])->reason, IKV_REASON_ATTEND_BUDGET);
  const ikv_decode_plan *pv = ikv_plan_view(a.f.plan);
  uint32_t tokens = 0;
  for (int32_t e = 0; e < pv->indptr[1]; e++) tokens += pv->last[e] - pv->first[e] + 1u;
  assert_int_equal(tokens, 144);
  uint32_t n_hints;
  ikv_plan_prefetch_hints(a.f.plan, &n_hints);
  assert_true(n_hints > 0); /* the pages just below the cut */
  assert_int_equal(ikv_step_end(a.f.rt, a.f.plan), IKV_OK);
  /* a byte budget: whole pages of one layer */
  size_t page = ikv_page_layer_bytes(ikv_pt_geometry(ikv_runtime_pagetable(a.f.rt)), IKV_FP16);
  req = agent_request(&a, 0.0f);
  req.router.byte_budget = 4 * page /* mandatory */ + 5 * page + page / 2;
  assert_int_equal(ikv_plan_build(a.f.rt, a.f.plan, &req), IKV_OK);
  ikv_plan_stats st;
  assert_int_equal(ikv_plan_get_stats(a.f.plan, &st), IKV_OK);
  assert_int_equal(st.bytes_read, 9 * page);
  assert_int_equal(ikv_step_end(a.f.rt, a.f.plan), IKV_OK);
  fx_close(&a.f);
}

static void shared_pages_and_uncovered_tokens(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, fx_config(64, 16), 0x5eed0420);
  uint32_t s = fx_new_seq(&f, IKV_FP16);
  fx_grow(&f, s, 100);
  /* ALWAYS ends mid-page 2, a low ATTEND span starts there; a SKIP span sits
   * inside page 2 too; tokens [70, 100) belong to no span */
  ikv_span always = {0, 40, IKV_SPAN_SYSTEM, IKV_POLICY_ALWAYS, 1.0f, IKV_UNPINNED_PRECISION};
  ikv_span low = {44, 70, IKV_SPAN_TOOL_OUTPUT, IKV_POLICY_ATTEND, 0.1f, IKV_UNPINNED_PRECISION};
  ikv_span skip = {40, 44, IKV_SPAN_SCRATCHPAD, IKV_POLICY_SKIP, 0.0f, IKV_UNPINNED_PRECISION};
  ikv_span_id ids[3];
  assert_int_equal(ikv_span_add(f.rt, f.ids[s], &always, &ids[0]), IKV_OK);
  assert_int_equal(ikv_span_add(f.rt, f.ids[s], &low, &ids[1]), IKV_OK);
  assert_int_equal(ikv_span_add(f.rt, f.ids[s], &skip, &ids[2]), IKV_OK);
  ikv_plan_request req = {.seqs = f.ids, .batch = 1, .mode = IKV_PLAN_ROUTER};
  req.router.memory_pressure = 0.8f; /* ALWAYS -> int8, low ATTEND -> int4 */
  req.router.default_score = 0.9f;
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_OK);
  uint8_t got[7];
  read_precisions(f.plan, got, 7);
  assert_int_equal(got[2], IKV_INT8); /* the highest precision wins on the shared page */
  assert_int_equal(got[3], IKV_INT4);
  assert_int_equal(got[5], IKV_INT8); /* uncovered tokens: default score 0.9 -> high */
  const ikv_decode_plan *pv = ikv_plan_view(f.plan);
  assert_int_equal(pv->first[2], 0);
  assert_int_equal(pv->last[2], 15); /* [32, 40) and [44, 48): the hull */
  assert_int_equal(pv->first[6], 0);
  assert_int_equal(pv->last[6], 3); /* the last page holds 4 tokens */
  assert_int_equal(decision_of(f.plan, ids[2])->reason, IKV_REASON_SKIP_SHARED_PAGE);
  uint32_t n;
  const ikv_span_decision *d = ikv_plan_decisions(f.plan, &n);
  int uncovered = 0;
  for (uint32_t i = 0; i < n; i++) uncovered += d[i].span == 0 && d[i].kind == IKV_SPAN_KIND_COUNT && d[i].pages_selected;
  assert_int_equal(uncovered, 1);
  /* the same request gives the same plan */
  int32_t idx[16], first[16];
  memcpy(idx, pv->page_index, sizeof(int32_t) * 7);
  for (int i = 0; i < 7; i++) first[i] = pv->first[i];
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_OK);
  assert_memory_equal(idx, pv->page_index, sizeof(int32_t) * 7);
  for (int i = 0; i < 7; i++) assert_int_equal(first[i], pv->first[i]);
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  fx_close(&f);
}

static void pinned_precision_wins(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, fx_config(64, 16), 0x5eed0430);
  uint32_t s = fx_new_seq(&f, IKV_FP16);
  fx_grow(&f, s, 64);
  ikv_span sp = {0, 64, IKV_SPAN_MEMORY, IKV_POLICY_GLOBAL, 1.0f, IKV_INT8};
  ikv_span_id id;
  assert_int_equal(ikv_span_add(f.rt, f.ids[s], &sp, &id), IKV_OK);
  ikv_plan_request req = {.seqs = f.ids, .batch = 1, .mode = IKV_PLAN_ROUTER};
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_OK); /* pressure 0: still int8 */
  uint8_t got[4];
  read_precisions(f.plan, got, 4);
  for (int i = 0; i < 4; i++) assert_int_equal(got[i], IKV_INT8);
  assert_int_equal(decision_of(f.plan, id)->reason, IKV_REASON_GLOBAL);
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  fx_close(&f);
}

/* A page whose keys line up with the query (strongly: q.k well above what
 * random keys reach) must rank first for every KV head. */
static void needle_page_ranks_first(void **state) {
  (void)state;
  for (int mode = IKV_SCORE_QUERY_BOUND; mode <= IKV_SCORE_MEAN_COSINE; mode++) {
    fixture f;
    fx_open(&f, fx_config(64, 16), 0x5eed0440 + (uint64_t)mode);
    uint32_t s = fx_new_seq(&f, IKV_FP16);
    const uint32_t n = 320, needle = 13, row = FX_H * FX_D;
    float q[FX_HQ * FX_D];
    rng_fill_gauss(&f.rng, q, FX_HQ * FX_D, 1.0f);
    for (uint32_t h = 0; h < FX_H; h++) /* one query per KV head's group */
      for (uint32_t j = 1; j < FX_HQ / FX_H; j++)
        memcpy(q + (h * (FX_HQ / FX_H) + j) * FX_D, q + h * (FX_HQ / FX_H) * FX_D, sizeof(float) * FX_D);
    int64_t *slots = malloc(sizeof(int64_t) * n);
    uint8_t *precs = malloc(n);
    uint32_t count = n;
    assert_int_equal(ikv_append(f.rt, &f.ids[s], &count, 1, slots, precs), IKV_OK);
    for (int l = 0; l < FX_LAYERS; l++) {
      float *k = f.k[s][l], *v = f.v[s][l];
      rng_fill_gauss(&f.rng, k, n * row, 1.0f);
      rng_fill_gauss(&f.rng, v, n * row, 1.0f);
      for (uint32_t t = needle * FX_P; t < (needle + 1) * FX_P; t++)
        for (uint32_t h = 0; h < FX_H; h++)
          for (uint32_t d = 0; d < FX_D; d++)
            k[(t * FX_H + h) * FX_D + d] = 3.0f * q[h * (FX_HQ / FX_H) * FX_D + d] + 0.3f * rng_gauss(&f.rng);
      assert_int_equal(ikv_write_kv(f.rt, (uint32_t)l, k, v, IKV_DTYPE_F32, slots, precs, n, NULL), IKV_OK);
    }
    f.tokens[s] = n;
    ikv_span sp = {0, n, IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.5f, IKV_UNPINNED_PRECISION};
    ikv_span_id id;
    assert_int_equal(ikv_span_add(f.rt, f.ids[s], &sp, &id), IKV_OK);
    ikv_plan_request req = {.seqs = f.ids, .batch = 1, .mode = IKV_PLAN_ROUTER};
    req.router.score_mode = (ikv_score_mode)mode;
    req.router.topk_pages = 1;
    req.router.score_q = q;
    assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_OK);
    const ikv_decode_plan *pv = ikv_plan_view(f.plan);
    assert_int_equal(pv->per_kv_head, 1);
    for (uint32_t h = 0; h < FX_H; h++) {
      assert_int_equal(pv->indptr[h + 1] - pv->indptr[h], 1);
      assert_int_equal(pv->page_index[pv->indptr[h]], needle);
    }
    /* one page, read once per KV head: each entry reads that head's share */
    ikv_plan_stats ps;
    assert_int_equal(ikv_plan_get_stats(f.plan, &ps), IKV_OK);
    assert_int_equal(ps.pages_selected, FX_H);
    assert_int_equal(ps.bytes_read, ikv_page_layer_bytes(ikv_pt_geometry(ikv_runtime_pagetable(f.rt)),
                                                         (ikv_precision)pv->precision[0]));
    assert_int_equal(decision_of(f.plan, id)->reason, IKV_REASON_ATTEND_PARTIAL);
    uint32_t order[1] = {s};
    assert_true(fx_decode_error(&f, order, 0) < 2e-3);
    assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
    /* selection on the GPU: refused here (CPU backend) and without what it needs; nothing changes */
    ikv_plan_request dev = req;
    dev.router.select_on_device = 1;
    assert_int_equal(ikv_plan_build(f.rt, f.plan, &dev), IKV_E_UNSUPPORTED);
    assert_non_null(strstr(ikv_runtime_errmsg(f.rt), "CUDA"));
    dev.router.topk_pages = 0;
    assert_int_equal(ikv_plan_build(f.rt, f.plan, &dev), IKV_E_INVALID);
    dev.router.topk_pages = 1, dev.router.score_mode = IKV_SCORE_SPAN;
    assert_int_equal(ikv_plan_build(f.rt, f.plan, &dev), IKV_E_INVALID);
    assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_OK); /* the runtime is as it was */
    assert_int_equal(ikv_plan_view(f.plan)->page_index[0], needle);
    assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
    uint64_t key;
    assert_int_equal(ikv_step_graph_key(f.rt, f.plan, &key), IKV_E_UNSUPPORTED); /* no graphs on the CPU */
    assert_int_equal(ikv_stream_enter(f.rt, NULL), IKV_OK);
    assert_int_equal(ikv_stream_leave(f.rt, NULL), IKV_OK);
    assert_int_equal(ikv_stream_enter(NULL, NULL), IKV_E_NULL);
    assert_int_equal(ikv_stream_leave(NULL, NULL), IKV_E_NULL);
    assert_int_equal(ikv_step_graph_key(f.rt, NULL, &key), IKV_E_NULL);
    free(slots), free(precs);
    fx_close(&f);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(intentquant_bands),
      cmocka_unit_test(budgets_are_enforced_by_score),
      cmocka_unit_test(shared_pages_and_uncovered_tokens),
      cmocka_unit_test(pinned_precision_wins),
      cmocka_unit_test(needle_page_ranks_first),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
