/* write_kv and requantize on the GPU, byte for byte the C reference's. */
#include <cuda_runtime.h>
#include <string.h>

#include "kernels/quant.h"
#include "kernels/quantize_cuda.h"

/* A warp writes a tile (one KV head's keys or values of one page); a block
 * holds WARPS warps, which share the tiles of its pages. */
#define WARPS 8
#define THREADS (WARPS * 32)

/* Where a tile's parts are, for one precision: shared by both kernels. */
struct tile_geo {
  size_t page_bytes[IKV_PRECISION_COUNT];
  uint32_t k_tile[IKV_PRECISION_COUNT], v_tile[IKV_PRECISION_COUNT], payload[IKV_PRECISION_COUNT],
      k_scales[IKV_PRECISION_COUNT], v_scales[IKV_PRECISION_COUNT];
  uint8_t *base[IKV_PRECISION_COUNT];
  uint32_t P, D, H;
};

static tile_geo make_geo(const ikv_geometry *g, const ikv_layer_pools *pools) {
  tile_geo t;
  memset(&t, 0, sizeof(t));
  for (int p = 0; p < IKV_PRECISION_COUNT; p++) {
    t.page_bytes[p] = ikv_page_layer_bytes(g, (ikv_precision)p);
    t.k_tile[p] = (uint32_t)ikv_tile_bytes((ikv_precision)p, IKV_KEYS, g->page_size, g->head_dim);
    t.v_tile[p] = (uint32_t)ikv_tile_bytes((ikv_precision)p, IKV_VALUES, g->page_size, g->head_dim);
    t.payload[p] = (uint32_t)ikv_tile_payload_bytes((ikv_precision)p, g->page_size, g->head_dim);
    t.k_scales[p] = (uint32_t)ikv_tile_scale_bytes((ikv_precision)p, IKV_KEYS, g->page_size, g->head_dim);
    t.v_scales[p] = (uint32_t)ikv_tile_scale_bytes((ikv_precision)p, IKV_VALUES, g->page_size, g->head_dim);
    t.base[p] = (uint8_t *)pools->base[p];
  }
  t.P = g->page_size, t.D = g->head_dim, t.H = g->kv_heads;
  return t;
}

/* One tile in device memory. */
struct tile {
  int prec;
  bool keys;
  uint32_t D, bytes, scale_bytes;
  uint8_t *payload, *scales;
};

__device__ tile tile_at(const tile_geo &g, int prec, int32_t slot, uint32_t h, bool keys) {
  tile t;
  t.prec = prec, t.keys = keys, t.D = g.D;
  uint8_t *kt = g.base[prec] + (size_t)slot * g.page_bytes[prec] + (size_t)h * (g.k_tile[prec] + g.v_tile[prec]);
  t.payload = keys ? kt : kt + g.k_tile[prec];
  t.scales = t.payload + g.payload[prec];
  t.bytes = keys ? g.k_tile[prec] : g.v_tile[prec];
  t.scale_bytes = keys ? g.k_scales[prec] : g.v_scales[prec];
  return t;
}

/* A group's parameters: the float scale (FP8, INT8) or INT4's scale and zero. */
struct params {
  float scale;
  ikv_int4_params i4;
};

__device__ params group_get(const tile &t, int g) {
  params p = {0.0f, {0, 0}};
  if (t.prec == IKV_INT4) memcpy(&p.i4, t.scales + 4 * g, 4);
  else memcpy(&p.scale, t.scales + 4 * g, 4);
  return p;
}

__device__ void group_set(const tile &t, int g, params p) {
  if (t.prec == IKV_INT4) memcpy(t.scales + 4 * g, &p.i4, 4);
  else memcpy(t.scales + 4 * g, &p.scale, 4);
}

/* The group a cell belongs to: the tile (FP8), the channel (keys), the row. */
__device__ int group_of(const tile &t, int r, int c) {
  return t.prec == IKV_FP8_E4M3 ? 0 : t.keys ? c : r;
}

__device__ uint32_t code_get(const tile &t, int r, int c) {
  const size_t i = (size_t)r * t.D + c;
  if (t.prec == IKV_FP16 || t.prec == IKV_BF16) return reinterpret_cast<const uint16_t *>(t.payload)[i];
  if (t.prec == IKV_INT4) return (t.payload[i / 2] >> (4 * (c & 1))) & 0xf;
  return t.payload[i];
}

__device__ float decode(const tile &t, uint32_t code, params p) {
  switch (t.prec) {
    case IKV_FP16: return ikv_f16_to_f32((uint16_t)code);
    case IKV_BF16: return ikv_bf16_to_f32((uint16_t)code);
    case IKV_FP8_E4M3: return ikv_fp8_decode((uint8_t)code, p.scale);
    case IKV_INT8: return ikv_int8_decode((int8_t)code, p.scale);
    default: return ikv_int4_decode((uint8_t)code, p.i4);
  }
}

__device__ uint32_t encode(const tile &t, float x, params p) {
  switch (t.prec) {
    case IKV_FP16: return ikv_f32_to_f16(x);
    case IKV_BF16: return ikv_f32_to_bf16(x);
    case IKV_FP8_E4M3: return ikv_fp8_encode(x, p.scale);
    case IKV_INT8: return (uint8_t)ikv_int8_encode(x, p.scale);
    default: return ikv_int4_encode(x, p.i4);
  }
}

/* Stores the 8- or 4-bit codes of channels c and c + 1 (c even) of row r: a
 * thread owns whole channel pairs, so INT4 bytes are written whole. */
__device__ void codes_put(const tile &t, int r, int c, uint32_t a, uint32_t b) {
  const size_t i = (size_t)r * t.D + c;
  if (t.prec == IKV_INT4) {
    t.payload[i / 2] = (uint8_t)(a | (b << 4));
  } else {
    t.payload[i] = (uint8_t)a, t.payload[i + 1] = (uint8_t)b;
  }
}

__device__ int lane() { return threadIdx.x & 31; }

/* Stores the codes of channels c .. c + 7 of row r (c a multiple of 8):
 * one aligned store. */
__device__ void codes_put8(const tile &t, int r, int c, const uint32_t *code) {
  const size_t i = (size_t)r * t.D + c;
  if (t.prec == IKV_FP16 || t.prec == IKV_BF16) {
    uint4 w;
    uint16_t *h = reinterpret_cast<uint16_t *>(&w);
#pragma unroll
    for (int j = 0; j < 8; j++) h[j] = (uint16_t)code[j];
    *reinterpret_cast<uint4 *>(t.payload + 2 * i) = w;
  } else if (t.prec == IKV_INT4) { /* even channels in the low nibbles */
    uint32_t w = 0;
#pragma unroll
    for (int j = 0; j < 8; j++) w |= (code[j] & 0xfu) << (4 * j);
    *reinterpret_cast<uint32_t *>(t.payload + i / 2) = w;
  } else {
    uint2 w;
    uint8_t *b = reinterpret_cast<uint8_t *>(&w);
#pragma unroll
    for (int j = 0; j < 8; j++) b[j] = (uint8_t)code[j];
    *reinterpret_cast<uint2 *>(t.payload + i) = w;
  }
}

/* Encodes and stores 8 values of row r from channel c. */
__device__ void encode_put8(const tile &t, int r, int c, const float *in, params p) {
  uint32_t code[8];
#pragma unroll
  for (int j = 0; j < 8; j++) code[j] = encode(t, in[j], p);
  codes_put8(t, r, c, code);
}

/* The range of the values fed to a tile write, over the warp. */
__device__ void warp_range(float &lo, float &hi) {
#pragma unroll
  for (int off = 16; off; off >>= 1)
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off)), hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
}

/* The reference's scale rule for a group spanning rows: keep the old
 * parameters if [lo, hi] fits them, else refit to the union. */
__device__ params fit_group(const tile &t, params old, bool fresh, float lo, float hi, bool *refit) {
  params fit = old;
  *refit = false;
  if (t.prec == IKV_INT4) {
    const float old_lo = ikv_int4_lo(old.i4), old_hi = ikv_int4_hi(old.i4);
    if (!fresh && lo >= old_lo && hi <= old_hi) return fit;
    fit.i4 = fresh ? ikv_int4_fit(lo, hi) : ikv_int4_fit(fminf(lo, old_lo), fmaxf(hi, old_hi));
  } else {
    const float qmax = t.prec == IKV_INT8 ? IKV_INT8_QMAX : IKV_FP8_E4M3_MAX, amax = fmaxf(fabsf(lo), fabsf(hi));
    if (!fresh && amax <= old.scale * qmax) return fit;
    fit.scale = amax / qmax;
  }
  *refit = true;
  return fit;
}

__device__ params fit_row(const tile &t, float lo, float hi) {
  params p = {0.0f, {0, 0}};
  if (t.prec == IKV_INT4) p.i4 = ikv_int4_fit(lo, hi);
  else p.scale = fmaxf(fabsf(lo), fabsf(hi)) / IKV_INT8_QMAX;
  return p;
}

/* Writes rows [fill, fill + n) of a tile from src(r, c) (r counted from
 * fill), under the reference's rule; fill == 0 starts the tile afresh. Run by
 * one whole warp. */
template <typename Src> __device__ void tile_write(const tile &t, int fill, int n, const Src &src) {
  const int D = t.D;
  if (fill == 0) /* a fresh tile: zero its padding */
    for (uint32_t b = t.scale_bytes + lane(); b < t.bytes - (uint32_t)(t.scales - t.payload); b += 32)
      t.scales[b] = 0;
  const bool per_row = !t.keys && (t.prec == IKV_INT8 || t.prec == IKV_INT4);
  /* head_dim is a multiple of 16 (ikv_geometry_check): rows split into
   * aligned runs of 8 channels */
  if ((t.prec == IKV_FP16 || t.prec == IKV_BF16) && src.same_bits(t.prec)) {
    /* the input already holds the page's bits (finite by contract, so the
     * reference's round trip through float changes none): copy them */
    for (int x = lane(); x < n * D / 8; x += 32) {
      const int r = x / (D / 8), c = x % (D / 8) * 8;
      *reinterpret_cast<uint4 *>(t.payload + 2 * ((size_t)(fill + r) * D + c)) = src.bits8(r, c);
    }
  } else if (t.prec == IKV_FP16 || t.prec == IKV_BF16) {
    for (int x = lane(); x < n * D / 8; x += 32) {
      const int r = x / (D / 8), c = x % (D / 8) * 8;
      float in[8];
      src.load8(r, c, in);
      encode_put8(t, fill + r, c, in, params{0.0f, {0, 0}});
    }
  } else if (per_row && D % 32 == 0) { /* INT8 / INT4 values, each token its own group: 4 lanes a row */
    const int q = lane() & 3;
    for (int r0 = 0; r0 < n; r0 += 8) {
      const int r = r0 + (lane() >> 2);
      float in[8], lo = INFINITY, hi = -INFINITY;
      if (r < n)
        for (int c = 8 * q; c < D; c += 32) {
          src.load8(r, c, in);
#pragma unroll
          for (int j = 0; j < 8; j++) lo = fminf(lo, in[j]), hi = fmaxf(hi, in[j]);
        }
#pragma unroll
      for (int off = 1; off < 4; off <<= 1) /* the row's 4 lanes */
        lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off)), hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
      if (r >= n) continue;
      const params p = fit_row(t, lo, hi);
      if (q == 0) group_set(t, fill + r, p);
      for (int c = 8 * q; c < D; c += 32) {
        src.load8(r, c, in);
        encode_put8(t, fill + r, c, in, p);
      }
    }
  } else if (per_row) { /* INT8 / INT4 values: each token its own group */
    for (int r = 0; r < n; r++) {
      float lo = INFINITY, hi = -INFINITY;
      for (int c = lane(); c < D; c += 32) lo = fminf(lo, src(r, c)), hi = fmaxf(hi, src(r, c));
      warp_range(lo, hi);
      const params p = fit_row(t, lo, hi);
      if (lane() == 0) group_set(t, fill + r, p);
      for (int c = 2 * lane(); c < D; c += 2 * 32)
        codes_put(t, fill + r, c, encode(t, src(r, c), p), encode(t, src(r, c + 1), p));
    }
  } else if (t.prec == IKV_FP8_E4M3) { /* one group: the whole tile */
    float lo = INFINITY, hi = -INFINITY;
    for (int x = lane(); x < n * D / 8; x += 32) {
      float in[8];
      src.load8(x / (D / 8), x % (D / 8) * 8, in);
#pragma unroll
      for (int j = 0; j < 8; j++) lo = fminf(lo, in[j]), hi = fmaxf(hi, in[j]);
    }
    warp_range(lo, hi);
    const params old = group_get(t, 0);
    bool refit;
    const params p = fit_group(t, old, fill == 0, lo, hi, &refit);
    if (refit)
      for (int x = lane(); x < fill * D / 2; x += 32) {
        const int r = x / (D / 2), c = x % (D / 2) * 2;
        codes_put(t, r, c, encode(t, decode(t, code_get(t, r, c), old), p),
                  encode(t, decode(t, code_get(t, r, c + 1), old), p));
      }
    __syncwarp(); /* every lane has read the old scale */
    if (lane() == 0) group_set(t, 0, p);
    for (int x = lane(); x < n * D / 8; x += 32) {
      const int r = x / (D / 8), c = x % (D / 8) * 8;
      float in[8];
      src.load8(r, c, in);
      encode_put8(t, fill + r, c, in, p);
    }
  } else { /* INT8 / INT4 keys: each channel its own group; a thread owns channel pairs */
    for (int c = 2 * lane(); c < D; c += 2 * 32) {
      params old[2], p[2];
      bool refit[2];
      for (int k = 0; k < 2; k++) {
        float lo = INFINITY, hi = -INFINITY;
        for (int r = 0; r < n; r++) lo = fminf(lo, src(r, c + k)), hi = fmaxf(hi, src(r, c + k));
        old[k] = group_get(t, c + k);
        p[k] = fit_group(t, old[k], fill == 0, lo, hi, &refit[k]);
      }
      if (refit[0] || refit[1])
        for (int r = 0; r < fill; r++) {
          const uint32_t a = code_get(t, r, c), b = code_get(t, r, c + 1);
          codes_put(t, r, c, refit[0] ? encode(t, decode(t, a, old[0]), p[0]) : a,
                    refit[1] ? encode(t, decode(t, b, old[1]), p[1]) : b);
        }
      group_set(t, c, p[0]), group_set(t, c + 1, p[1]);
      for (int r = 0; r < n; r++) codes_put(t, fill + r, c, encode(t, src(r, c), p[0]), encode(t, src(r, c + 1), p[1]));
    }
  }
}

/* ---- write_kv ---------------------------------------------------------------- */

struct input_rows { /* the new tokens' rows of one head, in the input dtype */
  const void *x;
  int dtype;
  size_t first_token;
  uint32_t H, D, h;
  bool wide; /* 16-byte loads are aligned (see ikv_cuda_write_kv) */
  __device__ float operator()(int r, int c) const {
    const size_t i = ((first_token + r) * H + h) * D + c;
    if (dtype == IKV_DTYPE_F16) return ikv_f16_to_f32(reinterpret_cast<const uint16_t *>(x)[i]);
    if (dtype == IKV_DTYPE_BF16) return ikv_bf16_to_f32(reinterpret_cast<const uint16_t *>(x)[i]);
    return reinterpret_cast<const float *>(x)[i];
  }
  /* whether the rows are already in the 16-bit format prec, loadable 16 bytes at a time */
  __device__ bool same_bits(int prec) const {
    return wide && ((dtype == IKV_DTYPE_F16 && prec == IKV_FP16) || (dtype == IKV_DTYPE_BF16 && prec == IKV_BF16));
  }
  /* channels c .. c + 7 of row r as stored (same_bits) */
  __device__ uint4 bits8(int r, int c) const {
    return *reinterpret_cast<const uint4 *>(reinterpret_cast<const uint16_t *>(x) + ((first_token + r) * H + h) * D + c);
  }
  /* channels c .. c + 7 of row r */
  __device__ void load8(int r, int c, float *out) const {
    const size_t i = ((first_token + r) * H + h) * D + c;
    if (!wide) {
      for (int j = 0; j < 8; j++) out[j] = (*this)(r, c + j);
    } else if (dtype == IKV_DTYPE_F32) {
      const float4 a = reinterpret_cast<const float4 *>(reinterpret_cast<const float *>(x) + i)[0],
                   b = reinterpret_cast<const float4 *>(reinterpret_cast<const float *>(x) + i)[1];
      out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
    } else {
      const uint4 w = *reinterpret_cast<const uint4 *>(reinterpret_cast<const uint16_t *>(x) + i);
      const uint16_t *e = reinterpret_cast<const uint16_t *>(&w);
#pragma unroll
      for (int j = 0; j < 8; j++) out[j] = dtype == IKV_DTYPE_F16 ? ikv_f16_to_f32(e[j]) : ikv_bf16_to_f32(e[j]);
    }
  }
};

/* A block per chunk of `chunk` tokens writes every run (consecutive slots of
 * one page and precision) that starts in its chunk, whole, even past the
 * chunk's end; the warps of its row of blocks (gridDim.y) share the run's
 * 2 x kv_heads tiles. Big appends (prefill) take chunks of up to 16 tokens,
 * so few blocks start and exit idle; a decode step's few scattered tokens take
 * one token and one tile a warp, all in parallel. */
__global__ void __launch_bounds__(THREADS) write_kv_kernel(tile_geo g, const void *k, const void *v, int dtype,
                                                           const int64_t *slots, const uint8_t *precs, uint32_t n,
                                                           uint32_t chunk, bool wide) {
  const uint32_t i0 = blockIdx.x * chunk, end = min(i0 + chunk, n), warp = threadIdx.x >> 5;
  for (uint32_t i = i0; i < end;) {
    const int64_t slot = slots[i], page = slot / g.P;
    const uint8_t prec = precs[i];
    uint32_t len = 1;
    while (i + len < n && precs[i + len] == prec && slots[i + len] == slot + len && (slot + len) / g.P == page) len++;
    const bool continues = i == i0 && i > 0 && precs[i - 1] == prec && slots[i - 1] + 1 == slot && slots[i - 1] / g.P == page;
    if (!continues) /* else the run began in the chunk before: that block writes it */
      for (uint32_t t = blockIdx.y * WARPS + warp; t < 2 * g.H; t += WARPS * gridDim.y) {
        const uint32_t h = t >> 1;
        const bool keys = (t & 1) == 0;
        const input_rows src = {keys ? k : v, dtype, i, g.H, g.D, h, wide};
        tile_write(tile_at(g, prec, (int32_t)page, h, keys), (int)(slot % g.P), (int)len, src);
      }
    i += len;
  }
}

/* ---- requantize ---------------------------------------------------------------- */

struct tile_rows { /* a stored tile's rows, decoded */
  tile t;
  __device__ bool same_bits(int) const { return false; } /* a conversion: always decoded and encoded */
  __device__ uint4 bits8(int, int) const { return uint4{0, 0, 0, 0}; }
  __device__ float operator()(int r, int c) const { return decode(t, code_get(t, r, c), group_get(t, group_of(t, r, c))); }
  __device__ void load8(int r, int c, float *out) const {
    for (int j = 0; j < 8; j++) out[j] = (*this)(r, c + j);
  }
};

/* A block per move; its warps share the page's tiles. */
__global__ void __launch_bounds__(THREADS) requantize_kernel(tile_geo g, const ikv_cuda_move *moves) {
  const ikv_cuda_move mv = moves[blockIdx.x];
  for (uint32_t t = threadIdx.x >> 5; t < 2 * g.H; t += WARPS) {
    const uint32_t h = t >> 1;
    const bool keys = (t & 1) == 0;
    const tile src = tile_at(g, mv.from, mv.src_slot, h, keys), dst = tile_at(g, mv.to, mv.dst_slot, h, keys);
    for (uint32_t b = lane(); b < dst.bytes; b += 32) dst.payload[b] = 0; /* rows past `rows` too */
    __syncwarp();
    const tile_rows rows = {src};
    tile_write(dst, 0, mv.rows, rows);
  }
}

/* ---- host side ------------------------------------------------------------------- */

extern "C" ikv_status ikv_cuda_write_kv(const ikv_geometry *g, const ikv_layer_pools *pools, const void *k, const void *v,
                                        ikv_dtype dtype, const int64_t *slot_mapping, const uint8_t *slot_precision,
                                        uint32_t n, void *stream) {
  if (!g || !pools || (n && (!k || !v || !slot_mapping || !slot_precision))) return IKV_E_NULL;
  if (ikv_geometry_check(g) != IKV_OK || (unsigned)dtype >= IKV_DTYPE_COUNT) return IKV_E_INVALID;
  if (!n) return IKV_OK;
  const uint32_t chunk = n / 2048 < 1 ? 1 : n / 2048 > 16 ? 16 : n / 2048; /* keeps >= 2048 blocks */
  const size_t es = dtype == IKV_DTYPE_F32 ? 4 : 2;
  const bool wide = (uintptr_t)k % 16 == 0 && (uintptr_t)v % 16 == 0 && g->head_dim * es % 16 == 0;
  const uint32_t tile_blocks = chunk == 1 ? (2 * g->kv_heads + WARPS - 1) / WARPS : 1;
  write_kv_kernel<<<dim3((n + chunk - 1) / chunk, tile_blocks), THREADS, 0, (cudaStream_t)stream>>>(
      make_geo(g, pools), k, v, dtype, slot_mapping, slot_precision, n, chunk, wide);
  return cudaGetLastError() == cudaSuccess ? IKV_OK : IKV_E_CUDA;
}

extern "C" ikv_status ikv_cuda_requantize(const ikv_geometry *g, const ikv_layer_pools *pools, const ikv_cuda_move *moves,
                                          uint32_t count, void *stream) {
  if (!g || !pools || (count && !moves)) return IKV_E_NULL;
  if (ikv_geometry_check(g) != IKV_OK) return IKV_E_INVALID;
  if (!count) return IKV_OK;
  requantize_kernel<<<count, THREADS, 0, (cudaStream_t)stream>>>(make_geo(g, pools), moves);
  return cudaGetLastError() == cudaSuccess ? IKV_OK : IKV_E_CUDA;
}
