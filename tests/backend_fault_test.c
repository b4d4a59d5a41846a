/* Backend faults the runtime must survive, the device stood in for by the
 * CPU backend with one of its functions made to fail (what the runtime does
 * then is the same for every backend):
 * - a copy-on-write copy the device refuses: ikv_append fails with the
 *   backend's status, rolls back every sequence of the batch, names the copy
 *   in its message, and the runtime goes on working;
 * - host memory for a plan's uploaded arrays refused part way: the plan is
 *   not created, and everything taken is given back;
 * - device selection's count read back (a plan made to stand for one): a
 *   refused copy changes no statistic; entries the device left empty leave
 *   the pages, bytes and hits counted. */
#include <stdlib.h>
#include <string.h>

#include "runtime/plan_internal.h"
#include "tests/cmocka_all.h"
#include "tests/test_rng.h"

enum { H = 2, D = 16, P = 16 };

static ikv_status refuse_copy(ikv_runtime *rt, int32_t src, int32_t dst, ikv_precision precision) {
  (void)rt, (void)src, (void)dst, (void)precision;
  return IKV_E_CUDA;
}

/* A CPU runtime of fp16 GPU pages only. */
static ikv_runtime *cpu_runtime(uint32_t layers, uint32_t max_batch, uint32_t gpu_pages) {
  ikv_runtime_config c = {.geometry = {.layers = layers, .kv_heads = H, .head_dim = D, .page_size = P},
                          .q_heads = 4, .max_sequences = max_batch + 1, .max_batch = max_batch, .max_plan_pages = 64,
                          .backend = IKV_BACKEND_CPU};
  c.capacity[IKV_TIER_GPU][IKV_FP16] = gpu_pages;
  ikv_runtime *rt;
  assert_int_equal(ikv_runtime_create(&c, &rt), IKV_OK);
  return rt;
}

static uint32_t tokens_of(ikv_runtime *rt, ikv_seq_id s) {
  ikv_pt_seq_info info;
  assert_int_equal(ikv_pt_seq_get_info(ikv_runtime_pagetable(rt), s, &info), IKV_OK);
  return info.tokens;
}

static void refused_copy_on_write_rolls_back(void **state) {
  (void)state;
  ikv_runtime *rt = cpu_runtime(2, 3, 32);
  ikv_seq_id seq[3];
  assert_int_equal(ikv_seq_create(rt, IKV_FP16, &seq[0]), IKV_OK);
  assert_int_equal(ikv_seq_create(rt, IKV_FP16, &seq[1]), IKV_OK);
  test_rng rng = {99};
  static float k[64 * H * D], v[64 * H * D]; /* the most tokens written at once: 44 */
  rng_fill_gauss(&rng, k, sizeof(k) / sizeof(float), 1.0f), rng_fill_gauss(&rng, v, sizeof(v) / sizeof(float), 1.0f);
  int64_t slots[64];
  uint8_t precs[64];
  uint32_t n[3] = {20, 24, 0}; /* seq 0's last page partly filled */
  assert_int_equal(ikv_append(rt, seq, n, 2, slots, precs), IKV_OK);
  for (uint32_t l = 0; l < 2; l++)
    assert_int_equal(ikv_write_kv(rt, l, k, v, IKV_DTYPE_F32, slots, precs, 44, NULL), IKV_OK);
  assert_int_equal(ikv_seq_fork(rt, seq[0], &seq[2]), IKV_OK); /* the last page now shared */
  ikv_pt_stats before;
  assert_int_equal(ikv_pt_get_stats(ikv_runtime_pagetable(rt), &before), IKV_OK);
  /* seq 1 appends fine, then seq 2's append must copy the shared page: refused */
  const rt_backend *cpu = rt->be;
  rt_backend failing = *cpu;
  failing.copy_page = refuse_copy;
  rt->be = &failing;
  uint32_t more[3] = {3, 5, 2};
  const ikv_seq_id order[3] = {seq[1], seq[0], seq[2]};
  assert_int_equal(ikv_append(rt, order, more, 3, slots, precs), IKV_E_CUDA);
  assert_non_null(strstr(ikv_runtime_errmsg(rt), "copying a shared page on write"));
  /* every sequence of the batch as it was (seq 0 appended first, without a copy: rolled back too) */
  assert_int_equal(tokens_of(rt, seq[0]), 20);
  assert_int_equal(tokens_of(rt, seq[1]), 24);
  assert_int_equal(tokens_of(rt, seq[2]), 20);
  ikv_pt_stats after;
  assert_int_equal(ikv_pt_get_stats(ikv_runtime_pagetable(rt), &after), IKV_OK);
  /* the refused copy's page stays with seq 2 (its bytes not to be trusted), and nothing else leaks */
  assert_int_equal(after.live_pages, before.live_pages + 1);
  assert_int_equal(after.shared_pages, before.shared_pages - 1);
  /* the device back: appends, writes and a plan work again */
  rt->be = cpu;
  assert_int_equal(ikv_append(rt, order, more, 3, slots, precs), IKV_OK);
  assert_int_equal(tokens_of(rt, seq[0]), 25), assert_int_equal(tokens_of(rt, seq[1]), 27);
  assert_int_equal(tokens_of(rt, seq[2]), 22);
  for (uint32_t l = 0; l < 2; l++)
    assert_int_equal(ikv_write_kv(rt, l, k, v, IKV_DTYPE_F32, slots, precs, 10, NULL), IKV_OK);
  ikv_plan *plan;
  assert_int_equal(ikv_plan_create(rt, &plan), IKV_OK);
  int32_t indptr[4] = {0, 2, 4, 6}, index[6] = {0, 1, 0, 1, 0, 1};
  uint8_t want[6] = {IKV_FP16, IKV_FP16, IKV_FP16, IKV_FP16, IKV_FP16, IKV_FP16};
  const ikv_plan_request req = {.seqs = seq, .batch = 3, .mode = IKV_PLAN_TABLES,
                                .tables = {.indptr = indptr, .page_index = index, .precision = want}};
  assert_int_equal(ikv_plan_build(rt, plan, &req), IKV_OK);
  assert_int_equal(ikv_step_end(rt, plan), IKV_OK);
  ikv_plan_destroy(plan);
  ikv_runtime_destroy(rt);
}

/* host_alloc that refuses once `allow` allocations succeeded, counting what is taken and given back */
static int allow, taken, given;
static void *some_host_memory(ikv_runtime *rt, size_t bytes) {
  (void)rt;
  if (allow-- <= 0) return NULL;
  taken++;
  return malloc(bytes);
}
static void give_host_memory(ikv_runtime *rt, void *p) {
  (void)rt;
  given += p != NULL;
  free(p);
}

static void refused_plan_memory_creates_nothing(void **state) {
  (void)state;
  ikv_runtime *rt = cpu_runtime(1, 2, 16);
  const rt_backend *cpu = rt->be;
  rt_backend failing = *cpu;
  failing.host_alloc = some_host_memory, failing.host_free = give_host_memory;
  rt->be = &failing;
  for (int first_refused = 0; first_refused < 6; first_refused++) {
    allow = first_refused, taken = given = 0;
    ikv_plan *plan = (ikv_plan *)&plan; /* must be left alone */
    assert_int_equal(ikv_plan_create(rt, &plan), IKV_E_NO_MEMORY);
    assert_ptr_equal(plan, (ikv_plan *)&plan);
    assert_int_equal(taken, first_refused);
    assert_int_equal(given, taken);
  }
  rt->be = cpu;
  ikv_plan *plan;
  assert_int_equal(ikv_plan_create(rt, &plan), IKV_OK); /* and the runtime makes plans after */
  ikv_plan_destroy(plan);
  ikv_runtime_destroy(rt);
}

static ikv_status refuse_spans(ikv_runtime *rt, const ikv_plan *pl, void *stream, uint16_t *first, uint16_t *last) {
  (void)rt, (void)pl, (void)stream, (void)first, (void)last;
  return IKV_E_CUDA;
}

/* The device's picks: every entry as the plan wrote it but entry 0 left
 * empty (first 1, last 0), as device selection leaves a reserved entry. */
static ikv_status one_left_empty(ikv_runtime *rt, const ikv_plan *pl, void *stream, uint16_t *first, uint16_t *last) {
  (void)rt, (void)stream;
  memcpy(first, pl->first, sizeof(uint16_t) * pl->n_entries), memcpy(last, pl->last, sizeof(uint16_t) * pl->n_entries);
  first[0] = 1, last[0] = 0;
  return IKV_OK;
}

static void counted_selection_reads_the_device(void **state) {
  (void)state;
  ikv_runtime *rt = cpu_runtime(1, 1, 16);
  ikv_seq_id seq;
  assert_int_equal(ikv_seq_create(rt, IKV_FP16, &seq), IKV_OK);
  uint32_t n = 40;
  int64_t slots[40];
  uint8_t precs[40];
  static float k[40 * H * D], v[40 * H * D];
  test_rng rng = {7};
  rng_fill_gauss(&rng, k, sizeof(k) / sizeof(float), 1.0f), rng_fill_gauss(&rng, v, sizeof(v) / sizeof(float), 1.0f);
  assert_int_equal(ikv_append(rt, &seq, &n, 1, slots, precs), IKV_OK);
  assert_int_equal(ikv_write_kv(rt, 0, k, v, IKV_DTYPE_F32, slots, precs, n, NULL), IKV_OK);
  ikv_plan *plan;
  assert_int_equal(ikv_plan_create(rt, &plan), IKV_OK);
  int32_t indptr[2] = {0, 3}, index[3] = {0, 1, 2};
  uint8_t want[3] = {IKV_FP16, IKV_FP16, IKV_FP16};
  const ikv_plan_request req = {.seqs = &seq, .batch = 1, .mode = IKV_PLAN_TABLES,
                                .tables = {.indptr = indptr, .page_index = index, .precision = want}};
  assert_int_equal(ikv_plan_build(rt, plan, &req), IKV_OK);
  plan->dsel = 1; /* as if the GPU picked among these entries */
  ikv_plan_stats before, after;
  assert_int_equal(ikv_plan_get_stats(plan, &before), IKV_OK);
  const rt_backend *cpu = rt->be;
  rt_backend device = *cpu;
  device.read_spans = refuse_spans;
  rt->be = &device;
  assert_int_equal(ikv_plan_count_selected(rt, plan, NULL), IKV_E_CUDA);
  assert_non_null(strstr(ikv_runtime_errmsg(rt), "ikv_plan_count_selected"));
  assert_int_equal(ikv_plan_get_stats(plan, &after), IKV_OK);
  assert_memory_equal(&before, &after, sizeof(before)); /* nothing counted */
  device.read_spans = one_left_empty;
  assert_int_equal(ikv_plan_count_selected(rt, plan, NULL), IKV_OK);
  assert_int_equal(ikv_plan_get_stats(plan, &after), IKV_OK);
  assert_int_equal(after.pages_selected, before.pages_selected - 1);
  assert_int_equal(after.pages_by_precision[IKV_FP16], before.pages_by_precision[IKV_FP16] - 1);
  assert_int_equal(after.bytes_read, before.bytes_read - rt->page_bytes[IKV_FP16]);
  assert_int_equal(after.pages_hit, before.pages_hit - 1);
  before = after; /* counted again: the same */
  assert_int_equal(ikv_plan_count_selected(rt, plan, NULL), IKV_OK);
  assert_int_equal(ikv_plan_get_stats(plan, &after), IKV_OK);
  assert_memory_equal(&before, &after, sizeof(before));
  plan->dsel = 0, rt->be = cpu;
  assert_int_equal(ikv_step_end(rt, plan), IKV_OK);
  ikv_plan_destroy(plan);
  ikv_runtime_destroy(rt);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(refused_copy_on_write_rolls_back),
                                     cmocka_unit_test(refused_plan_memory_creates_nothing),
                                     cmocka_unit_test(counted_selection_reads_the_device)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
