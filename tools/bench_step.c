/* ikv bench step: the runtime's step on the CUDA backend, through the public
 * API. write_kv throughput per page format against the copy bandwidth, and
 * whole decode steps of a Llama-3.1-8B-shaped model at 32K context: dense
 * fp16 pages against 12.5% of the pages selected at mixed precision, in the
 * same run. */
#include <stdlib.h>
#include <string.h>

#include "runtime/intentkv.h"
#include "tools/bench_gpu.h"
#include "tools/bench_select.h"
#include "tools/bench_util.h"
#include "tools/ikv_cli.h"

enum { D = BENCH_HEAD_DIM, P = BENCH_PAGE, HQ = BENCH_Q_HEADS, HKV = BENCH_KV_HEADS,
       RECENT_PAGES = 64, WARM = 3, STEPS = 10, REPLAYS = 20 };
#define MAX_FP16_POOL (48ull << 30) /* configurations needing more fp16 pages are skipped */
#define WRITE_TOKENS 65536u

static const char usage[] =
    "usage: ikv bench step [--json] [--context N] [--part write_kv|select|step] [--format NAME]\n\n"
    "Runs the runtime on the CUDA backend (8 KV heads, 32 query heads, head_dim 128,\n"
    "16-token pages, fp16 K/V/q/out):\n"
    "  write_kv  65,536 new tokens of one layer (not the summaries' layer) into\n"
    "            pages of each format; bytes moved = fp16 K and V read + page\n"
    "            bytes written (scales included), against the device-to-device\n"
    "            copy bandwidth (read + write)\n"
    "  select    the GPU's query-aware selection alone, at 32K and 128K context,\n"
    "            batch 1 and 32: every page a candidate, scored by Quest's bound\n"
    "            from the fp16 key minima and maxima (a score per page and KV\n"
    "            head), then each KV head's top 12.5%: graph replays of the\n"
    "            scores, the top-k as device selection makes it (found and\n"
    "            written into a plan's reserved entries), both (select_us), and\n"
    "            the ranking of the best that host-budgeted selection uses\n"
    "            (the summaries come from memory: replays rotate over sets that\n"
    "            together fill twice the L2 cache)\n"
    "  step      decode steps at N context tokens (default 32768), one new token\n"
    "            per sequence: append, plan, then write_kv and decode for every\n"
    "            layer, step end. 'dense': every page in fp16 (scheduler tables).\n"
    "            'select': 12.5% of the pages by tables (the first page and the\n"
    "            last 64 in fp16, the rest of the budget spread over the middle,\n"
    "            alternately fp8 and int4, downgraded by the warm-up steps).\n"
    "            'query': the router picks the same budget per KV head (16 sink\n"
    "            tokens, the last 1024 tokens, the top pages by Quest's bound\n"
    "            from the GPU page summaries), pages read as stored, ranked\n"
    "            on the GPU and sent back (one round trip a plan build).\n"
    "            'device': the same choice made on the GPU and written into\n"
    "            the plan there (select_on_device: no round trip; it runs in\n"
    "            layer 0's decode, inside the graph); sel_us: its GPU time\n"
    "            (layer 0's decode less layer 1's); pages and bytes: those the\n"
    "            GPU picked (ikv_plan_count_selected), not the entries the plan\n"
    "            reserved for them. graph_wall: 10 more steps,\n"
    "            each replaying one captured step (write_kv and decode of\n"
    "            every layer) while ikv_step_graph_key holds; cap: captures.\n"
    "            Batch 1 runs 32 layers; batch 32 runs 8 layers (at 32K, 32\n"
    "            layers of fp16 pages need 137 GB); a configuration needing over\n"
    "            48 GiB of fp16 pages is skipped. wall: host clock from append to\n"
    "            the stream's end (median of 10 steps); gpu: the step's layers\n"
    "            captured in a CUDA graph and replayed (median of 20); plan: the\n"
    "            plan build alone; KV GB/s: the KV bytes the decodes read over\n"
    "            the gpu time, and its fraction of the copy bandwidth (which\n"
    "            counts a copy's reads and writes: reads alone, as a decode's,\n"
    "            can run slightly faster, a dense batch-32 step at 1.00).\n"
    "  --part    runs only that part (default: all three)\n"
    "  --format  write_kv into pages of that format only (fp16, bf16, fp8_e4m3, int8, int4)\n";

typedef struct stepper {
  ikv_runtime *rt;
  ikv_plan *plan;
  cudaStream_t stream;
  ikv_seq_id seqs[32];
  uint32_t batch, layers, ctx, ones[32]; /* ctx: context tokens before the steps */
  int32_t *indptr, *page_index;
  uint8_t *precision;
  int64_t slots[32];
  uint8_t slot_precision[32];
  void *k, *v, *q, *out; /* device; k and v hold ctx tokens */
  float *lse;
  float *score_q; /* host: the router's queries */
  float *d_score_q; /* the same on the device (device selection) */
} stepper;


/* ---- write_kv ---------------------------------------------------------- */

static void bench_write_kv(ikv_precision p, const void *k, const void *v, double copy_bw, int json, int *first) {
  /* layer 0 is timed; layer 1 feeds the page summaries (timed with the steps) */
  ikv_runtime_config cfg = {.geometry = {.layers = 2, .kv_heads = HKV, .head_dim = D, .page_size = P},
                            .q_heads = HQ, .max_sequences = 1, .max_batch = 1, .max_plan_pages = 1,
                            .score_layer = 1, .backend = IKV_BACKEND_CUDA};
  cfg.capacity[IKV_TIER_GPU][p] = WRITE_TOKENS / P;
  ikv_runtime *rt = NULL;
  bench_ikv_ok(NULL, ikv_runtime_create(&cfg, &rt), "ikv_runtime_create");
  ikv_seq_id seq;
  bench_ikv_ok(rt, ikv_seq_create(rt, p, &seq), "ikv_seq_create");
  int64_t *slots = malloc(sizeof(int64_t) * WRITE_TOKENS);
  uint8_t *precs = malloc(WRITE_TOKENS);
  uint32_t n = WRITE_TOKENS;
  bench_ikv_ok(rt, ikv_append(rt, &seq, &n, 1, slots, precs), "ikv_append");
  cudaStream_t s;
  BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  /* once eagerly (uploads the slot mapping), then captured and replayed */
  bench_ikv_ok(rt, ikv_write_kv(rt, 0, k, v, IKV_DTYPE_F16, slots, precs, n, s), "ikv_write_kv");
  BENCH_CUDA(cudaStreamSynchronize(s));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  BENCH_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  bench_ikv_ok(rt, ikv_write_kv(rt, 0, k, v, IKV_DTYPE_F16, slots, precs, n, s), "ikv_write_kv (capture)");
  BENCH_CUDA(cudaStreamEndCapture(s, &graph));
  BENCH_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  double us = bench_replay_us(exec, s, REPLAYS);
  double bytes = 2.0 * WRITE_TOKENS * HKV * D * sizeof(uint16_t) +
                 (double)(WRITE_TOKENS / P) * ikv_page_layer_bytes(&cfg.geometry, p);
  double gbs = bytes / (us * 1e-6) / 1e9;
  if (json)
    printf("%s{\"part\": \"write_kv\", \"format\": \"%s\", \"tokens\": %u, \"time_us\": %.2f, \"bytes\": %.0f, "
           "\"gbs\": %.1f, \"fraction_of_copy\": %.3f}",
           *first ? "" : ", ", ikv_precision_name(p), WRITE_TOKENS, us, bytes, gbs, gbs * 1e9 / copy_bw);
  else
    printf("write_kv %-9s %8u tokens %10.2f us %9.1f MB %8.0f GB/s %6.2f of copy\n", ikv_precision_name(p),
           WRITE_TOKENS, us, bytes / 1e6, gbs, gbs * 1e9 / copy_bw);
  *first = 0;
  cudaGraphExecDestroy(exec), cudaGraphDestroy(graph), cudaStreamDestroy(s);
  free(slots), free(precs);
  ikv_runtime_destroy(rt);
}

/* ---- whole steps --------------------------------------------------------- */

static uint32_t seq_pages(const stepper *st, uint32_t i) {
  ikv_pt_seq_info info;
  bench_ikv_ok(st->rt, ikv_pt_seq_get_info(ikv_runtime_pagetable(st->rt), st->seqs[i], &info), "ikv_pt_seq_get_info");
  return info.pages;
}

/* The step's tables. select: the first page and the last RECENT_PAGES in
 * fp16; the rest of a 12.5% budget at fixed places in the middle (fixed by
 * the initial context, so each is downgraded once), alternately fp8 and int4. */
static void make_tables(stepper *st, int select) {
  const uint32_t base_pages = st->ctx / P, budget = base_pages / 8, middle = budget - 1 - RECENT_PAGES;
  const uint32_t span = base_pages - 1 - RECENT_PAGES; /* the middle of the initial context */
  int32_t e = 0;
  st->indptr[0] = 0;
  for (uint32_t i = 0; i < st->batch; i++) {
    uint32_t n = seq_pages(st, i);
    if (!select) {
      for (uint32_t pg = 0; pg < n; pg++) st->page_index[e] = (int32_t)pg, st->precision[e++] = IKV_FP16;
    } else {
      st->page_index[e] = 0, st->precision[e++] = IKV_FP16;
      for (uint32_t j = 0; j < middle; j++) {
        uint32_t pg = 1 + (uint32_t)((uint64_t)j * span / middle);
        if (pg >= n - RECENT_PAGES) break;
        st->page_index[e] = (int32_t)pg, st->precision[e++] = (j & 1) ? IKV_INT4 : IKV_FP8_E4M3;
      }
      for (uint32_t pg = n - RECENT_PAGES; pg < n; pg++) st->page_index[e] = (int32_t)pg, st->precision[e++] = IKV_FP16;
    }
    st->indptr[i + 1] = e;
  }
}

static void stepper_open(stepper *st, uint32_t batch, uint32_t layers, uint32_t ctx) {
  memset(st, 0, sizeof(*st));
  st->batch = batch, st->layers = layers, st->ctx = ctx;
  const uint32_t pages = batch * (ctx / P + 8); /* room for the steps' new tokens */
  ikv_runtime_config cfg = {.geometry = {.layers = layers, .kv_heads = HKV, .head_dim = D, .page_size = P},
                            .q_heads = HQ, .max_sequences = batch, .max_batch = batch, .max_plan_pages = 2 * pages,
                            .backend = IKV_BACKEND_CUDA};
  cfg.capacity[IKV_TIER_GPU][IKV_FP16] = pages;
  cfg.capacity[IKV_TIER_GPU][IKV_FP8_E4M3] = cfg.capacity[IKV_TIER_GPU][IKV_INT4] = batch * (ctx / P / 16 + 8);
  bench_ikv_ok(NULL, ikv_runtime_create(&cfg, &st->rt), "ikv_runtime_create");
  bench_ikv_ok(st->rt, ikv_plan_create(st->rt, &st->plan), "ikv_plan_create");
  BENCH_CUDA(cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking));
  const size_t kv = (size_t)ctx * HKV * D, qo = (size_t)batch * HQ * D;
  BENCH_CUDA(cudaMalloc(&st->k, sizeof(uint16_t) * kv));
  BENCH_CUDA(cudaMalloc(&st->v, sizeof(uint16_t) * kv));
  BENCH_CUDA(cudaMalloc(&st->q, sizeof(uint16_t) * qo));
  BENCH_CUDA(cudaMalloc(&st->out, sizeof(uint16_t) * qo));
  BENCH_CUDA(cudaMalloc((void **)&st->lse, sizeof(float) * batch * HQ));
  bench_fill_random_f16(st->k, kv, 0, 11), bench_fill_random_f16(st->v, kv, 0, 12), bench_fill_random_f16(st->q, qo, 0, 13);
  st->score_q = malloc(sizeof(float) * qo);
  uint64_t x = 0x5c0e;
  for (size_t i = 0; i < qo; i++) x ^= x << 13, x ^= x >> 7, x ^= x << 17, st->score_q[i] = (float)((x >> 40) * 0x1.0p-23) - 1.0f;
  BENCH_CUDA(cudaMalloc((void **)&st->d_score_q, sizeof(float) * qo));
  BENCH_CUDA(cudaMemcpy(st->d_score_q, st->score_q, sizeof(float) * qo, cudaMemcpyHostToDevice));
  st->indptr = malloc(sizeof(int32_t) * (batch + 1));
  st->page_index = malloc(sizeof(int32_t) * pages);
  st->precision = malloc(pages);
  /* the context: ctx random tokens per sequence, written in every layer */
  int64_t *slots = malloc(sizeof(int64_t) * ctx);
  uint8_t *precs = malloc(ctx);
  for (uint32_t i = 0; i < batch; i++) {
    uint32_t n = ctx;
    st->ones[i] = 1;
    bench_ikv_ok(st->rt, ikv_seq_create(st->rt, IKV_FP16, &st->seqs[i]), "ikv_seq_create");
    bench_ikv_ok(st->rt, ikv_append(st->rt, &st->seqs[i], &n, 1, slots, precs), "ikv_append");
    for (uint32_t l = 0; l < layers; l++)
      bench_ikv_ok(st->rt, ikv_write_kv(st->rt, l, st->k, st->v, IKV_DTYPE_F16, slots, precs, n, st->stream), "ikv_write_kv");
  }
  BENCH_CUDA(cudaStreamSynchronize(st->stream));
  free(slots), free(precs);
}

static void stepper_close(stepper *st) {
  cudaFree(st->k), cudaFree(st->v), cudaFree(st->q), cudaFree(st->out), cudaFree(st->lse);
  cudaStreamDestroy(st->stream);
  free(st->indptr), free(st->page_index), free(st->precision), free(st->score_q);
  cudaFree(st->d_score_q);
  ikv_plan_destroy(st->plan);
  ikv_runtime_destroy(st->rt);
}

/* The layers of the step in flight: write the new token, decode. */
static void run_layers(stepper *st) {
  for (uint32_t l = 0; l < st->layers; l++) {
    bench_ikv_ok(st->rt, ikv_write_kv(st->rt, l, st->k, st->v, IKV_DTYPE_F16, st->slots, st->slot_precision, st->batch, st->stream),
          "ikv_write_kv");
    bench_ikv_ok(st->rt, ikv_decode(st->rt, st->plan, l, st->q, st->out, st->lse, IKV_DTYPE_F16, st->stream), "ikv_decode");
  }
}

typedef struct step_result {
  double wall_us, plan_us, gpu_us;
  double graph_wall_us; /* the same steps replaying one captured step while its graph key holds */
  int captures;
  double select_us; /* device: the selection's GPU time (layer 0's decode less layer 1's) */
  ikv_plan_stats stats;
} step_result;

typedef enum variant { DENSE, SELECT, QUERY, DEVICE } variant;
static const char *const variant_name[] = {"dense", "select", "query", "device"};

/* Median GPU time of one layer's decode alone, captured and replayed. */
static double layer_us(stepper *st, uint32_t layer) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  BENCH_CUDA(cudaStreamBeginCapture(st->stream, cudaStreamCaptureModeThreadLocal));
  bench_ikv_ok(st->rt, ikv_decode(st->rt, st->plan, layer, st->q, st->out, st->lse, IKV_DTYPE_F16, st->stream), "ikv_decode");
  BENCH_CUDA(cudaStreamEndCapture(st->stream, &graph));
  BENCH_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  const double us = bench_replay_us(exec, st->stream, REPLAYS);
  cudaGraphExecDestroy(exec), cudaGraphDestroy(graph);
  return us;
}

/* Warm-up steps, STEPS timed steps, then the last step's layers as a graph. */
static step_result run_steps(stepper *st, variant var) {
  step_result r;
  double wall[STEPS], plan[STEPS];
  const int routed = var == QUERY || var == DEVICE;
  ikv_plan_request req = {.seqs = st->seqs, .batch = st->batch, .mode = routed ? IKV_PLAN_ROUTER : IKV_PLAN_TABLES};
  if (routed) /* the same budget as SELECT, chosen per KV head by Quest's bound, on the host or the GPU */
    req.router = (ikv_router_params){.recent_tokens = RECENT_PAGES * P, .sink_tokens = P, .default_score = 0.5f,
                                     .score_mode = IKV_SCORE_QUERY_BOUND, .topk_pages = st->ctx / P / 8 - 1 - RECENT_PAGES,
                                     .score_q = var == DEVICE ? st->d_score_q : st->score_q,
                                     .select_on_device = var == DEVICE};
  r.select_us = 0.0;
  for (int i = -WARM; i < STEPS; i++) {
    uint64_t t0 = bench_now_ns();
    bench_ikv_ok(st->rt, ikv_append(st->rt, st->seqs, st->ones, st->batch, st->slots, st->slot_precision), "ikv_append");
    if (!routed) {
      make_tables(st, var == SELECT);
      req.tables = (ikv_plan_tables){.indptr = st->indptr, .page_index = st->page_index, .precision = st->precision};
    }
    uint64_t t1 = bench_now_ns();
    bench_ikv_ok(st->rt, ikv_plan_build(st->rt, st->plan, &req), "ikv_plan_build");
    uint64_t t2 = bench_now_ns();
    run_layers(st);
    BENCH_CUDA(cudaStreamSynchronize(st->stream));
    if (i == STEPS - 1) { /* this step's layers, captured and replayed */
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      BENCH_CUDA(cudaStreamBeginCapture(st->stream, cudaStreamCaptureModeThreadLocal));
      run_layers(st);
      BENCH_CUDA(cudaStreamEndCapture(st->stream, &graph));
      BENCH_CUDA(cudaGraphInstantiate(&exec, graph, 0));
      r.gpu_us = bench_replay_us(exec, st->stream, REPLAYS);
      cudaGraphExecDestroy(exec), cudaGraphDestroy(graph);
      if (var == DEVICE) { /* the pages the GPU picked, not the entries the plan reserved for them */
        r.select_us = layer_us(st, 0) - layer_us(st, 1);
        bench_ikv_ok(st->rt, ikv_plan_count_selected(st->rt, st->plan, st->stream), "ikv_plan_count_selected");
      }
      bench_ikv_ok(st->rt, ikv_plan_get_stats(st->plan, &r.stats), "ikv_plan_get_stats");
    }
    bench_ikv_ok(st->rt, ikv_step_end(st->rt, st->plan), "ikv_step_end");
    uint64_t t3 = bench_now_ns();
    if (i >= 0) wall[i] = (double)(t3 - t0) / 1e3, plan[i] = (double)(t2 - t1) / 1e3;
  }
  r.wall_us = bench_median(wall, STEPS), r.plan_us = bench_median(plan, STEPS);
  /* the same steps again, each replaying a graph captured once (afresh only
   * when ikv_step_graph_key changes) */
  cudaGraphExec_t exec = NULL;
  uint64_t captured = 0;
  r.captures = 0;
  for (int i = 0; i < STEPS; i++) {
    uint64_t t0 = bench_now_ns(), key;
    bench_ikv_ok(st->rt, ikv_append(st->rt, st->seqs, st->ones, st->batch, st->slots, st->slot_precision), "ikv_append");
    if (!routed) {
      make_tables(st, var == SELECT);
      req.tables = (ikv_plan_tables){.indptr = st->indptr, .page_index = st->page_index, .precision = st->precision};
    }
    bench_ikv_ok(st->rt, ikv_plan_build(st->rt, st->plan, &req), "ikv_plan_build");
    bench_ikv_ok(st->rt, ikv_step_graph_key(st->rt, st->plan, &key), "ikv_step_graph_key");
    bench_ikv_ok(st->rt, ikv_stream_enter(st->rt, st->stream), "ikv_stream_enter");
    if (!exec || key != captured) {
      cudaGraph_t graph;
      if (exec) cudaGraphExecDestroy(exec);
      BENCH_CUDA(cudaStreamBeginCapture(st->stream, cudaStreamCaptureModeThreadLocal));
      run_layers(st);
      BENCH_CUDA(cudaStreamEndCapture(st->stream, &graph));
      BENCH_CUDA(cudaGraphInstantiate(&exec, graph, 0));
      cudaGraphDestroy(graph);
      captured = key, r.captures++;
    }
    BENCH_CUDA(cudaGraphLaunch(exec, st->stream));
    bench_ikv_ok(st->rt, ikv_stream_leave(st->rt, st->stream), "ikv_stream_leave");
    BENCH_CUDA(cudaStreamSynchronize(st->stream));
    bench_ikv_ok(st->rt, ikv_step_end(st->rt, st->plan), "ikv_step_end");
    wall[i] = (double)(bench_now_ns() - t0) / 1e3;
  }
  cudaGraphExecDestroy(exec);
  r.graph_wall_us = bench_median(wall, STEPS);
  return r;
}

static void report_step(const stepper *st, variant var, const step_result *r, double dense_gpu,
                        double dense_wall, double copy_bw, int json, int *first) {
  const uint32_t batch = st->batch, layers = st->layers;
  double kv = (double)r->stats.bytes_read * layers, gbs = kv / (r->gpu_us * 1e-6) / 1e9;
  double share = (double)r->stats.bytes_read / (double)r->stats.bytes_dense_fp16;
  if (json)
    printf("%s{\"part\": \"step\", \"batch\": %u, \"layers\": %u, \"context\": %u, \"variant\": \"%s\", "
           "\"pages_read\": %u, \"kv_bytes_step\": %.0f, \"share_of_dense\": %.4f, \"plan_us\": %.1f, \"wall_us\": %.1f, "
           "\"gpu_us\": %.1f, \"gpu_us_per_layer\": %.2f, \"kv_gbs\": %.1f, \"fraction_of_copy\": %.3f, "
           "\"speedup_gpu\": %.2f, \"speedup_wall\": %.2f, \"select_us\": %.1f, \"graph_wall_us\": %.1f, "
           "\"graph_captures\": %d, \"speedup_graph_wall\": %.2f}",
           *first ? "" : ", ", batch, layers, st->ctx, variant_name[var], r->stats.pages_selected, kv, share, r->plan_us, r->wall_us,
           r->gpu_us, r->gpu_us / layers, gbs, gbs * 1e9 / copy_bw, dense_gpu / r->gpu_us, dense_wall / r->wall_us, r->select_us,
           r->graph_wall_us, r->captures, dense_wall / r->graph_wall_us);
  else
    printf("step %5u %6u %-7s %7u %9.1f %6.1f%% %9.1f %10.1f %10.1f %8.2f %7.0f %6.2f %7.2fx %7.2fx %7.1f %10.1f %3d\n", batch,
           layers, variant_name[var], r->stats.pages_selected, kv / 1e6, 100 * share, r->plan_us, r->wall_us, r->gpu_us,
           r->gpu_us / layers, gbs, gbs * 1e9 / copy_bw, dense_gpu / r->gpu_us, dense_wall / r->wall_us, r->select_us,
           r->graph_wall_us, r->captures);
  *first = 0;
}

int ikv_bench_step(int argc, char **argv) {
  if (ikv_wants_help(argc, argv, usage)) return 0;
  int json = ikv_has_flag(argc, argv, "--json"), first = 1;
  uint32_t ctx;
  if (!ikv_flag_u32(argc, argv, "--context", 32768, &ctx)) return 2;
  const char *part = ikv_flag_value(argc, argv, "--part");
  if (part && strcmp(part, "write_kv") && strcmp(part, "select") && strcmp(part, "step")) {
    fprintf(stderr, "ikv bench step: --part must be write_kv, select or step\n");
    return 2;
  }
  const int run_write_kv = !part || !strcmp(part, "write_kv"), run_select = !part || !strcmp(part, "select"),
            run_step = !part || !strcmp(part, "step");
  const char *format = ikv_flag_value(argc, argv, "--format");
  int only = -1;
  for (int p = 0; format && p < IKV_PRECISION_COUNT; p++)
    if (!strcmp(format, ikv_precision_name((ikv_precision)p))) only = p;
  if (format && only < 0) {
    fprintf(stderr, "ikv bench step: unknown --format %s\n", format);
    return 2;
  }
  /* 12.5% of the pages must hold the first page and the last RECENT_PAGES */
  const uint32_t min_ctx = 8 * (RECENT_PAGES + 2) * P;
  if (ctx < min_ctx || ctx > (1u << 20) || ctx % P) {
    fprintf(stderr, "ikv bench step: --context must be a multiple of %d in [%u, 1048576]\n", P, min_ctx);
    return 2;
  }
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    fprintf(stderr, "ikv bench step: no CUDA device\n");
    return 1;
  }
  struct cudaDeviceProp prop;
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  void *scratch;
  BENCH_CUDA(cudaMalloc(&scratch, 4ull << 30));
  double copy_bw = bench_copy_bandwidth(scratch);
  BENCH_CUDA(cudaFree(scratch));
  char date[32];
  bench_date(date, sizeof(date));
  if (json)
    printf("{\"bench\": \"step\", \"device\": \"%s\", \"date\": \"%s\", \"copy_bandwidth_gbs\": %.1f, \"results\": [",
           prop.name, date, copy_bw / 1e9);
  else
    printf("ikv bench step on %s (%s): copy bandwidth %.0f GB/s (read + write)\n", prop.name, date, copy_bw / 1e9);

  void *k, *v;
  const size_t n = (size_t)WRITE_TOKENS * HKV * D;
  BENCH_CUDA(cudaMalloc(&k, sizeof(uint16_t) * n));
  BENCH_CUDA(cudaMalloc(&v, sizeof(uint16_t) * n));
  bench_fill_random_f16(k, n, 0, 1), bench_fill_random_f16(v, n, 0, 2);
  for (int p = 0; run_write_kv && p < IKV_PRECISION_COUNT; p++)
    if (only < 0 || p == only) bench_write_kv((ikv_precision)p, k, v, copy_bw, json, &first);
  cudaFree(k), cudaFree(v);
  if (run_select) bench_select(copy_bw, json, &first);

  if (!json && run_step)
    printf("step %5s %6s %-7s %7s %9s %7s %9s %10s %10s %8s %7s %6s %8s %8s %7s %10s %3s\n", "batch", "layers", "variant",
           "pages", "KV_MB", "share", "plan_us", "wall_us", "gpu_us", "us/layer", "GB/s", "copy", "gpu_x", "wall_x", "sel_us",
           "graph_wall", "cap");
  const uint32_t batches[] = {1, 32}, layers[] = {32, 8};
  for (int b = 0; run_step && b < 2; b++) {
    const uint64_t fp16_bytes = (uint64_t)batches[b] * (ctx / P + 8) * layers[b] * HKV * 2 * P * D * sizeof(uint16_t);
    if (fp16_bytes > MAX_FP16_POOL) {
      if (json) printf("%s{\"part\": \"step\", \"batch\": %u, \"layers\": %u, \"context\": %u, \"skipped\": \"fp16 pages exceed 48 GiB\"}",
                       first ? "" : ", ", batches[b], layers[b], ctx);
      else printf("step %5u %6u skipped: %.0f GB of fp16 pages\n", batches[b], layers[b], fp16_bytes / 1e9);
      first = 0;
      continue;
    }
    stepper st;
    stepper_open(&st, batches[b], layers[b], ctx);
    step_result dense = run_steps(&st, DENSE);
    report_step(&st, DENSE, &dense, dense.gpu_us, dense.wall_us, copy_bw, json, &first);
    for (variant v = SELECT; v <= DEVICE; v++) {
      step_result r = run_steps(&st, v);
      report_step(&st, v, &r, dense.gpu_us, dense.wall_us, copy_bw, json, &first);
    }
    fflush(stdout);
    stepper_close(&st);
  }
  if (json) printf("]}\n");
  return 0;
}
