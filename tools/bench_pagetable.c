/* ikv bench pagetable: the block-table manager's hot operations on this host. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pagetable/pagetable.h"
#include "tools/bench_util.h"
#include "tools/ikv_cli.h"

#define BATCH 256
#define CONTEXT 32768
#define PAGE 16
#define PAGES_PER_SEQ (CONTEXT / PAGE)
#define REPEATS 15

static ikv_pagetable *make_table(void) {
  ikv_pagetable_config cfg = {.geometry = {.layers = 32, .kv_heads = 8, .head_dim = 128, .page_size = PAGE},
                              .max_sequences = BATCH + 64};
  cfg.capacity[IKV_TIER_GPU][IKV_FP16] = BATCH * PAGES_PER_SEQ + 2 * PAGES_PER_SEQ + 70000;
  cfg.capacity[IKV_TIER_HOST][IKV_FP16] = 16;
  ikv_pagetable *pt;
  IKV_CLI_CHECK(ikv_pt_create(&cfg, &pt));
  return pt;
}

static void fill(ikv_pagetable *pt, ikv_seq_id seq, uint32_t tokens) {
  static int64_t slots[CONTEXT];
  ikv_pt_copy cow;
  for (uint32_t done = 0; done < tokens; done += CONTEXT)
    IKV_CLI_CHECK(ikv_pt_seq_append(pt, seq, tokens - done < CONTEXT ? tokens - done : CONTEXT, slots, NULL, &cow));
}

/* One page allocated (one token appended at a page boundary) and freed. */
static double alloc_free_ns(ikv_pagetable *pt) {
  ikv_seq_id seq;
  IKV_CLI_CHECK(ikv_pt_seq_create(pt, IKV_FP16, &seq));
  fill(pt, seq, 1024);
  int64_t slot;
  ikv_pt_copy cow;
  const int iters = 200000;
  double samples[REPEATS];
  for (int r = 0; r < REPEATS; r++) {
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < iters; i++) {
      ikv_pt_seq_append(pt, seq, 1, &slot, NULL, &cow);
      ikv_pt_seq_truncate(pt, seq, 1024);
    }
    samples[r] = (double)(bench_now_ns() - t0) / iters;
  }
  IKV_CLI_CHECK(ikv_pt_seq_free(pt, seq));
  return bench_median(samples, REPEATS);
}

/* Appending `chunk` tokens at a time up to 1M tokens (chunk 1: decode steps). */
static double append_ns_per_token(ikv_pagetable *pt, uint32_t chunk) {
  const uint32_t total = 1u << 20;
  static int64_t slots[4096];
  ikv_pt_copy cow;
  double samples[5];
  for (int r = 0; r < 5; r++) {
    ikv_seq_id seq;
    IKV_CLI_CHECK(ikv_pt_seq_create(pt, IKV_FP16, &seq));
    uint64_t t0 = bench_now_ns();
    for (uint32_t done = 0; done < total; done += chunk) ikv_pt_seq_append(pt, seq, chunk, slots, NULL, &cow);
    samples[r] = (double)(bench_now_ns() - t0) / total;
    IKV_CLI_CHECK(ikv_pt_seq_free(pt, seq));
  }
  return bench_median(samples, 5);
}

/* Fork of a CONTEXT-token sequence (refcounts only, no copy). */
static double fork_ns(ikv_pagetable *pt, ikv_seq_id parent) {
  double samples[201];
  for (int r = 0; r < 201; r++) {
    ikv_seq_id child;
    uint64_t t0 = bench_now_ns();
    IKV_CLI_CHECK(ikv_pt_seq_fork(pt, parent, &child));
    samples[r] = (double)(bench_now_ns() - t0);
    IKV_CLI_CHECK(ikv_pt_seq_free(pt, child));
  }
  return bench_median(samples, 201);
}

typedef struct export_buffers {
  int32_t indptr[BATCH + 1], last[BATCH], lens[BATCH];
  int32_t *indices, *table;
  uint8_t *precisions;
} export_buffers;

static double export_us(ikv_pagetable *pt, const ikv_seq_id *seqs, export_buffers *b, int csr,
                        int with_precisions) {
  double samples[REPEATS];
  uint8_t *prec = with_precisions ? b->precisions : NULL;
  for (int r = 0; r < REPEATS; r++) {
    uint64_t t0 = bench_now_ns();
    if (csr)
      IKV_CLI_CHECK(ikv_pt_export_csr(pt, seqs, BATCH, IKV_TIER_GPU, b->indptr, b->indices,
                              BATCH * PAGES_PER_SEQ, b->last, prec));
    else
      IKV_CLI_CHECK(ikv_pt_export_block_table(pt, seqs, BATCH, IKV_TIER_GPU, b->table, PAGES_PER_SEQ,
                                      b->lens, prec));
    samples[r] = (double)(bench_now_ns() - t0) / 1e3;
  }
  return bench_median(samples, REPEATS);
}

/* A CSR export right after the first page of sequence `of` left the GPU and
 * came back: a page sequences have shared makes every sequence's export
 * cache rebuild; a page one sequence alone held, only that sequence's. */
static double export_after_change_us(ikv_pagetable *pt, const ikv_seq_id *seqs, uint32_t of, export_buffers *b) {
  double samples[REPEATS];
  ikv_page_id page;
  IKV_CLI_CHECK(ikv_pt_seq_pages(pt, seqs[of], 0, 1, &page));
  for (int r = 0; r < REPEATS; r++) {
    ikv_pt_copy copy;
    IKV_CLI_CHECK(ikv_pt_page_make_resident(pt, page, IKV_TIER_HOST, &copy));
    IKV_CLI_CHECK(ikv_pt_page_release(pt, page, IKV_TIER_GPU));
    IKV_CLI_CHECK(ikv_pt_page_make_resident(pt, page, IKV_TIER_GPU, &copy));
    IKV_CLI_CHECK(ikv_pt_page_release(pt, page, IKV_TIER_HOST));
    uint64_t t0 = bench_now_ns();
    IKV_CLI_CHECK(ikv_pt_export_csr(pt, seqs, BATCH, IKV_TIER_GPU, b->indptr, b->indices,
                            BATCH * PAGES_PER_SEQ, b->last, b->precisions));
    samples[r] = (double)(bench_now_ns() - t0) / 1e3;
  }
  return bench_median(samples, REPEATS);
}

/* The floor any export pays on this host: copying the index array's bytes. */
static double memcpy_floor_us(export_buffers *b) {
  double samples[REPEATS];
  for (int r = 0; r < REPEATS; r++) {
    uint64_t t0 = bench_now_ns();
    memcpy(b->table, b->indices, sizeof(int32_t) * BATCH * PAGES_PER_SEQ);
    samples[r] = (double)(bench_now_ns() - t0) / 1e3;
  }
  return bench_median(samples, REPEATS);
}

static const char usage[] =
    "usage: ikv bench pagetable [--json]\n\n"
    "Times the block-table manager on this host: page alloc+free, append per token\n"
    "(decode steps of 1 token and prefill chunks of 4096), fork of a 32K-token\n"
    "sequence, and exports of a batch of 256 sequences x 32K tokens (page 16) as a\n"
    "FlashInfer CSR table and a vLLM block table, with and without the per-page\n"
    "precision array; the same export right after a page changed residency (a\n"
    "page sequences shared: every export cache rebuilt; a page of one sequence:\n"
    "its cache updated); and a plain memcpy of the index bytes (the floor\n"
    "any export pays on this host). Medians of repeated runs.\n";

int ikv_bench_pagetable(int argc, char **argv) {
  if (ikv_wants_help(argc, argv, usage)) return 0;
  int json = ikv_has_flag(argc, argv, "--json");
  ikv_pagetable *pt = make_table();
  double af = alloc_free_ns(pt);
  double ap1 = append_ns_per_token(pt, 1);
  double ap4k = append_ns_per_token(pt, 4096);

  ikv_seq_id seqs[BATCH];
  for (int i = 0; i < BATCH; i++) {
    IKV_CLI_CHECK(ikv_pt_seq_create(pt, IKV_FP16, &seqs[i]));
    fill(pt, seqs[i], CONTEXT);
  }
  double fk = fork_ns(pt, seqs[0]);
  export_buffers b;
  b.indices = malloc(sizeof(int32_t) * BATCH * PAGES_PER_SEQ);
  b.table = malloc(sizeof(int32_t) * BATCH * PAGES_PER_SEQ);
  b.precisions = malloc(BATCH * PAGES_PER_SEQ);
  if (!b.indices || !b.table || !b.precisions) return 1;
  export_us(pt, seqs, &b, 1, 1); /* warm the buffers */
  double csr = export_us(pt, seqs, &b, 1, 0), csr_p = export_us(pt, seqs, &b, 1, 1);
  double bt = export_us(pt, seqs, &b, 0, 0), bt_p = export_us(pt, seqs, &b, 0, 1);
  double floor_us = memcpy_floor_us(&b);
  double cold = export_after_change_us(pt, seqs, 0, &b); /* sequence 0 was forked: its pages were shared */
  double owned = export_after_change_us(pt, seqs, 1, &b);

  char cpu[256], date[32];
  bench_cpu_name(cpu, sizeof(cpu));
  bench_date(date, sizeof(date));
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (json) {
    printf("{\"bench\": \"pagetable\", \"date\": \"%s\", \"cpu\": \"%s\", \"cores\": %ld, "
           "\"batch\": %d, \"context_tokens\": %d, \"page_size\": %d, "
           "\"alloc_free_ns\": %.1f, \"append_ns_per_token\": %.2f, "
           "\"append_prefill_ns_per_token\": %.2f, \"fork_ns\": %.0f, \"fork_tokens\": %d, "
           "\"export_csr_us\": %.1f, \"export_csr_with_precisions_us\": %.1f, "
           "\"export_block_table_us\": %.1f, \"export_block_table_with_precisions_us\": %.1f, "
           "\"export_csr_after_residency_change_us\": %.1f, \"export_csr_after_unshared_move_us\": %.1f, "
           "\"memcpy_floor_us\": %.1f}\n",
           date, cpu, cores, BATCH, CONTEXT, PAGE, af, ap1, ap4k, fk, CONTEXT, csr, csr_p, bt, bt_p,
           cold, owned, floor_us);
  } else {
    printf("ikv bench pagetable  (%s, %ld cores, %s)\n", cpu, cores, date);
    printf("  page alloc + free                          %8.1f ns\n", af);
    printf("  append, 1 token per call                   %8.2f ns/token\n", ap1);
    printf("  append, 4096 tokens per call               %8.2f ns/token\n", ap4k);
    printf("  fork of a %d-token sequence             %8.0f ns\n", CONTEXT, fk);
    printf("  export CSR, %d x %d tokens            %8.1f us (%.1f us with precisions)\n", BATCH,
           CONTEXT, csr, csr_p);
    printf("  export block table, %d x %d tokens    %8.1f us (%.1f us with precisions)\n", BATCH,
           CONTEXT, bt, bt_p);
    printf("  export CSR after a residency change        %8.1f us (a shared page: export caches rebuilt)\n", cold);
    printf("  export CSR after an unshared page moved    %8.1f us (its sequence's cache updated)\n", owned);
    printf("  memcpy of the same index bytes (floor)     %8.1f us\n", floor_us);
  }
  free(b.indices);
  free(b.table);
  free(b.precisions);
  ikv_pt_destroy(pt);
  return 0;
}
