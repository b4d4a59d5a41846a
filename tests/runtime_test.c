/* The runtime's step on the CPU backend: a full step against the FP64 oracle,
 * scheduler tables (a hand-computed plan, downgrades, every validation
 * error), offload and demand fetch with eviction, and misuse of the step. */
#include "kernels/device_probe.h"
#include "tests/runtime_fixture.h"

static ikv_plan_request router_request(const ikv_seq_id *seqs, uint32_t batch, float pressure) {
  ikv_plan_request req = {.seqs = seqs, .batch = batch, .mode = IKV_PLAN_ROUTER};
  req.router.memory_pressure = pressure;
  req.router.default_score = 0.5f;
  return req;
}

static void create_validates(void **state) {
  (void)state;
  ikv_runtime *rt = NULL;
  ikv_runtime_config c = fx_config(8, 8);
  assert_int_equal(ikv_runtime_create(NULL, &rt), IKV_E_NULL);
  assert_int_equal(ikv_runtime_create(&c, NULL), IKV_E_NULL);
  ikv_runtime_config bad = c;
  bad.q_heads = 3;
  assert_int_equal(ikv_runtime_create(&bad, &rt), IKV_E_INVALID);
  bad = c, bad.score_layer = FX_LAYERS;
  assert_int_equal(ikv_runtime_create(&bad, &rt), IKV_E_INVALID);
  bad = c, bad.max_batch = 0;
  assert_int_equal(ikv_runtime_create(&bad, &rt), IKV_E_INVALID);
  bad = c, bad.softmax_scale = NAN;
  assert_int_equal(ikv_runtime_create(&bad, &rt), IKV_E_INVALID);
  bad = c, bad.backend = IKV_BACKEND_CUDA; /* refused without a GPU, else it works */
  int gpus = 0;
  assert_int_equal(ikv_gpu_count(&gpus), IKV_OK);
  if (gpus == 0) {
    assert_int_equal(ikv_runtime_create(&bad, &rt), IKV_E_UNSUPPORTED);
    assert_null(rt);
  } else {
    assert_int_equal(ikv_runtime_create(&bad, &rt), IKV_OK);
    ikv_runtime_destroy(rt);
  }
  ikv_runtime_destroy(NULL);
  ikv_plan_destroy(NULL);
}

/* append -> write_kv -> plan -> decode, twice, against FP64 attention. */
static void full_step_matches_the_oracle(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, fx_config(64, 16), 0x5eed0301);
  uint32_t a = fx_new_seq(&f, IKV_FP16), b = fx_new_seq(&f, IKV_BF16);
  fx_grow(&f, a, 100);
  fx_grow(&f, b, 37);
  uint32_t order[2] = {a, b};
  for (int step = 0; step < 2; step++) {
    ikv_plan_request req = router_request(f.ids, 2, 0.0f);
    assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_OK);
    ikv_plan_stats st;
    assert_int_equal(ikv_plan_get_stats(f.plan, &st), IKV_OK);
    assert_int_equal(st.pages_selected, (f.tokens[a] + 15) / 16 + (f.tokens[b] + 15) / 16);
    assert_int_equal(st.pages_skipped, 0);
    for (uint32_t l = 0; l < FX_LAYERS; l++) {
      double err = fx_decode_error(&f, order, l);
      assert_true(err < 5e-3); /* fp16 and bf16 pages (bf16 keeps 8 bits) */
    }
    /* fp16 queries and outputs give the same result to fp16 precision */
    const ikv_decode_plan *pv = ikv_plan_view(f.plan);
    assert_int_equal(pv->seq_len[0], f.tokens[a]);
    assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
    fx_grow(&f, a, 1);
    fx_grow(&f, b, 1);
  }
  ikv_runtime_stats rs;
  assert_int_equal(ikv_runtime_get_stats(f.rt, &rs), IKV_OK);
  assert_int_equal(rs.steps, 2);
  assert_int_equal(rs.pages_missed, 0);
  fx_close(&f);
}

static void half_precision_io(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, fx_config(64, 16), 0x5eed0302);
  uint32_t a = fx_new_seq(&f, IKV_FP16);
  fx_grow(&f, a, 50);
  ikv_plan_request req = router_request(f.ids, 1, 0.0f);
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_OK);
  float q[FX_HQ * FX_D], out[FX_HQ * FX_D], lse[FX_HQ], lse2[FX_HQ];
  uint16_t qh[FX_HQ * FX_D], oh[FX_HQ * FX_D];
  rng_fill_gauss(&f.rng, q, FX_HQ * FX_D, 1.0f);
  for (int i = 0; i < FX_HQ * FX_D; i++) qh[i] = ikv_f32_to_f16(q[i]), q[i] = ikv_f16_to_f32(qh[i]);
  assert_int_equal(ikv_decode(f.rt, f.plan, 0, q, out, lse, IKV_DTYPE_F32, NULL), IKV_OK);
  assert_int_equal(ikv_decode(f.rt, f.plan, 0, qh, oh, lse2, IKV_DTYPE_F16, NULL), IKV_OK);
  for (int i = 0; i < FX_HQ * FX_D; i++) assert_int_equal(oh[i], ikv_f32_to_f16(out[i]));
  assert_int_equal(ikv_decode(f.rt, f.plan, 0, qh, oh, lse2, (ikv_dtype)7, NULL), IKV_E_INVALID);
  assert_int_equal(ikv_decode(f.rt, f.plan, 9, qh, oh, lse2, IKV_DTYPE_F16, NULL), IKV_E_RANGE);
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  fx_close(&f);
}

/* Scheduler tables: a hand-computed plan. */
static void tables_give_the_expected_plan(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, fx_config(64, 16), 0x5eed0303);
  uint32_t a = fx_new_seq(&f, IKV_FP16);
  fx_grow(&f, a, 40); /* pages 0, 1, 2 (8 tokens) */
  int32_t indptr[2] = {0, 2}, index[2] = {0, 2};
  uint8_t prec[2] = {IKV_FP16, IKV_FP16};
  uint16_t first[2] = {3, 1}, last[2] = {10, 7};
  ikv_plan_request req = {.seqs = f.ids, .batch = 1, .mode = IKV_PLAN_TABLES,
                          .tables = {.indptr = indptr, .page_index = index, .precision = prec, .first = first, .last = last}};
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_OK);
  const ikv_decode_plan *pv = ikv_plan_view(f.plan);
  ikv_page_id pages[3];
  assert_int_equal(ikv_pt_seq_pages(ikv_runtime_pagetable(f.rt), f.ids[a], 0, 3, pages), IKV_OK);
  assert_int_equal(pv->batch, 1);
  assert_int_equal(pv->indptr[1], 2);
  assert_int_equal(pv->page_index[0], 0);
  assert_int_equal(pv->page_index[1], 2);
  for (int e = 0; e < 2; e++) {
    ikv_pt_page_info info;
    assert_int_equal(ikv_pt_page_get_info(ikv_runtime_pagetable(f.rt), pages[index[e]], &info), IKV_OK);
    assert_int_equal(pv->page_slot[e], info.slot[IKV_TIER_GPU]);
    assert_int_equal(pv->precision[e], IKV_FP16);
    assert_int_equal(pv->first[e], first[e]);
    assert_int_equal(pv->last[e], last[e]);
  }
  assert_int_equal(pv->seq_len[0], 40);
  ikv_plan_stats st;
  assert_int_equal(ikv_plan_get_stats(f.plan, &st), IKV_OK);
  assert_int_equal(st.pages_selected, 2);
  assert_int_equal(st.pages_skipped, 1);
  assert_int_equal(st.bytes_read, 2 * ikv_page_layer_bytes(ikv_pt_geometry(ikv_runtime_pagetable(f.rt)), IKV_FP16));
  assert_int_equal(st.bytes_dense_fp16, 3 * ikv_page_layer_bytes(ikv_pt_geometry(ikv_runtime_pagetable(f.rt)), IKV_FP16));
  uint32_t n;
  const ikv_span_decision *d = ikv_plan_decisions(f.plan, &n);
  assert_int_equal(n, 1);
  assert_int_equal(d[0].reason, IKV_REASON_SCHEDULER_TABLES);
  const ikv_work_item *w = ikv_plan_work(f.plan, &n);
  assert_int_equal(n, 1);
  assert_int_equal(w[0].end - w[0].begin, 2);
  assert_int_equal(w[0].precision, IKV_FP16);
  const int32_t *perm = ikv_plan_work_entries(f.plan);
  assert_int_equal(perm[0], 0); /* one precision: logical order */
  assert_int_equal(perm[1], 1);
  uint32_t order[1] = {a};
  assert_true(fx_decode_error(&f, order, 1) < 2e-3);
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  fx_close(&f);
}

/* A tables plan reading pages 0..2 of the fixture's first sequence at the
 * given precisions; its stats when it builds. */
static ikv_status plan_first_pages(fixture *f, uint8_t *prec, ikv_plan_stats *st) {
  int32_t indptr[2] = {0, 3}, index[3] = {0, 1, 2};
  ikv_plan_request req = {.seqs = f->ids, .batch = 1, .mode = IKV_PLAN_TABLES,
                          .tables = {.indptr = indptr, .page_index = index, .precision = prec}};
  ikv_status status = ikv_plan_build(f->rt, f->plan, &req);
  if (status == IKV_OK) assert_int_equal(ikv_plan_get_stats(f->plan, st), IKV_OK);
  return status;
}

static void tables_downgrade_converts_the_page(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, fx_config(64, 16), 0x5eed0304);
  uint32_t a = fx_new_seq(&f, IKV_FP16);
  fx_grow(&f, a, 48);
  uint8_t prec[3] = {IKV_INT8, IKV_FP16, IKV_INT4};
  ikv_plan_stats st;
  assert_int_equal(plan_first_pages(&f, prec, &st), IKV_OK);
  assert_int_equal(st.conversions, 2);
  assert_int_equal(st.pages_by_precision[IKV_INT8], 1);
  assert_int_equal(st.pages_by_precision[IKV_INT4], 1);
  /* the work partition groups entries by precision, one item each */
  uint32_t n_items;
  const ikv_work_item *items = ikv_plan_work(f.plan, &n_items);
  const int32_t *perm = ikv_plan_work_entries(f.plan);
  assert_int_equal(n_items, 3);
  for (uint32_t i = 0; i < n_items; i++) {
    assert_int_equal(items[i].end - items[i].begin, 1);
    assert_int_equal(ikv_plan_view(f.plan)->precision[perm[items[i].begin]], items[i].precision);
  }
  const ikv_decode_plan *pv = ikv_plan_view(f.plan);
  assert_int_equal(pv->precision[0], IKV_INT8);
  assert_int_equal(pv->precision[2], IKV_INT4);
  uint32_t order[1] = {a};
  double err = fx_decode_error(&f, order, 0);
  assert_true(err < 0.15 && err > 1e-3); /* really quantized, within int4's reach */
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  /* an upgrade is refused now that the bits are gone */
  prec[2] = IKV_FP16;
  assert_int_equal(plan_first_pages(&f, prec, &st), IKV_E_PRECISION);
  fx_close(&f);
}

/* The usual step order is append, plan, write_kv: a page the append reserved
 * rows of must not move to another precision (and slot) before its rows are
 * written, or the append's slot mapping would name the wrong place. The plan
 * reads it as stored; the next plan converts it. */
static void appended_pages_keep_their_precision_until_written(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, fx_config(64, 16), 0x5eed0309);
  uint32_t a = fx_new_seq(&f, IKV_FP16);
  fx_grow(&f, a, 40); /* pages 0..2; page 2 holds 8 rows */
  int64_t slot;
  uint8_t slot_prec;
  fx_append(&f, a, 1, &slot, &slot_prec); /* row 8 of page 2 reserved */
  uint8_t want[3] = {IKV_FP16, IKV_FP16, IKV_INT8};
  ikv_plan_stats st;
  assert_int_equal(plan_first_pages(&f, want, &st), IKV_OK);
  assert_int_equal(st.conversions, 0);
  assert_int_equal(ikv_plan_view(f.plan)->precision[2], IKV_FP16);
  fx_write(&f, a, 1, &slot, &slot_prec); /* every layer, through the append's mapping */
  uint32_t order[1] = {a};
  assert_true(fx_decode_error(&f, order, 0) < 1e-2);
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  /* written now: the next plan converts it */
  assert_int_equal(plan_first_pages(&f, want, &st), IKV_OK);
  assert_int_equal(st.conversions, 1);
  assert_int_equal(ikv_plan_view(f.plan)->precision[2], IKV_INT8);
  const double err = fx_decode_error(&f, order, 0);
  assert_true(err < 5e-2 && err > 1e-4); /* really int8 now */
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  fx_close(&f);
}

static void tables_validation_changes_nothing(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, fx_config(64, 16), 0x5eed0305);
  uint32_t a = fx_new_seq(&f, IKV_FP16);
  fx_grow(&f, a, 40);
  ikv_pt_stats before, after;
  memset(&before, 0, sizeof(before)); /* padding too: compared as bytes */
  memset(&after, 0, sizeof(after));
  assert_int_equal(ikv_pt_get_stats(ikv_runtime_pagetable(f.rt), &before), IKV_OK);
  struct {
    int32_t indptr[2], index[2];
    uint8_t prec[2];
    uint16_t first[2], last[2];
    ikv_status want;
  } cases[] = {
      {{0, 2}, {0, 3}, {IKV_FP16, IKV_FP16}, {0, 0}, {15, 7}, IKV_E_RANGE},       /* page out of range */
      {{0, 2}, {0, -1}, {IKV_FP16, IKV_FP16}, {0, 0}, {15, 7}, IKV_E_RANGE},      /* negative page */
      {{0, 2}, {1, 1}, {IKV_FP16, IKV_FP16}, {0, 0}, {15, 15}, IKV_E_INVALID},    /* duplicate */
      {{0, 2}, {1, 0}, {IKV_FP16, IKV_FP16}, {0, 0}, {15, 15}, IKV_E_INVALID},    /* not increasing */
      {{0, 2}, {0, 1}, {IKV_FP16, 9}, {0, 0}, {15, 15}, IKV_E_PRECISION},         /* code out of range */
      {{0, 2}, {0, 1}, {IKV_FP16, IKV_SKIP}, {0, 0}, {15, 15}, IKV_E_PRECISION},  /* SKIP is not storable */
      {{0, 2}, {0, 2}, {IKV_FP16, IKV_FP16}, {0, 0}, {15, 8}, IKV_E_RANGE},       /* past the last token */
      {{0, 2}, {0, 1}, {IKV_FP16, IKV_FP16}, {5, 0}, {4, 15}, IKV_E_RANGE},       /* first > last */
      {{0, 2}, {0, 1}, {IKV_FP16, IKV_FP16}, {0, 0}, {16, 15}, IKV_E_RANGE},      /* mask outside the page */
      {{1, 2}, {0, 1}, {IKV_FP16, IKV_FP16}, {0, 0}, {15, 15}, IKV_E_INVALID},    /* indptr[0] != 0 */
      {{0, -1}, {0, 1}, {IKV_FP16, IKV_FP16}, {0, 0}, {15, 15}, IKV_E_INVALID},   /* decreasing indptr */
  };
  for (size_t c = 0; c < sizeof(cases) / sizeof(*cases); c++) {
    ikv_plan_request req = {.seqs = f.ids, .batch = 1, .mode = IKV_PLAN_TABLES,
                            .tables = {.indptr = cases[c].indptr, .page_index = cases[c].index,
                                       .precision = cases[c].prec, .first = cases[c].first, .last = cases[c].last}};
    assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), cases[c].want);
    assert_true(strlen(ikv_runtime_errmsg(f.rt)) > 0);
    assert_int_equal(ikv_pt_get_stats(ikv_runtime_pagetable(f.rt), &after), IKV_OK);
    assert_memory_equal(&before, &after, sizeof(before));
  }
  int32_t indptr[2] = {0, 1}, index[1] = {0};
  uint8_t prec[1] = {IKV_FP16};
  ikv_plan_request req = {.seqs = f.ids, .batch = 1, .mode = IKV_PLAN_TABLES,
                          .tables = {.indptr = indptr, .page_index = index, .precision = prec}};
  ikv_seq_id unknown[1] = {f.ids[a] + 2};
  req.seqs = unknown;
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_E_UNKNOWN_SEQ);
  req.seqs = f.ids;
  req.batch = FX_MAX_SEQS + 1;
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_E_CAPACITY);
  req.batch = 1;
  uint16_t lone_first[1] = {0};
  req.tables.first = lone_first; /* first without last */
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_E_NULL);
  req.tables.first = NULL;
  req.mode = (ikv_plan_mode)5;
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_E_INVALID);
  req.mode = IKV_PLAN_ROUTER;
  req.router.memory_pressure = 1.5f;
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_E_INVALID);
  req.router.memory_pressure = 0.5f;
  req.router.score_mode = IKV_SCORE_QUERY_BOUND; /* without score_q */
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_E_NULL);
  /* after all that, a valid plan builds */
  req.mode = IKV_PLAN_TABLES;
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_OK);
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_E_INVALID); /* one in flight */
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_E_INVALID);
  fx_close(&f);
}

/* Builds the router's plan for sequence s alone; returns its demand fetches. */
static uint32_t plan_alone(fixture *f, uint32_t s) {
  ikv_plan_request req = router_request(&f->ids[s], 1, 0.0f);
  assert_int_equal(ikv_plan_build(f->rt, f->plan, &req), IKV_OK);
  ikv_plan_stats st;
  assert_int_equal(ikv_plan_get_stats(f->plan, &st), IKV_OK);
  return st.demand_fetches;
}

/* A full GPU tier: an append moves the least recently used full pages to
 * the host (never the partly filled page it appends to), and a later plan
 * brings them back; nothing is lost. A host tier too small refuses. */
static void append_makes_room_on_the_gpu(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, fx_config(6, 16), 0x5eed0307);
  uint32_t a = fx_new_seq(&f, IKV_FP16), b = fx_new_seq(&f, IKV_FP16);
  fx_grow(&f, a, 72); /* 5 pages, the last one partly filled */
  fx_grow(&f, b, 40); /* 3 more: two of a's full pages leave for the host */
  ikv_runtime_stats rs;
  assert_int_equal(ikv_runtime_get_stats(f.rt, &rs), IKV_OK);
  assert_int_equal(rs.bytes_d2h, 2 * ikv_page_bytes(ikv_pt_geometry(ikv_runtime_pagetable(f.rt)), IKV_FP16));
  ikv_page_id last;
  ikv_pt_page_info info;
  assert_int_equal(ikv_pt_seq_pages(ikv_runtime_pagetable(f.rt), f.ids[a], 4, 1, &last), IKV_OK);
  assert_int_equal(ikv_pt_page_get_info(ikv_runtime_pagetable(f.rt), last, &info), IKV_OK);
  assert_true(info.slot[IKV_TIER_GPU] != IKV_NO_SLOT); /* a still appends there */
  fx_grow(&f, a, 8); /* fills it, on the GPU */
  uint32_t order[1] = {a};
  assert_int_equal(plan_alone(&f, a), 2);
  assert_true(fx_decode_error(&f, order, 0) < 2e-3);
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  fx_close(&f);
  /* a page an append just filled is not written yet: no append (nor plan)
   * may evict it before the step's write_kv */
  fx_open(&f, fx_config(2, 16), 0x5eed0309);
  uint32_t w = fx_new_seq(&f, IKV_FP16), x = fx_new_seq(&f, IKV_FP16);
  fx_grow(&f, w, 15);
  uint32_t one = 1, page_of_x = 32;
  int64_t wslot[1], xslots[32];
  uint8_t wprec[1], xprecs[32];
  assert_int_equal(ikv_append(f.rt, &f.ids[w], &one, 1, wslot, wprec), IKV_OK); /* w's page is now full */
  assert_int_equal(ikv_append(f.rt, &f.ids[x], &page_of_x, 1, xslots, xprecs), IKV_E_CAPACITY); /* 2 pages: no room */
  float kv[FX_H * FX_D];
  for (int i = 0; i < FX_H * FX_D; i++) kv[i] = 0.25f + 0.001f * (float)i;
  for (int l = 0; l < FX_LAYERS; l++)
    assert_int_equal(ikv_write_kv(f.rt, (uint32_t)l, kv, kv, IKV_DTYPE_F32, wslot, wprec, 1, NULL), IKV_OK);
  fx_close(&f);
  /* no room anywhere: the append is refused */
  fx_open(&f, fx_config(2, 0), 0x5eed0308);
  uint32_t c = fx_new_seq(&f, IKV_FP16);
  fx_grow(&f, c, 32);
  uint32_t more = 16;
  int64_t slots[16];
  uint8_t precs[16];
  assert_int_equal(ikv_append(f.rt, &f.ids[c], &more, 1, slots, precs), IKV_E_CAPACITY);
  ikv_pt_seq_info si;
  assert_int_equal(ikv_pt_seq_get_info(ikv_runtime_pagetable(f.rt), f.ids[c], &si), IKV_OK);
  assert_int_equal(si.tokens, 32);
  fx_close(&f);
}

/* Offloaded pages come back on demand; a full GPU tier evicts pages the plan
 * does not read; results stay exact through the moves. */
static void offload_fetch_and_evict(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, fx_config(8, 16), 0x5eed0306);
  uint32_t a = fx_new_seq(&f, IKV_FP16), b = fx_new_seq(&f, IKV_FP16);
  fx_grow(&f, a, 64); /* 4 pages */
  fx_grow(&f, b, 64); /* 4 pages: the GPU fp16 pool is full */
  assert_int_equal(ikv_seq_offload(f.rt, f.ids[a], 0, 4), IKV_OK);
  assert_int_equal(ikv_seq_offload(f.rt, f.ids[a], 3, 2), IKV_E_RANGE);
  uint32_t c = fx_new_seq(&f, IKV_FP16);
  fx_grow(&f, c, 64); /* takes the 4 freed GPU slots */
  uint32_t order[1] = {a};
  assert_int_equal(plan_alone(&f, a), 4);
  uint32_t n_hints;
  ikv_plan_prefetch_hints(f.plan, &n_hints);
  assert_int_equal(n_hints, 4);
  assert_true(fx_decode_error(&f, order, 1) < 2e-3);
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  ikv_runtime_stats rs;
  assert_int_equal(ikv_runtime_get_stats(f.rt, &rs), IKV_OK);
  assert_int_equal(rs.evictions, 4);
  assert_int_equal(rs.pages_missed, 4);
  /* b and c were evicted in part; both still decode exactly */
  ikv_seq_id both[2] = {f.ids[b], f.ids[c]};
  uint32_t order2[2] = {b, c};
  ikv_plan_request req = router_request(both, 2, 0.0f);
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_OK);
  assert_true(fx_decode_error(&f, order2, 0) < 2e-3);
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  /* the scheduler hints a span of a (now partly on the host): the next
   * plan's prefetch hints lead with its pages off the GPU, once */
  ikv_span sp = {0, 64, IKV_SPAN_TOOL_OUTPUT, IKV_POLICY_ATTEND, 0.5f, IKV_UNPINNED_PRECISION};
  ikv_span_id sid;
  assert_int_equal(ikv_span_add(f.rt, f.ids[a], &sp, &sid), IKV_OK);
  assert_int_equal(ikv_span_hint(f.rt, f.ids[a], sid + 100), IKV_E_UNKNOWN_SPAN);
  assert_int_equal(ikv_span_hint(f.rt, 999999, sid), IKV_E_UNKNOWN_SEQ);
  assert_int_equal(ikv_span_hint(f.rt, f.ids[a], sid), IKV_OK);
  req = router_request(&f.ids[b], 1, 0.0f);
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_OK);
  const ikv_page_id *hinted = ikv_plan_prefetch_hints(f.plan, &n_hints);
  uint32_t off_gpu = 0;
  ikv_page_id a_pages[4];
  assert_int_equal(ikv_pt_seq_pages(ikv_runtime_pagetable(f.rt), f.ids[a], 0, 4, a_pages), IKV_OK);
  for (int i = 0; i < 4; i++) {
    ikv_pt_page_info info;
    assert_int_equal(ikv_pt_page_get_info(ikv_runtime_pagetable(f.rt), a_pages[i], &info), IKV_OK);
    if (info.slot[IKV_TIER_GPU] < 0) assert_int_equal(hinted[off_gpu++], a_pages[i]); /* in logical order, first */
  }
  assert_true(off_gpu > 0 && n_hints >= off_gpu);
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_OK);
  hinted = ikv_plan_prefetch_hints(f.plan, &n_hints);
  for (uint32_t i = 0; i < n_hints; i++)
    for (int k = 0; k < 4; k++) assert_true(hinted[i] != a_pages[k] || n_hints == 0); /* served once */
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  for (int i = 0; i < IKV_MAX_SPAN_HINTS; i++) assert_int_equal(ikv_span_hint(f.rt, f.ids[a], sid), IKV_OK);
  assert_int_equal(ikv_span_hint(f.rt, f.ids[a], sid), IKV_E_CAPACITY);
  /* a plan bigger than the GPU tier is refused */
  ikv_seq_id all[3] = {f.ids[a], f.ids[b], f.ids[c]};
  req = router_request(all, 3, 0.0f);
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_E_CAPACITY);
  fx_close(&f);
}

static void step_misuse_is_refused(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, fx_config(16, 16), 0x5eed0307);
  uint32_t a = fx_new_seq(&f, IKV_FP16);
  fx_grow(&f, a, 20);
  float q[FX_HQ * FX_D] = {1.0f}, out[FX_HQ * FX_D], lse[FX_HQ];
  assert_int_equal(ikv_decode(f.rt, f.plan, 0, q, out, lse, IKV_DTYPE_F32, NULL), IKV_E_INVALID); /* no plan */
  ikv_plan_request req = router_request(f.ids, 1, 0.0f);
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_OK);
  assert_int_equal(ikv_seq_free(f.rt, f.ids[a]), IKV_E_INVALID);     /* plan in flight */
  assert_int_equal(ikv_seq_truncate(f.rt, f.ids[a], 3), IKV_E_INVALID);
  uint32_t one = 1;
  int64_t slot;
  uint8_t prec;
  assert_int_equal(ikv_append(f.rt, f.ids, &one, 1, &slot, &prec), IKV_E_INVALID);
  /* no device selection: the statistics are exact and stay */
  ikv_plan_stats before, after;
  assert_int_equal(ikv_plan_get_stats(f.plan, &before), IKV_OK);
  assert_int_equal(ikv_plan_count_selected(NULL, f.plan, NULL), IKV_E_NULL);
  assert_int_equal(ikv_plan_count_selected(f.rt, NULL, NULL), IKV_E_NULL);
  assert_int_equal(ikv_plan_count_selected(f.rt, f.plan, NULL), IKV_OK);
  assert_int_equal(ikv_plan_get_stats(f.plan, &after), IKV_OK);
  assert_memory_equal(&before, &after, sizeof(before));
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  assert_int_equal(ikv_plan_count_selected(f.rt, f.plan, NULL), IKV_E_INVALID); /* not in flight */
  /* append: an unknown sequence in the batch rolls back the others */
  ikv_seq_id batch[2] = {f.ids[a], f.ids[a] + 2};
  uint32_t counts[2] = {5, 5};
  int64_t slots[10];
  uint8_t precs[10];
  assert_int_equal(ikv_append(f.rt, batch, counts, 2, slots, precs), IKV_E_UNKNOWN_SEQ);
  ikv_pt_seq_info info;
  assert_int_equal(ikv_pt_seq_get_info(ikv_runtime_pagetable(f.rt), f.ids[a], &info), IKV_OK);
  assert_int_equal(info.tokens, 20);
  /* capacity: the second sequence cannot grow; the first is rolled back */
  uint32_t b = fx_new_seq(&f, IKV_FP16);
  ikv_seq_id pair[2] = {f.ids[a], f.ids[b]};
  uint32_t big[2] = {5, 16 * 16};
  int64_t *many = malloc(sizeof(int64_t) * 300);
  uint8_t *mprec = malloc(300);
  assert_int_equal(ikv_append(f.rt, pair, big, 2, many, mprec), IKV_E_CAPACITY);
  assert_int_equal(ikv_pt_seq_get_info(ikv_runtime_pagetable(f.rt), f.ids[a], &info), IKV_OK);
  assert_int_equal(info.tokens, 20);
  /* write_kv into a slot no page owns */
  float k[FX_H * FX_D] = {0.5f}, v[FX_H * FX_D] = {0.5f};
  int64_t stray = 15 * 16;
  uint8_t fp16 = IKV_FP16;
  assert_int_equal(ikv_write_kv(f.rt, 0, k, v, IKV_DTYPE_F32, &stray, &fp16, 1, NULL), IKV_E_RANGE);
  assert_int_equal(ikv_write_kv(f.rt, FX_LAYERS, k, v, IKV_DTYPE_F32, &stray, &fp16, 1, NULL), IKV_E_RANGE);
  assert_true(strlen(ikv_runtime_errmsg(f.rt)) > 0);
  /* write_kv of more tokens than the GPU tier has slots (so slots repeat),
   * each one valid: refused by its count; the runtime's buffers for a
   * step's tokens hold that many from creation on */
  assert_int_equal(ikv_append(f.rt, &f.ids[a], &one, 1, &slot, &prec), IKV_OK);
  const uint32_t too_many = IKV_PRECISION_COUNT * 16 * FX_P + 1;
  int64_t *same = malloc(sizeof(int64_t) * too_many);
  uint8_t *same_prec = malloc(too_many);
  for (uint32_t i = 0; i < too_many; i++) same[i] = slot, same_prec[i] = prec;
  assert_int_equal(ikv_write_kv(f.rt, 0, k, v, IKV_DTYPE_F32, same, same_prec, too_many, NULL), IKV_E_INVALID);
  assert_non_null(strstr(ikv_runtime_errmsg(f.rt), "more than the GPU tier"));
  assert_int_equal(ikv_write_kv(f.rt, 0, k, v, IKV_DTYPE_F32, same, same_prec, 1, NULL), IKV_OK);
  ikv_runtime_stats stats;
  assert_int_equal(ikv_runtime_get_stats(f.rt, &stats), IKV_OK);
  assert_int_equal(stats.device_allocations, 0); /* the CPU backend's memory is all host memory */
  free(same), free(same_prec);
  free(many), free(mprec);
  fx_close(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(create_validates),
      cmocka_unit_test(full_step_matches_the_oracle),
      cmocka_unit_test(half_precision_io),
      cmocka_unit_test(tables_give_the_expected_plan),
      cmocka_unit_test(tables_downgrade_converts_the_page),
      cmocka_unit_test(appended_pages_keep_their_precision_until_written),
      cmocka_unit_test(tables_validation_changes_nothing),
      cmocka_unit_test(append_makes_room_on_the_gpu),
      cmocka_unit_test(offload_fetch_and_evict),
      cmocka_unit_test(step_misuse_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
