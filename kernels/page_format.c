#include "kernels/page_format.h"

static size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

size_t ikv_tile_scale_bytes(ikv_precision precision, ikv_kv kv, uint32_t page_size, uint32_t head_dim) {
  /* INT8/INT4 keys are scaled per channel, values per token. */
  size_t groups = kv == IKV_KEYS ? head_dim : page_size;
  switch (precision) {
    case IKV_FP8_E4M3: return sizeof(float);
    case IKV_INT8: return groups * sizeof(float);
    case IKV_INT4: return groups * 2 * sizeof(uint16_t);
    default: return 0;
  }
}

size_t ikv_tile_bytes(ikv_precision precision, ikv_kv kv, uint32_t page_size, uint32_t head_dim) {
  if (!ikv_precision_valid(precision)) return 0;
  size_t used = ikv_tile_payload_bytes(precision, page_size, head_dim) +
                ikv_tile_scale_bytes(precision, kv, page_size, head_dim);
  return align_up(used, IKV_TILE_ALIGN);
}

size_t ikv_tile_payload_bytes(ikv_precision precision, uint32_t page_size, uint32_t head_dim) {
  size_t values = (size_t)page_size * head_dim;
  switch (precision) {
    case IKV_FP16:
    case IKV_BF16: return values * 2;
    case IKV_FP8_E4M3:
    case IKV_INT8: return values;
    case IKV_INT4: return values / 2;
    default: return 0;
  }
}

size_t ikv_tile_offset(const ikv_geometry *g, ikv_precision precision, uint32_t kv_head, ikv_kv kv) {
  size_t k = ikv_tile_bytes(precision, IKV_KEYS, g->page_size, g->head_dim);
  size_t v = ikv_tile_bytes(precision, IKV_VALUES, g->page_size, g->head_dim);
  return (size_t)kv_head * (k + v) + (kv == IKV_VALUES ? k : 0);
}

size_t ikv_page_layer_bytes(const ikv_geometry *g, ikv_precision precision) {
  if (ikv_geometry_check(g) != IKV_OK) return 0;
  return (size_t)g->kv_heads * (ikv_tile_bytes(precision, IKV_KEYS, g->page_size, g->head_dim) +
                                ikv_tile_bytes(precision, IKV_VALUES, g->page_size, g->head_dim));
}

size_t ikv_page_bytes(const ikv_geometry *g, ikv_precision precision) {
  return ikv_page_layer_bytes(g, precision) * (g ? g->layers : 0);
}
