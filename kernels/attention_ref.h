/*
 * C reference decode attention over a plan (double accumulation), the merge
 * of partial results by log-sum-exp, and a plain dense FP64 attention used
 * only as the oracle in tests and the accuracy report.
 *
 * Conventions: q, out are [batch][q_heads][head_dim] float; lse is
 * [batch][q_heads], natural log of the softmax denominator (of the scaled
 * logits). Query head j reads KV head j / (q_heads / kv_heads). A query head
 * with no selected key gets out = 0 and lse = -infinity.
 */
#ifndef IKV_ATTENTION_REF_H
#define IKV_ATTENTION_REF_H

#include "kernels/decode_plan.h"
#include "kernels/quantize_ref.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Checks a plan against the geometry and pools: every index in range, masks
 * inside pages, tokens before seq_len, precisions provisioned. */
ikv_status ikv_plan_check(const ikv_geometry *geometry, const ikv_layer_pools *pools,
                          const ikv_decode_plan *plan, const ikv_attn_params *params);

/* Decode attention for one layer. split_pages > 0 computes partial results
 * over groups of that many consecutive plan entries and merges them by
 * log-sum-exp (what split-KV kernels do); 0 processes each row in one piece.
 * The result does not depend on split_pages beyond rounding. */
ikv_status ikv_ref_decode(const ikv_geometry *geometry, const ikv_layer_pools *pools,
                          const ikv_decode_plan *plan, const ikv_attn_params *params,
                          const float *q, float *out, float *lse, uint32_t split_pages);

/* Merges two partial results over disjoint key sets: (o_a, lse_a) and
 * (o_b, lse_b), each o normalized over its own keys, into (o, lse). o may
 * alias o_a or o_b. An empty part has lse -infinity. */
void ikv_ref_merge(const double *o_a, double lse_a, const double *o_b, double lse_b,
                   uint32_t head_dim, double *o, double *lse);

/* Dense attention in double: n keys/values [n][head_dim], one query. */
void ikv_oracle_attention(const double *q, const double *k, const double *v, uint32_t n,
                          uint32_t head_dim, double softmax_scale, double *out, double *lse);

#ifdef __cplusplus
}
#endif
#endif /* IKV_ATTENTION_REF_H */
