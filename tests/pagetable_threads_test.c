/* The threading model the header states: one handle per thread at a time,
 * distinct handles fully independent. Several threads each drive their own
 * table through the same seeded workload at once; every thread must end with
 * exactly the state a lone run of that workload produces. */
#include <pthread.h>
#include <string.h>

#include "pagetable/pagetable.h"
#include "tests/cmocka_all.h"

#define THREADS 4
#define ROUNDS 20000

typedef struct result {
  ikv_pt_stats stats;
  int32_t indptr[9], indices[4096], last[8];
  int errors;
} result;

static void *workload(void *arg) {
  result *r = arg;
  ikv_pagetable_config cfg = {.geometry = {.layers = 1, .kv_heads = 1, .head_dim = 64, .page_size = 16},
                              .max_sequences = 8};
  cfg.capacity[IKV_TIER_GPU][IKV_FP16] = 512;
  cfg.capacity[IKV_TIER_HOST][IKV_FP16] = 64;
  ikv_pagetable *pt;
  if (ikv_pt_create(&cfg, &pt) != IKV_OK) {
    r->errors++;
    return NULL;
  }
  ikv_seq_id seqs[8];
  for (int i = 0; i < 8; i++) r->errors += ikv_pt_seq_create(pt, IKV_FP16, &seqs[i]) != IKV_OK;
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  int64_t map[64];
  for (int round = 0; round < ROUNDS; round++) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    int k = (int)(rng % 8);
    ikv_pt_seq_info info;
    ikv_pt_copy cow;
    r->errors += ikv_pt_seq_get_info(pt, seqs[k], &info) != IKV_OK;
    if (rng & 0x100) {
      ikv_status st = ikv_pt_seq_append(pt, seqs[k], 1 + (uint32_t)(rng >> 20) % 64, map, NULL, &cow);
      r->errors += st != IKV_OK && st != IKV_E_CAPACITY;
    } else if (rng & 0x200) {
      r->errors += ikv_pt_seq_truncate(pt, seqs[k], info.tokens / 2) != IKV_OK;
    } else {
      r->errors += ikv_pt_seq_free(pt, seqs[k]) != IKV_OK;
      r->errors += ikv_pt_seq_fork(pt, seqs[(k + 1) % 8], &seqs[k]) != IKV_OK;
    }
  }
  r->errors += ikv_pt_get_stats(pt, &r->stats) != IKV_OK;
  r->errors += ikv_pt_export_csr(pt, seqs, 8, IKV_TIER_GPU, r->indptr, r->indices, 4096, r->last,
                                 NULL) != IKV_OK;
  ikv_pt_destroy(pt);
  return NULL;
}

static void handles_are_independent_across_threads(void **state) {
  (void)state;
  static result alone, concurrent[THREADS];
  memset(&alone, 0, sizeof(alone));
  memset(concurrent, 0, sizeof(concurrent));
  workload(&alone);
  assert_int_equal(alone.errors, 0);
  assert_true(alone.stats.live_pages > 0);
  pthread_t tid[THREADS];
  for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&tid[i], NULL, workload, &concurrent[i]), 0);
  for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_join(tid[i], NULL), 0);
  for (int i = 0; i < THREADS; i++) assert_memory_equal(&concurrent[i], &alone, sizeof(alone));
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(handles_are_independent_across_threads)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
