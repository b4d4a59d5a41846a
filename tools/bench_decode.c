/* ikv bench decode: the fused paged decode kernel on the GPU, over a sweep of
 * batch, context, head layouts and page-precision mixes, timed as CUDA-graph
 * replays, against the device-to-device copy bandwidth measured in the same
 * run. */
#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/decode_cuda.h"
#include "tools/bench_gpu.h"
#include "tools/bench_util.h"
#include "tools/ikv_cli.h"

enum { D = BENCH_HEAD_DIM, P = BENCH_PAGE, HQ = BENCH_Q_HEADS, DISTINCT = 64, REPLAYS = 30 };
#define ARENA_BYTES (44ull << 30)  /* KV the sweep may hold at once */
#define L2_ROTATE_BYTES (512ull << 20) /* rotate layers until this much KV: no L2 reuse */

static const char usage[] =
    "usage: ikv bench decode [--json] [--quick] [--batch N] [--context N] [--kv-heads N]\n"
    "                        [--variant NAME]\n\n"
    "Times the fused paged decode kernel (head_dim 128, 16-token pages, fp16\n"
    "queries and outputs) over batch {1, 8, 32} x context {4K, 16K, 32K, 64K, 128K}\n"
    "x query/KV heads {32/8, 32/32}: dense fp16 pages; all fp8, all int8, all int4;\n"
    "a mix (10% fp16, 30% fp8, 40% int8, 20% int4); 25% and 12.5% of the fp16\n"
    "pages selected. Pages sit at random slots. Each time is the median of CUDA\n"
    "graph replays after warm-up; small caches rotate over several layers' KV so\n"
    "no replay reads from L2. Reports KV bytes read (scales included), GB/s, the\n"
    "fraction of the device-to-device copy bandwidth measured in the same run\n"
    "(bytes read + written per second), and the speedup over its own dense fp16.\n"
    "Each configuration is timed twice: ordinary launches (time_us), and each\n"
    "layer's decode launched as a programmatic dependent of the layer before,\n"
    "its first pages in flight before it waits for that layer's merge\n"
    "(ikv_cuda_plan.prefetch_pages; dependent_us, dep_us).\n"
    "--quick: batch 1 and 8, contexts 4K and 32K. --batch, --context, --kv-heads\n"
    "and --variant keep only the sweep's points with that value (one shape or\n"
    "format under a profiler, say); with --variant the dense fp16 baseline is\n"
    "not run and speedups read 0. Configurations whose KV does not fit\n"
    "the arena (44 GiB) are reported as skipped.\n";

typedef struct variant {
  const char *name;
  uint8_t precision;      /* IKV_SKIP: the mix */
  uint32_t select_per_64; /* pages selected out of 64 */
} variant;

static const variant variants[] = {
    {"dense_fp16", IKV_FP16, 64}, {"fp8", IKV_FP8_E4M3, 64}, {"int8", IKV_INT8, 64}, {"int4", IKV_INT4, 64},
    {"mix", IKV_SKIP, 64},       {"select_25", IKV_FP16, 16}, {"select_12.5", IKV_FP16, 8},
};
#define N_VARIANTS (sizeof(variants) / sizeof(*variants))

static uint64_t rng = 0xbe4c4dec0de5ull;
static uint32_t next_below(uint32_t n) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (uint32_t)(rng % n);
}

/* DISTINCT random pages of each precision, quantized on the host by the C
 * reference: the seeds every pool is tiled from (random, never zeros). */
static uint8_t *seed_pages[IKV_PRECISION_COUNT];

static void make_seeds(const ikv_geometry *g) {
  size_t count = (size_t)P * g->kv_heads * D;
  float *k = malloc(sizeof(float) * count), *v = malloc(sizeof(float) * count);
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
    size_t bytes = ikv_page_layer_bytes(g, (ikv_precision)p);
    uint8_t *host = malloc(bytes * DISTINCT);
    for (int s = 0; s < DISTINCT; s++) {
      for (size_t i = 0; i < count; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        k[i] = (float)((rng >> 11) * 0x1.0p-53 * 4.0 - 2.0);
        v[i] = (float)((rng >> 13) % 4001) / 1000.0f - 2.0f;
      }
      IKV_CLI_CHECK(ikv_ref_page_quantize(g, (ikv_precision)p, k, v, IKV_DTYPE_F32, P, host + s * bytes));
    }
    BENCH_CUDA(cudaMalloc((void **)&seed_pages[p], bytes * DISTINCT));
    BENCH_CUDA(cudaMemcpy(seed_pages[p], host, bytes * DISTINCT, cudaMemcpyHostToDevice));
    free(host);
  }
  free(k), free(v);
}

/* Fills pages [0, n) of a pool by tiling the seeds, doubling each copy. */
static void fill_pool(uint8_t *pool, size_t page_bytes, uint64_t n, int precision) {
  uint64_t done = n < DISTINCT ? n : DISTINCT;
  BENCH_CUDA(cudaMemcpy(pool, seed_pages[precision], done * page_bytes, cudaMemcpyDeviceToDevice));
  while (done < n) {
    uint64_t chunk = done < n - done ? done : n - done;
    BENCH_CUDA(cudaMemcpy(pool + done * page_bytes, pool, chunk * page_bytes, cudaMemcpyDeviceToDevice));
    done += chunk;
  }
}

typedef struct result {
  double us, dependent_us, bytes; /* ordinary launches; each a programmatic dependent prefetching pages */
  int skipped;
} result;

/* A layer's share of a graph replaying every layer's decode in turn. */
static double time_layers(const ikv_geometry *g, const ikv_layer_pools *pools, uint32_t layers, const ikv_cuda_plan *cp,
                          const ikv_attn_params *params, const void *q, void *out, float *lse, void *ws,
                          size_t ws_bytes, cudaStream_t s) {
  for (uint32_t l = 0; l < layers; l++) /* warm-up, checked */
    IKV_CLI_CHECK(ikv_cuda_decode(g, &pools[l], cp, params, q, out, lse, IKV_DTYPE_F16, ws, ws_bytes, s));
  BENCH_CUDA(cudaStreamSynchronize(s));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  BENCH_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (uint32_t l = 0; l < layers; l++)
    IKV_CLI_CHECK(ikv_cuda_decode(g, &pools[l], cp, params, q, out, lse, IKV_DTYPE_F16, ws, ws_bytes, s));
  BENCH_CUDA(cudaStreamEndCapture(s, &graph));
  BENCH_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  const double us = bench_replay_us(exec, s, REPLAYS) / layers;
  cudaGraphExecDestroy(exec), cudaGraphDestroy(graph);
  return us;
}

static result run_config(uint8_t *arena, const ikv_geometry *g, uint32_t batch, uint32_t ctx, const variant *var,
                         int sm_count) {
  result res = {0, 0, 0, 0};
  const uint32_t pages_per_seq = ctx / P;
  const uint64_t n_pages = (uint64_t)batch * pages_per_seq;
  /* each page's precision and slot; slots are a random permutation per pool */
  uint8_t *prec = malloc(n_pages);
  uint64_t count[IKV_PRECISION_COUNT] = {0};
  for (uint64_t i = 0; i < n_pages; i++) {
    uint8_t p = var->precision;
    if (p == IKV_SKIP) {
      uint32_t x = next_below(10);
      p = x < 1 ? IKV_FP16 : x < 4 ? IKV_FP8_E4M3 : x < 8 ? IKV_INT8 : IKV_INT4;
    }
    prec[i] = p;
    count[p]++;
  }
  uint64_t layer_bytes = 0;
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) layer_bytes += count[p] * ikv_page_layer_bytes(g, (ikv_precision)p);
  uint32_t layers = (uint32_t)((L2_ROTATE_BYTES + layer_bytes - 1) / layer_bytes);
  if (layers > 16) layers = 16;
  if (layers < 1) layers = 1;
  if (layer_bytes * layers > ARENA_BYTES) {
    free(prec);
    res.skipped = 1;
    return res;
  }
  /* pools: layer l, precision p at arena + offsets */
  ikv_layer_pools pools[16];
  uint8_t *at = arena;
  for (uint32_t l = 0; l < layers; l++)
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
      size_t pb = ikv_page_layer_bytes(g, (ikv_precision)p);
      pools[l].base[p] = count[p] ? at : NULL;
      pools[l].pages[p] = (uint32_t)count[p];
      if (count[p]) fill_pool(at, pb, count[p], p);
      at += count[p] * pb;
    }
  /* the plan: per sequence the selected pages in logical order */
  uint32_t *perm[IKV_PRECISION_COUNT], used[IKV_PRECISION_COUNT] = {0};
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
    perm[p] = malloc(sizeof(uint32_t) * (count[p] + 1));
    for (uint64_t i = 0; i < count[p]; i++) perm[p][i] = (uint32_t)i;
    for (uint64_t i = count[p]; i > 1; i--) {
      uint32_t j = next_below((uint32_t)i), t = perm[p][i - 1];
      perm[p][i - 1] = perm[p][j], perm[p][j] = t;
    }
  }
  int32_t *indptr = malloc(sizeof(int32_t) * (batch + 1)), *slot = malloc(sizeof(int32_t) * n_pages),
          *index = malloc(sizeof(int32_t) * n_pages), *len = malloc(sizeof(int32_t) * batch);
  uint8_t *eprec = malloc(n_pages);
  uint16_t *first = malloc(sizeof(uint16_t) * n_pages), *last = malloc(sizeof(uint16_t) * n_pages);
  uint32_t nnz = 0;
  indptr[0] = 0;
  for (uint32_t b = 0; b < batch; b++) {
    len[b] = (int32_t)ctx;
    for (uint32_t i = 0; i < pages_per_seq; i++) {
      uint64_t page = (uint64_t)b * pages_per_seq + i;
      uint32_t s = perm[prec[page]][used[prec[page]]++];
      if (next_below(64) >= var->select_per_64) continue;
      slot[nnz] = (int32_t)s, index[nnz] = (int32_t)i, eprec[nnz] = prec[page], first[nnz] = 0, last[nnz] = P - 1;
      res.bytes += (double)g->kv_heads * (ikv_tile_bytes((ikv_precision)prec[page], IKV_KEYS, P, D) +
                                          ikv_tile_bytes((ikv_precision)prec[page], IKV_VALUES, P, D));
      nnz++;
    }
    indptr[b + 1] = (int32_t)nnz;
  }
  ikv_decode_plan host = {batch, 0, indptr, slot, eprec, index, first, last, len};
  ikv_cuda_plan *cp;
  uint32_t formats = 0, seen[IKV_PRECISION_COUNT] = {0};
  for (uint32_t e = 0; e < nnz; e++) formats += !seen[eprec[e]]++;
  uint32_t ppi = ikv_cuda_pages_per_item(batch, g->kv_heads, nnz / batch + 1, formats, sm_count);
  if (getenv("IKV_PAGES_PER_ITEM")) ppi = (uint32_t)atoi(getenv("IKV_PAGES_PER_ITEM")); /* tuning only */
  IKV_CLI_CHECK(ikv_cuda_plan_create(&host, g->kv_heads, ppi, &cp));
  ikv_attn_params params = {.q_heads = HQ, .softmax_scale = 0.08838834764831845f};
  size_t ws_bytes = ikv_cuda_decode_workspace(g, &params, cp), nq = (size_t)batch * HQ * D;
  void *q, *out, *ws;
  float *lse;
  BENCH_CUDA(cudaMalloc(&q, nq * 2));
  BENCH_CUDA(cudaMalloc(&out, nq * 2));
  BENCH_CUDA(cudaMalloc((void **)&lse, sizeof(float) * batch * HQ));
  BENCH_CUDA(cudaMalloc(&ws, ws_bytes ? ws_bytes : 16));
  BENCH_CUDA(cudaMemset(q, 0x3c, nq * 2)); /* fp16 ~1.06: a nonzero query */
  cudaStream_t s;
  BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  res.us = time_layers(g, pools, layers, cp, &params, q, out, lse, ws, ws_bytes, s);
  cp->prefetch_pages = 1;
  res.dependent_us = time_layers(g, pools, layers, cp, &params, q, out, lse, ws, ws_bytes, s);
  cudaStreamDestroy(s);
  cudaFree(q), cudaFree(out), cudaFree(lse), cudaFree(ws);
  ikv_cuda_plan_destroy(cp);
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) free(perm[p]);
  free(prec), free(indptr), free(slot), free(index), free(len), free(eprec), free(first), free(last);
  return res;
}

/* 1 when x is 0 (no filter) or one of the sweep's values; else a message. */
static int one_of(uint32_t x, const uint32_t *values, int n, const char *flag) {
  for (int i = 0; i < n; i++)
    if (x == values[i]) return 1;
  if (!x) return 1;
  fprintf(stderr, "ikv bench decode: %s %u is not in the sweep (", flag, x);
  for (int i = 0; i < n; i++) fprintf(stderr, "%s%u", i ? ", " : "", values[i]);
  fprintf(stderr, ")\n");
  return 0;
}

static int known_variant(const char *name) {
  if (!name) return 1;
  for (size_t v = 0; v < N_VARIANTS; v++)
    if (!strcmp(variants[v].name, name)) return 1;
  fprintf(stderr, "ikv bench decode: no variant '%s' (", name);
  for (size_t v = 0; v < N_VARIANTS; v++) fprintf(stderr, "%s%s", v ? ", " : "", variants[v].name);
  fprintf(stderr, ")\n");
  return 0;
}

int ikv_bench_decode(int argc, char **argv) {
  if (ikv_wants_help(argc, argv, usage)) return 0;
  int json = ikv_has_flag(argc, argv, "--json"), quick = ikv_has_flag(argc, argv, "--quick");
  const uint32_t batches[] = {1, 8, 32}, contexts[] = {4096, 16384, 32768, 65536, 131072}, kv_heads[] = {8, 32};
  uint32_t only_batch, only_context, only_heads;
  const char *only_variant = ikv_flag_value(argc, argv, "--variant");
  if (!ikv_flag_u32(argc, argv, "--batch", 0, &only_batch) || !ikv_flag_u32(argc, argv, "--context", 0, &only_context) ||
      !ikv_flag_u32(argc, argv, "--kv-heads", 0, &only_heads) || !one_of(only_batch, batches, 3, "--batch") ||
      !one_of(only_context, contexts, 5, "--context") || !one_of(only_heads, kv_heads, 2, "--kv-heads") ||
      !known_variant(only_variant))
    return 2;
  int progress = isatty(2); /* a progress line on a terminal only */
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    fprintf(stderr, "ikv bench decode: no CUDA device\n");
    return 1;
  }
  struct cudaDeviceProp prop;
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  uint8_t *arena;
  BENCH_CUDA(cudaMalloc((void **)&arena, ARENA_BYTES));
  double copy_bw = bench_copy_bandwidth(arena);
  char date[32];
  bench_date(date, sizeof(date));
  if (json)
    printf("{\"bench\": \"decode\", \"device\": \"%s\", \"date\": \"%s\", \"copy_bandwidth_gbs\": %.1f, \"head_dim\": %d, "
           "\"page_size\": %d, \"q_heads\": %d, \"results\": [",
           prop.name, date, copy_bw / 1e9, D, P, HQ);
  else
    printf("ikv bench decode on %s (%s): copy bandwidth %.0f GB/s (read + write)\n%5s %7s %6s %-12s %10s %10s %8s %7s %8s %8s\n",
           prop.name, date, copy_bw / 1e9, "batch", "context", "Hq/Hkv", "pages", "time_us", "KV_MB", "GB/s",
           "of_copy", "speedup", "dep_us");
  int first_row = 1;
  for (int hi = 0; hi < 2; hi++) {
    if (only_heads && kv_heads[hi] != only_heads) continue;
    ikv_geometry g = {.layers = 1, .kv_heads = kv_heads[hi], .head_dim = D, .page_size = P};
    make_seeds(&g);
    for (int bi = 0; bi < 3; bi++)
      for (int ci = 0; ci < 5; ci++) {
        if (quick && (bi == 2 || (ci != 0 && ci != 2))) continue;
        if ((only_batch && batches[bi] != only_batch) || (only_context && contexts[ci] != only_context)) continue;
        double dense_us = 0, dense_dep_us = 0;
        for (size_t v = 0; v < N_VARIANTS; v++) {
          if (only_variant && strcmp(variants[v].name, only_variant)) continue;
          if (progress)
            fprintf(stderr, "\r%u x %u, %u/%u heads, %s          ", batches[bi], contexts[ci], HQ, kv_heads[hi], variants[v].name);
          result r = run_config(arena, &g, batches[bi], contexts[ci], &variants[v], prop.multiProcessorCount);
          if (v == 0) dense_us = r.us, dense_dep_us = r.dependent_us;
          double gbs = r.us > 0 ? r.bytes / (r.us * 1e-6) / 1e9 : 0, frac = gbs * 1e9 / copy_bw,
                 speedup = r.us > 0 && dense_us > 0 ? dense_us / r.us : 0,
                 dep_speedup = r.dependent_us > 0 && dense_dep_us > 0 ? dense_dep_us / r.dependent_us : 0;
          if (progress) fprintf(stderr, "\r%70s\r", "");
          if (json) {
            printf("%s{\"batch\": %u, \"context\": %u, \"kv_heads\": %u, \"variant\": \"%s\", ", first_row ? "" : ", ",
                   batches[bi], contexts[ci], kv_heads[hi], variants[v].name);
            if (r.skipped) printf("\"skipped\": \"KV does not fit the arena\"}");
            else
              printf("\"time_us\": %.2f, \"kv_bytes\": %.0f, \"gbs\": %.1f, \"fraction_of_copy\": %.3f, \"speedup_vs_dense\": %.2f, "
                     "\"dependent_us\": %.2f, \"dependent_speedup_vs_dense\": %.2f}",
                     r.us, r.bytes, gbs, frac, speedup, r.dependent_us, dep_speedup);
            first_row = 0;
          } else if (r.skipped) {
            printf("%5u %7u %3u/%-2u %-12s %10s\n", batches[bi], contexts[ci], HQ, kv_heads[hi], variants[v].name, "skipped");
          } else {
            printf("%5u %7u %3u/%-2u %-12s %10.2f %10.1f %8.0f %7.2f %8.2f %8.2f\n", batches[bi], contexts[ci], HQ,
                   kv_heads[hi], variants[v].name, r.us, r.bytes / 1e6, gbs, frac, speedup, r.dependent_us);
          }
          fflush(stdout);
        }
      }
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) cudaFree(seed_pages[p]);
  }
  if (json) printf("]}\n");
  cudaFree(arena);
  return 0;
}
