/* ikv bench step --part select: the GPU's query-aware page selection alone.
 * Per configuration, every page of each sequence's context is a candidate:
 * the scores (Quest's upper bound from the per-channel key minima and
 * maxima, a score per page and KV head) and the per-KV-head top 12.5%,
 * timed as CUDA graph replays, apart and together: the top-k as device
 * selection makes it (found and written into a plan's reserved entries,
 * the candidates in four page formats) and, for the host's budgeted
 * selection, as a ranking of the best. Each replay works through
 * separate sets of summaries, at least four and together twice the L2
 * cache, so a small configuration's summaries come from memory, as they do
 * in a step (whose decodes pass their layers' KV through the L2 between
 * two selections). */
#include <stdlib.h>

#include "kernels/summary_cuda.h"
#include "tools/bench_gpu.h"
#include "tools/bench_select.h"
#include "tools/bench_util.h"

enum { D = BENCH_HEAD_DIM, P = BENCH_PAGE, HQ = BENCH_Q_HEADS, HKV = BENCH_KV_HEADS, ROTATE_MIN = 4,
       ROTATE_MAX = 32, REPLAYS = 20 };

typedef enum { SCORE = 1, RANK = 2, TOPK = 4 } stage;

typedef struct selection {
  ikv_geometry g;
  ikv_cuda_summaries sums;
  uint32_t batch, n, want; /* n: candidates a sequence */
  int sets;                    /* ROTATE_MIN to ROTATE_MAX */
  uint32_t *pages[ROTATE_MAX]; /* device: set r's candidate page ids */
  uint32_t *seq_off;
  float *q;
  uint64_t *keys[ROTATE_MAX];
  ikv_cuda_selection plan[ROTATE_MAX]; /* set r's reserved entries (device) */
} selection;

static void enqueue(const selection *x, int stages, cudaStream_t s) {
  for (int r = 0; r < x->sets; r++) {
    if (stages & SCORE)
      bench_ikv_ok(NULL,
                   ikv_cuda_page_keys_batch(&x->g, &x->sums, 1, x->pages[r], x->seq_off, x->n, x->batch,
                                            x->q, HQ, x->keys[r], s),
                   "ikv_cuda_page_keys_batch");
    if (stages & RANK)
      bench_ikv_ok(NULL,
                   ikv_cuda_rank_keys_batch(HKV, x->keys[r], x->seq_off, x->n, x->batch, x->want, s),
                   "ikv_cuda_rank_keys_batch");
    if (stages & TOPK) bench_ikv_ok(NULL, ikv_cuda_select_scatter(&x->plan[r], s), "ikv_cuda_select_scatter");
  }
}

static void *upload(const void *src, size_t bytes) {
  void *d;
  BENCH_CUDA(cudaMalloc(&d, bytes));
  BENCH_CUDA(cudaMemcpy(d, src, bytes, cudaMemcpyHostToDevice));
  return d;
}

/* Device selection's plan side for set r: candidate i stored in format i % 4
 * of fp16, fp8, int8, int4; each row reserves min(want, candidates of the
 * format) entries a format, cut into 16-page items, as the runtime does. */
static void make_plan(selection *x, int r) {
  enum { FORMATS = 4, PPI = 16 };
  const uint8_t formats[FORMATS] = {IKV_FP16, IKV_FP8_E4M3, IKV_INT8, IKV_INT4};
  const uint32_t rows = x->batch * HKV, per_set = x->batch * x->n;
  ikv_select_candidate *cand = malloc(sizeof(ikv_select_candidate) * per_set);
  int32_t *reserved = malloc(sizeof(int32_t) * rows * IKV_PRECISION_COUNT);
  int32_t *groups = malloc(sizeof(int32_t) * 3 * rows * IKV_PRECISION_COUNT);
  const uint32_t of_format = (x->n + FORMATS - 1) / FORMATS, take = of_format < x->want ? of_format : x->want;
  const uint32_t items_a_group = (take + PPI - 1) / PPI, entries = rows * FORMATS * take;
  ikv_work_item *items = malloc(sizeof(ikv_work_item) * rows * FORMATS * items_a_group);
  if (!cand || !reserved || !groups || !items) bench_cuda_ok(cudaErrorMemoryAllocation, "bench select");
  for (uint32_t i = 0; i < per_set; i++)
    cand[i] = (ikv_select_candidate){.page = (uint32_t)r * per_set + i, .slot = (int32_t)i,
                                     .page_index = (int32_t)(i % x->n), .first = 0, .last = P - 1,
                                     .precision = formats[i % x->n % FORMATS]};
  uint32_t at = 0, n_items = 0;
  for (uint32_t row = 0; row < rows; row++)
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
      int32_t *res = reserved + row * IKV_PRECISION_COUNT + p, *grp = groups + 3 * (row * IKV_PRECISION_COUNT + p);
      *res = grp[0] = -1, grp[1] = grp[2] = 0;
      for (int f = 0; f < FORMATS; f++)
        if (formats[f] == p) {
          *res = (int32_t)at, grp[0] = (int32_t)n_items, grp[1] = (int32_t)items_a_group, grp[2] = (int32_t)(at + take);
          for (uint32_t e = at; e < at + take; e += PPI, n_items++)
            items[n_items] = (ikv_work_item){.row = row, .precision = (uint8_t)p, .begin = e,
                                             .end = e + PPI < at + take ? e + PPI : at + take};
          at += take;
        }
    }
  int32_t *slot, *index;
  uint16_t *first, *last;
  BENCH_CUDA(cudaMalloc((void **)&slot, sizeof(int32_t) * entries));
  BENCH_CUDA(cudaMalloc((void **)&index, sizeof(int32_t) * entries));
  BENCH_CUDA(cudaMalloc((void **)&first, sizeof(uint16_t) * entries));
  BENCH_CUDA(cudaMalloc((void **)&last, sizeof(uint16_t) * entries));
  x->plan[r] = (ikv_cuda_selection){.batch = x->batch, .kv_heads = HKV, .k = x->want, .seq_off = x->seq_off,
                                    .cand = upload(cand, sizeof(ikv_select_candidate) * per_set), .keys = x->keys[r],
                                    .reserved = upload(reserved, sizeof(int32_t) * rows * IKV_PRECISION_COUNT),
                                    .page_slot = slot, .page_index = index, .first = first, .last = last,
                                    .groups = upload(groups, sizeof(int32_t) * 3 * rows * IKV_PRECISION_COUNT),
                                    .items = upload(items, sizeof(ikv_work_item) * n_items), .pages_per_item = PPI,
                                    .longest = x->n};
  free(cand), free(reserved), free(groups), free(items);
}

static void free_plan(ikv_cuda_selection *p) {
  cudaFree((void *)p->cand), cudaFree((void *)p->reserved), cudaFree((void *)p->groups), cudaFree(p->items);
  cudaFree(p->page_slot), cudaFree(p->page_index), cudaFree(p->first), cudaFree(p->last);
}

/* GPU time of one selection (one of the sets) of the given stages. */
static double time_stages(const selection *x, int stages, cudaStream_t s) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  BENCH_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  enqueue(x, stages, s);
  BENCH_CUDA(cudaStreamEndCapture(s, &graph));
  BENCH_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  const double us = bench_replay_us(exec, s, REPLAYS) / x->sets;
  cudaGraphExecDestroy(exec), cudaGraphDestroy(graph);
  return us;
}

static void bench_one(uint32_t batch, uint32_t ctx, double copy_bw, int json, int *first) {
  selection x = {.g = {.layers = 1, .kv_heads = HKV, .head_dim = D, .page_size = P}, .batch = batch, .n = ctx / P};
  x.want = x.n / 8;
  const uint32_t per_set = batch * x.n;
  int device, l2 = 0;
  BENCH_CUDA(cudaGetDevice(&device));
  BENCH_CUDA(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
  const double set_bytes = 2.0 * per_set * HKV * D * sizeof(uint16_t);
  x.sets = ROTATE_MIN;
  while (x.sets < ROTATE_MAX && x.sets * set_bytes < 2.0 * l2) x.sets++;
  const size_t cells = (size_t)per_set * x.sets * HKV * D;
  x.sums.pages = per_set * x.sets;
  BENCH_CUDA(cudaMalloc((void **)&x.sums.kmin, sizeof(uint16_t) * cells));
  BENCH_CUDA(cudaMalloc((void **)&x.sums.kmax, sizeof(uint16_t) * cells));
  x.sums.ksum = NULL; /* the bound reads only the extremes */
  bench_fill_random_f16(x.sums.kmin, cells, -1, 11), bench_fill_random_f16(x.sums.kmax, cells, 1, 12);
  uint32_t *ids = malloc(sizeof(uint32_t) * per_set), *seq_off = malloc(sizeof(uint32_t) * (batch + 1));
  if (!ids || !seq_off) bench_cuda_ok(cudaErrorMemoryAllocation, "bench select");
  for (uint32_t b = 0; b <= batch; b++) seq_off[b] = b * x.n;
  for (int r = 0; r < x.sets; r++) {
    for (uint32_t i = 0; i < per_set; i++) ids[i] = (uint32_t)r * per_set + i;
    BENCH_CUDA(cudaMalloc((void **)&x.pages[r], sizeof(uint32_t) * per_set));
    BENCH_CUDA(cudaMemcpy(x.pages[r], ids, sizeof(uint32_t) * per_set, cudaMemcpyHostToDevice));
    BENCH_CUDA(cudaMalloc((void **)&x.keys[r], sizeof(uint64_t) * per_set * HKV));
  }
  x.seq_off = upload(seq_off, sizeof(uint32_t) * (batch + 1));
  for (int r = 0; r < x.sets; r++) make_plan(&x, r);
  BENCH_CUDA(cudaMalloc((void **)&x.q, sizeof(float) * batch * HQ * D));
  bench_fill_random_f32(x.q, (size_t)batch * HQ * D, 0, 13);
  cudaStream_t s;
  BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  enqueue(&x, SCORE, s); /* keys for the replays without scores (the ranking sorts them in place: top-k first) */
  BENCH_CUDA(cudaStreamSynchronize(s));
  const double score_us = time_stages(&x, SCORE, s), topk_us = time_stages(&x, TOPK, s);
  const double both_us = time_stages(&x, SCORE | TOPK, s), rank_us = time_stages(&x, RANK, s);
  const double bytes = set_bytes; /* minima and maxima */
  const double gbs = bytes / (score_us * 1e-6) / 1e9;
  if (json)
    printf("%s{\"part\": \"select\", \"batch\": %u, \"context\": %u, \"candidates\": %u, \"topk\": %u, "
           "\"score_us\": %.2f, \"topk_us\": %.2f, \"select_us\": %.2f, \"rank_us\": %.2f, \"summary_bytes\": %.0f, "
           "\"summary_sets\": %d, \"score_gbs\": %.1f, \"score_fraction_of_copy\": %.3f}",
           *first ? "" : ", ", batch, ctx, x.n, x.want, score_us, topk_us, both_us, rank_us, bytes, x.sets, gbs,
           gbs * 1e9 / copy_bw);
  else
    printf("select %5u %7u %6u %5u %10.2f %10.2f %10.2f %10.2f %9.1f %8.0f %6.2f\n", batch, ctx, x.n, x.want,
           score_us, topk_us, both_us, rank_us, bytes / 1e6, gbs, gbs * 1e9 / copy_bw);
  *first = 0;
  cudaStreamDestroy(s);
  for (int r = 0; r < x.sets; r++) cudaFree(x.pages[r]), cudaFree(x.keys[r]), free_plan(&x.plan[r]);
  cudaFree(x.sums.kmin), cudaFree(x.sums.kmax), cudaFree(x.seq_off), cudaFree(x.q);
  free(ids), free(seq_off);
}

void bench_select(double copy_bw, int json, int *first) {
  if (!json)
    printf("select %5s %7s %6s %5s %10s %10s %10s %10s %9s %8s %6s\n", "batch", "context", "cand", "topk", "score_us",
           "topk_us", "select_us", "rank_us", "sums_MB", "GB/s", "copy");
  const uint32_t batches[] = {1, 32}, contexts[] = {32768, 131072};
  for (int b = 0; b < 2; b++)
    for (int c = 0; c < 2; c++) bench_one(batches[b], contexts[c], copy_bw, json, first);
}
