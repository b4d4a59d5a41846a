/*
 * Many small host <-> GPU copies done by the SMs. The copy engines pay a
 * fixed cost per piece: pages of quantized formats (16 KiB a layer for int4)
 * moved as one DMA piece each reach well under half the link's speed even
 * when batched. A few thread blocks reading mapped pinned memory directly
 * keep enough requests in flight to fill the link with pieces of any size.
 * Asynchronous on the caller's stream, no allocation, no host sync.
 */
#ifndef IKV_COPY_CUDA_H
#define IKV_COPY_CUDA_H

#include <stdint.h>

#include "runtime/ikv_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One piece: bytes (a multiple of 16) from src to dst, both 16-byte aligned
 * and addressable by the device (device memory, or pinned host memory
 * registered as mapped on a system where the device uses host pointers). */
typedef struct ikv_copy_piece {
  const void *src;
  void *dst;
  uint64_t bytes;
} ikv_copy_piece;

/* Copies pieces[0, n) with `blocks` thread blocks (the share of the SMs the
 * copy takes from concurrent kernels). pieces itself must be device
 * addressable too (mapped pinned memory: no upload needed) and stay
 * unchanged until the copy has run; the host reads it too, to check it.
 * IKV_E_INVALID for n or blocks of 0 or a misaligned piece; IKV_E_CUDA for
 * a failed launch. */
ikv_status ikv_cuda_copy_pieces(const ikv_copy_piece *pieces, uint32_t n, uint32_t blocks, void *stream);

#ifdef __cplusplus
}
#endif
#endif /* IKV_COPY_CUDA_H */
