/*
 * Page formats: how many bytes a page occupies in each precision.
 *
 * This header owns the byte layout of a stored page; everything that sizes a
 * pool or a transfer asks it (the block-table manager, the pools, the
 * prefetcher). One layer's page is kv_heads (K tile, V tile) pairs; a tile holds
 * one KV head's page_size x head_dim values followed by its scales, padded to
 * 16 bytes so every tile starts 16-byte aligned (one contiguous run per
 * (page, KV head) for the kernel). Layout version 1:
 *
 * Values are token-major: row t holds token t's head_dim values (INT4: two
 * per byte, even channel in the low nibble). Scales follow the payload, then
 * zero bytes up to the 16-byte boundary:
 *
 *   precision   payload            K scales                V scales
 *   fp16/bf16   P*D*2              none                    none
 *   fp8_e4m3    P*D                1 float32 per head      1 float32 per head
 *   int8        P*D                D float32 (per channel) P float32 (per token)
 *   int4        P*D/2              D (fp16 scale, fp16 zero) per channel
 *                                                          P (fp16 scale, fp16 zero) per token
 */
#ifndef IKV_PAGE_FORMAT_H
#define IKV_PAGE_FORMAT_H

#include "runtime/ikv_base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IKV_PAGE_FORMAT_VERSION 1
#define IKV_TILE_ALIGN 16u

typedef enum ikv_kv { IKV_KEYS = 0, IKV_VALUES = 1 } ikv_kv;

/* One layer's pools (host or device memory): the base of each precision's
 * pool and its capacity in pages (NULL / 0 where not provisioned). Page slot
 * s of precision p starts at base[p] + s * ikv_page_layer_bytes(geometry, p). */
typedef struct ikv_layer_pools {
  void *base[IKV_PRECISION_COUNT];
  uint32_t pages[IKV_PRECISION_COUNT];
} ikv_layer_pools;

/* Bytes of one (page, layer, KV head) tile of keys or values, scales included.
 * 0 if precision is not storable. page_size and head_dim as in ikv_geometry. */
size_t ikv_tile_bytes(ikv_precision precision, ikv_kv kv, uint32_t page_size,
                      uint32_t head_dim);

/* Bytes of a tile's values before its scales (scales start at this offset). */
size_t ikv_tile_payload_bytes(ikv_precision precision, uint32_t page_size, uint32_t head_dim);

/* Bytes of a tile's scales (they end where the tile's zero padding begins). */
size_t ikv_tile_scale_bytes(ikv_precision precision, ikv_kv kv, uint32_t page_size, uint32_t head_dim);

/* Byte offset of the (kv_head, K or V) tile inside one layer's page: the
 * page is kv_heads consecutive (K tile, V tile) pairs. */
size_t ikv_tile_offset(const ikv_geometry *geometry, ikv_precision precision, uint32_t kv_head,
                       ikv_kv kv);

/* Bytes of one page in one layer's pool: kv_heads * (K tile + V tile). */
size_t ikv_page_layer_bytes(const ikv_geometry *geometry, ikv_precision precision);

/* Bytes of one page across all layers (what a tier stores and a move copies). */
size_t ikv_page_bytes(const ikv_geometry *geometry, ikv_precision precision);

#ifdef __cplusplus
}
#endif
#endif /* IKV_PAGE_FORMAT_H */
