/* Traces and the hit-rate simulator: text round trips, malformed input
 * refused with the line named, the classic LRU/Belady cases worked by hand,
 * and invariants on a generated agentic trace (Belady never below the LRU
 * floor; LRU never loses hits as the cache grows). */
#include <stdlib.h>
#include <string.h>

#include "kernels/page_format.h"
#include "pagetable/pagetable.h"
#include "prefetch/sim.h"
#include "tests/cmocka_all.h"

static const ikv_geometry geo = {.layers = 2, .kv_heads = 2, .head_dim = 64, .page_size = 16};

static ikv_trace generated(uint32_t steps) {
  ikv_trace_gen_params gp = {.seed = 7, .sequences = 2, .steps = steps, .max_tokens = 80000, .geometry = geo};
  ikv_trace t;
  assert_int_equal(ikv_trace_generate(&gp, &t), IKV_OK);
  return t;
}

static void text_round_trip(void **state) {
  (void)state;
  ikv_trace t = generated(30);
  assert_int_equal(t.n_steps, 30);
  assert_true(t.n_refs > 1000);
  FILE *f = tmpfile();
  assert_non_null(f);
  assert_int_equal(ikv_trace_write(&t, f), IKV_OK);
  rewind(f);
  ikv_trace back;
  assert_int_equal(ikv_trace_read(f, &back, NULL, 0), IKV_OK);
  fclose(f);
  assert_memory_equal(&back.geometry, &t.geometry, sizeof(ikv_geometry));
  assert_int_equal(back.n_steps, t.n_steps);
  assert_int_equal(back.n_refs, t.n_refs);
  assert_memory_equal(back.step_start, t.step_start, sizeof(uint32_t) * (t.n_steps + 1));
  for (size_t i = 0; i < t.n_refs; i++) {
    assert_int_equal(back.refs[i].seq, t.refs[i].seq);
    assert_int_equal(back.refs[i].page, t.refs[i].page);
    assert_int_equal(back.refs[i].precision, t.refs[i].precision);
    assert_int_equal(back.refs[i].kind, t.refs[i].kind);
  }
  assert_true(t.n_hints > 0);
  assert_int_equal(back.n_hints, t.n_hints);
  assert_memory_equal(back.hints, t.hints, sizeof(ikv_trace_hint) * t.n_hints);
  ikv_trace_free(&back), ikv_trace_free(&t);
}

static void malformed_traces_are_refused(void **state) {
  (void)state;
  static const struct {
    const char *text;
    const char *line;
  } bad[] = {
      {"", "line 0"},
      {"ikv-trace 2 layers=1 kv_heads=1 head_dim=64 page_size=16\n", "line 1"},
      {"ikv-trace 1 layers=1 kv_heads=1 head_dim=60 page_size=16\n", "line 1"},
      {"# c\nikv-trace 1 layers=1 kv_heads=1 head_dim=64 page_size=16\n0 1 fp16 system\n", "line 3"},
      {"ikv-trace 1 layers=1 kv_heads=1 head_dim=64 page_size=16\nstep\n0 1 fp12 system\n", "line 3"},
      {"ikv-trace 1 layers=1 kv_heads=1 head_dim=64 page_size=16\nstep\n0 1 fp16 planet\n", "line 3"},
      {"ikv-trace 1 layers=1 kv_heads=1 head_dim=64 page_size=16\nstep\n0 1 fp16 system x\n", "line 3"},
      {"ikv-trace 1 layers=1 kv_heads=1 head_dim=64 page_size=16\nstep\nstep\n-1 1 fp16\n", "line 4"},
      {"ikv-trace 1 layers=1 kv_heads=1 head_dim=64 page_size=16\nhint 0 1 2\n", "line 2"},
      {"ikv-trace 1 layers=1 kv_heads=1 head_dim=64 page_size=16\nstep\nhint 0 1 0\n", "line 3"},
      {"ikv-trace 1 layers=1 kv_heads=1 head_dim=64 page_size=16\nstep\nhint 0 1\n", "line 3"},
      {"ikv-trace 1 layers=1 kv_heads=1 head_dim=64 page_size=16\nstep\nnear 0 1 2 3\n", "line 3"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    FILE *f = tmpfile();
    fputs(bad[i].text, f);
    rewind(f);
    ikv_trace t = {.n_steps = 77};
    char err[128] = "";
    assert_int_equal(ikv_trace_read(f, &t, err, sizeof(err)), IKV_E_INVALID);
    fclose(f);
    assert_int_equal(t.n_steps, 77); /* untouched */
    if (strncmp(err, bad[i].line, strlen(bad[i].line))) fail_msg("case %zu: message '%s'", i, err);
  }
  assert_int_equal(ikv_trace_read(NULL, NULL, NULL, 0), IKV_E_NULL);
  ikv_trace t;
  assert_int_equal(ikv_trace_init(&t, &geo), IKV_OK);
  assert_int_equal(ikv_trace_push(&t, (ikv_trace_ref){0, 0, IKV_FP16, IKV_SPAN_SYSTEM}), IKV_E_INVALID); /* no step */
  assert_int_equal(ikv_trace_step(&t), IKV_OK);
  assert_int_equal(ikv_trace_push(&t, (ikv_trace_ref){0, 0, IKV_SKIP, IKV_SPAN_SYSTEM}), IKV_E_PRECISION);
  assert_int_equal(ikv_trace_push(&t, (ikv_trace_ref){0, 0, IKV_FP16, IKV_SPAN_KIND_COUNT}), IKV_E_INVALID);
  assert_int_equal(t.n_refs, 0);
  ikv_trace_free(&t);
}

/* Step 0 reads pages 0, 1, 2 (from the host); then one a step, 0, 1, 2,
 * 0, ... with room for two: LRU keeps what step 0 left (two hits), then
 * always evicts the page needed next; Belady keeps two pages and reads the
 * third through; with time to prefetch, it brings each page just before
 * its step. */
static void cyclic_reads_lru_and_belady(void **state) {
  (void)state;
  ikv_trace t;
  assert_int_equal(ikv_trace_init(&t, &geo), IKV_OK);
  enum { STEPS = 301 };
  assert_int_equal(ikv_trace_step(&t), IKV_OK);
  for (uint32_t p = 0; p < 3; p++) assert_int_equal(ikv_trace_push(&t, (ikv_trace_ref){0, p, IKV_FP16, IKV_SPAN_DOCUMENT}), IKV_OK);
  for (uint32_t s = 1; s < STEPS; s++) {
    assert_int_equal(ikv_trace_step(&t), IKV_OK);
    assert_int_equal(ikv_trace_push(&t, (ikv_trace_ref){0, (s - 1) % 3, IKV_FP16, IKV_SPAN_DOCUMENT}), IKV_OK);
  }
  const uint64_t page = (uint64_t)geo.layers * ikv_page_layer_bytes(&geo, IKV_FP16);
  ikv_sim_params p = {.cache_fraction = 2.0 / 3.0 + 1e-9, .link_gbs = 10.0, .step_us = 0.0};
  ikv_sim_result lru, opt;
  p.predictor = IKV_PREDICT_NONE;
  assert_int_equal(ikv_sim_run(&t, &p, &lru), IKV_OK);
  assert_int_equal(lru.refs, STEPS + 2);
  assert_int_equal(lru.hits, 2);
  assert_int_equal(lru.bytes_demand, (lru.refs - lru.hits) * page);
  assert_true(lru.stall_us_per_step > 0.99 * page / 1e4 && lru.stall_us_per_step < 1.01 * page / 1e4 * (STEPS + 2) / STEPS);
  p.predictor = IKV_PREDICT_BELADY; /* no time to prefetch: optimal replacement alone */
  assert_int_equal(ikv_sim_run(&t, &p, &opt), IKV_OK);
  assert_int_equal(opt.bytes_prefetch, 0);
  assert_int_equal(opt.hits, 2 * (STEPS - 1) / 3);
  p.step_us = 1e6;
  assert_int_equal(ikv_sim_run(&t, &p, &opt), IKV_OK);
  assert_int_equal(opt.hits, STEPS - 1);
  ikv_trace_free(&t);
  /* a hint during step 0 names page 3 (of the step-0 context, on the
   * host), read at step 1: only the hints predictor (and Belady, which
   * knows) has it in time */
  assert_int_equal(ikv_trace_init(&t, &geo), IKV_OK);
  assert_int_equal(ikv_trace_step(&t), IKV_OK);
  for (uint32_t pg = 0; pg < 8; pg++)
    if (pg != 3) assert_int_equal(ikv_trace_push(&t, (ikv_trace_ref){2, pg, IKV_FP16, IKV_SPAN_DOCUMENT}), IKV_OK);
  assert_int_equal(ikv_trace_add_hint(&t, IKV_HINT_SCHEDULER, 2, 3, 1), IKV_OK);
  assert_int_equal(ikv_trace_add_hint(&t, IKV_HINT_SCHEDULER, 2, 3, 0), IKV_E_INVALID);
  assert_int_equal(ikv_trace_add_hint(&t, IKV_HINT_SOURCE_COUNT, 2, 3, 1), IKV_E_INVALID);
  assert_int_equal(ikv_trace_add_hint(&t, IKV_HINT_MARGIN, 2, 4, 1), IKV_OK); /* a near miss never read */
  assert_int_equal(ikv_trace_step(&t), IKV_OK);
  assert_int_equal(ikv_trace_push(&t, (ikv_trace_ref){2, 3, IKV_FP16, IKV_SPAN_DOCUMENT}), IKV_OK);
  p.cache_fraction = 1.0, p.step_us = 1e6;
  const int expect[IKV_PREDICTOR_COUNT] = {[IKV_PREDICT_HINTS] = 1, [IKV_PREDICT_BELADY] = 1};
  for (int k = 0; k < IKV_PREDICTOR_COUNT; k++) {
    p.predictor = (ikv_predictor)k;
    assert_int_equal(ikv_sim_run(&t, &p, &lru), IKV_OK);
    if ((int)lru.hits != expect[k]) fail_msg("%s: %llu hits", ikv_predictor_name(k), (unsigned long long)lru.hits);
  }
  ikv_trace_free(&t);
  /* pages appended after step 0 were written on the GPU: hits, no transfer */
  assert_int_equal(ikv_trace_init(&t, &geo), IKV_OK);
  for (uint32_t s = 0; s < 20; s++) {
    assert_int_equal(ikv_trace_step(&t), IKV_OK);
    assert_int_equal(ikv_trace_push(&t, (ikv_trace_ref){1, s, IKV_FP16, IKV_SPAN_RECENT}), IKV_OK);
  }
  p.predictor = IKV_PREDICT_NONE, p.cache_fraction = 0.1;
  assert_int_equal(ikv_sim_run(&t, &p, &lru), IKV_OK);
  assert_int_equal(lru.hits, 19); /* all but step 0's page */
  assert_int_equal(lru.bytes_demand, page);
  ikv_trace_free(&t);
  /* one page read five times a step: a miss counts per read, the page is
   * fetched once, and Belady's prefetch list may repeat it */
  assert_int_equal(ikv_trace_init(&t, &geo), IKV_OK);
  for (uint32_t s = 0; s < 10; s++) {
    assert_int_equal(ikv_trace_step(&t), IKV_OK);
    for (int k = 0; k < 5; k++) assert_int_equal(ikv_trace_push(&t, (ikv_trace_ref){3, 9, IKV_INT8, IKV_SPAN_MEMORY}), IKV_OK);
  }
  for (int k = 0; k < IKV_PREDICTOR_COUNT; k++) {
    p.predictor = (ikv_predictor)k, p.cache_fraction = 1.0;
    assert_int_equal(ikv_sim_run(&t, &p, &opt), IKV_OK);
    assert_int_equal(opt.refs, 50);
    assert_int_equal(opt.hits, 45);
    assert_int_equal(opt.bytes_demand, (uint64_t)geo.layers * ikv_page_layer_bytes(&geo, IKV_INT8));
  }
  ikv_trace_free(&t);
}

static void invariants_on_an_agentic_trace(void **state) {
  (void)state;
  ikv_trace t = generated(80);
  const double fractions[] = {0.05, 0.1, 0.2, 0.4};
  ikv_sim_params p = {.link_gbs = 50.0, .step_us = 10000.0};
  uint64_t last_lru_hits = 0;
  for (int f = 0; f < 4; f++) {
    ikv_sim_result r[IKV_PREDICTOR_COUNT];
    p.cache_fraction = fractions[f];
    for (int k = 0; k < IKV_PREDICTOR_COUNT; k++) {
      p.predictor = (ikv_predictor)k;
      assert_int_equal(ikv_sim_run(&t, &p, &r[k]), IKV_OK);
      assert_int_equal(r[k].refs, t.n_refs);
      assert_true(r[k].cache_bytes <= r[k].trace_bytes);
      assert_true(r[k].hit_rate >= 0.0 && r[k].hit_rate <= 1.0);
    }
    assert_true(r[IKV_PREDICT_BELADY].hits >= r[IKV_PREDICT_NONE].hits); /* the future beats the floor */
    assert_int_equal(r[IKV_PREDICT_NONE].bytes_prefetch, 0);
    assert_true(r[IKV_PREDICT_NONE].hits >= last_lru_hits); /* LRU is a stack algorithm */
    last_lru_hits = r[IKV_PREDICT_NONE].hits;
  }
  /* bad parameters change nothing and say so */
  ikv_sim_result r = {.hits = 5};
  p.predictor = IKV_PREDICT_NONE;
  p.cache_fraction = 0.0;
  assert_int_equal(ikv_sim_run(&t, &p, &r), IKV_E_INVALID);
  p.cache_fraction = 1.5;
  assert_int_equal(ikv_sim_run(&t, &p, &r), IKV_E_INVALID);
  p.cache_fraction = 0.5, p.link_gbs = 0.0;
  assert_int_equal(ikv_sim_run(&t, &p, &r), IKV_E_INVALID);
  p.link_gbs = 50.0, p.predictor = IKV_PREDICTOR_COUNT;
  assert_int_equal(ikv_sim_run(&t, &p, &r), IKV_E_INVALID);
  assert_int_equal(r.hits, 5);
  assert_int_equal(ikv_sim_run(NULL, &p, &r), IKV_E_NULL);
  assert_string_equal(ikv_predictor_name(IKV_PREDICT_BELADY), "belady");
  assert_null(ikv_predictor_name(IKV_PREDICTOR_COUNT));
  ikv_trace_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(text_round_trip),
      cmocka_unit_test(malformed_traces_are_refused),
      cmocka_unit_test(cyclic_reads_lru_and_belady),
      cmocka_unit_test(invariants_on_an_agentic_trace),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
