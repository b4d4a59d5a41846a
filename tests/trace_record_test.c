/* Plans recorded as trace steps: each page the plan reads once (per-KV-head
 * rows deduplicated), with the precision read and the covering span's kind;
 * a geometry mismatch is refused and changes nothing. */
#include <stdlib.h>
#include <string.h>

#include "prefetch/trace_record.h"
#include "tests/runtime_fixture.h"

static void plans_become_trace_steps(void **state) {
  (void)state;
  fixture f;
  fx_open(&f, fx_config(64, 16), 0x5eed0a01);
  uint32_t a = fx_new_seq(&f, IKV_FP16);
  fx_grow(&f, a, 4 * FX_P); /* pages 0..3 */
  ikv_span doc = {FX_P, 3 * FX_P, IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.5f, IKV_UNPINNED_PRECISION};
  ikv_span_id id;
  assert_int_equal(ikv_span_add(f.rt, f.ids[a], &doc, &id), IKV_OK);
  const uint32_t numbers[1] = {42}; /* the trace's name for the sequence */
  ikv_trace t;
  assert_int_equal(ikv_trace_init(&t, ikv_pt_geometry(ikv_runtime_pagetable(f.rt))), IKV_OK);
  /* step 0: pages 0, 2, 3 in one row */
  int32_t indptr[1 + FX_H] = {0, 3}, index[8] = {0, 2, 3};
  uint8_t prec[8] = {IKV_FP16, IKV_FP16, IKV_FP16};
  ikv_plan_request req = {.seqs = f.ids, .batch = 1, .mode = IKV_PLAN_TABLES,
                          .tables = {.indptr = indptr, .page_index = index, .precision = prec}};
  if (ikv_plan_build(f.rt, f.plan, &req) != IKV_OK) fail_msg("%s", ikv_runtime_errmsg(f.rt));
  assert_int_equal(ikv_trace_record_plan(&t, f.rt, f.plan, f.ids, numbers), IKV_OK);
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);
  /* step 1: per-KV-head rows {1, 3} and {0, 3}: page 3 once */
  int32_t indptr2[1 + FX_H] = {0, 2, 4}, index2[8] = {1, 3, 0, 3};
  uint8_t prec2[8] = {IKV_FP16, IKV_FP16, IKV_FP16, IKV_FP16};
  req.tables = (ikv_plan_tables){.per_kv_head = 1, .indptr = indptr2, .page_index = index2, .precision = prec2};
  for (int h = 3; h <= FX_H; h++) indptr2[h] = 4;
  assert_int_equal(ikv_plan_build(f.rt, f.plan, &req), IKV_OK);
  assert_int_equal(ikv_trace_record_plan(&t, f.rt, f.plan, f.ids, numbers), IKV_OK);
  /* a trace of another geometry is refused, unchanged */
  ikv_geometry other = *ikv_pt_geometry(ikv_runtime_pagetable(f.rt));
  other.page_size *= 2;
  ikv_trace u;
  assert_int_equal(ikv_trace_init(&u, &other), IKV_OK);
  assert_int_equal(ikv_trace_record_plan(&u, f.rt, f.plan, f.ids, numbers), IKV_E_INVALID);
  assert_int_equal(u.n_steps, 0);
  assert_int_equal(ikv_trace_record_plan(&t, f.rt, f.plan, f.ids, NULL), IKV_E_NULL);
  assert_int_equal(ikv_step_end(f.rt, f.plan), IKV_OK);

  assert_int_equal(t.n_steps, 2);
  const uint32_t want0[] = {0, 2, 3}, want1[] = {0, 1, 3};
  assert_int_equal(t.step_start[1], 3);
  assert_int_equal(t.step_start[2], 6);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(t.refs[i].page, want0[i]);
    assert_int_equal(t.refs[3 + i].page, want1[i]);
    assert_int_equal(t.refs[i].seq, 42);
    assert_int_equal(t.refs[i].precision, IKV_FP16);
  }
  /* pages 1 and 2 lie in the document span; 0 and 3 in none */
  assert_int_equal(t.refs[0].kind, IKV_SPAN_OTHER);
  assert_int_equal(t.refs[1].kind, IKV_SPAN_DOCUMENT);
  assert_int_equal(t.refs[4].kind, IKV_SPAN_DOCUMENT);
  assert_int_equal(t.refs[5].kind, IKV_SPAN_OTHER);
  ikv_trace_free(&t), ikv_trace_free(&u);
  fx_close(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(plans_become_trace_steps)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
