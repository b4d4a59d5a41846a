/*
 * The fused paged decode-attention kernel (CUDA), behind a C ABI.
 *
 * One launch reads the selected pages of a plan in any mix of precisions
 * (FP16, BF16, FP8 E4M3, INT8, INT4); a block handles one work item (pages of
 * one row and one precision) for one KV head, converting each 16-token chunk
 * to fp16 on chip and computing the whole query group's scores and output on
 * tensor cores, so each page is read once; a second, small kernel merges the
 * items of each row by log-sum-exp (split-KV), so a long sequence spreads
 * over all SMs. No host synchronization, no allocation: safe to capture in a
 * CUDA graph and to replay for every layer of a step. The merge lets a
 * kernel launched after it as a programmatic dependent start early: such a
 * kernel must wait (griddepcontrol.wait) before it reads out or lse, or
 * before it writes anything the merge reads. docs/decode_kernel.md.
 */
#ifndef IKV_DECODE_CUDA_H
#define IKV_DECODE_CUDA_H

#include "kernels/decode_plan.h"
#include "kernels/page_format.h"
#include "kernels/quantize_ref.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How the decode loads FP16 and FP8 pages. AUTO: by bulk tensor copies
 * (the TMA engine) in launches of two waves of blocks or more, or of one
 * wave of items of 32 pages or more on average, for items of 16 pages or
 * more (bandwidth-bound: faster on large caches), else by
 * cp.async (latency-bound launches: 2-5% faster); ASYNC, BULK: always so
 * where the format and head_dim allow (FP16 at head_dim 128 and 256, FP8
 * at 128). */
typedef enum ikv_cuda_copies { IKV_CUDA_COPIES_AUTO, IKV_CUDA_COPIES_ASYNC, IKV_CUDA_COPIES_BULK } ikv_cuda_copies;

/* A plan in device memory: the CSR arrays (ikv_decode_plan, every pointer a
 * device pointer), its work partition, and for each row the range of its
 * items (items are ordered by row). */
typedef struct ikv_cuda_plan {
  ikv_decode_plan csr;
  uint32_t rows;                /* batch, or batch * kv_heads when per_kv_head */
  const ikv_work_item *items;   /* [n_items] */
  const int32_t *entries;       /* the partition's permutation of entries */
  const int32_t *row_items;     /* [rows + 1] */
  uint32_t n_items;
  /* NULL: the decode starts once the work before it on the stream is done
   * (unless prefetch_pages). Else [n_items]: the decode is launched as a
   * programmatic dependent of the kernel before it; the blocks of item i
   * wait for that kernel (griddepcontrol.wait) on entry where
   * item_waits[i] is 1 (that kernel may write the plan or the item's first
   * page), before loading the item's entry at position item_waits[i] - 1
   * and later ones where it is more (their pages may be written; the
   * earlier ones' loads are in flight by then), and otherwise as with
   * prefetch_pages (0). The runtime sets it after its write_kv (which lets
   * its dependents start before it waits for the kernel before it): an
   * item waits before its first page written this step. */
  const uint8_t *item_waits;
  /* Nonzero: the decode is launched as a programmatic dependent of the
   * kernel before it; each block not waiting on entry puts its first chunks
   * of pages in flight, then waits for that kernel before it reads the
   * queries or writes anything (its workspace included). The caller vouches
   * that the kernel before, and any it lets start early, write none of the
   * pages those blocks read nor the plan: the previous layer's merge or a
   * query projection qualify; a device selection filling this plan does
   * not. */
  int prefetch_pages;
  /* Bit p set: the plan holds pages of precision p (0: not known, any).
   * Lets a large launch whose plan holds FP16 pages read them by bulk
   * tensor copies. */
  uint32_t formats;
  uint32_t n_entries; /* the plan's entries (0: not known); with n_items, how long items are */
  /* How FP16 (head_dim 128 and 256) and FP8 (head_dim 128) pages are
   * loaded (ikv_cuda_copies; another value: IKV_E_INVALID). */
  int page_copies;
} ikv_cuda_plan;

/* Copies a host plan into new device buffers, partitioned into items of at
 * most pages_per_item pages (smaller items spread short contexts over more
 * SMs). For tests, benchmarks and set-up code: it allocates and synchronizes.
 * Release with ikv_cuda_plan_destroy. */
ikv_status ikv_cuda_plan_create(const ikv_decode_plan *host, uint32_t kv_heads, uint32_t pages_per_item,
                                ikv_cuda_plan **out);
void ikv_cuda_plan_destroy(ikv_cuda_plan *plan);

/* Decode blocks (one per item and KV head) resident at once on sm_count
 * SMs: a launch of at most this many runs as one wave. */
uint64_t ikv_cuda_decode_wave(uint32_t head_dim, int sm_count);

/* Pages per work item that spread a step over the GPU: about three waves of
 * blocks (one per item and KV head), at least 16 pages an item, or 8 where
 * the blocks would be few (the rule and its measurements: decode_cuda.cu).
 * precisions: how many page formats the plan's rows mix (1 to 5; each adds
 * at most one item to a row). */
uint32_t ikv_cuda_pages_per_item(uint32_t rows, uint32_t kv_heads_per_row, uint32_t pages_per_row,
                                 uint32_t precisions, int sm_count);

/* Bytes of scratch ikv_cuda_decode needs for this plan (partial results). */
size_t ikv_cuda_decode_workspace(const ikv_geometry *geometry, const ikv_attn_params *params,
                                 const ikv_cuda_plan *plan);

/* Decode attention for one layer on `stream` (a cudaStream_t; NULL: the
 * default stream). pools: device bases of the layer's pools. q, out:
 * [batch][q_heads][head_dim] in dtype (fp16, bf16 or f32); lse:
 * [batch][q_heads] float, natural log; a query head with no key gets out 0
 * and lse -infinity. head_dim 64, 128 or 256; q_heads / kv_heads up to 8.
 * The plan's contents are the caller's to have validated (ikv_plan_check on
 * the host copy); arguments are checked, and every CUDA error is returned as
 * IKV_E_CUDA. */
ikv_status ikv_cuda_decode(const ikv_geometry *geometry, const ikv_layer_pools *pools, const ikv_cuda_plan *plan,
                           const ikv_attn_params *params, const void *q, void *out, float *lse, ikv_dtype dtype,
                           void *workspace, size_t workspace_bytes, void *stream);

#ifdef __cplusplus
}
#endif
#endif /* IKV_DECODE_CUDA_H */
