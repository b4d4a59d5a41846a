/*
 * Page key summaries and the query-aware page scores computed from them. A
 * summary holds, per page, KV head and channel, the min, max and sum of the
 * keys of one layer. The folds are shared by the CPU backend and the CUDA
 * kernels (host and device); the score is written here for the host in the
 * order the GPU's warps add (kernels/summary_cuda.cu), so both give the same
 * bits. Arithmetic is written out in round-to-nearest operations so the
 * device never fuses a multiply-add the host does not.
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

/* Scores add over channels in the order a warp sums them: lane l takes
 * channels l, l + 32, ... in turn, then the lanes fold in halves (lane l adds
 * lane l + off for off = 16, 8, 4, 2, 1), which is what lane 0 of a
 * shuffle-xor butterfly computes. The host walks the same order, so a warp
 * per page on the GPU gives the host's bits. */
#define IKV_SUMMARY_LANES 32

#ifndef __CUDA_ARCH__
static inline float ikv_lanes_fold(float *lane) {
  for (int off = IKV_SUMMARY_LANES / 2; off; off >>= 1)
    for (int l = 0; l < off; l++) lane[l] = IKV_ADD(lane[l], lane[l + off]);
  return lane[0];
}

/* Score of one KV head's summary (mn, mx, sum over D channels) against its
 * query group q[group][D], the best over the group. bound != 0: the largest
 * q.k any key inside the page's per-channel box can reach (Quest's bound);
 * else the cosine of q with the page's mean key (0 for a zero vector). */
static inline float ikv_summary_score(int bound, const float *mn, const float *mx, const float *sum, const float *q,
                                      uint32_t group, uint32_t D) {
  float best = -INFINITY;
  for (uint32_t j = 0; j < group; j++) {
    const float *qj = q + (size_t)j * D;
    float a[IKV_SUMMARY_LANES] = {0}, b[IKV_SUMMARY_LANES] = {0}, c2[IKV_SUMMARY_LANES] = {0};
    for (uint32_t c = 0; c < D; c++) {
      const uint32_t l = c % IKV_SUMMARY_LANES;
      if (bound) {
        a[l] = IKV_ADD(a[l], fmaxf(IKV_MUL(qj[c], mn[c]), IKV_MUL(qj[c], mx[c])));
      } else {
        a[l] = IKV_ADD(a[l], IKV_MUL(qj[c], sum[c]));
        b[l] = IKV_ADD(b[l], IKV_MUL(qj[c], qj[c]));
        c2[l] = IKV_ADD(c2[l], IKV_MUL(sum[c], sum[c]));
      }
    }
    float s;
    if (bound) {
      s = ikv_lanes_fold(a);
    } else {
      const float dot = ikv_lanes_fold(a), qq = ikv_lanes_fold(b), kk = ikv_lanes_fold(c2);
      s = qq > 0.0f && kk > 0.0f ? IKV_DIV(dot, IKV_SQRT(IKV_MUL(qq, kk))) : 0.0f;
    }
    best = fmaxf(best, s);
  }
  return best;
}
#endif

#endif /* IKV_PAGE_SUMMARY_H */
