/* ikv bench prefetch: pages between the host tier and the GPU on the CUDA
 * backend, and the prefetcher replaying a synthetic agentic trace, real
 * against simulated, in one run. */
#include <stdlib.h>
#include <string.h>

#include "kernels/copy_cuda.h"
#include "prefetch/sim.h"
#include "runtime/intentkv.h"
#include "tools/bench_gpu.h"
#include "tools/bench_util.h"
#include "tools/ikv_cli.h"

enum { D = BENCH_HEAD_DIM, P = BENCH_PAGE, HQ = BENCH_Q_HEADS, HKV = BENCH_KV_HEADS,
       LAYERS = 32, REPS = 7, CHUNK = 4096, BATCH_PIECES = 4096 };
/* How a copy of many pieces is issued. */
typedef enum copy_way { ONE_CALL_EACH = 0, BATCHED_DMA, SM_COPY } copy_way;
static const char *const way_names[] = {"one call each", "batched", "SM copy"};
#define COPY_BYTES (1ull << 30)

static const char usage[] =
    "usage: ikv bench prefetch [--json] [--seqs N] [--steps N] [--tokens N] [--seed N] [--repeat N]\n\n"
    "On the CUDA backend, a Llama-3.1-8B-shaped cache (32 layers, 8 KV heads,\n"
    "head_dim 128, 16-token fp16 pages: 64 KiB a page and layer):\n"
    "  transfer      host -> GPU: the pinned peak (one 1 GiB cudaMemcpyAsync from\n"
    "                pinned memory), then 1 GiB in scattered page-sized pieces\n"
    "                (16 and 64 KiB): one cudaMemcpyAsync each, batched\n"
    "                (cudaMemcpyBatchAsync), and by 16-64 thread blocks reading\n"
    "                the pinned memory (kernels/copy_cuda.h; the runtime copies\n"
    "                pieces under 32 KiB so, larger ones batched), and the\n"
    "                runtime's own demand fetch of 64 and 512 pages (128 MiB,\n"
    "                1 GiB), timed on the GPU; median of 7\n"
    "  interference  a decode step (32 layers, 4 sequences of 16K tokens, fp16,\n"
    "                a CUDA graph) alone and with a 1 GiB page copy running on\n"
    "                another stream (64 KiB pieces batched; 16 KiB pieces by\n"
    "                16-64 SM blocks); median of 7\n"
    "  trace         a synthetic agentic trace (`ikv trace gen`; default 2\n"
    "                sequences, 60 steps, growing to 131,072 tokens; pages all\n"
    "                fp16) replayed for real with a GPU tier of 10% of the KV\n"
    "                (every page of the sequences; at least what a step reads)\n"
    "                and a host tier holding it all: hit rate and stall per\n"
    "                step (device time of demand fetches) per predictor, beside\n"
    "                `ikv sim` on the same trace with the same cache bytes, the\n"
    "                link speed of the 64-page demand fetch above (about what a\n"
    "                step fetches) and the step time\n"
    "                measured without prefetching; the prefetcher's budget is\n"
    "                the same in both (link GB/s x step time). Each replay\n"
    "                starts with the context on the host. --repeat N (default 3,\n"
    "                at most 16): the demand fetches and every replay run N\n"
    "                times, medians reported (the link varies run to run).\n";

/* ---- transfers --------------------------------------------------------------- */

typedef struct copy_bufs {
  uint8_t *host, *dev; /* COPY_BYTES each: pinned, device */
  ikv_copy_piece *desc; /* mapped pinned: SM_COPY's list */
  uint32_t sm_blocks;   /* SM_COPY's thread blocks */
  cudaStream_t s;
  cudaEvent_t a, b;
} copy_bufs;

/* 1 GiB in pieces of `piece` bytes at shuffled places on both sides. */
static void enqueue_pieces(copy_bufs *c, size_t piece, copy_way way, cudaStream_t s) {
  const size_t n = COPY_BYTES / piece;
  static void *dsts[BATCH_PIECES], *srcs[BATCH_PIECES];
  static size_t sizes[BATCH_PIECES];
  for (size_t i = 0, k = 0; i < n; i++) {
    const size_t at = (i * 7919) % n; /* n is a power of 2: a prime stride visits every piece once, out of order */
    dsts[k] = c->dev + ((n - 1 - at) * piece), srcs[k] = c->host + at * piece, sizes[k] = piece;
    if (way == SM_COPY) {
      c->desc[i] = (ikv_copy_piece){srcs[k], dsts[k], piece};
    } else if (way == ONE_CALL_EACH) {
      BENCH_CUDA(cudaMemcpyAsync(dsts[k], srcs[k], piece, cudaMemcpyHostToDevice, s));
    } else if (++k == BATCH_PIECES || i + 1 == n) {
      struct cudaMemcpyAttributes attr;
      memset(&attr, 0, sizeof(attr));
      attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
      attr.flags = cudaMemcpyFlagPreferOverlapWithCompute;
      size_t idx = 0;
      BENCH_CUDA(cudaMemcpyBatchAsync(dsts, (const void **)srcs, sizes, k, &attr, &idx, 1, s));
      k = 0;
    }
  }
  if (way == SM_COPY && ikv_cuda_copy_pieces(c->desc, (uint32_t)n, c->sm_blocks, s) != IKV_OK)
    bench_cuda_ok(cudaErrorLaunchFailure, "ikv_cuda_copy_pieces");
}

/* piece 0: one copy of the whole buffer. Median GB/s of REPS. */
static double copy_gbs(copy_bufs *c, size_t piece, copy_way way) {
  double samples[REPS];
  for (int r = -1; r < REPS; r++) {
    BENCH_CUDA(cudaStreamSynchronize(c->s)); /* the SM copy's list is rewritten */
    BENCH_CUDA(cudaEventRecord(c->a, c->s));
    if (!piece) BENCH_CUDA(cudaMemcpyAsync(c->dev, c->host, COPY_BYTES, cudaMemcpyHostToDevice, c->s));
    else enqueue_pieces(c, piece, way, c->s);
    BENCH_CUDA(cudaEventRecord(c->b, c->s));
    BENCH_CUDA(cudaEventSynchronize(c->b));
    if (r >= 0) samples[r] = COPY_BYTES / (bench_elapsed_ms(c->a, c->b) * 1e-3) / 1e9;
  }
  return bench_median(samples, REPS);
}

static ikv_runtime_config llama_config(uint32_t gpu_pages, uint32_t host_pages, uint32_t batch, uint32_t plan_pages) {
  ikv_runtime_config c = {.geometry = {.layers = LAYERS, .kv_heads = HKV, .head_dim = D, .page_size = P},
                          .q_heads = HQ, .max_sequences = batch, .max_batch = batch, .max_plan_pages = plan_pages,
                          .backend = IKV_BACKEND_CUDA};
  c.capacity[IKV_TIER_GPU][IKV_FP16] = gpu_pages;
  c.capacity[IKV_TIER_HOST][IKV_FP16] = host_pages;
  return c;
}

/* Random K/V for CHUNK tokens, device. */
typedef struct kv_src {
  void *k, *v;
  int64_t slots[CHUNK];
  uint8_t precs[CHUNK];
} kv_src;

/* n new tokens for a sequence, written in every layer, in chunks of at most
 * `chunk` tokens (appends make room on the GPU tier for a chunk at a time). */
static void grow(ikv_runtime *rt, ikv_seq_id seq, uint32_t n, uint32_t chunk, kv_src *src, cudaStream_t s) {
  for (uint32_t done = 0; done < n;) {
    uint32_t m = n - done < chunk ? n - done : chunk;
    bench_ikv_ok(rt, ikv_append(rt, &seq, &m, 1, src->slots, src->precs), "ikv_append");
    for (uint32_t l = 0; l < LAYERS; l++)
      bench_ikv_ok(rt, ikv_write_kv(rt, l, src->k, src->v, IKV_DTYPE_F16, src->slots, src->precs, m, s), "ikv_write_kv");
    done += m;
  }
}

/* A decode's device query (random), output and LSE for `batch` sequences. */
typedef struct decode_io {
  void *q, *out;
  float *lse;
} decode_io;

static decode_io decode_io_alloc(uint32_t batch, unsigned long long seed) {
  decode_io io;
  BENCH_CUDA(cudaMalloc(&io.q, sizeof(uint16_t) * batch * HQ * D));
  BENCH_CUDA(cudaMalloc(&io.out, sizeof(uint16_t) * batch * HQ * D));
  BENCH_CUDA(cudaMalloc((void **)&io.lse, sizeof(float) * batch * HQ));
  bench_fill_random_f16(io.q, (size_t)batch * HQ * D, 0, seed);
  return io;
}

static void decode_io_free(decode_io *io) { cudaFree(io->q), cudaFree(io->out), cudaFree(io->lse); }

/* Pages [0, pages) of each of the batch's sequences, fp16 (dense tables). */
static void dense_tables(uint32_t batch, uint32_t pages, int32_t *indptr, int32_t *index, uint8_t *prec) {
  indptr[0] = 0;
  for (uint32_t b = 0; b < batch; b++) {
    for (uint32_t i = 0; i < pages; i++) index[b * pages + i] = (int32_t)i, prec[b * pages + i] = IKV_FP16;
    indptr[b + 1] = (int32_t)((b + 1) * pages);
  }
}

/* The runtime's demand fetch of `pages` pages offloaded just before: GB/s
 * from the device time it reports (ikv_runtime_stats.stall_us). */
enum { MAX_FETCH = 512 };
static double runtime_fetch_gbs(uint32_t pages, kv_src *src, cudaStream_t s) {
  const uint32_t PAGES = pages;
  ikv_runtime_config cfg = llama_config(PAGES, PAGES, 1, PAGES);
  ikv_runtime *rt;
  ikv_plan *plan;
  ikv_seq_id seq;
  bench_ikv_ok(NULL, ikv_runtime_create(&cfg, &rt), "ikv_runtime_create");
  bench_ikv_ok(rt, ikv_plan_create(rt, &plan), "ikv_plan_create");
  bench_ikv_ok(rt, ikv_seq_create(rt, IKV_FP16, &seq), "ikv_seq_create");
  grow(rt, seq, PAGES * P, CHUNK, src, s);
  BENCH_CUDA(cudaStreamSynchronize(s));
  int32_t indptr[2], index[MAX_FETCH];
  uint8_t prec[MAX_FETCH];
  dense_tables(1, PAGES, indptr, index, prec);
  ikv_plan_request req = {.seqs = &seq, .batch = 1, .mode = IKV_PLAN_TABLES,
                          .tables = {.indptr = indptr, .page_index = index, .precision = prec}};
  double samples[REPS];
  for (int r = -1; r < REPS; r++) {
    ikv_runtime_stats before, after;
    bench_ikv_ok(rt, ikv_seq_offload(rt, seq, 0, PAGES), "ikv_seq_offload");
    bench_ikv_ok(rt, ikv_runtime_get_stats(rt, &before), "stats");
    bench_ikv_ok(rt, ikv_plan_build(rt, plan, &req), "ikv_plan_build");
    BENCH_CUDA(cudaDeviceSynchronize());
    bench_ikv_ok(rt, ikv_step_end(rt, plan), "ikv_step_end");
    bench_ikv_ok(rt, ikv_runtime_get_stats(rt, &after), "stats");
    if (r >= 0) samples[r] = (double)(after.bytes_h2d - before.bytes_h2d) / (after.stall_us - before.stall_us) / 1e3;
  }
  ikv_plan_destroy(plan);
  ikv_runtime_destroy(rt);
  return bench_median(samples, REPS);
}

static void report(int json, int *first, const char *part, const char *what, double value, const char *unit,
                   double of_peak) {
  if (json)
    printf("%s{\"part\": \"%s\", \"what\": \"%s\", \"%s\": %.2f, \"fraction\": %.3f}", *first ? "" : ", ", part,
           what, unit, value, of_peak);
  else
    printf("%-12s %-54s %10.2f %-8s %6.3f\n", part, what, value, unit, of_peak);
  *first = 0;
}

/* ---- interference ------------------------------------------------------------- */

static void interference(copy_bufs *c, kv_src *src, int json, int *first) {
  enum { SEQS = 4, PAGES = 1024 };
  ikv_runtime_config cfg = llama_config(SEQS * (PAGES + 1), 0, SEQS, SEQS * PAGES);
  ikv_runtime *rt;
  ikv_plan *plan;
  ikv_seq_id seqs[SEQS];
  bench_ikv_ok(NULL, ikv_runtime_create(&cfg, &rt), "ikv_runtime_create");
  bench_ikv_ok(rt, ikv_plan_create(rt, &plan), "ikv_plan_create");
  for (int i = 0; i < SEQS; i++) {
    bench_ikv_ok(rt, ikv_seq_create(rt, IKV_FP16, &seqs[i]), "ikv_seq_create");
    grow(rt, seqs[i], PAGES * P, CHUNK, src, c->s);
  }
  int32_t indptr[SEQS + 1], *index = malloc(sizeof(int32_t) * SEQS * PAGES);
  uint8_t *prec = malloc(SEQS * PAGES);
  dense_tables(SEQS, PAGES, indptr, index, prec);
  ikv_plan_request req = {.seqs = seqs, .batch = SEQS, .mode = IKV_PLAN_TABLES,
                          .tables = {.indptr = indptr, .page_index = index, .precision = prec}};
  bench_ikv_ok(rt, ikv_plan_build(rt, plan, &req), "ikv_plan_build");
  decode_io io = decode_io_alloc(SEQS, 21);
  BENCH_CUDA(cudaDeviceSynchronize()); /* the plan's uploads, before capturing */
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  BENCH_CUDA(cudaStreamBeginCapture(c->s, cudaStreamCaptureModeThreadLocal));
  for (uint32_t l = 0; l < LAYERS; l++)
    bench_ikv_ok(rt, ikv_decode(rt, plan, l, io.q, io.out, io.lse, IKV_DTYPE_F16, c->s), "ikv_decode");
  BENCH_CUDA(cudaStreamEndCapture(c->s, &graph));
  BENCH_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  cudaStream_t copier;
  cudaEvent_t ca, cb;
  BENCH_CUDA(cudaStreamCreateWithFlags(&copier, cudaStreamNonBlocking));
  BENCH_CUDA(cudaEventCreate(&ca));
  BENCH_CUDA(cudaEventCreate(&cb));
  /* busy: nothing, 64 KiB pieces batched, 16 KiB pieces by 16, 32, 64 blocks */
  enum { BUSY = 5 };
  double took[BUSY][REPS], copy[BUSY][REPS];
  for (int r = -1; r < REPS; r++)
    for (int busy = 0; busy < BUSY; busy++) {
      if (busy) { /* the copy starts first and outlasts the step */
        c->sm_blocks = 16u << (busy - 2);
        BENCH_CUDA(cudaEventRecord(ca, copier));
        enqueue_pieces(c, busy == 1 ? 65536 : 16384, busy == 1 ? BATCHED_DMA : SM_COPY, copier);
        BENCH_CUDA(cudaEventRecord(cb, copier));
      }
      BENCH_CUDA(cudaEventRecord(c->a, c->s));
      BENCH_CUDA(cudaGraphLaunch(exec, c->s));
      BENCH_CUDA(cudaEventRecord(c->b, c->s));
      BENCH_CUDA(cudaDeviceSynchronize());
      if (r < 0) continue;
      took[busy][r] = 1e3 * bench_elapsed_ms(c->a, c->b);
      if (busy) copy[busy][r] = COPY_BYTES / (bench_elapsed_ms(ca, cb) * 1e-3) / 1e9;
    }
  const double t0 = bench_median(took[0], REPS);
  report(json, first, "interference", "decode step alone (us)", t0, "us", 1.0);
  for (int busy = 1; busy < BUSY; busy++) {
    char what[96];
    const double t1 = bench_median(took[busy], REPS);
    if (busy == 1) snprintf(what, sizeof(what), "decode step, 64 KiB pages batched meanwhile");
    else snprintf(what, sizeof(what), "decode step, 16 KiB pages by %u SM blocks meanwhile", 16u << (busy - 2));
    report(json, first, "interference", what, t1, "us", t1 / t0);
    report(json, first, "interference", "  that copy meanwhile", bench_median(copy[busy], REPS), "gbs", 0.0);
  }
  cudaGraphExecDestroy(exec), cudaGraphDestroy(graph);
  cudaStreamDestroy(copier), cudaEventDestroy(ca), cudaEventDestroy(cb);
  decode_io_free(&io);
  free(index), free(prec);
  ikv_plan_destroy(plan);
  ikv_runtime_destroy(rt);
}

/* ---- the trace, real and simulated ---------------------------------------------- */

typedef struct replay_result {
  double hit_rate, stall_us_per_step, compute_us, bytes_h2d_per_step;
  uint64_t prefetched, late;
} replay_result;

/* Highest page + 1 each sequence reads at each step, and overall. */
static uint32_t seq_pages_at(const ikv_trace *t, uint32_t seq, uint32_t step) {
  uint32_t hi = 0;
  for (uint32_t r = t->step_start[step]; r < t->step_start[step + 1]; r++)
    if (t->refs[r].seq == seq && t->refs[r].page + 1 > hi) hi = t->refs[r].page + 1;
  return hi;
}

static int cmp_i32(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

static void replay(const ikv_trace *t, uint32_t n_seqs, uint32_t gpu_pages, uint32_t host_pages, uint32_t widest,
                   ikv_prefetch_config pf, kv_src *src, replay_result *res) {
  ikv_runtime_config cfg = llama_config(gpu_pages, host_pages, n_seqs, widest);
  cfg.prefetch = pf;
  ikv_runtime *rt;
  ikv_plan *plan;
  bench_ikv_ok(NULL, ikv_runtime_create(&cfg, &rt), "ikv_runtime_create");
  bench_ikv_ok(rt, ikv_plan_create(rt, &plan), "ikv_plan_create");
  cudaStream_t s;
  cudaEvent_t a, b;
  BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  BENCH_CUDA(cudaEventCreate(&a));
  BENCH_CUDA(cudaEventCreate(&b));
  ikv_seq_id *seqs = malloc(sizeof(ikv_seq_id) * n_seqs), *batch = malloc(sizeof(ikv_seq_id) * n_seqs);
  uint32_t *pages = calloc(n_seqs, sizeof(uint32_t));
  const uint32_t chunk = gpu_pages / 4 * P < CHUNK ? gpu_pages / 4 * P : CHUNK;
  for (uint32_t i = 0; i < n_seqs; i++) { /* the context of step 0, then all of it to the host */
    bench_ikv_ok(rt, ikv_seq_create(rt, IKV_FP16, &seqs[i]), "ikv_seq_create");
    pages[i] = seq_pages_at(t, i, 0);
    grow(rt, seqs[i], pages[i] * P, chunk, src, s);
    BENCH_CUDA(cudaStreamSynchronize(s));
    bench_ikv_ok(rt, ikv_seq_offload(rt, seqs[i], 0, pages[i]), "ikv_seq_offload");
  }
  decode_io io = decode_io_alloc(n_seqs, 31);
  int32_t *indptr = malloc(sizeof(int32_t) * (n_seqs + 1)), *index = malloc(sizeof(int32_t) * widest);
  uint8_t *prec = malloc(widest);
  memset(prec, IKV_FP16, widest);
  double *compute = malloc(sizeof(double) * t->n_steps);
  size_t hint = 0;
  ikv_runtime_stats st0;
  bench_ikv_ok(rt, ikv_runtime_get_stats(rt, &st0), "stats");
  for (uint32_t step = 0; step < t->n_steps; step++) {
    uint32_t nb = 0, e = 0;
    indptr[0] = 0;
    for (uint32_t i = 0; i < n_seqs; i++) {
      const uint32_t want = seq_pages_at(t, i, step);
      if (!want) continue;
      if (want > pages[i]) grow(rt, seqs[i], (want - pages[i]) * P, chunk, src, s), pages[i] = want; /* written on the GPU */
      const uint32_t first = e;
      for (uint32_t r = t->step_start[step]; r < t->step_start[step + 1]; r++)
        if (t->refs[r].seq == i) index[e++] = (int32_t)t->refs[r].page;
      qsort(index + first, e - first, sizeof(int32_t), cmp_i32);
      uint32_t w = first; /* distinct */
      for (uint32_t k = first; k < e; k++)
        if (k == first || index[k] != index[w - 1]) index[w++] = index[k];
      e = w;
      batch[nb++] = seqs[i], indptr[nb] = (int32_t)e;
    }
    /* the scheduler's hints said during this step: spans it will read next */
    ikv_span_id hinted[64];
    ikv_seq_id hinted_seq[64];
    uint32_t n_hinted = 0;
    for (; hint < t->n_hints && t->hints[hint].step == step; hint++) {
      const ikv_trace_hint *h = &t->hints[hint];
      if (h->source != IKV_HINT_SCHEDULER || h->seq >= n_seqs || n_hinted == 64) continue;
      const uint32_t lo = h->first * P, hi = (h->first + h->count) * P < pages[h->seq] * P ? (h->first + h->count) * P
                                                                                          : pages[h->seq] * P;
      if (lo >= hi) continue;
      ikv_span sp = {lo, hi, IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.5f, IKV_UNPINNED_PRECISION};
      bench_ikv_ok(rt, ikv_span_add(rt, seqs[h->seq], &sp, &hinted[n_hinted]), "ikv_span_add");
      bench_ikv_ok(rt, ikv_span_hint(rt, seqs[h->seq], hinted[n_hinted]), "ikv_span_hint");
      hinted_seq[n_hinted++] = seqs[h->seq];
    }
    ikv_plan_request req = {.seqs = batch, .batch = nb, .mode = IKV_PLAN_TABLES,
                            .tables = {.indptr = indptr, .page_index = index, .precision = prec}};
    ikv_runtime_stats before, after;
    bench_ikv_ok(rt, ikv_runtime_get_stats(rt, &before), "stats");
    bench_ikv_ok(rt, ikv_plan_build(rt, plan, &req), "ikv_plan_build");
    BENCH_CUDA(cudaEventRecord(a, s));
    for (uint32_t l = 0; l < LAYERS; l++)
      bench_ikv_ok(rt, ikv_decode(rt, plan, l, io.q, io.out, io.lse, IKV_DTYPE_F16, s), "ikv_decode");
    BENCH_CUDA(cudaEventRecord(b, s));
    BENCH_CUDA(cudaStreamSynchronize(s));
    bench_ikv_ok(rt, ikv_step_end(rt, plan), "ikv_step_end");
    bench_ikv_ok(rt, ikv_runtime_get_stats(rt, &after), "stats");
    /* the decode waited for this step's demand fetches: the rest is compute */
    compute[step] = 1e3 * bench_elapsed_ms(a, b) - (after.stall_us - before.stall_us);
    if (compute[step] < 0.0) compute[step] = 0.0; /* two clocks */
    for (uint32_t k = 0; k < n_hinted; k++) ikv_span_remove(rt, hinted_seq[k], hinted[k]);
  }
  BENCH_CUDA(cudaDeviceSynchronize());
  ikv_runtime_stats st;
  bench_ikv_ok(rt, ikv_runtime_get_stats(rt, &st), "stats");
  res->hit_rate = (double)(st.pages_hit - st0.pages_hit) / (double)(st.pages_read - st0.pages_read);
  res->stall_us_per_step = (st.stall_us - st0.stall_us) / t->n_steps;
  res->bytes_h2d_per_step = (double)(st.bytes_h2d - st0.bytes_h2d) / t->n_steps;
  res->prefetched = st.prefetched, res->late = st.prefetch_late;
  res->compute_us = bench_median(compute, (int)t->n_steps);
  free(compute), free(indptr), free(index), free(prec), free(seqs), free(batch), free(pages);
  decode_io_free(&io);
  cudaStreamDestroy(s), cudaEventDestroy(a), cudaEventDestroy(b);
  ikv_plan_destroy(plan);
  ikv_runtime_destroy(rt);
}

/* The median of `repeat` replays (stall and compute; the rest is the same each time). */
static void replay_median(const ikv_trace *t, uint32_t n_seqs, uint32_t gpu_pages, uint32_t host_pages, uint32_t widest,
                          ikv_prefetch_config pf, kv_src *src, uint32_t repeat, replay_result *res) {
  double stall[16], compute[16];
  for (uint32_t i = 0; i < repeat; i++) {
    replay(t, n_seqs, gpu_pages, host_pages, widest, pf, src, res);
    stall[i] = res->stall_us_per_step, compute[i] = res->compute_us;
  }
  res->stall_us_per_step = bench_median(stall, (int)repeat), res->compute_us = bench_median(compute, (int)repeat);
}

static void trace_part(uint32_t n_seqs, uint32_t steps, uint32_t tokens, uint64_t seed, double link_gbs, uint32_t repeat,
                       kv_src *src, int json, int *first) {
  ikv_trace_gen_params gp = {.seed = seed, .sequences = n_seqs, .steps = steps, .max_tokens = tokens,
                             .geometry = {.layers = LAYERS, .kv_heads = HKV, .head_dim = D, .page_size = P}};
  ikv_trace t;
  bench_ikv_ok(NULL, ikv_trace_generate(&gp, &t), "ikv_trace_generate");
  /* one precision, so both sides move the same bytes; the page counts: of
   * the KV (every page of every sequence), and those the trace reads */
  uint32_t distinct = 0, kv_pages = 0, widest = 1;
  uint8_t *seen = NULL;
  for (uint32_t i = 0; i < n_seqs; i++) {
    uint32_t hi = 0;
    for (size_t r = 0; r < t.n_refs; r++)
      if (t.refs[r].seq == i && t.refs[r].page + 1 > hi) hi = t.refs[r].page + 1;
    seen = realloc(seen, hi + 1);
    memset(seen, 0, hi + 1);
    for (size_t r = 0; r < t.n_refs; r++)
      if (t.refs[r].seq == i) distinct += !seen[t.refs[r].page], seen[t.refs[r].page] = 1;
    kv_pages += hi;
  }
  free(seen);
  for (size_t r = 0; r < t.n_refs; r++) t.refs[r].precision = IKV_FP16;
  for (uint32_t st = 0; st < t.n_steps; st++)
    if (t.step_start[st + 1] - t.step_start[st] > widest) widest = t.step_start[st + 1] - t.step_start[st];
  /* the GPU tier: 10% of the KV, and never less than a step reads (the
   * decode needs its pages there; the simulator can read through) */
  uint32_t gpu_pages = kv_pages / 10 + n_seqs; /* + the partly filled pages */
  if (gpu_pages < widest + n_seqs) gpu_pages = widest + n_seqs;
  const double fraction = (double)gpu_pages / distinct < 1.0 ? (double)gpu_pages / distinct : 1.0;
  const uint32_t host_pages = kv_pages + n_seqs;
  if (!json)
    printf("trace: %u sequences, %u steps, up to %u tokens: %u pages of KV (%.1f GB), %u read at least once; GPU tier "
           "%u pages (%.3f of the KV, %.3f of the pages read)\n",
           n_seqs, steps, tokens, kv_pages, kv_pages * 2.0 * LAYERS * P * HKV * D * 2 / 1e9, distinct, gpu_pages,
           (double)gpu_pages / kv_pages, fraction);
  replay_result none;
  replay_median(&t, n_seqs, gpu_pages, host_pages, widest, (ikv_prefetch_config){IKV_PREDICT_NONE, 0}, src, repeat, &none);
  const double step_us = none.compute_us;
  const uint64_t budget = (uint64_t)(link_gbs * 1e3 * step_us);
  const ikv_predictor preds[] = {IKV_PREDICT_NONE, IKV_PREDICT_HISTORY, IKV_PREDICT_HINTS};
  for (size_t k = 0; k < sizeof(preds) / sizeof(preds[0]); k++) {
    replay_result real = none;
    if (preds[k] != IKV_PREDICT_NONE)
      replay_median(&t, n_seqs, gpu_pages, host_pages, widest, (ikv_prefetch_config){preds[k], budget}, src, repeat, &real);
    ikv_sim_params sp = {.cache_fraction = fraction, .link_gbs = link_gbs, .step_us = step_us, .predictor = preds[k]};
    ikv_sim_result sim;
    bench_ikv_ok(NULL, ikv_sim_run(&t, &sp, &sim), "ikv_sim_run");
    if (json)
      printf("%s{\"part\": \"trace\", \"predictor\": \"%s\", \"cache_fraction_of_read_pages\": %.4f, \"real_hit_rate\": %.4f, "
             "\"sim_hit_rate\": %.4f, \"real_stall_us_per_step\": %.1f, \"sim_stall_us_per_step\": %.1f, "
             "\"real_compute_us\": %.1f, \"real_h2d_mb_per_step\": %.1f, \"prefetched_pages\": %llu, "
             "\"late_pages\": %llu, \"link_gbs\": %.1f, \"step_us\": %.1f, \"gpu_pages\": %u, \"kv_pages\": %u}",
             *first ? "" : ", ", ikv_predictor_name(preds[k]), fraction, real.hit_rate, sim.hit_rate,
             real.stall_us_per_step, sim.stall_us_per_step, real.compute_us, real.bytes_h2d_per_step / 1e6,
             (unsigned long long)real.prefetched, (unsigned long long)real.late, link_gbs, step_us, gpu_pages, kv_pages);
    else
      printf("trace %-16s hit real %.4f sim %.4f | stall/step real %9.1f us sim %9.1f us | compute %8.1f us | "
             "prefetched %llu late %llu\n",
             ikv_predictor_name(preds[k]), real.hit_rate, sim.hit_rate, real.stall_us_per_step, sim.stall_us_per_step,
             real.compute_us, (unsigned long long)real.prefetched, (unsigned long long)real.late);
    *first = 0;
  }
  ikv_trace_free(&t);
}

int ikv_bench_prefetch(int argc, char **argv) {
  if (ikv_wants_help(argc, argv, usage)) return 0;
  const int json = ikv_has_flag(argc, argv, "--json");
  uint32_t seqs, steps, tokens, seed, repeat;
  if (!ikv_flag_u32(argc, argv, "--seqs", 2, &seqs) || !ikv_flag_u32(argc, argv, "--steps", 60, &steps) ||
      !ikv_flag_u32(argc, argv, "--tokens", 131072, &tokens) || !ikv_flag_u32(argc, argv, "--seed", 1, &seed) ||
      !ikv_flag_u32(argc, argv, "--repeat", 3, &repeat) || !seqs || !steps || !repeat || repeat > 16) {
    fputs(usage, stderr);
    return 2;
  }
  struct cudaDeviceProp prop;
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  char date[16];
  bench_date(date, sizeof(date));
  copy_bufs c;
  BENCH_CUDA(cudaHostAlloc((void **)&c.host, COPY_BYTES, cudaHostAllocDefault));
  BENCH_CUDA(cudaMalloc((void **)&c.dev, COPY_BYTES));
  BENCH_CUDA(cudaHostAlloc((void **)&c.desc, sizeof(ikv_copy_piece) * (COPY_BYTES / 16384), cudaHostAllocMapped));
  memset(c.host, 0x3c, COPY_BYTES);
  BENCH_CUDA(cudaStreamCreateWithFlags(&c.s, cudaStreamNonBlocking));
  BENCH_CUDA(cudaEventCreate(&c.a));
  BENCH_CUDA(cudaEventCreate(&c.b));
  kv_src src;
  BENCH_CUDA(cudaMalloc(&src.k, sizeof(uint16_t) * CHUNK * HKV * D));
  BENCH_CUDA(cudaMalloc(&src.v, sizeof(uint16_t) * CHUNK * HKV * D));
  bench_fill_random_f16(src.k, (size_t)CHUNK * HKV * D, 0, 41), bench_fill_random_f16(src.v, (size_t)CHUNK * HKV * D, 0, 42);
  ikv_host_placement where = {0};
  {
    ikv_runtime_config cfg = llama_config(1, 1, 1, 1);
    ikv_runtime *rt;
    bench_ikv_ok(NULL, ikv_runtime_create(&cfg, &rt), "ikv_runtime_create");
    ikv_runtime_host_placement(rt, &where);
    ikv_runtime_destroy(rt);
  }
  if (json)
    printf("{\"device\": \"%s\", \"date\": \"%s\", \"host_tier\": \"%s\", \"rows\": [", prop.name, date, where.detail);
  else
    printf("ikv bench prefetch on %s, %s; host tier %s\n%-12s %-54s %10s %-8s %6s\n", prop.name, date, where.detail,
           "part", "what", "value", "unit", "of peak");
  int first = 1;
  const double peak = copy_gbs(&c, 0, ONE_CALL_EACH);
  report(json, &first, "transfer", "pinned peak: one 1 GiB copy", peak, "gbs", 1.0);
  const size_t pieces[] = {16384, 65536};
  for (int i = 0; i < 2; i++)
    for (int way = ONE_CALL_EACH; way <= SM_COPY; way++)
      for (c.sm_blocks = 16; c.sm_blocks <= (way == SM_COPY ? 64u : 16u); c.sm_blocks *= 2) {
        char what[64];
        snprintf(what, sizeof(what), "%zu KiB pieces, %s", pieces[i] / 1024, way_names[way]);
        if (way == SM_COPY) snprintf(what + strlen(what), sizeof(what) - strlen(what), " (%u blocks)", c.sm_blocks);
        const double gbs = copy_gbs(&c, pieces[i], (copy_way)way);
        report(json, &first, "transfer", what, gbs, "gbs", gbs / peak);
      }
  /* 64 pages: what a step of the trace below fetches on demand, about; the
   * simulator's link speed */
  double fetch = 0.0;
  for (uint32_t pages = 64; pages <= MAX_FETCH; pages *= 8) {
    char what[64];
    snprintf(what, sizeof(what), "runtime demand fetch, %u pages x 32 layers", pages);
    double runs[16];
    for (uint32_t i = 0; i < repeat; i++) runs[i] = runtime_fetch_gbs(pages, &src, c.s);
    const double gbs = bench_median(runs, (int)repeat);
    report(json, &first, "transfer", what, gbs, "gbs", gbs / peak);
    if (pages == 64) fetch = gbs;
  }
  interference(&c, &src, json, &first);
  trace_part(seqs, steps, tokens, seed, fetch, repeat, &src, json, &first);
  if (json) printf("]}\n");
  cudaFreeHost(c.host), cudaFreeHost(c.desc), cudaFree(c.dev), cudaFree(src.k), cudaFree(src.v);
  cudaStreamDestroy(c.s), cudaEventDestroy(c.a), cudaEventDestroy(c.b);
  return 0;
}
