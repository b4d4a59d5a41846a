/* Page key summaries (per KV head and channel: min, max, sum of the score
 * layer's keys) and the query-aware page scores the router ranks by. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime_internal.h"

static size_t summary_size(const ikv_runtime *rt) {
  return (size_t)rt->cfg.geometry.kv_heads * rt->cfg.geometry.head_dim;
}

ikv_status rt_summaries_create(ikv_runtime *rt) {
  size_t n = (size_t)rt->max_pages * summary_size(rt);
  rt->kmin = malloc(sizeof(float) * n);
  rt->kmax = malloc(sizeof(float) * n);
  rt->ksum = malloc(sizeof(float) * n);
  return rt->kmin && rt->kmax && rt->ksum ? IKV_OK : IKV_E_NO_MEMORY;
}

void rt_summaries_destroy(ikv_runtime *rt) {
  free(rt->kmin);
  free(rt->kmax);
  free(rt->ksum);
}

void rt_summary_update(ikv_runtime *rt, ikv_page_id page, uint32_t offset, const float *k,
                       size_t row_stride, uint32_t n) {
  size_t m = summary_size(rt), base = (size_t)page * m;
  float *mn = rt->kmin + base, *mx = rt->kmax + base, *sum = rt->ksum + base;
  if (offset == 0) {
    for (size_t i = 0; i < m; i++) mn[i] = INFINITY, mx[i] = -INFINITY, sum[i] = 0.0f;
  }
  for (uint32_t r = 0; r < n; r++)
    for (size_t i = 0; i < m; i++) {
      float x = k[r * row_stride + i];
      mn[i] = fminf(mn[i], x);
      mx[i] = fmaxf(mx[i], x);
      sum[i] += x;
    }
}

void rt_summary_copy(ikv_runtime *rt, ikv_page_id dst, ikv_page_id src) {
  size_t m = summary_size(rt);
  memcpy(rt->kmin + dst * m, rt->kmin + src * m, sizeof(float) * m);
  memcpy(rt->kmax + dst * m, rt->kmax + src * m, sizeof(float) * m);
  memcpy(rt->ksum + dst * m, rt->ksum + src * m, sizeof(float) * m);
}

float rt_page_score(const ikv_runtime *rt, ikv_score_mode mode, ikv_page_id page, uint32_t kv_head,
                    const float *q, uint32_t group) {
  const uint32_t D = rt->cfg.geometry.head_dim;
  size_t base = (size_t)page * summary_size(rt) + (size_t)kv_head * D;
  const float *mn = rt->kmin + base, *mx = rt->kmax + base, *sum = rt->ksum + base;
  float best = -INFINITY;
  for (uint32_t j = 0; j < group; j++) {
    const float *qj = q + (size_t)j * D;
    float s = 0.0f;
    if (mode == IKV_SCORE_QUERY_BOUND) {
      /* the largest q.k any key inside the page's per-channel box can reach */
      for (uint32_t c = 0; c < D; c++) s += fmaxf(qj[c] * mn[c], qj[c] * mx[c]);
    } else {
      float dot = 0.0f, qq = 0.0f, kk = 0.0f;
      for (uint32_t c = 0; c < D; c++) dot += qj[c] * sum[c], qq += qj[c] * qj[c], kk += sum[c] * sum[c];
      s = qq > 0.0f && kk > 0.0f ? dot / sqrtf(qq * kk) : 0.0f; /* cos(q, mean key) */
    }
    best = fmaxf(best, s);
  }
  return best;
}
