/*
 * Page key summaries and the query-aware page scores computed from them. A
 * summary holds, per page, KV head and channel, the min and max of the keys
 * of one layer as fp16 bounds (rounded outward, so the box still holds every
 * key: exact for fp16 and bf16 keys, which the half range holds) and their
 * sum in fp32. Half-width bounds halve the bytes a score reads, which is
 * what scoring costs on a GPU. The folds are shared by the CPU backend and
 * the CUDA kernels (host and device); the score is written here for the
 * host in the order the GPU's warps add (kernels/summary_cuda.cu), so both
 * give the same bits. Device arithmetic is written out in round-to-nearest
 * operations so the device never fuses a multiply-add the host does not
 * (the host builds with ISO C, which does not contract).
 */
#ifndef IKV_PAGE_SUMMARY_H
#define IKV_PAGE_SUMMARY_H

#include <stdlib.h>

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

#define IKV_F16_INF 0x7c00u
#define IKV_F16_NEG_INF 0xfc00u

/* A channel's summary before any key (a page's first token resets to this):
 * mn, mx are fp16 bits. */
IKV_HD void ikv_summary_reset(uint16_t *mn, uint16_t *mx, float *sum) {
  *mn = IKV_F16_INF, *mx = IKV_F16_NEG_INF, *sum = 0.0f;
}

/* Folds one key value into a channel's summary (a NaN key moves no bound). */
IKV_HD void ikv_summary_fold(uint16_t *mn, uint16_t *mx, float *sum, float x) {
  if (x < ikv_f16_to_f32(*mn)) *mn = ikv_f32_to_f16_down(x);
  if (x > ikv_f16_to_f32(*mx)) *mx = ikv_f32_to_f16_up(x);
  *sum = IKV_ADD(*sum, x);
}

/* Scores add over channels in the order the GPU's lanes sum them: the
 * channels form 4-channel chunks, a page's chunks spread over
 * ikv_summary_lanes(D) lanes, lane l taking chunks l, l + lanes, ... in
 * turn (each chunk's channels in order: one load), then the lanes fold in
 * halves (lane l adds lane l + off for off = lanes / 2, ..., 2, 1), which is
 * what the first lane of a shuffle-xor butterfly computes. Few lanes a page
 * (a warp scores 32 / lanes pages at once) keep the butterfly's shuffles,
 * which every lane runs for every query head, short. The host walks the
 * same order, so the GPU gives the host's bits. */
#define IKV_SUMMARY_CHUNK 4
#define IKV_SUMMARY_LANES_MAX 32

/* 8 lanes a page up to head_dim 128, 16 up to 256, 32 up to 512: at most
 * four chunks a lane. */
IKV_HD uint32_t ikv_summary_lanes(uint32_t D) { return D <= 128 ? 8 : D <= 256 ? 16 : 32; }

/* Host-only helpers (the CPU backend, the CUDA backend's host side). */
#ifdef __CUDACC__
#define IKV_HOST __host__ static inline
#else
#define IKV_HOST static inline
#endif

IKV_HOST float ikv_lanes_fold(float *lane, uint32_t lanes) {
  for (uint32_t off = lanes / 2; off; off >>= 1)
    for (uint32_t l = 0; l < off; l++) lane[l] = lane[l] + lane[l + off];
  return lane[0];
}

/* Score of one KV head's summary (mn, mx: fp16 bits, sum over D channels)
 * against its query group q[group][D], the best over the group. bound != 0:
 * the largest q.k any key inside the page's per-channel box can reach
 * (Quest's bound); else the cosine of q with the page's mean key (0 for a
 * zero vector). */
IKV_HOST float ikv_summary_score(int bound, const uint16_t *mn, const uint16_t *mx, const float *sum, const float *q,
                                 uint32_t group, uint32_t D) {
  const uint32_t lanes = ikv_summary_lanes(D);
  float best = -INFINITY;
  for (uint32_t j = 0; j < group; j++) {
    const float *qj = q + (size_t)j * D;
    float a[IKV_SUMMARY_LANES_MAX] = {0}, b[IKV_SUMMARY_LANES_MAX] = {0}, c2[IKV_SUMMARY_LANES_MAX] = {0};
    for (uint32_t c = 0; c < D; c++) {
      const uint32_t l = c / IKV_SUMMARY_CHUNK % lanes;
      if (bound) {
        a[l] = a[l] + fmaxf(qj[c] * ikv_f16_to_f32(mn[c]), qj[c] * ikv_f16_to_f32(mx[c]));
      } else {
        a[l] = a[l] + qj[c] * sum[c];
        b[l] = b[l] + qj[c] * qj[c];
        c2[l] = c2[l] + sum[c] * sum[c];
      }
    }
    float s;
    if (bound) {
      s = ikv_lanes_fold(a, lanes);
    } else {
      const float dot = ikv_lanes_fold(a, lanes), qq = ikv_lanes_fold(b, lanes), kk = ikv_lanes_fold(c2, lanes);
      s = qq > 0.0f && kk > 0.0f ? dot / sqrtf(qq * kk) : 0.0f;
    }
    best = fmaxf(best, s);
  }
  return best;
}

/* A rank key: ascending keys order candidates by descending score, ties by
 * ascending candidate ordinal (the low half); -0 ties +0. */
IKV_HD uint64_t ikv_rank_key(float score, uint32_t ordinal) {
  uint32_t u = ikv_f32_bits(score == 0.0f ? 0.0f : score);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u); /* ascending with the float */
  return ((uint64_t)~u << 32) | ordinal;
}

IKV_HOST int ikv_rank_key_cmp(const void *x, const void *y) {
  uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
  return a < b ? -1 : a > b;
}

/* Puts the k smallest of key[0, n) first, in order, without sorting the
 * rest: quickselect (keys are distinct), then a sort of the k. */
IKV_HOST void ikv_rank_smallest(uint64_t *key, uint32_t n, uint32_t k) {
  uint32_t lo = 0, hi = n;
  while (lo < k && k < hi && hi - lo > 1) { /* until the boundary at k is in place */
    const uint64_t pivot = key[lo + (hi - lo) / 2];
    uint32_t lt = lo, gt = hi, i = lo;
    while (i < gt) { /* three-way partition: below, equal, above the pivot */
      uint64_t t = key[i];
      if (t < pivot) key[i++] = key[lt], key[lt++] = t;
      else if (t > pivot) key[i] = key[--gt], key[gt] = t;
      else i++;
    }
    if (k < lt) hi = lt;
    else if (k >= gt) lo = gt;
    else break;
  }
  qsort(key, k < n ? k : n, sizeof(uint64_t), ikv_rank_key_cmp);
}

#endif /* IKV_PAGE_SUMMARY_H */
