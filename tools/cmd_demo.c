/* ikv demo: the runtime driving agent sequences step by step on the CPU
 * backend. Each agent's 32K-token context is built from a system prompt, a
 * memory summary, retrieved documents (one of them what the query is about),
 * tool outputs, a scratchpad, reasoning and recent turns, each declared as a
 * semantic span. The synthetic keys give attention the structure of real
 * models: mass on the sink tokens, the recent turns and the relevant
 * document, diffuse elsewhere. Decode steps run at rising memory pressure;
 * each is checked against dense FP64 attention over every token. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention_ref.h"
#include "kernels/device_probe.h"
#include "runtime/intentkv.h"
#include "prefetch/trace_record.h"
#include "tools/ikv_cli.h"

static const char usage[] =
    "usage: ikv demo [--json] [--agents N] [--tokens N] [--backend cpu|cuda] [--trace FILE]\n\n"
    "Runs the runtime end to end (on the CUDA backend when a GPU is present, else\n"
    "the CPU backend; --backend chooses): N agent sequences (default 3)\n"
    "of about --tokens tokens (default 32768) built from semantic spans, then decode\n"
    "steps at memory pressure 0.0, 0.5 and 0.9 (two each). Per step: pages read\n"
    "and skipped per span kind, the precision mix, KV bytes read against dense FP16,\n"
    "the attention output's relative error against dense FP64 attention over all\n"
    "tokens, and the router's reasons. --json prints one JSON object instead.\n"
    "--trace FILE records each step's plan as a page-selection trace (ikv sim).\n"
    "Geometry: 2 layers, 2 KV heads, 8 query heads, head_dim 64, 16-token pages.\n";

enum { LAYERS = 2, H = 2, HQ = 8, D = 64, P = 16, MAX_AGENTS = 8, MAX_SPANS = 24 };

typedef struct part {
  const char *name;
  ikv_span_kind kind;
  ikv_span_policy policy;
  float score;
  uint32_t tokens;
  int relevant; /* the document the query is about */
} part;

/* One agent's context, in order; sizes need not align with pages. */
static const part layout[] = {
    {"system prompt", IKV_SPAN_SYSTEM, IKV_POLICY_ALWAYS, 1.0f, 2043, 0},
    {"memory summary", IKV_SPAN_MEMORY, IKV_POLICY_GLOBAL, 1.0f, 1021, 0},
    {"document 1", IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.2f, 2050, 0},
    {"document 2", IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.2f, 2047, 0},
    {"document 3 (the query's)", IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.9f, 2048, 1},
    {"document 4", IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.2f, 2041, 0},
    {"tool output 1", IKV_SPAN_TOOL_OUTPUT, IKV_POLICY_ATTEND, 0.4f, 1536, 0},
    {"document 5", IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.2f, 2055, 0},
    {"tool output 2", IKV_SPAN_TOOL_OUTPUT, IKV_POLICY_ATTEND, 0.4f, 1530, 0},
    {"document 6", IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.2f, 2049, 0},
    {"scratchpad", IKV_SPAN_SCRATCHPAD, IKV_POLICY_SKIP, 0.0f, 2040, 0},
    {"document 7", IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.2f, 2046, 0},
    {"tool output 3", IKV_SPAN_TOOL_OUTPUT, IKV_POLICY_ATTEND, 0.4f, 1541, 0},
    {"document 8", IKV_SPAN_DOCUMENT, IKV_POLICY_ATTEND, 0.2f, 2039, 0},
    {"reasoning", IKV_SPAN_REASONING, IKV_POLICY_ATTEND, 0.3f, 2052, 0},
    {"recent turns", IKV_SPAN_USER, IKV_POLICY_RECENT, 0.8f, 0, 0}, /* the rest */
};
#define N_PARTS (sizeof(layout) / sizeof(*layout))

typedef struct agent {
  ikv_seq_id id;
  uint32_t tokens;
  float *k[LAYERS], *v[LAYERS]; /* [token][H][D], the true values */
  float topic[D];               /* the relevant document's key direction */
  ikv_span_id spans[N_PARTS];
  uint32_t doc_start, doc_end;
} agent;

typedef struct demo {
  ikv_runtime *rt;
  int cuda;          /* K, V, q and out travel through device buffers */
  void *dev_kv, *dev_q, *dev_out;
  ikv_plan *plan;
  uint64_t rng;
  uint32_t n_agents, capacity_tokens;
  agent agents[MAX_AGENTS];
  float sink_dir[D], content[D]; /* shared directions */
} demo;

static double uniform(demo *d) {
  d->rng ^= d->rng << 13, d->rng ^= d->rng >> 7, d->rng ^= d->rng << 17;
  return (double)(d->rng >> 11) * 0x1.0p-53;
}
static float gauss(demo *d) {
  return (float)(sqrt(-2.0 * log(uniform(d) + 0x1.0p-60)) * cos(6.283185307179586 * uniform(d)));
}
static void unit_vector(demo *d, float *x) {
  double n = 0;
  for (int i = 0; i < D; i++) x[i] = gauss(d), n += (double)x[i] * x[i];
  for (int i = 0; i < D; i++) x[i] = (float)(x[i] / sqrt(n));
}

/* Key and value of one token at position t of agent a: sinks point along
 * the shared sink direction, the relevant document along the agent's topic
 * (its values carry a common content vector), recent turns along both;
 * everything else is small noise. */
static void make_token(demo *d, const agent *a, uint32_t t, uint32_t recent_from, float *k, float *v) {
  for (int i = 0; i < D; i++) {
    float kv = 0.2f * gauss(d), vv = gauss(d);
    if (t < 4) kv += 3.5f * d->sink_dir[i];
    else if (t >= a->doc_start && t < a->doc_end) kv += 2.3f * a->topic[i], vv += 2.0f * d->content[i];
    else if (t >= recent_from) kv += 0.92f * (d->sink_dir[i] + a->topic[i]);
    k[i] = kv;
    v[i] = vv;
  }
}

static void append_tokens(demo *d, agent *a, uint32_t n, uint32_t recent_from) {
  int64_t *slots = malloc(sizeof(int64_t) * n);
  uint8_t *precs = malloc(n);
  IKV_CLI_CHECK(ikv_append(d->rt, &a->id, &n, 1, slots, precs));
  for (int l = 0; l < LAYERS; l++) {
    float *k = a->k[l] + (size_t)a->tokens * H * D, *v = a->v[l] + (size_t)a->tokens * H * D;
    for (uint32_t t = 0; t < n; t++)
      for (int h = 0; h < H; h++)
        make_token(d, a, a->tokens + t, recent_from, k + ((size_t)t * H + h) * D, v + ((size_t)t * H + h) * D);
    if (d->cuda) { /* the model's K and V would already be on the GPU */
      const size_t bytes = sizeof(float) * n * H * D;
      if (cudaMemcpy(d->dev_kv, k, bytes, cudaMemcpyHostToDevice) != cudaSuccess ||
          cudaMemcpy((uint8_t *)d->dev_kv + bytes, v, bytes, cudaMemcpyHostToDevice) != cudaSuccess)
        IKV_CLI_CHECK(IKV_E_CUDA);
      IKV_CLI_CHECK(ikv_write_kv(d->rt, (uint32_t)l, d->dev_kv, (uint8_t *)d->dev_kv + bytes, IKV_DTYPE_F32, slots, precs, n, NULL));
    } else {
      IKV_CLI_CHECK(ikv_write_kv(d->rt, (uint32_t)l, k, v, IKV_DTYPE_F32, slots, precs, n, NULL));
    }
  }
  a->tokens += n;
  free(slots), free(precs);
}

static void build_agent(demo *d, agent *a, uint32_t total) {
  IKV_CLI_CHECK(ikv_seq_create(d->rt, IKV_FP16, &a->id));
  unit_vector(d, a->topic);
  for (int l = 0; l < LAYERS; l++) {
    a->k[l] = malloc(sizeof(float) * d->capacity_tokens * H * D);
    a->v[l] = malloc(sizeof(float) * d->capacity_tokens * H * D);
  }
  uint32_t fixed = 0;
  for (size_t i = 0; i + 1 < N_PARTS; i++) fixed += layout[i].tokens;
  uint32_t start = 0;
  for (size_t i = 0; i < N_PARTS; i++) {
    uint32_t n = layout[i].tokens ? layout[i].tokens : total - fixed;
    if (layout[i].relevant) a->doc_start = start, a->doc_end = start + n;
    start += n;
  }
  for (size_t i = 0; i < N_PARTS; i++) {
    uint32_t n = layout[i].tokens ? layout[i].tokens : total - fixed;
    append_tokens(d, a, n, total - 1024);
    ikv_span sp = {a->tokens - n, a->tokens, layout[i].kind, layout[i].policy, layout[i].score, IKV_UNPINNED_PRECISION};
    IKV_CLI_CHECK(ikv_span_add(d->rt, a->id, &sp, &a->spans[i]));
  }
}

/* ||out - dense FP64 attention over every token|| / ||dense||, layer 0. */
static double step_error(demo *d, const float *q, const float *out) {
  double num = 0, den = 0, qd[D], od[D], lse;
  double *kd = malloc(sizeof(double) * d->capacity_tokens * D), *vd = malloc(sizeof(double) * d->capacity_tokens * D);
  for (uint32_t b = 0; b < d->n_agents; b++) {
    const agent *a = &d->agents[b];
    for (int h = 0; h < H; h++) {
      for (uint32_t t = 0; t < a->tokens; t++)
        for (int i = 0; i < D; i++)
          kd[(size_t)t * D + i] = a->k[0][((size_t)t * H + h) * D + i], vd[(size_t)t * D + i] = a->v[0][((size_t)t * H + h) * D + i];
      for (int j = 0; j < HQ / H; j++) {
        size_t row = (size_t)b * HQ + (size_t)h * (HQ / H) + j;
        for (int i = 0; i < D; i++) qd[i] = q[row * D + i];
        ikv_oracle_attention(qd, kd, vd, a->tokens, D, 1.0 / sqrt((double)D), od, &lse);
        for (int i = 0; i < D; i++) num += (out[row * D + i] - od[i]) * (out[row * D + i] - od[i]), den += od[i] * od[i];
      }
    }
  }
  free(kd), free(vd);
  return sqrt(num / den);
}

static const char *kind_label(int kind) { return kind == IKV_SPAN_KIND_COUNT ? "(implicit)" : ikv_span_kind_name(kind); }

static void print_step(const demo *d, int step, float pressure, const ikv_plan_stats *st, double err, int json,
                       int show_spans) {
  uint32_t n;
  const ikv_span_decision *dec = ikv_plan_decisions(d->plan, &n);
  uint32_t sel[IKV_SPAN_KIND_COUNT + 1] = {0}, skip[IKV_SPAN_KIND_COUNT + 1] = {0};
  for (uint32_t i = 0; i < n; i++) sel[dec[i].kind] += dec[i].pages_selected, skip[dec[i].kind] += dec[i].pages_skipped;
  uint64_t bytes = st->bytes_read * LAYERS, dense = st->bytes_dense_fp16 * LAYERS;
  if (json) {
    printf("%s{\"step\": %d, \"memory_pressure\": %.2f, \"bytes_read\": %llu, \"bytes_dense_fp16\": %llu, "
           "\"out_rel_err\": %.4e, \"pages_selected\": %u, \"pages_skipped\": %u, \"conversions\": %u, \"precision_mix\": {",
           step > 1 ? ", " : "", step, pressure, (unsigned long long)bytes, (unsigned long long)dense, err, st->pages_selected,
           st->pages_skipped, st->conversions);
    for (int p = 0; p < IKV_PRECISION_COUNT; p++)
      printf("%s\"%s\": %u", p ? ", " : "", ikv_precision_name(p), st->pages_by_precision[p]);
    printf("}, \"pages_by_kind\": {");
    for (int k = 0, first = 1; k <= IKV_SPAN_KIND_COUNT; k++)
      if (sel[k] || skip[k]) {
        printf("%s\"%s\": {\"selected\": %u, \"skipped\": %u}", first ? "" : ", ", k == IKV_SPAN_KIND_COUNT ? "implicit" : ikv_span_kind_name(k), sel[k], skip[k]);
        first = 0;
      }
    printf("}}");
    return;
  }
  printf("\nstep %d, memory pressure %.2f: read %.1f of %.1f MiB dense fp16 (%.1f%%), out_rel_err %.2e vs dense FP64\n", step,
         pressure, bytes / 1048576.0, dense / 1048576.0, 100.0 * bytes / dense, err);
  printf("  precision mix (pages):");
  for (int p = 0; p < IKV_PRECISION_COUNT; p++)
    if (st->pages_by_precision[p]) printf(" %s %u", ikv_precision_name(p), st->pages_by_precision[p]);
  printf("; %u pages converted this step\n  pages read / skipped by kind:", st->conversions);
  for (int k = 0; k <= IKV_SPAN_KIND_COUNT; k++)
    if (sel[k] || skip[k]) printf(" %s %u/%u", kind_label(k), sel[k], skip[k]);
  if (!show_spans) {
    printf("\n");
    return;
  }
  printf("\n  agent 0's spans:\n");
  for (uint32_t i = 0; i < n && dec[i].seq_index == 0; i++) {
    const char *name = "";
    for (size_t s = 0; s < N_PARTS; s++)
      if (dec[i].span && d->agents[0].spans[s] == dec[i].span) name = layout[s].name;
    if (!dec[i].span) name = dec[i].reason == IKV_REASON_SINKS ? "sink tokens" : dec[i].reason == IKV_REASON_RECENT_WINDOW ? "recent window" : "uncovered tokens";
    printf("    %-26s %-12s read %3u skip %3u  %-8s %s\n", name, kind_label(dec[i].kind), dec[i].pages_selected,
           dec[i].pages_skipped, dec[i].precision == IKV_SKIP ? "-" : ikv_precision_name(dec[i].precision),
           ikv_reason_str(dec[i].reason));
  }
}

int ikv_cmd_demo(int argc, char **argv) {
  if (ikv_wants_help(argc, argv, usage)) return 0;
  int json = ikv_has_flag(argc, argv, "--json");
  demo d = {.rng = 0xde70de70ull};
  uint32_t tokens;
  if (!ikv_flag_u32(argc, argv, "--agents", 3, &d.n_agents) || !ikv_flag_u32(argc, argv, "--tokens", 32768, &tokens))
    return 2;
  if (d.n_agents < 1 || d.n_agents > MAX_AGENTS || tokens < 30000 || tokens > 1u << 20) {
    fprintf(stderr, "ikv demo: --agents 1..%d, --tokens 30000..1048576\n", MAX_AGENTS);
    return 2;
  }
  int gpus = 0;
  ikv_gpu_count(&gpus);
  d.cuda = gpus > 0;
  const char *backend = ikv_flag_value(argc, argv, "--backend");
  if (backend) d.cuda = !strcmp(backend, "cuda");
  if (d.cuda && !gpus) {
    fprintf(stderr, "ikv demo: --backend cuda, but no CUDA device\n");
    return 2;
  }
  const float pressures[] = {0.0f, 0.0f, 0.5f, 0.5f, 0.9f, 0.9f};
  const int steps = sizeof(pressures) / sizeof(*pressures);
  d.capacity_tokens = tokens + steps;
  uint32_t pages = d.n_agents * (d.capacity_tokens / P + 2);
  ikv_runtime_config cfg = {.geometry = {.layers = LAYERS, .kv_heads = H, .head_dim = D, .page_size = P},
                            .q_heads = HQ, .max_sequences = d.n_agents, .max_batch = d.n_agents,
                            .max_plan_pages = pages * H, .backend = d.cuda ? IKV_BACKEND_CUDA : IKV_BACKEND_CPU};
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) cfg.capacity[IKV_TIER_GPU][p] = p == IKV_BF16 ? 0 : pages;
  cfg.capacity[IKV_TIER_HOST][IKV_FP16] = 64;
  IKV_CLI_CHECK(ikv_runtime_create(&cfg, &d.rt));
  IKV_CLI_CHECK(ikv_plan_create(d.rt, &d.plan));
  if (d.cuda && (cudaMalloc(&d.dev_kv, sizeof(float) * 2 * (size_t)d.capacity_tokens * H * D) != cudaSuccess ||
                 cudaMalloc(&d.dev_q, sizeof(float) * d.n_agents * HQ * D) != cudaSuccess ||
                 cudaMalloc(&d.dev_out, sizeof(float) * d.n_agents * HQ * D) != cudaSuccess))
    IKV_CLI_CHECK(IKV_E_CUDA);
  unit_vector(&d, d.sink_dir);
  for (int i = 0; i < D; i++) d.content[i] = gauss(&d);
  for (uint32_t b = 0; b < d.n_agents; b++) {
    fprintf(stderr, "\rikv demo: building agent %u/%u (%u tokens)...", b + 1, d.n_agents, tokens);
    build_agent(&d, &d.agents[b], tokens);
  }
  if (!json)
    printf("intentkv demo: %u agents x %u tokens on the %s backend (%u layers, %u KV heads, %u query heads, head_dim %u, %u-token pages)\n"
           "context per agent: system prompt, memory summary, 8 retrieved documents (one is what the query is about),\n"
           "3 tool outputs, scratchpad, reasoning, recent turns; recent window 1024 tokens, 4 sink tokens\n",
           d.n_agents, tokens, d.cuda ? "CUDA" : "CPU", LAYERS, H, HQ, D, P);
  else
    printf("{\"demo\": \"router\", \"backend\": \"%s\", \"agents\": %u, \"tokens\": %u, \"steps\": [", d.cuda ? "cuda" : "cpu",
           d.n_agents, tokens);
  ikv_seq_id ids[MAX_AGENTS];
  uint32_t agent_numbers[MAX_AGENTS];
  for (uint32_t b = 0; b < d.n_agents; b++) ids[b] = d.agents[b].id, agent_numbers[b] = b;
  char path_buf[4096];
  const char *trace_path = ikv_user_path(ikv_flag_value(argc, argv, "--trace"), path_buf, sizeof(path_buf));
  ikv_trace trace;
  if (trace_path) IKV_CLI_CHECK(ikv_trace_init(&trace, &cfg.geometry));
  size_t nq = (size_t)d.n_agents * HQ * D;
  float *q = malloc(sizeof(float) * nq), *out = malloc(sizeof(float) * nq), *lse = malloc(sizeof(float) * d.n_agents * HQ);
  double worst[3] = {0, 0, 0};
  double ratio_at_09 = 0;
  for (int s = 0; s < steps; s++) {
    fprintf(stderr, "\rikv demo: step %d/%d (memory pressure %.1f)...          ", s + 1, steps, pressures[s]);
    for (uint32_t b = 0; b < d.n_agents; b++) append_tokens(&d, &d.agents[b], 1, 0); /* a new recent token */
    ikv_plan_request req = {.seqs = ids, .batch = d.n_agents, .mode = IKV_PLAN_ROUTER};
    req.router = (ikv_router_params){.memory_pressure = pressures[s], .recent_tokens = 1024, .sink_tokens = 4, .default_score = 0.3f};
    IKV_CLI_CHECK(ikv_plan_build(d.rt, d.plan, &req));
    if (trace_path) IKV_CLI_CHECK(ikv_trace_record_plan(&trace, d.rt, d.plan, ids, agent_numbers));
    for (uint32_t b = 0; b < d.n_agents; b++)
      for (int j = 0; j < HQ; j++)
        for (int i = 0; i < D; i++)
          q[((size_t)b * HQ + j) * D + i] = 16.0f * (d.sink_dir[i] + d.agents[b].topic[i]) + gauss(&d);
    double err = 0;
    for (uint32_t l = LAYERS; l-- > 0;) {
      if (d.cuda) {
        if (cudaMemcpy(d.dev_q, q, sizeof(float) * nq, cudaMemcpyHostToDevice) != cudaSuccess) IKV_CLI_CHECK(IKV_E_CUDA);
        float *dlse = (float *)d.dev_kv; /* scratch */
        IKV_CLI_CHECK(ikv_decode(d.rt, d.plan, l, d.dev_q, d.dev_out, dlse, IKV_DTYPE_F32, NULL));
        if (cudaMemcpy(out, d.dev_out, sizeof(float) * nq, cudaMemcpyDeviceToHost) != cudaSuccess ||
            cudaMemcpy(lse, dlse, sizeof(float) * d.n_agents * HQ, cudaMemcpyDeviceToHost) != cudaSuccess)
          IKV_CLI_CHECK(IKV_E_CUDA);
      } else {
        IKV_CLI_CHECK(ikv_decode(d.rt, d.plan, l, q, out, lse, IKV_DTYPE_F32, NULL));
      }
      if (l == 0) err = step_error(&d, q, out);
    }
    ikv_plan_stats st;
    IKV_CLI_CHECK(ikv_plan_get_stats(d.plan, &st));
    int band = pressures[s] < 0.5f ? 0 : pressures[s] < 0.9f ? 1 : 2;
    if (err > worst[band]) worst[band] = err;
    if (band == 2) ratio_at_09 = (double)st.bytes_read / st.bytes_dense_fp16;
    fprintf(stderr, "\r%60s\r", "");
    print_step(&d, s + 1, pressures[s], &st, err, json, s == 0 || pressures[s] != pressures[s - 1]);
    IKV_CLI_CHECK(ikv_step_end(d.rt, d.plan));
  }
  if (json) printf("]}\n");
  else
    printf("\nsummary: worst out_rel_err %.2e at pressure 0.0, %.2e at 0.5, %.2e at 0.9 (reading %.1f%% of dense fp16 bytes)\n",
           worst[0], worst[1], worst[2], 100.0 * ratio_at_09);
  free(q), free(out), free(lse);
  int rc = 0;
  if (trace_path) {
    FILE *f = fopen(trace_path, "w");
    ikv_status st = f ? ikv_trace_write(&trace, f) : IKV_E_IO;
    if (f && fclose(f) != 0) st = IKV_E_IO;
    if (st != IKV_OK) fprintf(stderr, "ikv demo: writing %s: %s\n", trace_path, ikv_status_str(st)), rc = 1;
    else fprintf(stderr, "ikv demo: %u steps, %zu page reads -> %s\n", trace.n_steps, trace.n_refs, trace_path);
    ikv_trace_free(&trace);
  }
  for (uint32_t b = 0; b < d.n_agents; b++)
    for (int l = 0; l < LAYERS; l++) free(d.agents[b].k[l]), free(d.agents[b].v[l]);
  ikv_plan_destroy(d.plan);
  ikv_runtime_destroy(d.rt);
  if (d.cuda) cudaFree(d.dev_kv), cudaFree(d.dev_q), cudaFree(d.dev_out);
  return rc;
}
