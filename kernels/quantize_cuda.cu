/* write_kv and requantize on the GPU, byte for byte the C reference's. */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <string.h>

#include "kernels/cp_async.cuh"
#include "kernels/launch.cuh"
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
  uint32_t P, D, H, p_shift; /* page_size == 1 << p_shift */
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
  while ((1u << t.p_shift) < t.P) t.p_shift++; /* page sizes are powers of two: slot / P is a shift */
  return t;
}

/* One tile in device memory. */
struct tile {
  int prec;
  bool keys;
  uint32_t D, bytes, scale_bytes;
  uint8_t *payload, *scales;
};

__device__ __forceinline__ tile tile_at(const tile_geo &g, int prec, int32_t slot, uint32_t h, bool keys) {
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

/* Scales follow the payload, 4-byte aligned (a payload is a multiple of 16
 * bytes): one word a group. */
__device__ __forceinline__ params group_get(const tile &t, int g) {
  const uint32_t w = reinterpret_cast<const uint32_t *>(t.scales)[g];
  params p = {0.0f, {0, 0}};
  if (t.prec == IKV_INT4) p.i4.scale = (uint16_t)w, p.i4.zero = (uint16_t)(w >> 16);
  else p.scale = __uint_as_float(w);
  return p;
}

__device__ __forceinline__ void group_set(const tile &t, int g, params p) {
  reinterpret_cast<uint32_t *>(t.scales)[g] =
      t.prec == IKV_INT4 ? (uint32_t)p.i4.scale | (uint32_t)p.i4.zero << 16 : __float_as_uint(p.scale);
}

/* The group a cell belongs to: the tile (FP8), the channel (keys), the row. */
__device__ __forceinline__ int group_of(const tile &t, int r, int c) {
  return t.prec == IKV_FP8_E4M3 ? 0 : t.keys ? c : r;
}

__device__ __forceinline__ uint32_t code_get(const tile &t, int r, int c) {
  const size_t i = (size_t)r * t.D + c;
  if (t.prec == IKV_FP16 || t.prec == IKV_BF16) return reinterpret_cast<const uint16_t *>(t.payload)[i];
  if (t.prec == IKV_INT4) return (t.payload[i / 2] >> (4 * (c & 1))) & 0xf;
  return t.payload[i];
}

__device__ __forceinline__ float decode(const tile &t, uint32_t code, params p) {
  switch (t.prec) {
    case IKV_FP16: return ikv_f16_to_f32((uint16_t)code);
    case IKV_BF16: return ikv_bf16_to_f32((uint16_t)code);
    case IKV_FP8_E4M3: return ikv_fp8_decode((uint8_t)code, p.scale);
    case IKV_INT8: return ikv_int8_decode((int8_t)code, p.scale);
    default: return ikv_int4_decode((uint8_t)code, p.i4);
  }
}

__device__ __forceinline__ uint32_t encode(const tile &t, float x, params p) {
  switch (t.prec) {
    case IKV_FP16: return ikv_f32_to_f16(x);
    case IKV_BF16: return ikv_f32_to_bf16(x);
    case IKV_FP8_E4M3: return ikv_fp8_encode(x, p.scale);
    case IKV_INT8: return (uint8_t)ikv_int8_encode(x, p.scale);
    default: return ikv_int4_encode(x, p.i4);
  }
}

__device__ __forceinline__ int lane() { return threadIdx.x & 31; }

/* The 8- or 4-bit codes of channels c .. c + 7 of row r (c a multiple of 8). */
__device__ __forceinline__ void codes_get8(const tile &t, int r, int c, uint32_t *code) {
  const size_t i = (size_t)r * t.D + c;
  if (t.prec == IKV_INT4) {
    const uint32_t w = *reinterpret_cast<const uint32_t *>(t.payload + i / 2);
#pragma unroll
    for (int j = 0; j < 8; j++) code[j] = (w >> (4 * j)) & 0xfu;
  } else {
    const uint2 w = *reinterpret_cast<const uint2 *>(t.payload + i);
    const uint8_t *b = reinterpret_cast<const uint8_t *>(&w);
#pragma unroll
    for (int j = 0; j < 8; j++) code[j] = b[j];
  }
}

/* Stores the codes of channels c .. c + 7 of row r (c a multiple of 8):
 * one aligned store. */
__device__ __forceinline__ void codes_put8(const tile &t, int r, int c, const uint32_t *code) {
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

/* Stores 8 INT4 codes of row r from channel c, each given as the bits of
 * its rounding's sum (ikv_round_small: the code in the low nibble above
 * 0x4B400000, whose low byte is 0): b0 + (b1 << 4) holds the byte of
 * channels c and c + 1 in its low byte (one shift-add), and two byte
 * permutes gather four such bytes into the word, 7 instructions for 8
 * codes where subtracting the bias, masking and shifting each code took 16. */
__device__ __forceinline__ void int4_put8(const tile &t, int r, int c, const uint32_t *biased) {
  const uint32_t lo = __byte_perm(biased[0] + (biased[1] << 4), biased[2] + (biased[3] << 4), 0x0040),
                 hi = __byte_perm(biased[4] + (biased[5] << 4), biased[6] + (biased[7] << 4), 0x0040);
  *reinterpret_cast<uint32_t *>(t.payload + ((size_t)r * t.D + c) / 2) = __byte_perm(lo, hi, 0x5410);
}

/* What encoding needs per value of a group, worked out once per group: the
 * scale's inverse, and INT4's zero as a float. */
struct coder {
  float inverse, zero;
};

__device__ __forceinline__ coder coder_of(const tile &t, params p) {
  if (t.prec == IKV_INT4) return coder{ikv_scale_inverse(ikv_f16_to_f32(p.i4.scale)), ikv_f16_to_f32(p.i4.zero)};
  return coder{ikv_scale_inverse(p.scale), 0.0f};
}

/* Encodes and stores 8 values of row r from channel c; channel c + j takes
 * cd[j] if each, else cd[0] (one group for all eight). The format is chosen
 * once for the eight. */
__device__ __forceinline__ void encode_put8(const tile &t, int r, int c, const float *in, const coder *cd, bool each) {
  uint32_t code[8];
  switch (t.prec) {
    case IKV_FP16:
#pragma unroll
      for (int j = 0; j < 8; j++) code[j] = ikv_f32_to_f16(in[j]);
      break;
    case IKV_BF16:
#pragma unroll
      for (int j = 0; j < 8; j++) code[j] = ikv_f32_to_bf16(in[j]);
      break;
    case IKV_FP8_E4M3: /* one group a tile: cd[0] */
      if (cd[0].inverse == 0.0f) {
#pragma unroll
        for (int j = 0; j < 8; j++) code[j] = 0;
      } else {
#pragma unroll
        for (int j = 0; j < 8; j += 2) { /* two at a time: the same bits as ikv_fp8_encode_by */
          const uint16_t two = __nv_cvt_float2_to_fp8x2(make_float2(in[j] * cd[0].inverse, in[j + 1] * cd[0].inverse),
                                                        __NV_SATFINITE, __NV_E4M3);
          code[j] = two & 0xffu, code[j + 1] = two >> 8;
        }
      }
      break;
    case IKV_INT8:
#pragma unroll
      for (int j = 0; j < 8; j++) code[j] = (uint8_t)ikv_int8_encode_by(in[j], (each ? cd[j] : cd[0]).inverse);
      break;
    default: { /* INT4: packed as it is rounded (below) */
      uint32_t biased[8];
#pragma unroll
      for (int j = 0; j < 8; j++) {
        const coder k = each ? cd[j] : cd[0];
        biased[j] = __float_as_uint(__fadd_rn(ikv_int4_clamped(in[j], k.zero, k.inverse), IKV_ROUND_BIAS));
      }
      int4_put8(t, r, c, biased);
      return;
    }
  }
  codes_put8(t, r, c, code);
}

/* lo/hi over the lanes whose ids differ only in the bits of [from, to). */
__device__ __forceinline__ void lanes_range(float &lo, float &hi, int from, int to) {
  for (int off = from; off < to; off <<= 1)
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off)), hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
}

/* The reference's scale rule for a group spanning rows: keep the old
 * parameters if [lo, hi] fits them, else refit to the union. */
__device__ __forceinline__ params fit_group(const tile &t, params old, bool fresh, float lo, float hi, bool *refit) {
  params fit = old;
  *refit = false;
  if (t.prec == IKV_INT4) {
    const float old_lo = ikv_int4_lo(old.i4), old_hi = ikv_int4_hi(old.i4);
    if (!fresh && lo >= old_lo && hi <= old_hi) return fit;
    fit.i4 = fresh ? ikv_int4_fit(lo, hi) : ikv_int4_fit(fminf(lo, old_lo), fmaxf(hi, old_hi));
  } else {
    const float qmax = t.prec == IKV_INT8 ? IKV_INT8_QMAX : IKV_FP8_E4M3_MAX, amax = fmaxf(fabsf(lo), fabsf(hi));
    if (!fresh && amax <= old.scale * qmax) return fit;
    fit.scale = t.prec == IKV_INT8 ? ikv_int8_scale(amax) : ikv_fp8_scale(amax);
  }
  *refit = true;
  return fit;
}

__device__ __forceinline__ params fit_row(const tile &t, float lo, float hi) {
  params p = {0.0f, {0, 0}};
  if (t.prec == IKV_INT4) p.i4 = ikv_int4_fit(lo, hi);
  else p.scale = ikv_int8_scale(fmaxf(fabsf(lo), fabsf(hi)));
  return p;
}

/* Rows a lane holds in registers at a time (RB * CJ cells). */
#define RB 1

/* Where a lane works in a tile. Rows are cut into 8-channel chunks, C a row;
 * LR lanes cover a row (C / CJ rounded up to a power of two, at most 32), so
 * a lane keeps the same CJ chunks on every row (col, col + LR, ...) and takes
 * rows row, row + G, row + 2G, ... (G = 32 / LR). A lane's cells
 * (row, chunk) are numbered row-major; batch b holds its cells
 * [b * RB * CJ, (b + 1) * RB * CJ). Every group's range then reduces in
 * registers and over a few shuffles. */
template <int CJ> struct lane_cells {
  int C, LR, G, col, row;
  __device__ explicit lane_cells(int D) {
    C = D / 8;
    int shift = 0; /* LR = 1 << shift: enough lanes for a row at CJ chunks a lane, at most 32 */
    while ((1 << shift) * CJ < C && shift < 5) shift++;
    LR = 1 << shift, G = 32 >> shift, col = lane() & (LR - 1), row = lane() >> shift;
  }
  __device__ int row_of(int b, int i) const { return row + G * (b * RB + i / CJ); }
  __device__ int chunk_of(int i) const { return col + LR * (i % CJ); }
  /* chunk_of for a lane's whole row (row groups), rotated by the row: the
   * 8 lanes of a quarter warp (4 rows) then read 8 different bank groups of
   * the staged rows, where rows 256 bytes apart all hit the same ones */
  __device__ int chunk_of_row(int i, int r) const { return col + LR * ((i + r) % CJ); }
  /* batches covering n rows: the same count on every lane */
  __device__ int batches(int n) const { return ((n + G - 1) / G + RB - 1) / RB; }
  __device__ bool holds(int b, int i, int n) const { return row_of(b, i) < n && chunk_of(i) < C; }
};

/* Loads batch b's cells of the n new rows. */
template <int CJ, typename Src>
__device__ __forceinline__ void batch_load(const lane_cells<CJ> &L, const Src &src, int n, int b, float (*v)[8]) {
#pragma unroll
  for (int i = 0; i < RB * CJ; i++)
    if (L.holds(b, i, n)) src.load8(L.row_of(b, i), 8 * L.chunk_of(i), v[i]);
}

/* lo and hi folded over channels c .. c + 7 of row r of any source. From
 * fp16 rows the minimum and maximum are taken in fp16, two at a time
 * (exact: no rounding in a comparison), then converted once each, where
 * converting every value first took three instructions a value. */
template <typename Src> __device__ __forceinline__ void range8(const Src &src, int r, int c, float &lo, float &hi) {
  if (src.f16_bits()) {
    const uint4 w = src.bits8(r, c);
    const __half2 *h = reinterpret_cast<const __half2 *>(&w);
    const float2 mn = __half22float2(__hmin2(__hmin2(h[0], h[1]), __hmin2(h[2], h[3])));
    const float2 mx = __half22float2(__hmax2(__hmax2(h[0], h[1]), __hmax2(h[2], h[3])));
    lo = fminf(lo, fminf(mn.x, mn.y)), hi = fmaxf(hi, fmaxf(mx.x, mx.y));
  } else {
    float v[8];
    src.load8(r, c, v);
#pragma unroll
    for (int j = 0; j < 8; j++) lo = fminf(lo, v[j]), hi = fmaxf(hi, v[j]);
  }
}

/* Groups within a row (fp16/bf16 conversions; INT8/INT4 values, a group per
 * token). Called with CJ of 8 per 256 channels, so a row's range reduces
 * over two lanes (head_dim 128), not sixteen, and a lane fits a row once for
 * eight cells; the cells stream from the source twice (range, then codes)
 * instead of waiting in registers. */
template <int CJ, typename Src> __device__ __forceinline__ void write_row_groups(const tile &t, int fill, int n, const Src &src) {
  const lane_cells<CJ> L(t.D);
  const bool per_row = t.prec == IKV_INT8 || t.prec == IKV_INT4;
  for (int r = L.row; r - L.row < n; r += L.G) { /* the same trips on every lane */
    coder cd = {0.0f, 0.0f};
    if (per_row) {
      float lo = INFINITY, hi = -INFINITY;
#pragma unroll 1
      for (int cj = 0; cj < CJ; cj++) {
        if (r >= n || L.chunk_of_row(cj, r) >= L.C) continue;
        range8(src, r, 8 * L.chunk_of_row(cj, r), lo, hi);
      }
      lanes_range(lo, hi, 1, L.LR); /* the row's lanes */
      const params p = fit_row(t, lo, hi);
      if (L.col == 0 && r < n) group_set(t, fill + r, p);
      cd = coder_of(t, p);
    }
    if (r >= n) continue;
#pragma unroll 1
    for (int cj = 0; cj < CJ; cj++) {
      const int c = L.chunk_of_row(cj, r);
      if (c >= L.C) continue;
      float v[8];
      src.load8(r, 8 * c, v);
      encode_put8(t, fill + r, 8 * c, v, &cd, false);
    }
  }
}

/* Groups spanning rows (FP8: the tile; INT8/INT4 keys: a channel): the new
 * rows' range first, then the reference's rule (refitting re-encodes rows
 * [0, fill)), then the new rows. The new parameters wait in the warp's
 * shared slice sp (head_dim entries) until every lane has used the old
 * ones: registers hold only ranges and one batch. */
template <int CJ, typename Src>
__device__ __forceinline__ void write_spanning_groups(const tile &t, int fill, int n, const Src &src, params *sp) {
  const lane_cells<CJ> L(t.D);
  const bool per_channel = t.prec != IKV_FP8_E4M3;
  const int nb = L.batches(n);
  float v[RB * CJ][8], lo[CJ][8], hi[CJ][8];
#pragma unroll
  for (int cj = 0; cj < CJ; cj++)
#pragma unroll
    for (int j = 0; j < 8; j++) lo[cj][j] = INFINITY, hi[cj][j] = -INFINITY;
  for (int b = 0; b < nb; b++) {
    batch_load(L, src, n, b, v);
#pragma unroll
    for (int i = 0; i < RB * CJ; i++)
      if (L.holds(b, i, n))
#pragma unroll
        for (int j = 0; j < 8; j++) lo[i % CJ][j] = fminf(lo[i % CJ][j], v[i][j]), hi[i % CJ][j] = fmaxf(hi[i % CJ][j], v[i][j]);
  }
  /* group (cj, j) is channel 8 * chunk_of(cj) + j (sp[that]); FP8's one
   * group is (0, 0) (sp[0]). Every lane of a group fits it (same range, same
   * result); bit 8 * cj + j of refit says whether it moved. */
  uint32_t refit = 0;
  coder cd[CJ][8];
  if (per_channel) {
#pragma unroll
    for (int cj = 0; cj < CJ; cj++)
#pragma unroll
      for (int j = 0; j < 8; j++) {
        lanes_range(lo[cj][j], hi[cj][j], L.LR, 32); /* the channel's lanes */
        cd[cj][j] = coder{0.0f, 0.0f};
        if (L.chunk_of(cj) >= L.C) continue;
        const int g = 8 * L.chunk_of(cj) + j;
        bool moved;
        const params p = fit_group(t, fill ? group_get(t, g) : params{0.0f, {0, 0}}, fill == 0, lo[cj][j], hi[cj][j], &moved);
        refit |= (uint32_t)moved << (8 * cj + j);
        cd[cj][j] = coder_of(t, p);
        if (L.row == 0) sp[g] = p;
      }
  } else {
#pragma unroll
    for (int cj = 0; cj < CJ; cj++)
#pragma unroll
      for (int j = 0; j < 8; j++) lo[0][0] = fminf(lo[0][0], lo[cj][j]), hi[0][0] = fmaxf(hi[0][0], hi[cj][j]);
    lanes_range(lo[0][0], hi[0][0], 1, 32);
    bool moved;
    const params p = fit_group(t, fill ? group_get(t, 0) : params{0.0f, {0, 0}}, fill == 0, lo[0][0], hi[0][0], &moved);
    refit = moved ? ~0u : 0u;
#pragma unroll
    for (int cj = 0; cj < CJ; cj++) cd[cj][0] = coder_of(t, p);
    if (lane() == 0) sp[0] = p;
  }
  __syncwarp(); /* sp written */
  if (refit)
    for (int r = L.row; r < fill; r += L.G) /* the rows already there, moved to refitted groups */
#pragma unroll
      for (int cj = 0; cj < CJ; cj++) {
        const int ch = L.chunk_of(cj);
        if (ch >= L.C || !((refit >> (8 * cj)) & 0xffu)) continue;
        uint32_t code[8];
        codes_get8(t, r, 8 * ch, code);
#pragma unroll
        for (int j = 0; j < 8; j++)
          if ((refit >> (8 * cj + j)) & 1u) {
            const int g = per_channel ? 8 * ch + j : 0;
            code[j] = encode(t, decode(t, code[j], group_get(t, g)), sp[g]);
          }
        codes_put8(t, r, 8 * ch, code);
      }
  for (int b = 0; b < nb; b++) {
    batch_load(L, src, n, b, v);
#pragma unroll
    for (int i = 0; i < RB * CJ; i++)
      if (L.holds(b, i, n))
        encode_put8(t, fill + L.row_of(b, i), 8 * L.chunk_of(i), v[i], cd[i % CJ], per_channel);
  }
  __syncwarp(); /* every lane has read the old parameters */
  if (per_channel) {
    if (L.row == 0)
#pragma unroll
      for (int cj = 0; cj < CJ; cj++)
        if (L.chunk_of(cj) < L.C)
#pragma unroll
          for (int j = 0; j < 8; j++) group_set(t, 8 * L.chunk_of(cj) + j, sp[8 * L.chunk_of(cj) + j]);
  } else if (lane() == 0) {
    group_set(t, 0, sp[0]);
  }
  __syncwarp(); /* sp read before the warp's next tile */
}

/* Writes rows [fill, fill + n) of a tile from src (rows counted from fill),
 * under the reference's rule; fill == 0 starts the tile afresh. Run by one
 * whole warp; CJ = ceil(head_dim / 256); sp: the warp's head_dim entries of
 * shared memory. */
template <int CJ, typename Src>
__device__ __forceinline__ void tile_write(const tile &t, int fill, int n, const Src &src, params *sp) {
  const int D = t.D;
  if (fill == 0) /* a fresh tile: zero its padding */
    for (uint32_t b = t.scale_bytes + lane(); b < t.bytes - (uint32_t)(t.scales - t.payload); b += 32)
      t.scales[b] = 0;
  /* head_dim is a multiple of 16 (ikv_geometry_check): rows split into
   * aligned runs of 8 channels */
  if ((t.prec == IKV_FP16 || t.prec == IKV_BF16) && src.same_bits(t.prec)) {
    /* the input already holds the page's bits (finite by contract, so the
     * reference's round trip through float changes none): copy them */
    const int C = D / 8;
    int r = lane() / C, c = lane() % C; /* of x, kept by steps */
    for (int x = lane(); x < n * C; x += 32) {
      *reinterpret_cast<uint4 *>(t.payload + 2 * ((size_t)(fill + r) * D + 8 * c)) = src.bits8(r, 8 * c);
      for (c += 32; c >= C; c -= C) r++;
    }
    return;
  }
  /* one copy of the encoder per format: with t.prec a constant, every
   * format test in the inner loops folds away */
  tile u = t;
  switch (t.prec) {
    case IKV_FP16: u.prec = IKV_FP16, write_row_groups<8 * CJ>(u, fill, n, src); break;
    case IKV_BF16: u.prec = IKV_BF16, write_row_groups<8 * CJ>(u, fill, n, src); break;
    case IKV_FP8_E4M3: u.prec = IKV_FP8_E4M3, write_spanning_groups<CJ>(u, fill, n, src, sp); break;
    case IKV_INT8:
      u.prec = IKV_INT8;
      if (t.keys) write_spanning_groups<CJ>(u, fill, n, src, sp);
      else write_row_groups<8 * CJ>(u, fill, n, src);
      break;
    default:
      u.prec = IKV_INT4;
      if (t.keys) write_spanning_groups<CJ>(u, fill, n, src, sp);
      else write_row_groups<8 * CJ>(u, fill, n, src);
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
#pragma unroll
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
  /* whether bits8 gives the rows as fp16 */
  __device__ bool f16_bits() const { return wide && dtype == IKV_DTYPE_F16; }
};

/* The new rows of one head staged in the warp's shared slice, in the input
 * dtype, row after row. */
struct staged_rows {
  const uint8_t *rows;
  int dtype;
  uint32_t D;
  __device__ bool same_bits(int prec) const {
    return (dtype == IKV_DTYPE_F16 && prec == IKV_FP16) || (dtype == IKV_DTYPE_BF16 && prec == IKV_BF16);
  }
  __device__ uint4 bits8(int r, int c) const { return *reinterpret_cast<const uint4 *>(rows + 2 * ((size_t)r * D + c)); }
  __device__ void load8(int r, int c, float *out) const {
    const size_t i = (size_t)r * D + c;
    if (dtype == IKV_DTYPE_F32) {
      const float4 a = reinterpret_cast<const float4 *>(rows + 4 * i)[0], b = reinterpret_cast<const float4 *>(rows + 4 * i)[1];
      out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
    } else {
      const uint4 w = *reinterpret_cast<const uint4 *>(rows + 2 * i);
      const uint16_t *e = reinterpret_cast<const uint16_t *>(&w);
      if (dtype == IKV_DTYPE_F16)
#pragma unroll
        for (int j = 0; j < 8; j++) out[j] = ikv_f16_to_f32(e[j]);
      else
#pragma unroll
        for (int j = 0; j < 8; j++) out[j] = ikv_bf16_to_f32(e[j]);
    }
  }
  __device__ bool f16_bits() const { return dtype == IKV_DTYPE_F16; }
};

/* Copies the n rows of src into buf (cap bytes) with every load in flight at
 * once; false (nothing copied) when they do not fit or are not 16-byte
 * aligned. Run by one whole warp. A row's 16-byte pieces go to consecutive
 * lanes; where they divide a warp (head_dim 128 fp16: 16 pieces, two rows a
 * step) each lane keeps its piece and steps its row pointer, with no
 * division or 64-bit product a step (this loop was 14% of write_kv's
 * instructions). */
__device__ __forceinline__ bool stage_rows(const input_rows &src, int n, uint8_t *buf, uint32_t cap) {
  const uint32_t row_bytes = src.D * (src.dtype == IKV_DTYPE_F32 ? 4 : 2), pieces = row_bytes / 16;
  if (!src.wide || (uint32_t)n * row_bytes > cap) return false;
  const size_t stride = (size_t)src.H * row_bytes; /* bytes from one token's row of this head to the next */
  const uint8_t *row0 = reinterpret_cast<const uint8_t *>(src.x) + (src.first_token * src.H + src.h) * row_bytes;
  if (32 % pieces == 0) {
    const uint32_t step = 32 / pieces, piece = lane() % pieces;
    const uint8_t *from = row0 + (lane() / pieces) * stride + 16 * piece;
    for (uint32_t x = lane(); x < n * pieces; x += 32, from += step * stride) cp_async16(buf + 16 * x, from, true);
  } else {
    uint32_t r = lane() / pieces, piece = lane() % pieces; /* of x, kept by steps */
    for (uint32_t x = lane(); x < n * pieces; x += 32) {
      cp_async16(buf + 16 * x, row0 + r * stride + 16 * piece, true);
      for (piece += 32; piece >= pieces; piece -= pieces) r++;
    }
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncwarp();
  return true;
}

/* The tokens of the run that starts at token i (consecutive slots of one
 * page and precision; slot and prec are token i's), counted by the warp 32
 * tokens at a time: every lane tests one token and a ballot finds the first
 * that breaks the run (a thread walking the run token by token was 9% of
 * write_kv's instructions). */
__device__ __forceinline__ uint32_t run_length(const int64_t *slots, const uint8_t *precs, uint32_t n, uint32_t i,
                                               int64_t slot, uint8_t prec, uint32_t p_shift) {
  uint32_t len = 1;
  for (;;) {
    const uint32_t j = i + len + lane();
    const bool same = j < n && precs[j] == prec && slots[j] == slot + (j - i) && (slot + (j - i)) >> p_shift == slot >> p_shift;
    const uint32_t breaks = __ballot_sync(0xffffffffu, !same);
    if (breaks) return len + (uint32_t)(__ffs(breaks) - 1);
    len += 32;
  }
}

/* A block per chunk of `chunk` tokens writes every run (consecutive slots of
 * one page and precision) that starts in its chunk, whole, even past the
 * chunk's end; the warps of its row of blocks (gridDim.y) share the run's
 * 2 x kv_heads tiles. Big appends (prefill) take chunks of up to 16 tokens,
 * so few blocks start and exit idle; a decode step's few scattered tokens take
 * one token and one tile a warp, all in parallel. */
template <int CJ>
__global__ void __launch_bounds__(THREADS, 4) write_kv_kernel(tile_geo g, const void *k, const void *v, int dtype,
                                                           const int64_t *slots, const uint8_t *precs, uint32_t n,
                                                           uint32_t chunk, bool wide, uint32_t stage_bytes) {
  extern __shared__ params warp_params[];
  /* a kernel launched as this one's dependent (the runtime's decode) may
   * start now: it waits for this grid before reading what this call or the
   * kernels before it write, and meanwhile loads the pages it may; this
   * one, launched as a dependent too, waits for the kernel before it */
  asm volatile("griddepcontrol.launch_dependents;");
  asm volatile("griddepcontrol.wait;" ::: "memory");
  const uint32_t i0 = blockIdx.x * chunk, end = min(i0 + chunk, n), warp = threadIdx.x >> 5;
  params *sp = warp_params + warp * g.D;
  uint8_t *stage = reinterpret_cast<uint8_t *>(warp_params + WARPS * g.D) + warp * stage_bytes;
  for (uint32_t i = i0; i < end;) {
    const int64_t slot = slots[i], page = slot >> g.p_shift;
    const uint8_t prec = precs[i];
    const uint32_t len = run_length(slots, precs, n, i, slot, prec, g.p_shift);
    const bool continues = i == i0 && i > 0 && precs[i - 1] == prec && slots[i - 1] + 1 == slot && slots[i - 1] >> g.p_shift == page;
    if (!continues) /* else the run began in the chunk before: that block writes it */
      for (uint32_t t = blockIdx.y * WARPS + warp; t < 2 * g.H; t += WARPS * gridDim.y) {
        const uint32_t h = t >> 1;
        const bool keys = (t & 1) == 0;
        const input_rows src = {keys ? k : v, dtype, i, g.H, g.D, h, wide};
        const tile dst = tile_at(g, prec, (int32_t)page, h, keys);
        if (stage_rows(src, (int)len, stage, stage_bytes)) {
          tile_write<CJ>(dst, (int)(slot & (g.P - 1)), (int)len, staged_rows{stage, dtype, g.D}, sp);
          __syncwarp(); /* the stage is read before the warp's next tile */
        } else {
          tile_write<CJ>(dst, (int)(slot & (g.P - 1)), (int)len, src, sp);
        }
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
#pragma unroll
    for (int j = 0; j < 8; j++) out[j] = (*this)(r, c + j);
  }
  __device__ bool f16_bits() const { return false; }
};

/* A block per move; its warps share the page's tiles. */
template <int CJ>
__global__ void __launch_bounds__(THREADS, 4) requantize_kernel(tile_geo g, const ikv_cuda_move *moves) {
  extern __shared__ params warp_params[];
  const ikv_cuda_move mv = moves[blockIdx.x];
  for (uint32_t t = threadIdx.x >> 5; t < 2 * g.H; t += WARPS) {
    const uint32_t h = t >> 1;
    const bool keys = (t & 1) == 0;
    const tile src = tile_at(g, mv.from, mv.src_slot, h, keys), dst = tile_at(g, mv.to, mv.dst_slot, h, keys);
    for (uint32_t b = lane(); b < dst.bytes; b += 32) dst.payload[b] = 0; /* rows past `rows` too */
    __syncwarp();
    const tile_rows rows = {src};
    tile_write<CJ>(dst, 0, mv.rows, rows, warp_params + (threadIdx.x >> 5) * g.D);
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
  const dim3 grid((n + chunk - 1) / chunk, tile_blocks);
  /* each warp: head_dim group parameters, then a stage for a run's input
   * rows (a 16 x 128 fp16 tile fits), within the default 48 KB a block */
  const size_t params_bytes = WARPS * g->head_dim * sizeof(params),
               stage = (48 * 1024 - params_bytes) / WARPS < 4096 ? (48 * 1024 - params_bytes) / WARPS / 16 * 16 : 4096,
               smem = params_bytes + WARPS * stage;
  /* a programmatic dependent of the kernel before it: its launch overlaps
   * that kernel's end (it waits on entry) */
  const tile_geo geo = make_geo(g, pools);
  const cudaError_t e =
      g->head_dim <= 256
          ? ikv_launch(write_kv_kernel<1>, grid, dim3(THREADS), smem, (cudaStream_t)stream, true, geo, k, v, (int)dtype,
                       slot_mapping, slot_precision, n, chunk, wide, (uint32_t)stage)
          : ikv_launch(write_kv_kernel<2>, grid, dim3(THREADS), smem, (cudaStream_t)stream, true, geo, k, v, (int)dtype,
                       slot_mapping, slot_precision, n, chunk, wide, (uint32_t)stage);
  if (e != cudaSuccess) return IKV_E_CUDA;
  return cudaGetLastError() == cudaSuccess ? IKV_OK : IKV_E_CUDA;
}

extern "C" ikv_status ikv_cuda_requantize(const ikv_geometry *g, const ikv_layer_pools *pools, const ikv_cuda_move *moves,
                                          uint32_t count, void *stream) {
  if (!g || !pools || (count && !moves)) return IKV_E_NULL;
  if (ikv_geometry_check(g) != IKV_OK) return IKV_E_INVALID;
  if (!count) return IKV_OK;
  if (g->head_dim <= 256)
    requantize_kernel<1><<<count, THREADS, WARPS * g->head_dim * sizeof(params), (cudaStream_t)stream>>>(make_geo(g, pools), moves);
  else
    requantize_kernel<2><<<count, THREADS, WARPS * g->head_dim * sizeof(params), (cudaStream_t)stream>>>(make_geo(g, pools), moves);
  return cudaGetLastError() == cudaSuccess ? IKV_OK : IKV_E_CUDA;
}
