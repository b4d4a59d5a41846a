/*
 * C reference of the page-format kernels: quantize, dequantize, requantize a
 * page, and write_kv (new tokens into their pages through the slot mapping).
 * The CUDA kernels must produce the same bytes. Formats: kernels/page_format.h
 * (layout) and kernels/quant.h (rules).
 *
 * Filling a page in steps (the scale rule). A write of rows [a, b) of a tile
 * treats rows [0, a) as the tile's existing tokens and a == 0 as a fresh tile
 * (whatever its bytes held). Per-token groups (INT8/INT4 values) are encoded
 * row by row, so writing a page in steps gives the same bytes as writing it
 * at once. Groups that span rows (FP8 tiles, INT8/INT4 key channels) keep
 * their scale while the new rows fit in its range; when a new row falls
 * outside, the group's scale is refit to the union of the old range and the
 * new rows, and the existing rows are re-encoded from their decoded values.
 * Writing a page in one call therefore gives the same bytes as quantizing it
 * whole; writing it in steps gives the same bytes whenever no later row
 * widens a range (for FP8 and INT8: the first row holds each group's largest
 * magnitude; INT4 key channels, fit to [lo, hi], always refit at least once),
 * and otherwise differs by one rounding per refit (tests bound the error).
 */
#ifndef IKV_QUANTIZE_REF_H
#define IKV_QUANTIZE_REF_H

#include "kernels/page_format.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element type of K/V (and query) inputs. */
typedef enum ikv_dtype { IKV_DTYPE_F32 = 0, IKV_DTYPE_F16, IKV_DTYPE_BF16, IKV_DTYPE_COUNT } ikv_dtype;

/* Writes rows [fill, fill + n) of one tile from float rows (row r at
 * rows + r * row_stride), following the scale rule above. Inputs must be
 * finite (INT4: |x| <= IKV_INT4_INPUT_MAX), else IKV_E_INVALID and the tile
 * is unchanged. */
ikv_status ikv_ref_tile_write(ikv_precision precision, ikv_kv kv, uint32_t page_size,
                              uint32_t head_dim, void *tile, uint32_t fill, const float *rows,
                              size_t row_stride, uint32_t n);
/* Decodes rows [first, first + n) of a tile; row r goes to out + r * out_stride. */
ikv_status ikv_ref_tile_read(ikv_precision precision, ikv_kv kv, uint32_t page_size,
                             uint32_t head_dim, const void *tile, uint32_t first, uint32_t n,
                             float *out, size_t out_stride);

/* One layer's page from n_tokens tokens of K and V, laid out
 * [n_tokens][kv_heads][head_dim] in `dtype`; rows past n_tokens are zeroed so
 * the page's bytes are fully determined. */
ikv_status ikv_ref_page_quantize(const ikv_geometry *geometry, ikv_precision precision,
                                 const void *k, const void *v, ikv_dtype dtype,
                                 uint32_t n_tokens, void *page);
/* Decodes the first n_tokens tokens of a page into float [n_tokens][kv_heads][head_dim]. */
ikv_status ikv_ref_page_dequantize(const ikv_geometry *geometry, ikv_precision precision,
                                   const void *page, uint32_t n_tokens, float *k, float *v);
/* Changes a page's precision (down or up): decode src's n_tokens tokens and
 * quantize them into dst. src and dst must not overlap. */
ikv_status ikv_ref_requantize(const ikv_geometry *geometry, ikv_precision from, const void *src,
                              ikv_precision to, void *dst, uint32_t n_tokens);

/* New tokens' K and V of one layer ([n_tokens][kv_heads][head_dim], dtype)
 * into their pages: token i goes to slot slot_mapping[i] (page slot *
 * page_size + offset) of the pool of precision slot_precision[i]. Each
 * maximal run of consecutive tokens with consecutive offsets in one page is
 * one tile write per (KV head, K/V) under the scale rule. Everything is
 * validated before anything is written. */
ikv_status ikv_ref_write_kv(const ikv_geometry *geometry, const ikv_layer_pools *pools,
                            const void *k, const void *v, ikv_dtype dtype,
                            const int64_t *slot_mapping, const uint8_t *slot_precision,
                            uint32_t n_tokens);

/* dst[i] = float(src[i]) for n elements of `dtype`. */
ikv_status ikv_ref_to_float(const void *src, ikv_dtype dtype, size_t n, float *dst);

#ifdef __cplusplus
}
#endif
#endif /* IKV_QUANTIZE_REF_H */
