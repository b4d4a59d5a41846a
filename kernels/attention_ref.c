/* C reference decode attention (double accumulation) and its FP64 oracle. */
#include "kernels/attention_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint32_t plan_rows(const ikv_geometry *g, const ikv_decode_plan *plan) {
  return plan->per_kv_head ? plan->batch * g->kv_heads : plan->batch;
}

ikv_status ikv_plan_check(const ikv_geometry *g, const ikv_layer_pools *pools,
                          const ikv_decode_plan *plan, const ikv_attn_params *params) {
  if (!g || !pools || !plan || !params) return IKV_E_NULL;
  if (ikv_geometry_check(g) != IKV_OK) return IKV_E_INVALID;
  if (!params->q_heads || params->q_heads % g->kv_heads) return IKV_E_INVALID;
  if (!(params->softmax_scale > 0.0f) || !isfinite(params->softmax_scale)) return IKV_E_INVALID;
  if (params->window < 0 || params->sinks < 0) return IKV_E_INVALID;
  if (!plan->indptr || (plan->batch && !plan->seq_len)) return IKV_E_NULL;
  uint32_t rows = plan_rows(g, plan);
  if (plan->indptr[0] != 0) return IKV_E_INVALID;
  for (uint32_t r = 0; r < rows; r++)
    if (plan->indptr[r + 1] < plan->indptr[r]) return IKV_E_INVALID;
  if (plan->indptr[rows] &&
      (!plan->page_slot || !plan->precision || !plan->page_index || !plan->first || !plan->last))
    return IKV_E_NULL;
  const uint32_t P = g->page_size;
  for (uint32_t r = 0; r < rows; r++) {
    uint32_t b = plan->per_kv_head ? r / g->kv_heads : r;
    if (plan->seq_len[b] < 0) return IKV_E_RANGE;
    for (int32_t e = plan->indptr[r]; e < plan->indptr[r + 1]; e++) {
      int p = plan->precision[e];
      if (!ikv_precision_valid(p) || !pools->base[p]) return IKV_E_PRECISION;
      if (plan->page_slot[e] < 0 || (uint32_t)plan->page_slot[e] >= pools->pages[p]) return IKV_E_RANGE;
      if (plan->last[e] >= P || (plan->first[e] > plan->last[e] && plan->first[e] != plan->last[e] + 1))
        return IKV_E_RANGE;
      if (plan->page_index[e] < 0 ||
          (int64_t)plan->page_index[e] * P + plan->last[e] >= plan->seq_len[b])
        return IKV_E_RANGE;
    }
  }
  return IKV_OK;
}

void ikv_ref_merge(const double *o_a, double lse_a, const double *o_b, double lse_b,
                   uint32_t head_dim, double *o, double *lse) {
  if (lse_a == -INFINITY && lse_b == -INFINITY) {
    for (uint32_t d = 0; d < head_dim; d++) o[d] = 0.0;
    *lse = -INFINITY;
    return;
  }
  double m = fmax(lse_a, lse_b);
  double wa = exp(lse_a - m), wb = exp(lse_b - m), sum = wa + wb;
  for (uint32_t d = 0; d < head_dim; d++) o[d] = (o_a[d] * wa + o_b[d] * wb) / sum;
  *lse = m + log(sum);
}

void ikv_oracle_attention(const double *q, const double *k, const double *v, uint32_t n,
                          uint32_t D, double scale, double *out, double *lse) {
  double m = -INFINITY;
  double *s = malloc(sizeof(double) * (n ? n : 1));
  for (uint32_t i = 0; i < n; i++) {
    double dot = 0.0;
    for (uint32_t d = 0; d < D; d++) dot += q[d] * k[(size_t)i * D + d];
    s[i] = dot * scale;
    m = fmax(m, s[i]);
  }
  double sum = 0.0;
  for (uint32_t d = 0; d < D; d++) out[d] = 0.0;
  for (uint32_t i = 0; i < n; i++) {
    double w = exp(s[i] - m);
    sum += w;
    for (uint32_t d = 0; d < D; d++) out[d] += w * v[(size_t)i * D + d];
  }
  for (uint32_t d = 0; d < D; d++) out[d] = n ? out[d] / sum : 0.0;
  *lse = n ? m + log(sum) : -INFINITY;
  free(s);
}

/* Online softmax state of one query head over one part of the keys. */
typedef struct partial {
  double m, l, *acc;
} partial;

static int key_kept(int64_t pos, int64_t query, const ikv_attn_params *p) {
  return p->window <= 0 || pos > query - p->window || pos < p->sinks;
}

ikv_status ikv_ref_decode(const ikv_geometry *g, const ikv_layer_pools *pools,
                          const ikv_decode_plan *plan, const ikv_attn_params *params,
                          const float *q, float *out, float *lse, uint32_t split_pages) {
  ikv_status st = ikv_plan_check(g, pools, plan, params);
  if (st != IKV_OK) return st;
  if (plan->batch && (!q || !out || !lse)) return IKV_E_NULL;
  const uint32_t P = g->page_size, D = g->head_dim, G = params->q_heads / g->kv_heads;
  float *rows = malloc(sizeof(float) * 2 * P * D);
  double *work = malloc(sizeof(double) * (size_t)G * 2 * D + sizeof(double) * D);
  partial *parts = malloc(sizeof(partial) * G);
  double *total_lse = malloc(sizeof(double) * G);
  if (!rows || !work || !parts || !total_lse) {
    free(rows), free(work), free(parts), free(total_lse);
    return IKV_E_NO_MEMORY;
  }
  double *total = work + (size_t)G * D, *qd = work + (size_t)G * 2 * D;
  for (uint32_t j = 0; j < G; j++) parts[j].acc = work + (size_t)j * D;

  for (uint32_t b = 0; b < plan->batch; b++) {
    int64_t query = (int64_t)plan->seq_len[b] - 1;
    for (uint32_t h = 0; h < g->kv_heads; h++) {
      uint32_t r = plan->per_kv_head ? b * g->kv_heads + h : b;
      int32_t begin = plan->indptr[r], end = plan->indptr[r + 1];
      uint32_t step = split_pages ? split_pages : (uint32_t)(end - begin) + 1;
      for (uint32_t j = 0; j < G; j++) {
        total_lse[j] = -INFINITY;
        memset(total + (size_t)j * D, 0, sizeof(double) * D);
      }
      for (int32_t part = begin; part < end; part += (int32_t)step) {
        for (uint32_t j = 0; j < G; j++) {
          parts[j].m = -INFINITY;
          parts[j].l = 0.0;
          memset(parts[j].acc, 0, sizeof(double) * D);
        }
        int32_t part_end = part + (int32_t)step < end ? part + (int32_t)step : end;
        for (int32_t e = part; e < part_end; e++) {
          if (plan->first[e] > plan->last[e]) continue; /* an empty entry */
          ikv_precision prec = (ikv_precision)plan->precision[e];
          const uint8_t *page = (const uint8_t *)pools->base[prec] +
                                (size_t)plan->page_slot[e] * ikv_page_layer_bytes(g, prec);
          uint32_t first = plan->first[e], n = plan->last[e] - first + 1u;
          ikv_ref_tile_read(prec, IKV_KEYS, P, D, page + ikv_tile_offset(g, prec, h, IKV_KEYS), first, n, rows, D);
          ikv_ref_tile_read(prec, IKV_VALUES, P, D, page + ikv_tile_offset(g, prec, h, IKV_VALUES), first, n,
                            rows + (size_t)P * D, D);
          for (uint32_t t = 0; t < n; t++) {
            if (!key_kept((int64_t)plan->page_index[e] * P + first + t, query, params)) continue;
            const float *kr = rows + (size_t)t * D, *vr = rows + (size_t)(P + t) * D;
            for (uint32_t j = 0; j < G; j++) {
              const float *qj = q + ((size_t)b * params->q_heads + h * G + j) * D;
              double dot = 0.0;
              for (uint32_t d = 0; d < D; d++) dot += (double)qj[d] * kr[d];
              double s = dot * params->softmax_scale, m = fmax(parts[j].m, s);
              double keep = exp(parts[j].m - m), w = exp(s - m);
              for (uint32_t d = 0; d < D; d++) parts[j].acc[d] = parts[j].acc[d] * keep + w * vr[d];
              parts[j].l = parts[j].l * keep + w;
              parts[j].m = m;
            }
          }
        }
        for (uint32_t j = 0; j < G; j++) {
          double part_lse = parts[j].l > 0.0 ? parts[j].m + log(parts[j].l) : -INFINITY;
          for (uint32_t d = 0; d < D; d++) qd[d] = parts[j].l > 0.0 ? parts[j].acc[d] / parts[j].l : 0.0;
          ikv_ref_merge(total + (size_t)j * D, total_lse[j], qd, part_lse, D, total + (size_t)j * D,
                        &total_lse[j]);
        }
      }
      for (uint32_t j = 0; j < G; j++) {
        size_t row = (size_t)b * params->q_heads + h * G + j;
        for (uint32_t d = 0; d < D; d++) out[row * D + d] = (float)total[(size_t)j * D + d];
        lse[row] = (float)total_lse[j];
      }
    }
  }
  free(rows), free(work), free(parts), free(total_lse);
  return IKV_OK;
}
