/* The CPU backend's page key summaries (per KV head and channel: min, max
 * and sum of the score layer's keys) and the page scores the router ranks
 * by; the math is kernels/page_summary.h, shared with the CUDA backend. */
#include <stdlib.h>
#include <string.h>

#include "kernels/page_summary.h"
#include "runtime/runtime_internal.h"

static size_t summary_size(const ikv_runtime *rt) {
  return (size_t)rt->cfg.geometry.kv_heads * rt->cfg.geometry.head_dim;
}

ikv_status rt_summaries_create(ikv_runtime *rt) {
  size_t n = (size_t)rt->max_pages * summary_size(rt);
  rt->kmin = malloc(sizeof(uint16_t) * n);
  rt->kmax = malloc(sizeof(uint16_t) * n);
  rt->ksum = malloc(sizeof(float) * n);
  return rt->kmin && rt->kmax && rt->ksum ? IKV_OK : IKV_E_NO_MEMORY;
}

void rt_summaries_destroy(ikv_runtime *rt) {
  free(rt->kmin);
  free(rt->kmax);
  free(rt->ksum);
}

ikv_status rt_summarize(ikv_runtime *rt, const void *k, ikv_dtype dtype, const int64_t *slots,
                        const ikv_page_id *pages, uint32_t n, void *stream) {
  (void)stream;
  const size_t m = summary_size(rt);
  float *kf = malloc(sizeof(float) * m);
  if (!kf) return IKV_E_NO_MEMORY;
  const size_t es = dtype == IKV_DTYPE_F32 ? sizeof(float) : sizeof(uint16_t);
  for (uint32_t i = 0; i < n; i++) {
    ikv_status st = ikv_ref_to_float((const uint8_t *)k + es * m * i, dtype, m, kf);
    if (st != IKV_OK) {
      free(kf);
      return st;
    }
    const size_t base = (size_t)pages[i] * m;
    uint16_t *mn = rt->kmin + base, *mx = rt->kmax + base;
    float *sum = rt->ksum + base;
    const int fresh = slots[i] % rt->cfg.geometry.page_size == 0;
    for (size_t c = 0; c < m; c++) {
      if (fresh) ikv_summary_reset(mn + c, mx + c, sum + c);
      ikv_summary_fold(mn + c, mx + c, sum + c, kf[c]);
    }
  }
  free(kf);
  return IKV_OK;
}

ikv_status rt_summary_copy(ikv_runtime *rt, ikv_page_id dst, ikv_page_id src) {
  size_t m = summary_size(rt);
  memcpy(rt->kmin + dst * m, rt->kmin + src * m, sizeof(uint16_t) * m);
  memcpy(rt->kmax + dst * m, rt->kmax + src * m, sizeof(uint16_t) * m);
  memcpy(rt->ksum + dst * m, rt->ksum + src * m, sizeof(float) * m);
  return IKV_OK;
}

ikv_status rt_rank_pages(ikv_runtime *rt, int bound, const ikv_page_id *pages, uint32_t n, const float *q,
                         uint32_t want, uint64_t *keys) {
  const uint32_t H = rt->cfg.geometry.kv_heads, D = rt->cfg.geometry.head_dim, G = rt->cfg.q_heads / H;
  for (uint32_t h = 0; h < H; h++) {
    uint64_t *kh = keys + (size_t)h * n;
    for (uint32_t i = 0; i < n; i++) {
      const size_t at = (size_t)pages[i] * summary_size(rt) + (size_t)h * D;
      kh[i] = ikv_rank_key(
          ikv_summary_score(bound, rt->kmin + at, rt->kmax + at, rt->ksum + at, q + (size_t)h * G * D, G, D), i);
    }
    ikv_rank_smallest(kh, n, want);
  }
  return IKV_OK;
}
