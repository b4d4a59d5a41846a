#include "runtime/ikv_base.h"

static const char *const status_names[IKV_STATUS_COUNT] = {
    [IKV_OK] = "IKV_OK: success",
    [IKV_E_NULL] = "IKV_E_NULL: a required pointer was NULL",
    [IKV_E_INVALID] = "IKV_E_INVALID: argument out of range",
    [IKV_E_NO_MEMORY] = "IKV_E_NO_MEMORY: host allocation failed",
    [IKV_E_CAPACITY] = "IKV_E_CAPACITY: capacity exhausted",
    [IKV_E_UNKNOWN_SEQ] = "IKV_E_UNKNOWN_SEQ: no such sequence",
    [IKV_E_UNKNOWN_PAGE] = "IKV_E_UNKNOWN_PAGE: no such page",
    [IKV_E_UNKNOWN_SPAN] = "IKV_E_UNKNOWN_SPAN: no such span",
    [IKV_E_RANGE] = "IKV_E_RANGE: index outside the sequence",
    [IKV_E_PRECISION] = "IKV_E_PRECISION: invalid precision",
    [IKV_E_NOT_RESIDENT] = "IKV_E_NOT_RESIDENT: page not in that tier",
    [IKV_E_LAST_COPY] = "IKV_E_LAST_COPY: would drop the page's only copy",
    [IKV_E_PINNED] = "IKV_E_PINNED: page is pinned",
    [IKV_E_CUDA] = "IKV_E_CUDA: a CUDA call failed",
    [IKV_E_UNSUPPORTED] = "IKV_E_UNSUPPORTED: not supported by this build or device",
    [IKV_E_IO] = "IKV_E_IO: reading or writing a file failed",
};

const char *ikv_status_str(ikv_status status) {
  if ((unsigned)status >= IKV_STATUS_COUNT) return "IKV_E_?: unknown status code";
  return status_names[status];
}

const char *ikv_version(void) { return IKV_VERSION_STRING; }

static const char *const precision_names[IKV_PRECISION_COUNT] = {
    [IKV_FP16] = "fp16", [IKV_BF16] = "bf16", [IKV_FP8_E4M3] = "fp8_e4m3",
    [IKV_INT8] = "int8", [IKV_INT4] = "int4",
};

int ikv_precision_valid(int precision) {
  return precision >= 0 && precision < IKV_PRECISION_COUNT;
}

const char *ikv_precision_name(int precision) {
  if (precision == IKV_SKIP) return "skip";
  return ikv_precision_valid(precision) ? precision_names[precision] : NULL;
}

const char *ikv_tier_name(int tier) {
  switch (tier) {
    case IKV_TIER_GPU: return "gpu";
    case IKV_TIER_HOST: return "host";
    default: return NULL;
  }
}

static int is_power_of_two(uint32_t x) { return x && !(x & (x - 1)); }

ikv_status ikv_geometry_check(const ikv_geometry *g) {
  if (!g) return IKV_E_NULL;
  if (g->layers < 1 || g->kv_heads < 1) return IKV_E_INVALID;
  if (g->head_dim < 16 || g->head_dim > 512 || g->head_dim % 16) return IKV_E_INVALID;
  if (!is_power_of_two(g->page_size) || g->page_size < 8 || g->page_size > 256)
    return IKV_E_INVALID;
  return IKV_OK;
}
