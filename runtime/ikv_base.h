/*
 * intentkv: conventions shared by every public header.
 *
 * - Every function that can fail returns an ikv_status; IKV_OK is zero.
 *   ikv_status_str() names a status (a static string, never freed).
 * - A function that returns an error changes nothing: no partial update, no leak.
 * - Handles are opaque pointers created by *_create and released by *_destroy.
 * - Buffers passed in belong to the caller; the library keeps no pointer it was
 *   handed past the call unless the function's comment says otherwise.
 */
#ifndef IKV_BASE_H
#define IKV_BASE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IKV_VERSION_MAJOR 0
#define IKV_VERSION_MINOR 1
#define IKV_VERSION_PATCH 0
#define IKV_VERSION_STRING "0.1.0"
/* One comparable number: major * 10000 + minor * 100 + patch. */
#define IKV_VERSION_NUMBER \
  (IKV_VERSION_MAJOR * 10000 + IKV_VERSION_MINOR * 100 + IKV_VERSION_PATCH)

typedef enum ikv_status {
  IKV_OK = 0,
  IKV_E_NULL,            /* a required pointer argument was NULL */
  IKV_E_INVALID,         /* an argument is out of its documented range */
  IKV_E_NO_MEMORY,       /* the host allocator failed */
  IKV_E_CAPACITY,        /* a pool, table or caller buffer is full */
  IKV_E_UNKNOWN_SEQ,     /* no live sequence has this id */
  IKV_E_UNKNOWN_PAGE,    /* no live page has this id */
  IKV_E_UNKNOWN_SPAN,    /* the sequence has no span with this id */
  IKV_E_RANGE,           /* a token or page index outside the sequence */
  IKV_E_PRECISION,       /* precision code out of range or not storable */
  IKV_E_NOT_RESIDENT,    /* the page has no copy in the tier asked for */
  IKV_E_LAST_COPY,       /* dropping this copy would lose the page's only bytes */
  IKV_E_PINNED,          /* the page is pinned and cannot leave its tier */
  IKV_E_CUDA,            /* a CUDA call failed */
  IKV_E_UNSUPPORTED,     /* this build or device cannot do it */
  IKV_E_IO,              /* reading or writing a file failed */
  IKV_STATUS_COUNT
} ikv_status;

/* Name of a status, e.g. "IKV_E_CAPACITY: capacity exhausted". Never NULL. */
const char *ikv_status_str(ikv_status status);

/* IKV_VERSION_STRING of the library actually linked. */
const char *ikv_version(void);

/* Storage precision of a page. SKIP only appears in selection/precision
 * tables ("do not read this page"); no page is stored in it. */
typedef enum ikv_precision {
  IKV_FP16 = 0,
  IKV_BF16,
  IKV_FP8_E4M3,
  IKV_INT8,
  IKV_INT4,
  IKV_PRECISION_COUNT, /* number of storable precisions */
  IKV_SKIP = 255
} ikv_precision;

/* "fp16", "bf16", "fp8_e4m3", "int8", "int4", "skip"; NULL for other codes. */
const char *ikv_precision_name(int precision);
/* 1 if precision is a storable code (not SKIP, not out of range). */
int ikv_precision_valid(int precision);

/* Where a copy of a page lives. */
typedef enum ikv_tier { IKV_TIER_GPU = 0, IKV_TIER_HOST, IKV_TIER_COUNT } ikv_tier;

const char *ikv_tier_name(int tier); /* "gpu", "host"; NULL otherwise */

/* Model and page geometry. A page holds page_size consecutive tokens of one
 * sequence for all layers, K and V, all KV heads. */
typedef struct ikv_geometry {
  uint32_t layers;    /* >= 1 */
  uint32_t kv_heads;  /* >= 1 */
  uint32_t head_dim;  /* multiple of 16, 16..512 */
  uint32_t page_size; /* tokens per page: power of two, 8..256 (default 16) */
} ikv_geometry;

#define IKV_DEFAULT_PAGE_SIZE 16u

/* IKV_OK if every field is in range, else IKV_E_INVALID (IKV_E_NULL for NULL). */
ikv_status ikv_geometry_check(const ikv_geometry *geometry);

#ifdef __cplusplus
}
#endif
#endif /* IKV_BASE_H */
