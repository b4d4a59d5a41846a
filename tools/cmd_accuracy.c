/* ikv accuracy: what each page precision costs in accuracy, measured on
 * real quantized pages through the C reference against the FP64 oracle. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention_ref.h"
#include "tools/ikv_cli.h"

static const char usage[] =
    "usage: ikv accuracy [--json]\n\n"
    "For each page precision, quantizes random K/V into real pages, and reports\n"
    "the relative error ||x_hat - x|| / ||x|| of dequantized K and V and of the\n"
    "decode attention output (C reference over the quantized pages) against\n"
    "dense FP64 attention over the original values. Two kinds of data: Gaussian,\n"
    "and keys with outlier channels (4 channels per head 10-20x larger, as in\n"
    "real models' keys). Geometry: 4 sequences x 1024 tokens, 2 KV heads,\n"
    "8 query heads, head_dim 128, 16-token pages; fixed seed.\n";

enum { BATCH = 4, TOKENS = 1024, H = 2, HQ = 8, D = 128, P = 16, PAGES = TOKENS / P };

typedef struct errors {
  double k, v, out;
} errors;

static uint64_t rng_state = 0x1cc0ac4ull;
static double uniform(void) {
  rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
  return (double)(rng_state >> 11) * 0x1.0p-53;
}
static float gauss(void) {
  return (float)(sqrt(-2.0 * log(uniform() + 0x1.0p-60)) * cos(6.283185307179586 * uniform()));
}

/* K and V of every sequence, [BATCH][TOKENS][H][D]. */
static void make_data(float *k, float *v, int outliers) {
  static const uint32_t channels[4] = {7, 42, 77, 113};
  static const float factors[4] = {10.0f, 13.0f, 16.0f, 20.0f};
  size_t n = (size_t)BATCH * TOKENS * H * D;
  for (size_t i = 0; i < n; i++) k[i] = gauss(), v[i] = gauss();
  if (!outliers) return;
  for (size_t row = 0; row < (size_t)BATCH * TOKENS * H; row++)
    for (int c = 0; c < 4; c++) k[row * D + channels[c]] *= factors[c];
}

static double rel_err(const float *a, const float *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
  return sqrt(num / den);
}

static errors measure(ikv_precision prec, const float *k, const float *v, const float *q) {
  const ikv_geometry g = {.layers = 1, .kv_heads = H, .head_dim = D, .page_size = P};
  size_t page_bytes = ikv_page_layer_bytes(&g, prec), per_page = (size_t)P * H * D;
  size_t n = (size_t)BATCH * TOKENS * H * D;
  uint8_t *pool = malloc(page_bytes * BATCH * PAGES);
  float *k2 = malloc(sizeof(float) * n), *v2 = malloc(sizeof(float) * n);
  for (size_t s = 0; s < (size_t)BATCH * PAGES; s++) {
    IKV_CLI_CHECK(ikv_ref_page_quantize(&g, prec, k + s * per_page, v + s * per_page, IKV_DTYPE_F32, P,
                                        pool + s * page_bytes));
    IKV_CLI_CHECK(ikv_ref_page_dequantize(&g, prec, pool + s * page_bytes, P, k2 + s * per_page, v2 + s * per_page));
  }
  errors e = {rel_err(k2, k, n), rel_err(v2, v, n), 0};

  /* every page of every sequence, in this precision */
  static int32_t indptr[BATCH + 1], slot[BATCH * PAGES], index[BATCH * PAGES], len[BATCH];
  static uint8_t precision[BATCH * PAGES];
  static uint16_t first[BATCH * PAGES], last[BATCH * PAGES];
  for (int b = 0; b <= BATCH; b++) indptr[b] = b * PAGES;
  for (int i = 0; i < BATCH * PAGES; i++)
    slot[i] = i, index[i] = i % PAGES, precision[i] = (uint8_t)prec, first[i] = 0, last[i] = P - 1;
  for (int b = 0; b < BATCH; b++) len[b] = TOKENS;
  ikv_decode_plan plan = {BATCH, 0, indptr, slot, precision, index, first, last, len};
  ikv_attn_params params = {.q_heads = HQ, .softmax_scale = 1.0f / sqrtf((float)D)};
  ikv_layer_pools pools = {.base = {0}, .pages = {0}};
  pools.base[prec] = pool;
  pools.pages[prec] = BATCH * PAGES;
  float *out = malloc(sizeof(float) * BATCH * HQ * D), lse[BATCH * HQ];
  IKV_CLI_CHECK(ikv_ref_decode(&g, &pools, &plan, &params, q, out, lse, 0));

  /* FP64 oracle over the original values */
  double *kd = malloc(sizeof(double) * TOKENS * D), *vd = malloc(sizeof(double) * TOKENS * D), qd[D], od[D], l;
  double num = 0, den = 0;
  for (int b = 0; b < BATCH; b++)
    for (int h = 0; h < H; h++) {
      for (int t = 0; t < TOKENS; t++)
        for (int d = 0; d < D; d++) {
          size_t i = (((size_t)b * TOKENS + t) * H + h) * D + d;
          kd[(size_t)t * D + d] = k[i], vd[(size_t)t * D + d] = v[i];
        }
      for (int j = 0; j < HQ / H; j++) {
        size_t row = (size_t)b * HQ + (size_t)h * (HQ / H) + j;
        for (int d = 0; d < D; d++) qd[d] = q[row * D + d];
        ikv_oracle_attention(qd, kd, vd, TOKENS, D, params.softmax_scale, od, &l);
        for (int d = 0; d < D; d++) num += (out[row * D + d] - od[d]) * (out[row * D + d] - od[d]), den += od[d] * od[d];
      }
    }
  e.out = sqrt(num / den);
  free(pool), free(k2), free(v2), free(out), free(kd), free(vd);
  return e;
}

int ikv_cmd_accuracy(int argc, char **argv) {
  if (ikv_wants_help(argc, argv, usage)) return 0;
  int json = ikv_has_flag(argc, argv, "--json");
  const ikv_geometry g = {.layers = 1, .kv_heads = H, .head_dim = D, .page_size = P};
  size_t n = (size_t)BATCH * TOKENS * H * D;
  float *k = malloc(sizeof(float) * n), *v = malloc(sizeof(float) * n), *q = malloc(sizeof(float) * BATCH * HQ * D);
  for (int i = 0; i < BATCH * HQ * D; i++) q[i] = gauss();
  static const char *data_names[2] = {"gaussian", "outlier"};
  errors e[2][IKV_PRECISION_COUNT];
  for (int data = 0; data < 2; data++) {
    make_data(k, v, data);
    for (int p = 0; p < IKV_PRECISION_COUNT; p++) e[data][p] = measure((ikv_precision)p, k, v, q);
  }
  if (!json) printf("%-9s %-9s %11s %11s %11s %9s\n", "precision", "data", "k_rel_err", "v_rel_err", "out_rel_err", "bytes/fp16");
  if (json) printf("{");
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
    double ratio = (double)ikv_page_layer_bytes(&g, (ikv_precision)p) / ikv_page_layer_bytes(&g, IKV_FP16);
    if (json) printf("%s\"%s\": {\"bytes_ratio_vs_fp16\": %.4f", p ? ", " : "", ikv_precision_name(p), ratio);
    for (int data = 0; data < 2; data++) {
      const errors *x = &e[data][p];
      if (json)
        printf(", \"%s\": {\"k_rel_err\": %.3e, \"v_rel_err\": %.3e, \"out_rel_err\": %.3e}", data_names[data], x->k,
               x->v, x->out);
      else
        printf("%-9s %-9s %11.3e %11.3e %11.3e %9.3f\n", ikv_precision_name(p), data_names[data], x->k, x->v, x->out,
               ratio);
    }
    if (json) printf("}");
  }
  if (json) printf("}\n");
  free(k), free(v), free(q);
  return 0;
}
