/*
 * The page-format kernels on the GPU: write_kv (new tokens into their pages
 * through the slot mapping, quantized on the way in) and requantize (pages
 * converted to another precision). They write the same bytes as the C
 * reference (kernels/quantize_ref.h): the quantization rules are shared
 * (kernels/quant.h, kernels/numeric.h), and the scale rule for partly filled
 * pages is the reference's. Asynchronous on the caller's stream, no
 * allocation, no host synchronization.
 */
#ifndef IKV_QUANTIZE_CUDA_H
#define IKV_QUANTIZE_CUDA_H

#include "kernels/quantize_ref.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ikv_ref_write_kv on the device: k, v ([n_tokens][kv_heads][head_dim] in
 * dtype), slot_mapping and slot_precision are device arrays; pools holds
 * device bases. Device data is not validated here (the runtime validates
 * slots and precisions on the host before): each token's slot must lie in a
 * provisioned pool, the inputs must be finite (INT4: |x| <= 30000), and a
 * page may appear in only one run of consecutive tokens per call (what
 * ikv_append produces). Arguments are checked; CUDA errors are IKV_E_CUDA.
 * It is launched as a programmatic dependent of the kernel before it and
 * lets its own dependents start on entry, then waits for that kernel: a
 * kernel launched after it as a dependent (ikv_cuda_decode with
 * item_waits) starts alongside it and must wait (griddepcontrol.wait) before
 * it reads the pages this call writes or anything the kernels before it
 * write. */
ikv_status ikv_cuda_write_kv(const ikv_geometry *geometry, const ikv_layer_pools *pools, const void *k,
                             const void *v, ikv_dtype dtype, const int64_t *slot_mapping,
                             const uint8_t *slot_precision, uint32_t n_tokens, void *stream);

/* One page to convert: rows [0, rows) of slot src_slot in the `from` pool
 * into slot dst_slot of the `to` pool (rows past `rows`, and the padding,
 * become zeros, as in ikv_ref_requantize). */
typedef struct ikv_cuda_move {
  uint8_t from, to;
  uint16_t rows;
  int32_t src_slot, dst_slot;
} ikv_cuda_move;

/* ikv_ref_requantize for `count` pages of one layer; moves is a device
 * array. Source and destination slots must not overlap. */
ikv_status ikv_cuda_requantize(const ikv_geometry *geometry, const ikv_layer_pools *pools,
                               const ikv_cuda_move *moves, uint32_t count, void *stream);

#ifdef __cplusplus
}
#endif
#endif /* IKV_QUANTIZE_CUDA_H */
