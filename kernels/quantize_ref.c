/* C reference of quantize / dequantize / requantize / write_kv. */
#include "kernels/quantize_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/quant.h"

/* ---- scale storage (unaligned-safe loads and stores) --------------------- */

static float scale_get(const uint8_t *scales, size_t i) {
  float f;
  memcpy(&f, scales + i * sizeof(float), sizeof(f));
  return f;
}
static void scale_set(uint8_t *scales, size_t i, float f) {
  memcpy(scales + i * sizeof(float), &f, sizeof(f));
}
static ikv_int4_params int4_get(const uint8_t *scales, size_t i) {
  ikv_int4_params p;
  memcpy(&p, scales + i * sizeof(p), sizeof(p));
  return p;
}
static void int4_set(uint8_t *scales, size_t i, ikv_int4_params p) {
  memcpy(scales + i * sizeof(p), &p, sizeof(p));
}
static uint8_t nibble_get(const uint8_t *payload, uint32_t D, uint32_t r, uint32_t c) {
  uint8_t b = payload[(size_t)r * D / 2 + c / 2];
  return c & 1 ? b >> 4 : b & 0x0f;
}
static void nibble_set(uint8_t *payload, uint32_t D, uint32_t r, uint32_t c, uint8_t q) {
  uint8_t *b = &payload[(size_t)r * D / 2 + c / 2];
  *b = c & 1 ? (uint8_t)((*b & 0x0f) | (q << 4)) : (uint8_t)((*b & 0xf0) | q);
}

/* ---- one tile ------------------------------------------------------------ */

typedef struct tile {
  ikv_precision precision;
  ikv_kv kv;
  uint32_t P, D;
  uint8_t *payload, *scales;
} tile;

static tile tile_at(ikv_precision precision, ikv_kv kv, uint32_t P, uint32_t D, const void *base) {
  tile t = {precision, kv, P, D, (uint8_t *)base, (uint8_t *)base + ikv_tile_payload_bytes(precision, P, D)};
  return t;
}

static float value_get(const tile *t, uint32_t r, uint32_t c) {
  size_t i = (size_t)r * t->D + c;
  uint16_t h;
  switch (t->precision) {
    case IKV_FP16: memcpy(&h, t->payload + 2 * i, 2); return ikv_f16_to_f32(h);
    case IKV_BF16: memcpy(&h, t->payload + 2 * i, 2); return ikv_bf16_to_f32(h);
    case IKV_FP8_E4M3: return ikv_fp8_decode(t->payload[i], scale_get(t->scales, 0));
    case IKV_INT8:
      return ikv_int8_decode((int8_t)t->payload[i], scale_get(t->scales, t->kv == IKV_KEYS ? c : r));
    default:
      return ikv_int4_decode(nibble_get(t->payload, t->D, r, c), int4_get(t->scales, t->kv == IKV_KEYS ? c : r));
  }
}

/* Encodes x at (r, c) with the group's current scale. */
static void value_set(tile *t, uint32_t r, uint32_t c, float x) {
  size_t i = (size_t)r * t->D + c;
  uint16_t h;
  switch (t->precision) {
    case IKV_FP16: h = ikv_f32_to_f16(x); memcpy(t->payload + 2 * i, &h, 2); break;
    case IKV_BF16: h = ikv_f32_to_bf16(x); memcpy(t->payload + 2 * i, &h, 2); break;
    case IKV_FP8_E4M3: t->payload[i] = ikv_fp8_encode(x, scale_get(t->scales, 0)); break;
    case IKV_INT8:
      t->payload[i] = (uint8_t)ikv_int8_encode(x, scale_get(t->scales, t->kv == IKV_KEYS ? c : r));
      break;
    default:
      nibble_set(t->payload, t->D, r, c, ikv_int4_encode(x, int4_get(t->scales, t->kv == IKV_KEYS ? c : r)));
  }
}

/* The groups of a tile: FP8 one group of every cell; INT8/INT4 keys one group
 * per channel; INT8/INT4 values one group per token row. */
static int groups_span_rows(const tile *t) {
  return t->precision == IKV_FP8_E4M3 ||
         (t->kv == IKV_KEYS && (t->precision == IKV_INT8 || t->precision == IKV_INT4));
}

/* Range of the new rows in group g (cells (r, c) with c == g, or all cells
 * when the tile has one group, or row g for per-row groups). */
static void new_range(const tile *t, uint32_t g, const float *rows, size_t stride, uint32_t n,
                      float *lo, float *hi) {
  float a = INFINITY, b = -INFINITY;
  int one = t->precision == IKV_FP8_E4M3;
  for (uint32_t r = 0; r < n; r++)
    for (uint32_t c = one ? 0 : g; c < (one ? t->D : g + 1); c++) {
      float x = rows[r * stride + c];
      a = fminf(a, x);
      b = fmaxf(b, x);
    }
  *lo = a;
  *hi = b;
}

/* A group's parameters: a scale (FP8, INT8) or scale and zero (INT4). */
typedef struct group_params {
  float scale;
  ikv_int4_params int4;
} group_params;

static group_params group_get(const tile *t, uint32_t g) {
  group_params p = {0.0f, {0, 0}};
  if (t->precision == IKV_INT4) p.int4 = int4_get(t->scales, g);
  else p.scale = scale_get(t->scales, g);
  return p;
}

static void group_set(tile *t, uint32_t g, group_params p) {
  if (t->precision == IKV_INT4) int4_set(t->scales, g, p.int4);
  else scale_set(t->scales, g, p.scale);
}

/* Re-encodes one stored cell from the group's old parameters to new ones. */
static void recode(tile *t, uint32_t r, uint32_t c, group_params from, group_params to) {
  size_t i = (size_t)r * t->D + c;
  switch (t->precision) {
    case IKV_FP8_E4M3: t->payload[i] = ikv_fp8_encode(ikv_fp8_decode(t->payload[i], from.scale), to.scale); break;
    case IKV_INT8:
      t->payload[i] = (uint8_t)ikv_int8_encode(ikv_int8_decode((int8_t)t->payload[i], from.scale), to.scale);
      break;
    default:
      nibble_set(t->payload, t->D, r, c,
                 ikv_int4_encode(ikv_int4_decode(nibble_get(t->payload, t->D, r, c), from.int4), to.int4));
  }
}

/* The scale rule for a group spanning rows, given the new rows' range
 * [lo, hi]: keep the group's parameters if the range fits them, else refit to
 * the union and re-encode rows [0, fill). fill == 0 fits fresh. */
static void fit_group(tile *t, uint32_t g, uint32_t fill, float lo, float hi) {
  group_params old = group_get(t, g), fit = old;
  if (t->precision == IKV_INT4) {
    float old_lo = ikv_int4_lo(old.int4), old_hi = ikv_int4_hi(old.int4);
    if (fill && lo >= old_lo && hi <= old_hi) return;
    fit.int4 = fill ? ikv_int4_fit(fminf(lo, old_lo), fmaxf(hi, old_hi)) : ikv_int4_fit(lo, hi);
  } else {
    float qmax = t->precision == IKV_INT8 ? IKV_INT8_QMAX : IKV_FP8_E4M3_MAX;
    float amax = fmaxf(fabsf(lo), fabsf(hi));
    if (fill && amax <= old.scale * qmax) return;
    fit.scale = t->precision == IKV_INT8 ? ikv_int8_scale(amax) : ikv_fp8_scale(amax);
  }
  int one = t->precision == IKV_FP8_E4M3;
  for (uint32_t r = 0; r < fill; r++)
    for (uint32_t c = one ? 0 : g; c < (one ? t->D : g + 1); c++) recode(t, r, c, old, fit);
  group_set(t, g, fit);
}

/* A per-row group (INT8/INT4 values): fit to the row alone. */
static void fit_row(tile *t, uint32_t r, const float *row) {
  float lo = INFINITY, hi = -INFINITY;
  for (uint32_t c = 0; c < t->D; c++) {
    lo = fminf(lo, row[c]);
    hi = fmaxf(hi, row[c]);
  }
  if (t->precision == IKV_INT4)
    int4_set(t->scales, r, ikv_int4_fit(lo, hi));
  else
    scale_set(t->scales, r, ikv_int8_scale(fmaxf(fabsf(lo), fabsf(hi))));
}

static int value_ok(ikv_precision precision, float x) {
  if (!isfinite(x)) return 0;
  return precision != IKV_INT4 || fabsf(x) <= IKV_INT4_INPUT_MAX;
}

static int rows_ok(ikv_precision precision, uint32_t D, const float *rows, size_t stride, uint32_t n) {
  for (uint32_t r = 0; r < n; r++)
    for (uint32_t c = 0; c < D; c++)
      if (!value_ok(precision, rows[r * stride + c])) return 0;
  return 1;
}

static ikv_status tile_args(ikv_precision precision, ikv_kv kv, uint32_t P, uint32_t D,
                            uint32_t first, uint32_t n) {
  if (!ikv_precision_valid(precision)) return IKV_E_PRECISION;
  if ((unsigned)kv > IKV_VALUES) return IKV_E_INVALID;
  ikv_geometry g = {.layers = 1, .kv_heads = 1, .head_dim = D, .page_size = P};
  if (ikv_geometry_check(&g) != IKV_OK) return IKV_E_INVALID;
  if ((uint64_t)first + n > P) return IKV_E_RANGE;
  return IKV_OK;
}

/* The write itself; arguments already validated. A fresh tile (fill 0) also
 * zeroes its padding, so a fully written page's bytes are fully determined. */
static void tile_write(tile *t, uint32_t fill, const float *rows, size_t stride, uint32_t n) {
  if (fill == 0) {
    size_t used = ikv_tile_scale_bytes(t->precision, t->kv, t->P, t->D);
    memset(t->scales + used, 0,
           ikv_tile_bytes(t->precision, t->kv, t->P, t->D) - ikv_tile_payload_bytes(t->precision, t->P, t->D) - used);
  }
  if (groups_span_rows(t)) {
    uint32_t groups = t->precision == IKV_FP8_E4M3 ? 1 : t->D;
    for (uint32_t g = 0; g < groups; g++) {
      float lo, hi;
      new_range(t, g, rows, stride, n, &lo, &hi);
      fit_group(t, g, fill, lo, hi);
    }
  } else if (t->precision == IKV_INT8 || t->precision == IKV_INT4) {
    for (uint32_t r = 0; r < n; r++) fit_row(t, fill + r, rows + r * stride);
  }
  for (uint32_t r = 0; r < n; r++)
    for (uint32_t c = 0; c < t->D; c++) value_set(t, fill + r, c, rows[r * stride + c]);
}

ikv_status ikv_ref_tile_write(ikv_precision precision, ikv_kv kv, uint32_t P, uint32_t D, void *base,
                              uint32_t fill, const float *rows, size_t stride, uint32_t n) {
  if (!base || (!rows && n)) return IKV_E_NULL;
  ikv_status st = tile_args(precision, kv, P, D, fill, n);
  if (st != IKV_OK) return st;
  if (!rows_ok(precision, D, rows, stride, n)) return IKV_E_INVALID;
  tile t = tile_at(precision, kv, P, D, base);
  tile_write(&t, fill, rows, stride, n);
  return IKV_OK;
}

ikv_status ikv_ref_tile_read(ikv_precision precision, ikv_kv kv, uint32_t P, uint32_t D,
                             const void *base, uint32_t first, uint32_t n, float *out,
                             size_t out_stride) {
  if (!base || (!out && n)) return IKV_E_NULL;
  ikv_status st = tile_args(precision, kv, P, D, first, n);
  if (st != IKV_OK) return st;
  tile t = tile_at(precision, kv, P, D, base);
  for (uint32_t r = 0; r < n; r++)
    for (uint32_t c = 0; c < D; c++) out[r * out_stride + c] = value_get(&t, first + r, c);
  return IKV_OK;
}

/* ---- pages --------------------------------------------------------------- */

ikv_status ikv_ref_to_float(const void *src, ikv_dtype dtype, size_t n, float *dst) {
  if ((!src || !dst) && n) return IKV_E_NULL;
  const uint16_t *h = (const uint16_t *)src;
  switch (dtype) {
    case IKV_DTYPE_F32: memcpy(dst, src, n * sizeof(float)); break;
    case IKV_DTYPE_F16: for (size_t i = 0; i < n; i++) dst[i] = ikv_f16_to_f32(h[i]); break;
    case IKV_DTYPE_BF16: for (size_t i = 0; i < n; i++) dst[i] = ikv_bf16_to_f32(h[i]); break;
    default: return IKV_E_INVALID;
  }
  return IKV_OK;
}

/* K and V of n tokens ([n][kv_heads][D]) as float, in one allocation. */
static ikv_status kv_to_float(const void *k, const void *v, ikv_dtype dtype, size_t count,
                              float **kf, float **vf) {
  if ((unsigned)dtype >= IKV_DTYPE_COUNT) return IKV_E_INVALID;
  float *buf = malloc(sizeof(float) * (2 * count + 1));
  if (!buf) return IKV_E_NO_MEMORY;
  ikv_ref_to_float(k, dtype, count, buf);
  ikv_ref_to_float(v, dtype, count, buf + count);
  *kf = buf;
  *vf = buf + count;
  return IKV_OK;
}

static ikv_status page_write_float(const ikv_geometry *g, ikv_precision precision, const float *k,
                                   const float *v, uint32_t n, void *page) {
  size_t stride = (size_t)g->kv_heads * g->head_dim;
  for (uint32_t i = 0; i < 2; i++)
    if (!rows_ok(precision, (uint32_t)stride, i ? v : k, stride, n)) return IKV_E_INVALID;
  memset(page, 0, ikv_page_layer_bytes(g, precision));
  for (uint32_t h = 0; h < g->kv_heads; h++)
    for (int kv = IKV_KEYS; kv <= IKV_VALUES; kv++) {
      tile t = tile_at(precision, (ikv_kv)kv, g->page_size, g->head_dim,
                       (uint8_t *)page + ikv_tile_offset(g, precision, h, (ikv_kv)kv));
      tile_write(&t, 0, (kv == IKV_KEYS ? k : v) + (size_t)h * g->head_dim, stride, n);
    }
  return IKV_OK;
}

static ikv_status page_args(const ikv_geometry *g, ikv_precision precision, uint32_t n) {
  if (ikv_geometry_check(g) != IKV_OK) return IKV_E_INVALID;
  if (!ikv_precision_valid(precision)) return IKV_E_PRECISION;
  if (n > g->page_size) return IKV_E_RANGE;
  return IKV_OK;
}

ikv_status ikv_ref_page_quantize(const ikv_geometry *g, ikv_precision precision, const void *k,
                                 const void *v, ikv_dtype dtype, uint32_t n, void *page) {
  if (!g || !page || ((!k || !v) && n)) return IKV_E_NULL;
  ikv_status st = page_args(g, precision, n);
  float *kf, *vf;
  if (st == IKV_OK) st = kv_to_float(k, v, dtype, (size_t)n * g->kv_heads * g->head_dim, &kf, &vf);
  if (st != IKV_OK) return st;
  st = page_write_float(g, precision, kf, vf, n, page);
  free(kf);
  return st;
}

ikv_status ikv_ref_page_dequantize(const ikv_geometry *g, ikv_precision precision, const void *page,
                                   uint32_t n, float *k, float *v) {
  if (!g || !page || ((!k || !v) && n)) return IKV_E_NULL;
  ikv_status st = page_args(g, precision, n);
  if (st != IKV_OK) return st;
  size_t stride = (size_t)g->kv_heads * g->head_dim;
  for (uint32_t h = 0; h < g->kv_heads; h++)
    for (int kv = IKV_KEYS; kv <= IKV_VALUES; kv++) {
      const uint8_t *base = (const uint8_t *)page + ikv_tile_offset(g, precision, h, (ikv_kv)kv);
      float *out = (kv == IKV_KEYS ? k : v) + (size_t)h * g->head_dim;
      ikv_ref_tile_read(precision, (ikv_kv)kv, g->page_size, g->head_dim, base, 0, n, out, stride);
    }
  return IKV_OK;
}

ikv_status ikv_ref_requantize(const ikv_geometry *g, ikv_precision from, const void *src,
                              ikv_precision to, void *dst, uint32_t n) {
  if (!g || !src || !dst) return IKV_E_NULL;
  ikv_status st = page_args(g, from, n);
  if (st == IKV_OK) st = page_args(g, to, n);
  if (st != IKV_OK) return st;
  size_t count = (size_t)n * g->kv_heads * g->head_dim;
  float *buf = malloc(sizeof(float) * (2 * count + 1));
  if (!buf) return IKV_E_NO_MEMORY;
  ikv_ref_page_dequantize(g, from, src, n, buf, buf + count);
  st = page_write_float(g, to, buf, buf + count, n, dst);
  free(buf);
  return st;
}

/* ---- write_kv ------------------------------------------------------------ */

ikv_status ikv_ref_write_kv(const ikv_geometry *g, const ikv_layer_pools *pools, const void *k,
                            const void *v, ikv_dtype dtype, const int64_t *slot_mapping,
                            const uint8_t *slot_precision, uint32_t n) {
  if (!g || !pools || (n && (!k || !v || !slot_mapping || !slot_precision))) return IKV_E_NULL;
  if (ikv_geometry_check(g) != IKV_OK) return IKV_E_INVALID;
  const uint32_t P = g->page_size;
  for (uint32_t i = 0; i < n; i++) {
    int p = slot_precision[i];
    if (!ikv_precision_valid(p) || !pools->base[p]) return IKV_E_PRECISION;
    if (slot_mapping[i] < 0 || slot_mapping[i] / P >= pools->pages[p]) return IKV_E_RANGE;
  }
  size_t stride = (size_t)g->kv_heads * g->head_dim;
  float *kf, *vf;
  ikv_status st = kv_to_float(k, v, dtype, n * stride, &kf, &vf);
  if (st != IKV_OK) return st;
  for (uint32_t i = 0; i < n && st == IKV_OK; i++)
    if (!rows_ok((ikv_precision)slot_precision[i], (uint32_t)stride, kf + i * stride, stride, 1) ||
        !rows_ok((ikv_precision)slot_precision[i], (uint32_t)stride, vf + i * stride, stride, 1))
      st = IKV_E_INVALID;
  for (uint32_t i = 0; i < n && st == IKV_OK;) {
    /* One run: consecutive tokens, consecutive offsets, one page. */
    ikv_precision prec = (ikv_precision)slot_precision[i];
    int64_t page = slot_mapping[i] / P;
    uint32_t fill = (uint32_t)(slot_mapping[i] % P), len = 1;
    while (i + len < n && slot_precision[i + len] == prec && slot_mapping[i + len] == slot_mapping[i] + len &&
           slot_mapping[i + len] / P == page)
      len++;
    uint8_t *base = (uint8_t *)pools->base[prec] + (size_t)page * ikv_page_layer_bytes(g, prec);
    for (uint32_t h = 0; h < g->kv_heads; h++)
      for (int kv = IKV_KEYS; kv <= IKV_VALUES; kv++) {
        tile t = tile_at(prec, (ikv_kv)kv, P, g->head_dim, base + ikv_tile_offset(g, prec, h, (ikv_kv)kv));
        tile_write(&t, fill, (kv == IKV_KEYS ? kf : vf) + i * stride + (size_t)h * g->head_dim, stride, len);
      }
    i += len;
  }
  free(kf);
  return st;
}
