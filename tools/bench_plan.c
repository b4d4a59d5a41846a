/* ikv bench plan: how long building a step's plan takes on this host. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/intentkv.h"
#include "tools/bench_util.h"
#include "tools/ikv_cli.h"

enum { BATCH = 64, CONTEXT = 32768, PAGE = 16, PAGES = CONTEXT / PAGE, REPEATS = 21, LOOP_STEPS = 24 };
#define GROWN_PAGES (PAGES + 5 * LOOP_STEPS / PAGE + 1) /* a sequence's pages after the five decode loops */

static const char usage[] =
    "usage: ikv bench plan [--json]\n\n"
    "Times ikv_plan_build + ikv_step_end for a batch of 64 sequences x 32K tokens\n"
    "(16-token pages, 15 semantic spans each): with the router at memory pressure\n"
    "0.0 and, after its conversions, at 0.9; and with scheduler tables listing\n"
    "every page; and a memcpy of the bytes such a plan holds (the floor on this\n"
    "host). Medians of repeated steady-state builds, and the best of them (on a\n"
    "shared host the best is the steadier number). A plan object built again keeps\n"
    "the rows that did not change (kept: the share of entries it kept); the\n"
    "router's builds with the batch reversed every other time show the cost of\n"
    "keeping (next to) nothing. Then the same builds in a decode loop: before each,\n"
    "one token appended to every sequence (not timed), the tables listing the new\n"
    "pages as they come, the page being written at its stored fp16 (24 steps each;\n"
    "full pages then convert to INT4). The sequences fill their pages in step; the\n"
    "last loops first cut them to different lengths, so that every step some fill a\n"
    "page: their rows grow and their full page converts. In the last (router), one\n"
    "sequence leaves the batch each step and the one that left the step before\n"
    "comes back, as under continuous batching.\n";

typedef struct timing {
  double median, best, worst; /* us */
  double kept;                /* entries kept from the build before, over entries (tables) */
} timing;

/* Every page of every sequence (tokens[b] tokens) as the tables' indptr, index
 * and precisions: INT4 (at most what any page stores), but the last page as
 * stored (fp16) once the decode loop writes into it, as a scheduler would
 * keep the page it writes. */
static void list_every_page(const uint32_t *tokens, int writing, int32_t *indptr, int32_t *index, uint8_t *want) {
  indptr[0] = 0;
  for (int b = 0; b < BATCH; b++) {
    const int32_t n = (int32_t)((tokens[b] + PAGE - 1) / PAGE);
    for (int32_t i = 0; i < n; i++)
      index[indptr[b] + i] = i, want[indptr[b] + i] = writing && i == n - 1 ? IKV_FP16 : IKV_INT4;
    indptr[b + 1] = indptr[b] + n;
  }
}

/* One build and its step end, in microseconds; *kept (optional) adds the
 * entries it kept and *entries those it holds. */
static double build_us(ikv_runtime *rt, ikv_plan *plan, const ikv_plan_request *req, double *kept, double *entries) {
  uint64_t t0 = bench_now_ns();
  IKV_CLI_CHECK(ikv_plan_build(rt, plan, req));
  IKV_CLI_CHECK(ikv_step_end(rt, plan));
  const double us = (double)(bench_now_ns() - t0) / 1e3;
  ikv_plan_stats st;
  IKV_CLI_CHECK(ikv_plan_get_stats(plan, &st));
  if (kept) *kept += st.entries_kept, *entries += st.pages_selected;
  return us;
}

static timing timing_of(double *samples, int n, double kept, double entries) {
  const double median = bench_median(samples, n); /* sorts them */
  return (timing){median, samples[0], samples[n - 1], entries ? kept / entries : 0.0};
}

/* Builds in a decode loop: each after one token appended to every sequence.
 * churn: the batch leaves out sequence r % BATCH at step r (the router). */
static timing time_decode_loop(ikv_runtime *rt, ikv_plan *plan, ikv_plan_request *req, uint32_t *tokens, int churn) {
  double samples[LOOP_STEPS], kept = 0, entries = 0;
  uint32_t ones[BATCH];
  int64_t slots[BATCH];
  uint8_t precs[BATCH];
  ikv_seq_id some[BATCH];
  ikv_plan_request step = *req;
  for (int b = 0; b < BATCH; b++) ones[b] = 1;
  for (int r = 0; r < LOOP_STEPS; r++) {
    IKV_CLI_CHECK(ikv_append(rt, req->seqs, ones, BATCH, slots, precs));
    for (int b = 0; b < BATCH; b++) tokens[b]++;
    if (req->mode == IKV_PLAN_TABLES)
      list_every_page(tokens, 1, (int32_t *)req->tables.indptr, (int32_t *)req->tables.page_index,
                      (uint8_t *)req->tables.precision);
    if (churn) {
      step.batch = 0, step.seqs = some;
      for (int b = 0; b < BATCH; b++)
        if (b != r % BATCH) some[step.batch++] = req->seqs[b];
    }
    samples[r] = build_us(rt, plan, &step, &kept, &entries);
  }
  return timing_of(samples, LOOP_STEPS, kept, entries);
}

static timing time_plans(ikv_runtime *rt, ikv_plan *plan, const ikv_plan_request *req) {
  double samples[REPEATS], kept = 0, entries = 0;
  build_us(rt, plan, req, NULL, NULL); /* first build: conversions, warm caches */
  for (int r = 0; r < REPEATS; r++) samples[r] = build_us(rt, plan, req, &kept, &entries);
  return timing_of(samples, REPEATS, kept, entries);
}

/* Builds that keep next to nothing: the batch in reverse order every other
 * build (kept rows must keep their order, so only one sequence's row is
 * kept), the same pages read. */
static timing time_unkept(ikv_runtime *rt, ikv_plan *plan, const ikv_plan_request *req) {
  double samples[REPEATS];
  ikv_seq_id reversed[BATCH];
  for (int b = 0; b < BATCH; b++) reversed[b] = req->seqs[BATCH - 1 - b];
  ikv_plan_request other = *req;
  other.seqs = reversed;
  for (int r = 0; r < REPEATS; r++) samples[r] = build_us(rt, plan, r % 2 ? req : &other, NULL, NULL);
  return timing_of(samples, REPEATS, 0, 0);
}

int ikv_bench_plan(int argc, char **argv) {
  if (ikv_wants_help(argc, argv, usage)) return 0;
  int json = ikv_has_flag(argc, argv, "--json");
  /* a small geometry: planning cost depends on pages, not on their size */
  ikv_runtime_config cfg = {.geometry = {.layers = 1, .kv_heads = 1, .head_dim = 16, .page_size = PAGE},
                            .q_heads = 1, .max_sequences = BATCH, .max_batch = BATCH,
                            .max_plan_pages = BATCH * GROWN_PAGES, .backend = IKV_BACKEND_CPU};
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) cfg.capacity[IKV_TIER_GPU][p] = p == IKV_BF16 ? 0 : BATCH * GROWN_PAGES;
  ikv_runtime *rt;
  ikv_plan *plan;
  IKV_CLI_CHECK(ikv_runtime_create(&cfg, &rt));
  IKV_CLI_CHECK(ikv_plan_create(rt, &plan));
  ikv_seq_id seqs[BATCH];
  int64_t *slots = malloc(sizeof(int64_t) * CONTEXT);
  uint8_t *precs = malloc(CONTEXT);
  /* spans like an agent's context: 15 parts, edges off page boundaries */
  static const struct { ikv_span_policy policy; float score; } parts[15] = {
      {IKV_POLICY_ALWAYS, 1.0f}, {IKV_POLICY_GLOBAL, 1.0f}, {IKV_POLICY_ATTEND, 0.2f}, {IKV_POLICY_ATTEND, 0.2f},
      {IKV_POLICY_ATTEND, 0.9f}, {IKV_POLICY_ATTEND, 0.2f}, {IKV_POLICY_ATTEND, 0.4f}, {IKV_POLICY_ATTEND, 0.2f},
      {IKV_POLICY_ATTEND, 0.4f}, {IKV_POLICY_ATTEND, 0.2f}, {IKV_POLICY_SKIP, 0.0f},   {IKV_POLICY_ATTEND, 0.2f},
      {IKV_POLICY_ATTEND, 0.4f}, {IKV_POLICY_ATTEND, 0.3f}, {IKV_POLICY_RECENT, 0.8f}};
  uint32_t n = CONTEXT;
  for (int b = 0; b < BATCH; b++) {
    IKV_CLI_CHECK(ikv_seq_create(rt, IKV_FP16, &seqs[b]));
    IKV_CLI_CHECK(ikv_append(rt, &seqs[b], &n, 1, slots, precs));
    for (uint32_t i = 0; i < 15; i++) {
      ikv_span sp = {i * 2185 + (i ? 3 : 0), i == 14 ? CONTEXT : (i + 1) * 2185 + 3, IKV_SPAN_DOCUMENT, parts[i].policy,
                     parts[i].score, IKV_UNPINNED_PRECISION};
      ikv_span_id id;
      IKV_CLI_CHECK(ikv_span_add(rt, seqs[b], &sp, &id));
    }
  }
  ikv_plan_request req = {.seqs = seqs, .batch = BATCH, .mode = IKV_PLAN_ROUTER};
  req.router = (ikv_router_params){.recent_tokens = 1024, .sink_tokens = 4, .default_score = 0.3f};
  timing router0 = time_plans(rt, plan, &req);
  timing router_unkept = time_unkept(rt, plan, &req);
  ikv_plan_stats st0;
  IKV_CLI_CHECK(ikv_plan_build(rt, plan, &req));
  IKV_CLI_CHECK(ikv_plan_get_stats(plan, &st0));
  IKV_CLI_CHECK(ikv_step_end(rt, plan));
  req.router.memory_pressure = 0.9f;
  timing router9 = time_plans(rt, plan, &req);
  ikv_plan_stats st9;
  IKV_CLI_CHECK(ikv_plan_build(rt, plan, &req));
  IKV_CLI_CHECK(ikv_plan_get_stats(plan, &st9));
  IKV_CLI_CHECK(ikv_step_end(rt, plan));

  /* scheduler tables: every page at its stored precision */
  uint32_t tokens[BATCH];
  for (int b = 0; b < BATCH; b++) tokens[b] = CONTEXT;
  int32_t *indptr = malloc(sizeof(int32_t) * (BATCH + 1)), *index = malloc(sizeof(int32_t) * BATCH * GROWN_PAGES);
  uint8_t *want = malloc(BATCH * GROWN_PAGES);
  list_every_page(tokens, 0, indptr, index, want);
  ikv_plan_request tables_req = {.seqs = seqs, .batch = BATCH, .mode = IKV_PLAN_TABLES,
                             .tables = {.indptr = indptr, .page_index = index, .precision = want}};
  timing tables = time_plans(rt, plan, &tables_req);
  /* the decode loops (sequences grow from here on) */
  req.router.memory_pressure = 0.0f;
  timing router_loop = time_decode_loop(rt, plan, &req, tokens, 0);
  timing tables_loop = time_decode_loop(rt, plan, &tables_req, tokens, 0);
  for (int b = 0; b < BATCH; b++) { /* lengths apart: sequence b is (5 b) mod 16 tokens shorter */
    tokens[b] -= (uint32_t)(5 * b) % PAGE;
    IKV_CLI_CHECK(ikv_seq_truncate(rt, seqs[b], tokens[b]));
  }
  timing staggered = time_decode_loop(rt, plan, &tables_req, tokens, 0);
  timing router_staggered = time_decode_loop(rt, plan, &req, tokens, 0);
  timing router_churn = time_decode_loop(rt, plan, &req, tokens, 1);

  /* The floor: copying the bytes a built plan holds per page (slot 4, page
   * index 4, first 2, last 2, precision 1) once, on this host. */
  size_t plan_bytes = (size_t)BATCH * PAGES * 13;
  uint8_t *src = malloc(plan_bytes), *dst = malloc(plan_bytes);
  memset(src, 1, plan_bytes), memset(dst, 2, plan_bytes);
  double floor_samples[REPEATS];
  for (int r = 0; r < REPEATS; r++) {
    uint64_t t0 = bench_now_ns();
    memcpy(dst, src, plan_bytes);
    floor_samples[r] = (double)(bench_now_ns() - t0) / 1e3;
  }
  double floor_us = bench_median(floor_samples, REPEATS);
  free(src), free(dst);

  char cpu[256], date[32];
  bench_cpu_name(cpu, sizeof(cpu));
  bench_date(date, sizeof(date));
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (json)
    printf("{\"bench\": \"plan\", \"date\": \"%s\", \"cpu\": \"%s\", \"cores\": %ld, \"batch\": %d, \"context_tokens\": %d, "
           "\"page_size\": %d, \"router_us\": %.1f, \"router_best_us\": %.1f, \"router_pages_selected\": %u, "
           "\"router_pressure_0_9_us\": %.1f, \"router_pressure_0_9_best_us\": %.1f, "
           "\"router_pressure_0_9_pages_selected\": %u, \"tables_us\": %.1f, \"tables_best_us\": %.1f, "
           "\"tables_pages\": %d, \"memcpy_floor_us\": %.1f, \"router_decode_loop_us\": %.1f, "
           "\"router_decode_loop_best_us\": %.1f, \"router_decode_loop_worst_us\": %.1f, \"tables_kept\": %.4f, "
           "\"tables_decode_loop_us\": %.1f, \"tables_decode_loop_best_us\": %.1f, \"tables_decode_loop_worst_us\": %.1f, "
           "\"tables_decode_loop_kept\": %.4f, \"tables_staggered_loop_us\": %.1f, \"tables_staggered_loop_best_us\": %.1f, "
           "\"tables_staggered_loop_worst_us\": %.1f, \"tables_staggered_loop_kept\": %.4f, \"router_kept\": %.4f, "
           "\"router_pressure_0_9_kept\": %.4f, \"router_unkept_us\": %.1f, \"router_unkept_best_us\": %.1f, "
           "\"router_decode_loop_kept\": %.4f, \"router_staggered_loop_us\": %.1f, \"router_staggered_loop_best_us\": %.1f, "
           "\"router_staggered_loop_worst_us\": %.1f, \"router_staggered_loop_kept\": %.4f, "
           "\"router_churn_loop_us\": %.1f, \"router_churn_loop_best_us\": %.1f, \"router_churn_loop_worst_us\": %.1f, "
           "\"router_churn_loop_kept\": %.4f}\n",
           date, cpu, cores, BATCH, CONTEXT, PAGE, router0.median, router0.best, st0.pages_selected, router9.median,
           router9.best, st9.pages_selected, tables.median, tables.best, BATCH * PAGES, floor_us, router_loop.median,
           router_loop.best, router_loop.worst, tables.kept, tables_loop.median, tables_loop.best, tables_loop.worst,
           tables_loop.kept, staggered.median, staggered.best, staggered.worst, staggered.kept, router0.kept, router9.kept,
           router_unkept.median, router_unkept.best, router_loop.kept, router_staggered.median, router_staggered.best,
           router_staggered.worst, router_staggered.kept, router_churn.median, router_churn.best, router_churn.worst,
           router_churn.kept);
  else {
    printf("ikv bench plan  (%s, %ld cores, %s): batch %d x %d tokens, page %d\n", cpu, cores, date, BATCH, CONTEXT, PAGE);
    printf("  router, pressure 0.0            %9.1f us  (best %.1f; %u pages selected; kept %.1f%%)\n", router0.median,
           router0.best, st0.pages_selected, 100 * router0.kept);
    printf("  router, nothing kept            %9.1f us  (best %.1f; the batch reversed every other build: rows cross)\n",
           router_unkept.median, router_unkept.best);
    printf("  router, pressure 0.9            %9.1f us  (best %.1f; %u pages selected; kept %.1f%%)\n", router9.median,
           router9.best, st9.pages_selected, 100 * router9.kept);
    printf("  scheduler tables, every page    %9.1f us  (best %.1f; %d pages; kept %.1f%%)\n", tables.median, tables.best,
           BATCH * PAGES, 100 * tables.kept);
    printf("  memcpy of a plan's bytes        %9.1f us  (13 bytes per page: the floor)\n", floor_us);
    printf("  router, decode loop             %9.1f us  (best %.1f, worst %.1f; kept %.1f%%)\n", router_loop.median,
           router_loop.best, router_loop.worst, 100 * router_loop.kept);
    printf("  scheduler tables, decode loop   %9.1f us  (best %.1f, worst %.1f; kept %.1f%%)\n", tables_loop.median,
           tables_loop.best, tables_loop.worst, 100 * tables_loop.kept);
    printf("  tables, staggered decode loop   %9.1f us  (best %.1f, worst %.1f; kept %.1f%%)\n", staggered.median,
           staggered.best, staggered.worst, 100 * staggered.kept);
    printf("  router, staggered decode loop   %9.1f us  (best %.1f, worst %.1f; kept %.1f%%)\n",
           router_staggered.median, router_staggered.best, router_staggered.worst, 100 * router_staggered.kept);
    printf("  router, a sequence in, one out  %9.1f us  (best %.1f, worst %.1f; kept %.1f%%; the staggered loop, 63 of 64)\n",
           router_churn.median, router_churn.best, router_churn.worst, 100 * router_churn.kept);
  }
  free(slots), free(precs), free(indptr), free(index), free(want);
  ikv_plan_destroy(plan);
  ikv_runtime_destroy(rt);
  return 0;
}
