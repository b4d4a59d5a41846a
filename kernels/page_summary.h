/*
 * Page key summaries and the query-aware page scores computed from them,
 * shared by the CPU backend and the CUDA kernels (host and device) so both
 * give the same bits. A summary holds, per page, KV head and channel, the
 * min, max and sum of the keys of one layer. Arithmetic is written out in
 * round-to-nearest operations so the device never fuses a multiply-add the
 * host does not.
 */
#ifndef IKV_PAGE_SUMMARY_H
#define IKV_PAGE_SUMMARY_H

#include "kernels/numeric.h"

#ifdef __CUDA_ARCH__
#define IKV_MUL(a, b) __fmul_rn(a, b)
#define IKV_ADD(a, b) __fadd_rn(a, b)
#define IKV_DIV(a, b) __fdiv_rn(a, b)
#define IKV_SQRT(a) __fsqrt_rn(a)
#else
#define IKV_MUL(a, b) ((a) * (b))
#define IKV_ADD(a, b) ((a) + (b))
#define IKV_DIV(a, b) ((a) / (b))
#define IKV_SQRT(a) sqrtf(a)
#endif

/* A channel's summary before any key (a page's first token resets to this). */
IKV_HD void ikv_summary_reset(float *mn, float *mx, float *sum) {
  *mn = INFINITY, *mx = -INFINITY, *sum = 0.0f;
}

/* Folds one key value into a channel's summary. */
IKV_HD void ikv_summary_fold(float *mn, float *mx, float *sum, float x) {
  *mn = fminf(*mn, x), *mx = fmaxf(*mx, x), *sum = IKV_ADD(*sum, x);
}

/* Score of one KV head's summary (mn, mx, sum over D channels) against its
 * query group q[group][D], the best over the group. bound != 0: the largest
 * q.k any key inside the page's per-channel box can reach (Quest's bound);
 * else the cosine of q with the page's mean key (0 for a zero vector). */
IKV_HD float ikv_summary_score(int bound, const float *mn, const float *mx, const float *sum, const float *q,
                               uint32_t group, uint32_t D) {
  float best = -INFINITY;
  for (uint32_t j = 0; j < group; j++) {
    const float *qj = q + (size_t)j * D;
    float s = 0.0f;
    if (bound) {
      for (uint32_t c = 0; c < D; c++) s = IKV_ADD(s, fmaxf(IKV_MUL(qj[c], mn[c]), IKV_MUL(qj[c], mx[c])));
    } else {
      float dot = 0.0f, qq = 0.0f, kk = 0.0f;
      for (uint32_t c = 0; c < D; c++) {
        dot = IKV_ADD(dot, IKV_MUL(qj[c], sum[c]));
        qq = IKV_ADD(qq, IKV_MUL(qj[c], qj[c]));
        kk = IKV_ADD(kk, IKV_MUL(sum[c], sum[c]));
      }
      s = qq > 0.0f && kk > 0.0f ? IKV_DIV(dot, IKV_SQRT(IKV_MUL(qq, kk))) : 0.0f;
    }
    best = fmaxf(best, s);
  }
  return best;
}

#endif /* IKV_PAGE_SUMMARY_H */
