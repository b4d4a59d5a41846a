#include "kernels/page_format.h"

static size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

size_t ikv_tile_bytes(ikv_precision precision, ikv_kv kv, uint32_t page_size,
                      uint32_t head_dim) {
  size_t values = (size_t)page_size * head_dim;
  /* INT8/INT4 keys are scaled per channel, values per token. */
  size_t groups = kv == IKV_KEYS ? head_dim : page_size;
  size_t bytes;
  switch (precision) {
    case IKV_FP16:
    case IKV_BF16: bytes = values * 2; break;
    case IKV_FP8_E4M3: bytes = values + sizeof(float); break;
    case IKV_INT8: bytes = values + groups * sizeof(float); break;
    case IKV_INT4: bytes = values / 2 + groups * 2 * sizeof(uint16_t); break;
    default: return 0;
  }
  return align_up(bytes, IKV_TILE_ALIGN);
}

size_t ikv_page_layer_bytes(const ikv_geometry *g, ikv_precision precision) {
  if (ikv_geometry_check(g) != IKV_OK) return 0;
  return (size_t)g->kv_heads * (ikv_tile_bytes(precision, IKV_KEYS, g->page_size, g->head_dim) +
                                ikv_tile_bytes(precision, IKV_VALUES, g->page_size, g->head_dim));
}

size_t ikv_page_bytes(const ikv_geometry *g, ikv_precision precision) {
  return ikv_page_layer_bytes(g, precision) * (g ? g->layers : 0);
}
