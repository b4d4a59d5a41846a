/* The fused paged decode-attention kernel and its split-KV merge. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cp_async.cuh"
#include "kernels/decode_cuda.h"
#include "kernels/launch.cuh"

#define WARPS 4
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

/* Everything a launch needs, by value. */
struct decode_args {
  const uint8_t *base[IKV_PRECISION_COUNT];
  size_t page_bytes[IKV_PRECISION_COUNT];
  uint32_t k_tile[IKV_PRECISION_COUNT], v_tile[IKV_PRECISION_COUNT]; /* bytes of a K / V tile */
  uint32_t payload[IKV_PRECISION_COUNT];                             /* where a tile's scales start */
  ikv_decode_plan csr;
  const ikv_work_item *items;
  const int32_t *entries, *row_items;
  const uint8_t *item_waits; /* NULL: launched after the work before it */
  int prefetch_pages;        /* ikv_cuda_plan.prefetch_pages */
  uint32_t kv_heads, group, page_size, q_heads;
  float scale_log2; /* softmax scale * log2(e): scores live in the log2 domain */
  int32_t window, sinks;
  const void *q;
  void *out;
  float *lse;
  int dtype;
  float *ws; /* partials: [item][kv head or 0][group] x (head_dim acc, m, l) */
};

/* The layer's FP16 and FP8 pools as tensor maps, for the bulk tensor
 * copies of decode_kernel_tma. */
struct tma_pool {
  CUtensorMap map;                      /* FP16 pool (if fp16) */
  CUtensorMap map8;                     /* FP8 pool as [tile][row][byte] (if fp8) */
  uint32_t page_rows, head_rows, v_row; /* FP16 rows: a page, a KV head's two tiles, where V starts */
  uint32_t min_pages;                   /* shorter items load their pages by cp.async */
  int fp16, fp8;
};

__device__ __forceinline__ float load_q(const void *q, int dtype, size_t i) {
  if (dtype == IKV_DTYPE_F16) return __half2float(reinterpret_cast<const __half *>(q)[i]);
  if (dtype == IKV_DTYPE_BF16) return __bfloat162float(reinterpret_cast<const __nv_bfloat16 *>(q)[i]);
  return reinterpret_cast<const float *>(q)[i];
}

__device__ __forceinline__ void store_out(void *out, int dtype, size_t i, float x) {
  if (dtype == IKV_DTYPE_F16) reinterpret_cast<__half *>(out)[i] = __float2half_rn(x);
  else if (dtype == IKV_DTYPE_BF16) reinterpret_cast<__nv_bfloat16 *>(out)[i] = __float2bfloat16_rn(x);
  else reinterpret_cast<float *>(out)[i] = x;
}

/* ---- tensor-core fragments (mma.sync m16n8k16, fp16 in, fp32 accumulate) -- */

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t *>(&h);
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const __half *p) {
  uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const __half *p) {
  uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}

/* c += a (16x16, rows: query heads) x b (16x8) */
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* ---- 16-bit pages: 16 token rows of a tile as fp16 in shared memory ------- */

/* FP16 (head_dim >= 128) and FP8 (head_dim 128) chunks by bulk tensor
 * copies (the TMA engine, not the SM's load path): per chunk a box of 16
 * rows x 128 bytes per 128 bytes of a K row and of a V row, landing
 * 128-byte swizzled (a 16-byte piece c of row r at piece c ^ (r % 8)) so
 * ldmatrix and the packed loads read them without bank conflicts;
 * completion on the slot's mbarrier. */
#define TMA_BOX_BYTES 2048 /* 16 rows x 128 bytes */
#define TMA_MIN_PAGES 16   /* in IKV_CUDA_COPIES_AUTO, shorter items load their pages by cp.async */
__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(uint64_t *bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void mbar_inval(uint64_t *bar) {
  asm volatile("mbarrier.inval.shared::cta.b64 [%0];" ::"r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) {
  uint32_t done;
  do {
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                 : "=r"(done)
                 : "r"(smem_addr(bar)), "r"(parity)
                 : "memory");
  } while (!done);
}
/* the 16-byte piece holding byte `byte` (a multiple of 16) of row `row` in a
 * swizzled area: boxes of 128-byte rows, piece c of row r at c ^ (r % 8) */
__device__ __forceinline__ const uint8_t *swizzled_piece(const uint8_t *area, int row, int byte) {
  return area + (byte >> 7) * TMA_BOX_BYTES + row * 128 + ((((byte & 127) >> 4) ^ (row & 7)) << 4);
}
/* the same for FP16 rows: the piece holding half `col` (a multiple of 8) */
__device__ __forceinline__ const __half *swizzled(const uint8_t *area, int row, int col) {
  return reinterpret_cast<const __half *>(swizzled_piece(area, row, col * 2));
}
/* lane 0 tells the slot's barrier the bytes its copies will bring; the
 * warp's lanes (their proxy fences done) then put the copies in flight */
__device__ __forceinline__ void mbar_expect(uint64_t *bar, uint32_t bytes, int lane) {
  if (lane == 0)
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
  __syncwarp();
}
/* where a 16-bit slot's swizzled K area starts (1024-byte aligned, as the swizzle needs); V follows it */
__device__ __forceinline__ uint8_t *tma_area(uint8_t *slot) {
  return slot + ((1024u - (smem_addr(slot) & 1023u)) & 1023u);
}
/* FP8 chunks by bulk copies: slots of their own pitch from the 1024-byte
 * aligned start of the warp's staging area, each K (16 rows of D bytes,
 * swizzled), V, then the two tile scales (16 bytes each) */
template <int D> struct fp8_slots {
  static constexpr int K_OFF = 0, V_OFF = 16 * D, SC_OFF = 32 * D;
  static constexpr int PITCH = (SC_OFF + 32 + 1023) / 1024 * 1024;
};
/* N words of a swizzled packed row r from byte col on (16-byte pieces; 128-byte box columns) */
template <int N>
__device__ __forceinline__ void load_swizzled(uint32_t (&w)[N], const uint8_t *area, int r, int col) {
#pragma unroll
  for (int i = 0; i < N / 4; i++) {
    const uint4 v = *reinterpret_cast<const uint4 *>(swizzled_piece(area, r, col + 16 * i));
    w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
  }
}

/* A chunk of an FP16 or BF16 tile: rows [r0, r0 + 16), staged as fp16
 * [16][D + 8] (padded rows for ldmatrix). FP16 rows are copied there
 * directly; BF16 rows land at the end of the same area and are rounded to
 * fp16 in place (each lane reads all its pieces before any write, and a
 * converted row never reaches the packed rows still to be read). Rows outside
 * [first, last] become zeros: their scores are masked and their values must be
 * finite. */
template <int PREC, int D> struct chunk16 {
  static constexpr int ROW_BYTES = D * 2, PIECES = ROW_BYTES /* 16 rows of 16-byte pieces */,
                       PER_LANE = (PIECES + 31) / 32;
  static constexpr int AREA = 16 * (D + 8) * 2, LANDING = AREA - 16 * ROW_BYTES; /* bytes; BF16 rows land at LANDING */

  static __device__ __forceinline__ void issue(const uint8_t *tile, int r0, int first, int last, int lane,
                                               uint8_t *area) {
#pragma unroll
    for (int j = 0; j < PER_LANE; j++) {
      const int p = lane + 32 * j, row = p * 16 / ROW_BYTES, t = r0 + row;
      if (p >= PIECES) break;
      const bool in = t >= first && t <= last;
      const uint8_t *src = in ? tile + (size_t)r0 * ROW_BYTES + (size_t)p * 16 : tile;
      uint8_t *dst = PREC == IKV_FP16 ? area + row * (D + 8) * 2 + p * 16 % ROW_BYTES : area + LANDING + p * 16;
      cp_async16(dst, src, in);
    }
  }

  /* BF16 only: rounds the landed rows to fp16 in place */
  static __device__ __forceinline__ void convert(int r0, int first, int last, int lane, uint8_t *area) {
    uint4 raw[PER_LANE];
#pragma unroll
    for (int j = 0; j < PER_LANE; j++)
      if (lane + 32 * j < PIECES) raw[j] = *reinterpret_cast<const uint4 *>(area + LANDING + (lane + 32 * j) * 16);
    __syncwarp();
#pragma unroll
    for (int j = 0; j < PER_LANE; j++) {
      const int p = lane + 32 * j, row = p * 16 / ROW_BYTES, c0 = p * 16 % ROW_BYTES / 2, t = r0 + row;
      if (p >= PIECES) break;
      uint4 *dst = reinterpret_cast<uint4 *>(area + row * (D + 8) * 2 + c0 * 2);
      if (t < first || t > last) {
        *dst = make_uint4(0, 0, 0, 0);
        continue;
      }
      const uint32_t w[4] = {raw[j].x, raw[j].y, raw[j].z, raw[j].w};
      uint32_t h[4];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const __nv_bfloat162 b = *reinterpret_cast<const __nv_bfloat162 *>(&w[i]);
        h[i] = pack_half2(__bfloat162float(b.x), __bfloat162float(b.y));
      }
      *dst = make_uint4(h[0], h[1], h[2], h[3]);
    }
  }
};

/* ---- 8- and 4-bit pages: packed bytes straight into mma fragments ----------
 * FP8, INT8 and INT4 chunks skip the fp16 staging: the warp copies the packed
 * rows into shared memory as they are, and each lane reads its bytes from
 * there into the tensor cores' fragments, dequantizing in registers (no
 * conversion pass, no fp16 copy, no ldmatrix). Which channel a fragment
 * element holds is ours to choose (a dot product does not care about the
 * order of its terms; the output's channels are put back in order at the
 * end), so each lane takes the channels whose bytes are contiguous:
 *  - keys, the A operand of S^T = K Q^T: lane (g = lane / 4, t = lane % 4)
 *    reads rows g and g + 8, bytes [t, t + 1) x ROW / 4, and q's B fragments
 *    take the same channels (k_channel);
 *  - values, the A operand of O^T += V^T P^T: lane g owns the output channels
 *    [g, g + 1) x D / 8 (v_channel) and reads them from its four tokens'
 *    rows (2t, 2t + 1, 2t + 8, 2t + 9); a byte permutation pairs two tokens'
 *    codes, as the fragment wants.
 * The padding of the rows keeps these reads free of bank conflicts at D = 128.
 * Rows outside [first, last] are zero codes: finite, and masked anyway. */
#define PACKED(prec) ((prec) == IKV_FP8_E4M3 || (prec) == IKV_INT8 || (prec) == IKV_INT4)

template <int PREC, int D> struct packed {
  static constexpr int ROW = PREC == IKV_INT4 ? D / 2 : D; /* bytes of a token row */
  static constexpr int K_STRIDE = ROW % 256 == 128 ? ROW + 16 : ROW, V_STRIDE = ROW + 16;
  static constexpr int K_WORDS = ROW / 16, V_WORDS = ROW / 32; /* a lane's words of a K row, of a V row */

  static __device__ __forceinline__ void issue(const uint8_t *tile, int r0, int first, int last, int lane,
                                               uint8_t *area, int stride) {
#pragma unroll
    for (int p = lane; p < ROW; p += 32) { /* 16 rows of ROW / 16 pieces */
      const int row = p / (ROW / 16), col = p % (ROW / 16) * 16, t = r0 + row;
      const bool in = t >= first && t <= last;
      cp_async16(area + row * stride + col, in ? tile + (size_t)t * ROW + col : tile, in);
    }
  }

  /* N words from shared memory; INT8 codes come back offset by 128 (byte ^ 0x80), as dequant2 wants */
  template <int N> static __device__ __forceinline__ void load(uint32_t (&w)[N], const uint8_t *src) {
    if (N % 4 == 0) {
#pragma unroll
      for (int i = 0; i < N / 4; i++) {
        const uint4 v = reinterpret_cast<const uint4 *>(src)[i];
        w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
      }
    } else if (N % 2 == 0) {
#pragma unroll
      for (int i = 0; i < N / 2; i++) {
        const uint2 v = reinterpret_cast<const uint2 *>(src)[i];
        w[2 * i] = v.x, w[2 * i + 1] = v.y;
      }
    } else {
#pragma unroll
      for (int i = 0; i < N; i++) w[i] = reinterpret_cast<const uint32_t *>(src)[i];
    }
    if (PREC == IKV_INT8)
#pragma unroll
      for (int i = 0; i < N; i++) w[i] ^= 0x80808080u;
  }

  /* Two codes of u to an fp16 pair, exactly: 8-bit formats bytes 2 which and
   * 2 which + 1; INT4 the low (which 0) or high nibbles of bytes 0 and 2.
   * INT codes use the 1024 + x trick: 0x6400 | x is the fp16 value 1024 + x. */
  static __device__ __forceinline__ uint32_t dequant2(uint32_t u, int which) {
    if (PREC == IKV_FP8_E4M3) {
      const __half2_raw r = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(u >> 16 * which), __NV_E4M3);
      return (uint32_t)r.x | ((uint32_t)r.y << 16);
    }
    __half2 x;
    if (PREC == IKV_INT8) {
      const uint32_t v = __byte_perm(u, 0x64646464u, which ? 0x4342 : 0x4140);
      x = __hsub2(*reinterpret_cast<const __half2 *>(&v), __half2half2(__ushort_as_half(0x6480))); /* 1024 + 128 */
    } else {
      const uint32_t v = (u & (which ? 0x00F000F0u : 0x000F000Fu)) | 0x64006400u;
      x = *reinterpret_cast<const __half2 *>(&v);
      x = which ? __hfma2(x, __half2half2(__ushort_as_half(0x2c00)), __half2half2(__ushort_as_half(0xd400))) /* /16 - 64 */
                : __hsub2(x, __half2half2(__ushort_as_half(0x6400)));                                     /* - 1024 */
    }
    return *reinterpret_cast<const uint32_t *>(&x);
  }

  /* K fragment of k-step ks from the lane's words of rows g (lo) and g + 8 (hi) */
  static __device__ __forceinline__ void k_frag(const uint32_t (&lo)[K_WORDS], const uint32_t (&hi)[K_WORDS], int ks,
                                                uint32_t (&a)[4]) {
    const uint32_t wl = PREC == IKV_INT4 ? lo[ks >> 1] >> 8 * (ks & 1) : lo[ks];
    const uint32_t wh = PREC == IKV_INT4 ? hi[ks >> 1] >> 8 * (ks & 1) : hi[ks];
    a[0] = dequant2(wl, 0), a[1] = dequant2(wh, 0), a[2] = dequant2(wl, 1), a[3] = dequant2(wh, 1);
  }

  /* V^T fragment of tile mt from the lane's four tokens' words */
  static __device__ __forceinline__ void v_frag(const uint32_t (&v)[4][V_WORDS], int mt, uint32_t (&a)[4]) {
    const int w = PREC == IKV_INT4 ? mt >> 2 : mt >> 1;
    /* bytes [tok 0 or 2, tok 1 or 3] interleaved: 8-bit the pair 2 (mt % 2) and + 1, INT4 byte mt % 4 */
    const uint32_t sel = PREC == IKV_INT4 ? (mt & 3) | (4 + (mt & 3)) << 8 : (mt & 1) ? 0x7362u : 0x5140u;
    const uint32_t u01 = __byte_perm(v[0][w], v[1][w], sel), u23 = __byte_perm(v[2][w], v[3][w], sel);
    a[0] = dequant2(u01, 0), a[1] = dequant2(u01, 1), a[2] = dequant2(u23, 0), a[3] = dequant2(u23, 1);
  }
};

/* The channel of q's B-fragment element i of register r at k-step ks, for the
 * lane's t = lane % 4: the order in which PREC's key fragments are read. */
template <int D, int PREC> __device__ __forceinline__ int k_channel(int t, int ks, int r, int i) {
  if (PREC == IKV_INT4) return D / 4 * t + 8 * (ks >> 1) + 2 * (ks & 1) + r + 4 * i;
  if (PACKED(PREC)) return D / 4 * t + 4 * ks + 2 * r + i;
  return 16 * ks + 2 * t + 8 * r + i;
}

/* The output channel of accumulator row g (+ 8 when hi) of tile mt. */
template <int D> __device__ __forceinline__ int v_channel(bool packed_values, int g, int mt, int hi) {
  return packed_values ? D / 8 * g + 2 * mt + hi : 16 * mt + g + 8 * hi;
}

/* ---- a block: one work item, one KV head --------------------------------------
 * Each warp takes 16-token chunks of the item's pages: it stages K and V of
 * the chunk in shared memory (fp16, or packed), then on tensor cores computes the
 * scores transposed, S^T = K Q^T (16 tokens x the query group, up to 8 heads:
 * the mma's n), an online softmax per head, and O^T += V^T P^T (the head_dim
 * as 16-row tiles). Putting the query group on the n side wastes no lanes on
 * padding rows and keeps the accumulators small. Warps merge at the end. */

#define STAGES16 2 /* 16-bit chunks a warp has in flight: the next loads while this one computes */

template <int D> struct tiles {
  static constexpr int KV = 16 * (D + 8);                /* halves: one staged fp16 K or V chunk */
  static constexpr int SCALES = (D * 4 + 64) / 2;        /* halves: the K tile's scales, the chunk's V scales */
  static constexpr int SLOT = 2 * KV + SCALES;           /* halves: one 16-bit stage */
  static constexpr int SLOTS = STAGES16 * SLOT;          /* halves per warp: its staging area */
  static constexpr int STAGE = SLOTS + 8 * 16 + 16; /* halves per warp: the staging area, P, and four
                                                      mbarriers (a slot each for bulk copies) */
  static constexpr size_t SMEM_STAGE = (size_t)WARPS * STAGE * sizeof(__half);
  static constexpr size_t SMEM_MERGE = (size_t)WARPS * 8 * (D + 2) * sizeof(float);
  static constexpr size_t SMEM = SMEM_STAGE > SMEM_MERGE ? SMEM_STAGE : SMEM_MERGE;
};

/* One chunk's slot in a warp's staging area: K rows, V rows, then the K
 * tile's scales and the chunk's V scales. A packed chunk is a half to a
 * quarter of a 16-bit one, so the same area holds more of them: a warp keeps
 * N chunks in flight, which the faster-consumed small chunks need to keep
 * the memory busy. */
template <int D, int PREC> struct slot_layout {
  static constexpr int K_BYTES = PACKED(PREC) ? 16 * packed<PREC, D>::K_STRIDE : tiles<D>::KV * 2;
  static constexpr int V_BYTES = PACKED(PREC) ? 16 * packed<PREC, D>::V_STRIDE : tiles<D>::KV * 2;
  static constexpr int VS_OFF = PREC == IKV_FP8_E4M3 ? 16 : D * 4; /* V scales within the scales */
  static constexpr int SIZE = K_BYTES + V_BYTES + VS_OFF + 64;
  /* INT4 stays at two: its chunks are bound by their conversion work, and
   * deeper pipelines measured 2-9% slower on H100 (docs/results.md) */
  static constexpr int N = PREC == IKV_INT4 ? 2 : tiles<D>::SLOTS * 2 / SIZE;
  /* the bulk copies' swizzled K and V (1024-byte aligned inside the slot) fit it */
  static_assert(PREC != IKV_FP16 || D < 128 || SIZE >= 2 * 16 * D * 2 + 1008, "an FP16 slot holds a swizzled chunk");
};

/* Per page: the scales of a tile folded where they cost least. Keys: q of
 * each channel times the channel's scale (INT8, INT4), the FP8 tile scale on
 * the scores, and for INT4 the zero points' contribution q.z added to every
 * score of the head. Values: the per-token (INT8, INT4) or tile (FP8) scale
 * folded into the softmax weight, INT4 zero points into a per-head sum.
 * qb[ks][r] holds this lane's q^T fragment (head lane / 4, channels
 * k_channel(lane % 4, ks, r, {0, 1})): for the packed formats the lane's
 * channels are D / 4 (lane % 4) + [0, D / 4), so its scales are one run. */
template <int D, int PREC>
__device__ __forceinline__ void fold_keys(const uint8_t *scales, const uint32_t (&qb)[D / 16][2], uint32_t (&qp)[D / 16][2],
                                          float &score_scale, float (&score_bias)[2], int lane) {
  score_scale = 1.0f, score_bias[0] = score_bias[1] = 0.0f;
  if (PREC == IKV_FP8_E4M3) score_scale = *reinterpret_cast<const float *>(scales);
  if (PREC == IKV_INT8) { /* k-step ks: channels 4 ks + [0, 4) of the run */
    const float4 *run = reinterpret_cast<const float4 *>(scales) + (lane & 3) * (D / 16);
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
      const float4 sc = run[ks];
      const float2 q0 = __half22float2(*reinterpret_cast<const __half2 *>(&qb[ks][0]));
      const float2 q1 = __half22float2(*reinterpret_cast<const __half2 *>(&qb[ks][1]));
      qp[ks][0] = pack_half2(q0.x * sc.x, q0.y * sc.y), qp[ks][1] = pack_half2(q1.x * sc.z, q1.y * sc.w);
    }
  } else if (PREC == IKV_INT4) {
    /* a channel's (fp16 scale, fp16 zero) is one word; k-steps 2w and 2w + 1
     * take channels 8w + {0, 2} (r = 0) and + {1, 3} (r = 1), each with the
     * channel 4 further: words A and B of the run. q.z comes from the tensor
     * cores: the zero points as every row of an A operand give, in each row
     * of the result, the per-head sums the scores need, where this lane
     * needs them (heads 2 (lane % 4) + {0, 1}). */
    const uint4 *run = reinterpret_cast<const uint4 *>(scales) + (lane & 3) * (D / 16);
    float zc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int w = 0; w < D / 32; w++) {
      const uint4 A = run[2 * w], B = run[2 * w + 1];
      const uint32_t wa[4] = {A.x, A.y, A.z, A.w}, wb[4] = {B.x, B.y, B.z, B.w};
#pragma unroll
      for (int odd = 0; odd < 2; odd++) {
        const int ks = 2 * w + odd;
        uint32_t za[4];
#pragma unroll
        for (int r = 0; r < 2; r++) {
          const uint32_t s2 = __byte_perm(wa[2 * odd + r], wb[2 * odd + r], 0x5410);
          const uint32_t z2 = __byte_perm(wa[2 * odd + r], wb[2 * odd + r], 0x7632);
          const __half2 prod = __hmul2(*reinterpret_cast<const __half2 *>(&qb[ks][r]), *reinterpret_cast<const __half2 *>(&s2));
          qp[ks][r] = *reinterpret_cast<const uint32_t *>(&prod);
          za[2 * r] = za[2 * r + 1] = z2;
        }
        mma(zc, za, qb[ks][0], qb[ks][1]);
      }
    }
    score_bias[0] = zc[0], score_bias[1] = zc[1];
  } else {
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) qp[ks][0] = qb[ks][0], qp[ks][1] = qb[ks][1];
  }
}

/* Sum (or max) over the 16 tokens of a head: the lanes sharing lane % 4. */
__device__ __forceinline__ float over_tokens_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 4));
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 8));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 16));
}
__device__ __forceinline__ float over_tokens_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 4);
  x += __shfl_xor_sync(0xffffffffu, x, 8);
  return x + __shfl_xor_sync(0xffffffffu, x, 16);
}

/* A warp's softmax state: this lane's two heads 2 (lane % 4) + {0, 1}. */
template <int D> struct warp_state {
  float m[2];
  float l[2], z[2]; /* sums over this lane's tokens until the end, then over the warp's */
  float acc[D / 16][4]; /* O^T tile mt: (channel v_channel(lane / 4, mt, 0 or 1), head 2 (lane % 4) + {0, 1}) */
};

/* The warp's entries (every WARPS-th of the item: its n-th is item entry
 * it.begin + warp + WARPS n), their plan fields held in registers, entry n
 * in lane n % 32, so a chunk's fields are a shuffle away instead of a chain
 * of dependent global loads. Lanes 0-15 and 16-31 form a ring of two
 * halves: when the consumer enters a half, the other one is reloaded with
 * the 16 entries after it, long before the producer (at most N chunks
 * ahead) needs them. */
struct warp_entries {
  int32_t slot, page; /* pool slot, logical page index */
  uint32_t span;      /* first | last << 16 */
  int count, loaded;  /* the warp's entries; entries loaded so far */
};

__device__ __forceinline__ void load_entry(const decode_args &a, const ikv_work_item &it, int n, warp_entries &m) {
  if (n >= m.count) return;
  const int32_t e = a.entries[it.begin + (threadIdx.x >> 5) + WARPS * n];
  m.slot = a.csr.page_slot[e], m.page = a.csr.page_index[e];
  m.span = (uint32_t)a.csr.first[e] | (uint32_t)a.csr.last[e] << 16;
}

__device__ __forceinline__ uint32_t entry_span(const warp_entries &m, int n) { return __shfl_sync(0xffffffffu, m.span, n & 31); }

/* The warp's chunks in order: its entries, each in 16-token steps over [first, last]. */
struct cursor {
  int n, r0;
};

__device__ __forceinline__ void cursor_next(const warp_entries &m, cursor &c) {
  c.r0 += 16;
  if (c.r0 <= (int)(entry_span(m, c.n) >> 16)) return;
  c.n++;
  if (c.n < m.count) c.r0 = (int)(entry_span(m, c.n) & 0xffffu) & ~15;
}

template <int D, int PREC>
__device__ __forceinline__ void issue_chunk(const decode_args &a, uint32_t h, const warp_entries &m, const cursor &c,
                                            uint8_t *slot, int lane, const tma_pool *tp, bool tma, uint64_t *bar) {
  typedef slot_layout<D, PREC> L;
  uint8_t *k_area = slot, *v_area = slot + L::K_BYTES, *sc = v_area + L::V_BYTES;
  const uint32_t span = entry_span(m, c.n);
  const int32_t page_slot = __shfl_sync(0xffffffffu, m.slot, c.n & 31);
  const uint8_t *page = a.base[PREC] + (size_t)page_slot * a.page_bytes[PREC];
  const uint8_t *kt = page + (size_t)h * (a.k_tile[PREC] + a.v_tile[PREC]), *vt = kt + a.k_tile[PREC];
  const int first = (int)(span & 0xffffu), last = (int)(span >> 16);
  if (PREC == IKV_FP8_E4M3 && D == 128 && tma) {
    typedef fp8_slots<D> S;
    mbar_expect(bar, 2 * 16 * D + 32, lane);
    /* head_dim 128: a K row and a V row are one 128-byte box column each */
    if (lane < 2) {
      const int32_t tile = (int32_t)(((uint32_t)page_slot * a.kv_heads + h) * 2 + lane);
      asm volatile(
          "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];" ::"r"(
              smem_addr(slot + (lane ? S::V_OFF : S::K_OFF))),
          "l"(&tp->map8), "r"(0), "r"(c.r0), "r"(tile), "r"(smem_addr(bar))
          : "memory");
    } else if (lane < 4) { /* the K and V tile scales */
      const int kv = lane - 2;
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], 16, [%2];" ::"r"(
                       smem_addr(slot + S::SC_OFF + 16 * kv)),
                   "l"((kv ? vt : kt) + a.payload[PREC]), "r"(smem_addr(bar))
                   : "memory");
    }
    return;
  }
  if (PACKED(PREC)) {
    packed<PREC, D>::issue(kt, c.r0, first, last, lane, k_area, packed<PREC, D>::K_STRIDE);
    packed<PREC, D>::issue(vt, c.r0, first, last, lane, v_area, packed<PREC, D>::V_STRIDE);
  } else if (PREC == IKV_FP16 && D >= 128 && tma) {
    mbar_expect(bar, 2 * 16 * D * 2, lane); /* then a lane a box */
    if (lane < 2 * (D / 64)) {
      const int kv = lane / (D / 64), box = lane % (D / 64);
      const int32_t y = (int32_t)((uint32_t)page_slot * tp->page_rows + h * tp->head_rows + (kv ? tp->v_row : 0)) + c.r0;
      asm volatile(
          "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
              smem_addr(tma_area(slot) + lane * TMA_BOX_BYTES)),
          "l"(&tp->map), "r"(box * 64), "r"(y), "r"(smem_addr(bar))
          : "memory");
    }
  } else {
    chunk16<PREC, D>::issue(kt, c.r0, first, last, lane, k_area);
    chunk16<PREC, D>::issue(vt, c.r0, first, last, lane, v_area);
  }
  /* the scales ride in the same group: per channel for K (or the FP8 tile
   * scale), the chunk's 16 per-token scales for V */
  if (PREC == IKV_INT8 || PREC == IKV_INT4) {
    for (int p = lane; p < D * 4 / 16; p += 32) cp_async16(sc + p * 16, kt + a.payload[PREC] + p * 16, true);
    if (lane < 4) cp_async16(sc + L::VS_OFF + lane * 16, vt + a.payload[PREC] + c.r0 * 4 + lane * 16, true);
  } else if (PREC == IKV_FP8_E4M3 && lane == 0) {
    cp_async16(sc, kt + a.payload[PREC], true); /* a tile scale and its padding: 16 bytes */
    cp_async16(sc + L::VS_OFF, vt + a.payload[PREC], true);
  }
}

/* Q^T as the B operand: head g = lane / 4 (0 beyond the group), in the
 * channel order PREC's key fragments are read in (k_channel). */
template <int D, int PREC>
__device__ __forceinline__ void load_q_frags(const decode_args &a, uint32_t h, uint32_t b, int lane,
                                             uint32_t (&qb)[D / 16][2]) {
  const int g = lane >> 2, t = lane & 3;
  const bool head_live = g < (int)a.group;
  const size_t qrow = ((size_t)b * a.q_heads + h * a.group + (head_live ? g : 0)) * D;
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++)
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const float q0 = load_q(a.q, a.dtype, qrow + k_channel<D, PREC>(t, ks, r, 0));
      const float q1 = load_q(a.q, a.dtype, qrow + k_channel<D, PREC>(t, ks, r, 1));
      qb[ks][r] = head_live ? pack_half2(q0, q1) : 0u;
    }
}

template <int D, int PREC, bool TMA>
__device__ void run_item(const decode_args &a, const tma_pool *tp, const ikv_work_item &it, uint32_t h, uint32_t b,
                         __half *stage, warp_state<D> &ws, bool wait_late, int fresh_from) {
  typedef slot_layout<D, PREC> L;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t qb[D / 16][2];
  if (!wait_late) load_q_frags<D, PREC>(a, h, b, lane, qb);
  __half *p_smem = stage + tiles<D>::SLOTS;
  /* bulk tensor copies pay where a warp streams several chunks; on short
   * items their longer first-byte latency costs more than they give (1 x 4K
   * x 8: 14.6 -> 15.0 us with them, 8 x 32K x 32: 1,496 -> 1,422 us) */
  const bool tma = TMA && D >= 128 && it.end - it.begin >= tp->min_pages &&
                   ((PREC == IKV_FP16 && tp->fp16) || (PREC == IKV_FP8_E4M3 && D == 128 && tp->fp8));
  constexpr bool TMA8 = PREC == IKV_FP8_E4M3 && D == 128;
  static_assert(!TMA8 || L::N * fp8_slots<D>::PITCH + 1008 <= tiles<D>::SLOTS * 2, "FP8 bulk-copy slots fit");
  static_assert(L::N <= 4 || (PREC != IKV_FP16 && !TMA8), "an mbarrier a slot");
  /* a slot's bytes: FP8 by bulk copies in slots of their own pitch */
  uint8_t *const slots = TMA8 && tma ? tma_area((uint8_t *)stage) : (uint8_t *)stage;
  const int pitch = TMA8 && tma ? fp8_slots<D>::PITCH : L::SIZE;
  uint64_t *bars = reinterpret_cast<uint64_t *>(p_smem + 8 * 16); /* bulk tensor copies: one a slot */
  uint32_t phases = 0;                                             /* each slot's barrier phase */
  if (tma) {
    if (lane == 0)
      for (int st = 0; st < L::N; st++) mbar_init(bars + st);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    __syncwarp();
  }
  const int64_t query = (int64_t)a.csr.seq_len[b] - 1;
  warp_entries m;
  m.count = it.end > it.begin + warp ? ((int)(it.end - it.begin) - warp + WARPS - 1) / WARPS : 0;
  m.loaded = 32;
  load_entry(a, it, lane, m);
  cursor ic = {0, 0};
  if (m.count) ic.r0 = (int)(entry_span(m, 0) & 0xffffu) & ~15;
  const cursor start = ic;
  /* prologue: the first N chunks in flight (one commit group each, empty
   * or not); a chunk of an entry at or past fresh_from (its page may be
   * written by the kernel before) only once that kernel is done */
  bool waited = !wait_late;
#pragma unroll
  for (int st = 0; st < L::N; st++) {
    if (ic.n < m.count) {
      if (!waited && warp + WARPS * ic.n >= fresh_from) {
        asm volatile("griddepcontrol.wait;" ::: "memory");
        waited = true;
      }
      issue_chunk<D, PREC>(a, h, m, ic, slots + st * pitch, lane, tp, tma, bars + st);
      cursor_next(m, ic);
    }
    cp_async_commit();
  }
  if (wait_late) { /* the pages are on their way: now wait for the kernel before, which may write q */
    if (!waited) asm volatile("griddepcontrol.wait;" ::: "memory");
    load_q_frags<D, PREC>(a, h, b, lane, qb);
  }
  int folded = -1;
  uint32_t qp[D / 16][2];
  float score_scale = 1.0f, score_bias[2] = {0.0f, 0.0f}, tile_vscale = 1.0f;
  int slot = 0;
  for (cursor pc = start; pc.n < m.count; cursor_next(m, pc)) {
    if (pc.n >= m.loaded - 16 && m.loaded < m.count) { /* entered the newer half: reload the older one */
      if ((lane >> 4) == ((m.loaded >> 4) & 1)) load_entry(a, it, m.loaded + (lane & 15), m);
      m.loaded += 16;
    }
    const uint32_t span = entry_span(m, pc.n);
    const int first = (int)(span & 0xffffu), last = (int)(span >> 16), r0 = pc.r0, e = pc.n;
    const int64_t base_pos = (int64_t)__shfl_sync(0xffffffffu, m.page, pc.n & 31) * a.page_size;
    uint8_t *slot_bytes = slots + slot * pitch;
    const bool swz8 = TMA8 && tma; /* this chunk's FP8 rows swizzled, its scales after them */
    __half *ks_smem = (__half *)slot_bytes, *vs_smem = (__half *)(slot_bytes + (swz8 ? fp8_slots<D>::V_OFF : L::K_BYTES));
    const uint8_t *kscales = slot_bytes + (swz8 ? fp8_slots<D>::SC_OFF : L::K_BYTES + L::V_BYTES),
                  *vscales = kscales + L::VS_OFF; /* staged */
    if (tma) { /* this chunk's bulk copies have landed; V rows outside [first, last] (unwritten, maybe NaN) become 0 */
      mbar_wait(bars + slot, (phases >> slot) & 1u);
      phases ^= 1u << slot;
      if (r0 < first || r0 + 15 > last) {
        uint8_t *v_rows = TMA8 ? slot_bytes + fp8_slots<D>::V_OFF : tma_area(slot_bytes) + (D / 64) * TMA_BOX_BYTES;
        constexpr int V_BOXES = TMA8 ? D / 128 : D / 64;
        if (lane < 16 && (r0 + lane < first || r0 + lane > last))
#pragma unroll
          for (int box = 0; box < V_BOXES; box++)
#pragma unroll
            for (int i = 0; i < 8; i++)
              reinterpret_cast<uint4 *>(v_rows + box * TMA_BOX_BYTES + lane * 128)[i] = make_uint4(0, 0, 0, 0);
        __syncwarp();
      }
    } else {
      cp_async_wait<L::N - 1>(); /* this chunk's group has landed (for this lane) */
      __syncwarp();              /* ... and for every lane */
    }
    if (e != folded) { /* a new page: fold its scales */
      fold_keys<D, PREC>(kscales, qb, qp, score_scale, score_bias, lane);
      tile_vscale = PREC == IKV_FP8_E4M3 ? *reinterpret_cast<const float *>(vscales) : 1.0f;
      folded = e;
    }
    if (PREC == IKV_BF16) {
      chunk16<PREC, D>::convert(r0, first, last, lane, (uint8_t *)ks_smem);
      chunk16<PREC, D>::convert(r0, first, last, lane, (uint8_t *)vs_smem);
      __syncwarp();
    }
    /* S^T = K Q^T: c = (token lane / 4 (+ 8), head 2 (lane % 4) + {0, 1}); two
     * accumulators halve the chain of dependent mma */
    float c[4] = {0, 0, 0, 0}, c2[4] = {0, 0, 0, 0};
    if (PACKED(PREC)) {
      typedef packed<PREC, D> pk;
      uint32_t lo[pk::K_WORDS], hi[pk::K_WORDS];
      if (swz8) {
        load_swizzled(lo, (const uint8_t *)ks_smem, lane >> 2, (lane & 3) * (pk::ROW / 4));
        load_swizzled(hi, (const uint8_t *)ks_smem, (lane >> 2) + 8, (lane & 3) * (pk::ROW / 4));
      } else {
        const uint8_t *row = (const uint8_t *)ks_smem + (lane >> 2) * pk::K_STRIDE + (lane & 3) * (pk::ROW / 4);
        pk::load(lo, row);
        pk::load(hi, row + 8 * pk::K_STRIDE);
      }
#pragma unroll
      for (int ks = 0; ks < D / 16; ks++) {
        uint32_t ka[4];
        pk::k_frag(lo, hi, ks, ka);
        mma(ks & 1 ? c2 : c, ka, qp[ks][0], qp[ks][1]);
      }
    } else {
#pragma unroll
      for (int ks = 0; ks < D / 16; ks++) {
        uint32_t ka[4];
        const int mi = lane >> 3;
        if (tma) ldmatrix_x4(ka, swizzled(tma_area(slot_bytes), (lane & 7) + (mi & 1) * 8, ks * 16 + (mi >> 1) * 8));
        else ldmatrix_x4(ka, ks_smem + ((lane & 7) + (mi & 1) * 8) * (D + 8) + ks * 16 + (mi >> 1) * 8);
        mma(ks & 1 ? c2 : c, ka, qp[ks][0], qp[ks][1]);
      }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) c[i] += c2[i];
    /* mask, scale, online softmax per head over the 16 tokens */
    const int t_lo = r0 + (lane >> 2), t_hi = t_lo + 8;
    const bool keep_lo = t_lo >= first && t_lo <= last &&
                         !(a.window > 0 && base_pos + t_lo <= query - a.window && base_pos + t_lo >= a.sinks);
    const bool keep_hi = t_hi >= first && t_hi <= last &&
                         !(a.window > 0 && base_pos + t_hi <= query - a.window && base_pos + t_hi >= a.sinks);
    float vs_lo = tile_vscale, vs_hi = tile_vscale, vz_lo = 0.0f, vz_hi = 0.0f;
    if (PREC == IKV_INT8) { /* the chunk's per-token scales, staged: row t - r0 */
      if (keep_lo) vs_lo = reinterpret_cast<const float *>(vscales)[t_lo - r0];
      if (keep_hi) vs_hi = reinterpret_cast<const float *>(vscales)[t_hi - r0];
    } else if (PREC == IKV_INT4) {
      const __half *sz = reinterpret_cast<const __half *>(vscales);
      if (keep_lo) vs_lo = __half2float(sz[2 * (t_lo - r0)]), vz_lo = __half2float(sz[2 * (t_lo - r0) + 1]);
      if (keep_hi) vs_hi = __half2float(sz[2 * (t_hi - r0)]), vz_hi = __half2float(sz[2 * (t_hi - r0) + 1]);
    }
    float p[4], corr[2];
    bool live = false;
#pragma unroll
    for (int j = 0; j < 2; j++) { /* head 2 (lane % 4) + j: c[j] (token lo), c[2 + j] (token hi) */
      const float s_lo = keep_lo ? (c[j] * score_scale + score_bias[j]) * a.scale_log2 : -INFINITY;
      const float s_hi = keep_hi ? (c[2 + j] * score_scale + score_bias[j]) * a.scale_log2 : -INFINITY;
      const float mn = fmaxf(ws.m[j], over_tokens_max(fmaxf(s_lo, s_hi)));
      if (mn == -INFINITY) { /* nothing kept yet for any head: uniform over the warp */
        p[j] = p[2 + j] = 0.0f, corr[j] = 1.0f;
        continue;
      }
      live = true;
      corr[j] = exp2f(ws.m[j] - mn);
      const float w_lo = exp2f(s_lo - mn), w_hi = exp2f(s_hi - mn);
      ws.l[j] = ws.l[j] * corr[j] + (w_lo + w_hi); /* this lane's tokens: summed over the warp at the end */
      if (PREC == IKV_INT4) ws.z[j] = ws.z[j] * corr[j] + (w_lo * vz_lo + w_hi * vz_hi);
      ws.m[j] = mn;
      p[j] = w_lo * vs_lo, p[2 + j] = w_hi * vs_hi;
    }
    if (live) {
      /* P as [head][token] in shared memory: ldmatrix gives the B operand of O^T += V^T P^T */
      const int hd = (lane & 3) * 2;
      p_smem[hd * 16 + (lane >> 2)] = __float2half_rn(p[0]);
      p_smem[(hd + 1) * 16 + (lane >> 2)] = __float2half_rn(p[1]);
      p_smem[hd * 16 + (lane >> 2) + 8] = __float2half_rn(p[2]);
      p_smem[(hd + 1) * 16 + (lane >> 2) + 8] = __float2half_rn(p[3]);
      __syncwarp();
      uint32_t pb[4];
      ldmatrix_x4(pb, p_smem + (lane & 7) * 16 + ((lane >> 3) & 1) * 8); /* matrices 2, 3 repeat 0, 1 */
      /* once a head's maximum settles its correction is 1: skip the rescale then */
      const bool rescale = __any_sync(0xffffffffu, corr[0] != 1.0f || corr[1] != 1.0f);
      if (rescale)
#pragma unroll
        for (int mt = 0; mt < D / 16; mt++)
          ws.acc[mt][0] *= corr[0], ws.acc[mt][1] *= corr[1], ws.acc[mt][2] *= corr[0], ws.acc[mt][3] *= corr[1];
      if (PACKED(PREC)) {
        typedef packed<PREC, D> pk;
        uint32_t v[4][pk::V_WORDS];
#pragma unroll
        for (int j = 0; j < 4; j++) { /* tokens 2t, 2t + 1, 2t + 8, 2t + 9 */
          const int r = 2 * (lane & 3) + (j & 1) + 8 * (j >> 1);
          if (swz8) load_swizzled(v[j], (const uint8_t *)vs_smem, r, (lane >> 2) * (pk::ROW / 8));
          else pk::load(v[j], (const uint8_t *)vs_smem + r * pk::V_STRIDE + (lane >> 2) * (pk::ROW / 8));
        }
#pragma unroll
        for (int mt = 0; mt < D / 16; mt++) {
          uint32_t va[4];
          pk::v_frag(v, mt, va);
          mma(ws.acc[mt], va, pb[0], pb[1]);
        }
      } else {
#pragma unroll
        for (int mt = 0; mt < D / 16; mt++) {
          uint32_t va[4];
          const int mi = lane >> 3;
          if (tma)
            ldmatrix_x4_trans(va, swizzled(tma_area(slot_bytes) + (D / 64) * TMA_BOX_BYTES, (lane & 7) + (mi >> 1) * 8,
                                           mt * 16 + (mi & 1) * 8));
          else ldmatrix_x4_trans(va, vs_smem + ((lane & 7) + (mi >> 1) * 8) * (D + 8) + mt * 16 + (mi & 1) * 8);
          mma(ws.acc[mt], va, pb[0], pb[1]);
        }
      }
    }
    __syncwarp(); /* every lane is done with this slot (and with P) */
    if (ic.n < m.count) { /* refill the slot with the chunk N ahead */
      if (tma) asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); /* this slot's reads and zeroing before the copies */
      issue_chunk<D, PREC>(a, h, m, ic, slot_bytes, lane, tp, tma, bars + slot);
      cursor_next(m, ic);
    }
    cp_async_commit();
    slot = slot + 1 == L::N ? 0 : slot + 1;
  }
  cp_async_wait<0>();
  if (tma) { /* every copy consumed: the barriers' memory goes back to plain use */
    __syncwarp();
    if (lane == 0)
      for (int st = 0; st < L::N; st++) mbar_inval(bars + st);
  }
}

template <int D, bool TMA> __device__ __forceinline__ void decode_block(const decode_args &a, const tma_pool *tp) {
  extern __shared__ __align__(16) unsigned char smem[];
  /* the merge kernel may be scheduled now: its blocks wait for this grid
   * (griddepcontrol.wait) and take SM slots as these blocks leave them */
  asm volatile("griddepcontrol.launch_dependents;");
  /* launched alongside the kernel before it (item_waits): an item whose
   * plan that kernel may write waits for it now; one that reads pages it
   * may write puts its chunks before the first such page in flight and
   * waits there; the others wait once their first pages are in flight (as
   * with prefetch_pages) */
  /* block x: item x / heads, KV head x % heads (rows every KV head reads;
   * else heads 1): blocks go out in item order, so items past the plan's
   * (a launch padded for a CUDA graph) come last and take no earlier
   * item's place in a wave */
  const bool per_head = a.csr.per_kv_head != 0;
  const uint32_t heads = per_head ? 1 : a.kv_heads, item = blockIdx.x / heads;
  const uint32_t wait_at = a.item_waits ? a.item_waits[item] : 0; /* ikv_cuda_plan.item_waits */
  const bool waits = wait_at == 1;
  if (waits) asm volatile("griddepcontrol.wait;" ::: "memory");
  const int fresh_from = wait_at > 1 ? (int)wait_at - 1 : INT_MAX;
  const bool wait_late = (a.prefetch_pages || a.item_waits) && !waits;
  const ikv_work_item it = a.items[item];
  const uint32_t h = per_head ? it.row % a.kv_heads : blockIdx.x % heads, b = per_head ? it.row / a.kv_heads : it.row;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __half *stage = reinterpret_cast<__half *>(smem) + warp * tiles<D>::STAGE;
  warp_state<D> ws;
  ws.m[0] = ws.m[1] = -INFINITY, ws.l[0] = ws.l[1] = ws.z[0] = ws.z[1] = 0.0f;
#pragma unroll
  for (int mt = 0; mt < D / 16; mt++) ws.acc[mt][0] = ws.acc[mt][1] = ws.acc[mt][2] = ws.acc[mt][3] = 0.0f;
  switch (it.precision) { /* block-uniform: one page format per item */
    case IKV_FP16: run_item<D, IKV_FP16, TMA>(a, tp, it, h, b, stage, ws, wait_late, fresh_from); break;
    case IKV_BF16: run_item<D, IKV_BF16, TMA>(a, tp, it, h, b, stage, ws, wait_late, fresh_from); break;
    case IKV_FP8_E4M3: run_item<D, IKV_FP8_E4M3, TMA>(a, tp, it, h, b, stage, ws, wait_late, fresh_from); break;
    case IKV_INT8: run_item<D, IKV_INT8, TMA>(a, tp, it, h, b, stage, ws, wait_late, fresh_from); break;
    default: run_item<D, IKV_INT4, TMA>(a, tp, it, h, b, stage, ws, wait_late, fresh_from); break;
  }
#pragma unroll
  for (int j = 0; j < 2; j++)
    ws.l[j] = over_tokens_sum(ws.l[j]), ws.z[j] = over_tokens_sum(ws.z[j]);
  /* the warps' states into shared memory (reusing the staging area) */
  const bool packed_values = PACKED(it.precision);
  __syncthreads();
  float *mg = reinterpret_cast<float *>(smem); /* [WARPS][8][D + 2]: acc, m, l */
#pragma unroll
  for (int j = 0; j < 2; j++) {
    const int hd = (lane & 3) * 2 + j;
    if (hd >= (int)a.group) continue;
    float *rec = mg + ((size_t)warp * 8 + hd) * (D + 2);
    /* INT4 values: the zero points' share, the same for every channel */
#pragma unroll
    for (int mt = 0; mt < D / 16; mt++)
#pragma unroll
      for (int hi = 0; hi < 2; hi++) rec[v_channel<D>(packed_values, lane >> 2, mt, hi)] = ws.acc[mt][2 * hi + j] + ws.z[j];
    if (lane < 4) rec[D] = ws.m[j], rec[D + 1] = ws.l[j];
  }
  __syncthreads();
  for (uint32_t x = threadIdx.x; x < a.group * D; x += blockDim.x) {
    const uint32_t gg = x / D, d = x % D;
    float M = -INFINITY;
    for (int w = 0; w < WARPS; w++) M = fmaxf(M, mg[((size_t)w * 8 + gg) * (D + 2) + D]);
    float L = 0.0f, A = 0.0f;
    if (M != -INFINITY)
      for (int w = 0; w < WARPS; w++) {
        const float *rec = mg + ((size_t)w * 8 + gg) * (D + 2);
        const float cw = exp2f(rec[D] - M);
        L += rec[D + 1] * cw;
        A += rec[d] * cw;
      }
    float *out = a.ws + ((size_t)blockIdx.x * a.group + gg) * (D + 2); /* [item][KV head of the launch][group] */
    out[d] = A;
    if (d == 0) out[D] = M, out[D + 1] = L;
  }
}

/* Three blocks an SM fit in shared memory below head_dim 256: registers
 * must not be what limits. Two kernels: every page by cp.async, and FP16
 * and FP8 pages by bulk tensor copies (large launches; the host picks). */
template <int D> __global__ void __launch_bounds__(WARPS * 32, D < 256 ? 3 : 1) decode_kernel(decode_args a) {
  decode_block<D, false>(a, NULL);
}
template <int D>
__global__ void __launch_bounds__(WARPS * 32, D < 256 ? 3 : 1)
    decode_kernel_tma(decode_args a, const __grid_constant__ tma_pool tp) {
  decode_block<D, true>(a, &tp);
}

/* One block per (sequence, query head): merges the row's partials by
 * log-sum-exp and writes out and lse. The items' maxima are spread over the
 * block's threads; then each of its warps takes every MERGE_WARPS-th item,
 * a lane D / 32 of its channels, with several items' loads in flight, and
 * the warps' sums meet in shared memory: a few round trips to L2 however
 * long the row. Warps a block: 16 where the grid is small (up to about four blocks an
 * SM: batch 1 x 32K x 8 dense 73.0 -> 68.0 us, its selective step 5% faster),
 * 4 where it is large (16 cost batch 32's steps 2-4%); docs/results.md. */
#define MERGE_SMALL_GRID 512

template <int D, int MERGE_WARPS>
__global__ void __launch_bounds__(MERGE_WARPS * 32) merge_kernel(decode_args a, uint32_t hh_count) {
  constexpr int MERGE_THREADS = MERGE_WARPS * 32;
  constexpr int CPL = D / 32; /* channels a lane */
  __shared__ float part[MERGE_WARPS][D], part_l[MERGE_WARPS], scratch[MERGE_WARPS];
  const uint32_t b = blockIdx.x, j = blockIdx.y, h = j / a.group, g = j % a.group;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool per_head = a.csr.per_kv_head != 0;
  const uint32_t r = per_head ? b * a.kv_heads + h : b, hh = per_head ? 0 : h;
  /* the kernel after it may be scheduled now (the runtime's next write_kv
   * waits for this grid before doing anything) */
  asm volatile("griddepcontrol.launch_dependents;");
  const int32_t i0 = a.row_items[r], i1 = a.row_items[r + 1];
  asm volatile("griddepcontrol.wait;" ::: "memory"); /* the decode grid done, its partials visible */
  const size_t stride = (size_t)hh_count * a.group * (D + 2); /* from one item's record to the next */
  const float *rec0 = a.ws + ((size_t)(i0 * hh_count + hh) * a.group + g) * (D + 2);
  float M = -INFINITY;
  for (int32_t i = i0 + threadIdx.x; i < i1; i += MERGE_THREADS) M = fmaxf(M, rec0[(i - i0) * stride + D]);
#pragma unroll
  for (int off = 16; off; off >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, off));
  if (lane == 0) scratch[warp] = M;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < MERGE_WARPS; w++) M = fmaxf(M, scratch[w]);
  float acc[CPL] = {0.0f}, L = 0.0f;
  if (M != -INFINITY) {
#pragma unroll 4
    for (int32_t i = i0 + warp; i < i1; i += MERGE_WARPS) {
      const float *rec = rec0 + (size_t)(i - i0) * stride;
      const float w = exp2f(rec[D] - M); /* 0 for an item that kept no key */
      L += rec[D + 1] * w;
      const float2 *v = reinterpret_cast<const float2 *>(rec + lane * CPL); /* records are 8-byte aligned */
#pragma unroll
      for (int c = 0; c < CPL / 2; c++) {
        const float2 x = v[c];
        acc[2 * c] += x.x * w, acc[2 * c + 1] += x.y * w;
      }
    }
  }
#pragma unroll
  for (int c = 0; c < CPL; c++) part[warp][lane * CPL + c] = acc[c];
  if (lane == 0) part_l[warp] = L;
  __syncthreads();
  L = 0.0f;
#pragma unroll
  for (int w = 0; w < MERGE_WARPS; w++) L += part_l[w];
  const size_t o = ((size_t)b * a.q_heads + j) * D;
  for (int d = threadIdx.x; d < D; d += MERGE_THREADS) {
    float A = 0.0f;
#pragma unroll
    for (int w = 0; w < MERGE_WARPS; w++) A += part[w][d];
    store_out(a.out, a.dtype, o + d, L > 0.0f ? A / L : 0.0f);
  }
  if (threadIdx.x == 0) a.lse[(size_t)b * a.q_heads + j] = L > 0.0f ? (M + log2f(L)) * LN2 : -INFINITY;
}

/* ---- host side ---------------------------------------------------------------- */

static ikv_status cuda_ok(cudaError_t e) { return e == cudaSuccess ? IKV_OK : IKV_E_CUDA; }

extern "C" uint64_t ikv_cuda_decode_wave(uint32_t head_dim, int sm_count) {
  return (head_dim < 256 ? 3u : 1u) * (uint64_t)(sm_count > 0 ? sm_count : 0);
}

extern "C" uint32_t ikv_cuda_pages_per_item(uint32_t rows, uint32_t kv_heads_per_row, uint32_t pages_per_row,
                                            uint32_t precisions, int sm_count) {
  /* about three waves of blocks (three fit an SM), and at least 16 pages an
   * item so each warp streams several chunks through its pipeline: the best
   * of the sizes measured on H100 for small and for large caches; 8 when
   * items of 16 would not fill the SMs once (small caches and selections,
   * where latency rules), or, for rows every KV head reads, not twice (a
   * step's selection at batch 1: 4% faster; per-KV-head rows of the same
   * size were 4% slower with it; docs/results.md) */
  const uint64_t sms = (uint64_t)(sm_count > 0 ? sm_count : 1), heads = (uint64_t)rows * kv_heads_per_row;
  uint64_t blocks_wanted = 10ull * sms;
  uint64_t per_row = heads ? (blocks_wanted + heads - 1) / heads : 1;
  uint64_t pages = (pages_per_row + per_row - 1) / per_row;
  const uint64_t fill = kv_heads_per_row > 1 ? 2 * sms : sms;
  const uint32_t least = heads * ((pages_per_row + 15) / 16) < fill ? 8 : 16;
  const uint64_t slots = 3 * sms;
  /* each page format a row mixes ends one more of its items early */
  const uint64_t extra = precisions > 1 ? (precisions < IKV_PRECISION_COUNT ? precisions : IKV_PRECISION_COUNT) - 1 : 0;
  if (heads && heads * 32 <= slots) {
    /* few (row, KV head) pairs, each then cut into 32 or more items: one
     * full wave of items, however large (batch 1 x 8 KV heads: 64K 7-20%,
     * 128K 3-12% faster than three waves; sweeps in docs/results.md) */
    const uint64_t per_pair = slots / heads - extra;
    const uint64_t one_wave = (pages_per_row + per_pair - 1) / per_pair;
    return (uint32_t)(one_wave > least ? one_wave : least);
  }
  if (pages < least) {
    pages = least;
    /* the floor leaves more than a wave of blocks (too few rows and heads
     * for the three waves wanted): one full wave of larger items, up to 64
     * pages each (batch 1 x 32K x 8: 42-page items 12% faster than 16) */
    const uint64_t per_wave = heads && slots / heads > extra ? slots / heads - extra : 0;
    const uint64_t one_wave = per_wave ? (pages_per_row + per_wave - 1) / per_wave : 0;
    if (per_wave && heads * ((pages_per_row + pages - 1) / pages) > slots && one_wave <= 64) pages = one_wave;
  }
  /* a last wave of resident blocks that would run less than half full (or,
   * under two waves, at all): larger items that fill the waves before it;
   * from two waves on, only where the rows split finely enough to fill them
   * (measured in docs/results.md) */
  const uint64_t blocks = heads * ((pages_per_row + pages - 1) / pages);
  const uint64_t waves = blocks / slots, tail = blocks % slots, fit_row = heads ? waves * slots / heads : 0;
  if (waves >= 1 && tail && (waves == 1 || tail < slots / 2) && fit_row) {
    const uint64_t fit_pages = (pages_per_row + fit_row - 1) / fit_row;
    if (waves == 1 || heads * ((pages_per_row + fit_pages - 1) / fit_pages) * 20 >= waves * slots * 17) pages = fit_pages;
  }
  return (uint32_t)pages;
}

extern "C" size_t ikv_cuda_decode_workspace(const ikv_geometry *g, const ikv_attn_params *p, const ikv_cuda_plan *plan) {
  if (!g || !p || !plan || !g->kv_heads) return 0;
  size_t heads = plan->csr.per_kv_head ? 1 : g->kv_heads;
  return (size_t)plan->n_items * heads * (p->q_heads / g->kv_heads) * (g->head_dim + 2) * sizeof(float);
}

/* One of the decode kernels, a block per (item, KV head), item-major;
 * above 48 KB a kernel must ask for its shared memory. */
template <int D, typename... Args>
static cudaError_t launch_decode(void (*k)(Args...), uint32_t n_items, uint32_t heads, cudaStream_t s, bool dependent,
                                 Args... args) {
  if (tiles<D>::SMEM > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)tiles<D>::SMEM);
    if (e != cudaSuccess) return e;
  }
  return ikv_launch(k, dim3(n_items * heads), dim3(WARPS * 32), tiles<D>::SMEM, s, dependent, args...);
}

template <int D>
static cudaError_t launch(const decode_args &a, const tma_pool *tp, uint32_t n_items, uint32_t heads, uint32_t batch,
                          cudaStream_t s) {
  if (n_items) {
    const bool dependent = a.item_waits != NULL || a.prefetch_pages;
    const cudaError_t e = tp ? launch_decode<D>(decode_kernel_tma<D>, n_items, heads, s, dependent, a, *tp)
                             : launch_decode<D>(decode_kernel<D>, n_items, heads, s, dependent, a);
    if (e != cudaSuccess) return e;
  }
  if (!batch) return cudaGetLastError();
  /* launched while the decode grid runs (programmatic dependent launch):
   * no gap between the two kernels */
  const dim3 grid(batch, a.q_heads);
  const cudaError_t e = batch * a.q_heads <= MERGE_SMALL_GRID
                            ? ikv_launch(merge_kernel<D, 16>, grid, dim3(16 * 32), 0, s, true, a, heads)
                            : ikv_launch(merge_kernel<D, 4>, grid, dim3(4 * 32), 0, s, true, a, heads);
  return e != cudaSuccess ? e : cudaGetLastError();
}

/* cuTensorMapEncodeTiled from the driver, found once (the entry point never changes) */
static PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void *p = NULL;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      p = NULL;
    return (PFN_cuTensorMapEncodeTiled_v12000)p;
  }();
  return fn;
}

/* A tiled tensor map read in 128-byte swizzled boxes (unit steps, no
 * interleave, 256-byte L2 promotion, no out-of-bounds fill). */
static bool encode_swizzled(PFN_cuTensorMapEncodeTiled_v12000 encode, CUtensorMap *map, CUtensorMapDataType type,
                            cuuint32_t rank, void *base, const cuuint64_t *dims, const cuuint64_t *strides,
                            const cuuint32_t *box) {
  const cuuint32_t steps[3] = {1, 1, 1};
  return encode(map, type, rank, base, dims, strides, box, steps, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/* The layer's FP16 pool as a 2-D tensor of rows of head_dim halves, read in
 * boxes of 16 rows x 64 halves, 128-byte swizzled; false where it cannot
 * be described so (the kernel then loads FP16 pages by cp.async). */
static bool fp16_tensor_map(PFN_cuTensorMapEncodeTiled_v12000 encode, const ikv_geometry *g,
                            const ikv_layer_pools *pools, const decode_args *a, tma_pool *tp) {
  const uint32_t D = g->head_dim, row_bytes = D * 2;
  const size_t page_bytes = a->page_bytes[IKV_FP16], head_bytes = (size_t)a->k_tile[IKV_FP16] + a->v_tile[IKV_FP16];
  if (!pools->base[IKV_FP16] || !pools->pages[IKV_FP16] || page_bytes % row_bytes || head_bytes % row_bytes ||
      a->k_tile[IKV_FP16] % row_bytes || ((uintptr_t)pools->base[IKV_FP16] & 15))
    return false;
  const uint64_t rows = (uint64_t)pools->pages[IKV_FP16] * (page_bytes / row_bytes);
  if (rows > 0x7fffffffull) return false;
  const cuuint64_t dims[2] = {D, rows}, strides[1] = {row_bytes};
  const cuuint32_t box[2] = {64, 16};
  if (!encode_swizzled(encode, &tp->map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2, pools->base[IKV_FP16], dims, strides, box))
    return false;
  tp->page_rows = (uint32_t)(page_bytes / row_bytes);
  tp->head_rows = (uint32_t)(head_bytes / row_bytes);
  tp->v_row = a->k_tile[IKV_FP16] / row_bytes;
  return true;
}

/* The layer's FP8 pool (head_dim 128) as a 3-D tensor [tile][row][byte]:
 * K and V tiles of one size, one after the other, each head_dim-byte rows
 * then its scale; read in boxes of 16 rows x 128 bytes, 128-byte swizzled. */
static bool fp8_tensor_map(PFN_cuTensorMapEncodeTiled_v12000 encode, const ikv_geometry *g,
                           const ikv_layer_pools *pools, const decode_args *a, tma_pool *tp) {
  const uint32_t tile = a->k_tile[IKV_FP8_E4M3];
  if (g->head_dim != 128 || !pools->base[IKV_FP8_E4M3] || !pools->pages[IKV_FP8_E4M3] ||
      a->v_tile[IKV_FP8_E4M3] != tile || a->page_bytes[IKV_FP8_E4M3] != (size_t)2 * g->kv_heads * tile ||
      tile % 16 || a->payload[IKV_FP8_E4M3] != g->page_size * g->head_dim || ((uintptr_t)pools->base[IKV_FP8_E4M3] & 15))
    return false;
  const uint64_t tiles = (uint64_t)pools->pages[IKV_FP8_E4M3] * 2 * g->kv_heads;
  if (tiles > 0x7fffffffull) return false;
  const cuuint64_t dims[3] = {g->head_dim, g->page_size, tiles}, strides[2] = {g->head_dim, tile};
  const cuuint32_t box[3] = {128, 16, 1};
  return encode_swizzled(encode, &tp->map8, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, pools->base[IKV_FP8_E4M3], dims, strides,
                         box);
}

/* The tensor maps of the pools the plan reads by bulk copies; false where
 * none could be made. */
static bool tensor_maps(const ikv_geometry *g, const ikv_layer_pools *pools, const ikv_cuda_plan *plan,
                        const decode_args *a, tma_pool *tp) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (!encode) return false;
  const bool any = !plan->formats;
  tp->fp16 = (any || (plan->formats & (1u << IKV_FP16))) && fp16_tensor_map(encode, g, pools, a, tp);
  tp->fp8 = (any || (plan->formats & (1u << IKV_FP8_E4M3))) && fp8_tensor_map(encode, g, pools, a, tp);
  tp->min_pages = plan->page_copies == IKV_CUDA_COPIES_BULK ? 1 : TMA_MIN_PAGES;
  return tp->fp16 || tp->fp8;
}

/* FP16 and FP8 pages by bulk tensor copies where the launch is
 * bandwidth-bound: such pages in the plan, and two waves of blocks or more
 * (three blocks an SM below head_dim 256) or a wave of long items (32
 * pages or more on average: batch 1 x 128K x 8 dense 4% faster). On
 * smaller launches, whose time is latency, the copies' longer first-byte
 * latency cost 2-5% (docs/results.md). */
static bool bulk_copies_pay(const ikv_geometry *g, const ikv_cuda_plan *plan, uint32_t heads) {
  if (g->head_dim < 128 || plan->page_copies == IKV_CUDA_COPIES_ASYNC) return false;
  if (plan->page_copies == IKV_CUDA_COPIES_BULK) return true;
  if (plan->formats && !(plan->formats & (1u << IKV_FP16 | 1u << IKV_FP8_E4M3))) return false;
  const int sms = ikv_cuda_sm_count();
  if (!sms) return false;
  const uint64_t blocks = (uint64_t)plan->n_items * heads;
  return blocks >= 2 * ikv_cuda_decode_wave(g->head_dim, sms) ||
         (blocks >= (uint64_t)sms && plan->n_entries >= 32ull * plan->n_items && plan->n_items);
}

extern "C" ikv_status ikv_cuda_decode(const ikv_geometry *g, const ikv_layer_pools *pools, const ikv_cuda_plan *plan,
                                      const ikv_attn_params *p, const void *q, void *out, float *lse, ikv_dtype dtype,
                                      void *workspace, size_t workspace_bytes, void *stream) {
  if (!g || !pools || !plan || !p) return IKV_E_NULL;
  if (ikv_geometry_check(g) != IKV_OK || !p->q_heads || p->q_heads % g->kv_heads || !(p->softmax_scale > 0.0f) ||
      p->window < 0 || p->sinks < 0 || (unsigned)dtype >= IKV_DTYPE_COUNT ||
      (unsigned)plan->page_copies > IKV_CUDA_COPIES_BULK)
    return IKV_E_INVALID;
  const uint32_t group = p->q_heads / g->kv_heads;
  if (group > 8 || (g->head_dim != 64 && g->head_dim != 128 && g->head_dim != 256)) return IKV_E_UNSUPPORTED;
  if (plan->csr.batch && (!q || !out || !lse)) return IKV_E_NULL;
  if (workspace_bytes < ikv_cuda_decode_workspace(g, p, plan) || (plan->n_items && !workspace)) return IKV_E_CAPACITY;
  decode_args a;
  memset(&a, 0, sizeof(a));
  for (int prec = 0; prec < IKV_PRECISION_COUNT; prec++) {
    a.base[prec] = (const uint8_t *)pools->base[prec];
    a.page_bytes[prec] = ikv_page_layer_bytes(g, (ikv_precision)prec);
    a.k_tile[prec] = (uint32_t)ikv_tile_bytes((ikv_precision)prec, IKV_KEYS, g->page_size, g->head_dim);
    a.v_tile[prec] = (uint32_t)ikv_tile_bytes((ikv_precision)prec, IKV_VALUES, g->page_size, g->head_dim);
    a.payload[prec] = (uint32_t)ikv_tile_payload_bytes((ikv_precision)prec, g->page_size, g->head_dim);
  }
  a.csr = plan->csr;
  a.items = plan->items, a.entries = plan->entries, a.row_items = plan->row_items, a.item_waits = plan->item_waits;
  a.prefetch_pages = plan->prefetch_pages;
  a.kv_heads = g->kv_heads, a.group = group, a.page_size = g->page_size, a.q_heads = p->q_heads;
  a.scale_log2 = p->softmax_scale * LOG2E;
  a.window = p->window, a.sinks = p->sinks;
  a.q = q, a.out = out, a.lse = lse, a.dtype = dtype, a.ws = (float *)workspace;
  const uint32_t heads = plan->csr.per_kv_head ? 1 : g->kv_heads;
  cudaStream_t s = (cudaStream_t)stream;
  tma_pool pool;
  const tma_pool *tp = bulk_copies_pay(g, plan, heads) && tensor_maps(g, pools, plan, &a, &pool) ? &pool : NULL;
  switch (g->head_dim) {
    case 64: return cuda_ok(launch<64>(a, tp, plan->n_items, heads, plan->csr.batch, s));
    case 128: return cuda_ok(launch<128>(a, tp, plan->n_items, heads, plan->csr.batch, s));
    default: return cuda_ok(launch<256>(a, tp, plan->n_items, heads, plan->csr.batch, s));
  }
}

/* ---- device copies of a plan ------------------------------------------------------ */

struct plan_storage {
  ikv_cuda_plan plan;
  void *buffers[10];
};

static ikv_status upload(plan_storage *ps, int slot, const void *src, size_t bytes, const void **dst) {
  *dst = NULL;
  if (!bytes) return IKV_OK;
  if (cudaMalloc(&ps->buffers[slot], bytes) != cudaSuccess) return IKV_E_CUDA;
  *dst = ps->buffers[slot];
  return cuda_ok(cudaMemcpy(ps->buffers[slot], src, bytes, cudaMemcpyHostToDevice));
}

extern "C" ikv_status ikv_cuda_plan_create(const ikv_decode_plan *host, uint32_t kv_heads, uint32_t pages_per_item,
                                           ikv_cuda_plan **out) {
  if (!host || !out) return IKV_E_NULL;
  if (!kv_heads || !pages_per_item) return IKV_E_INVALID;
  uint32_t rows = host->per_kv_head ? host->batch * kv_heads : host->batch, nnz = (uint32_t)host->indptr[rows];
  plan_storage *ps = (plan_storage *)calloc(1, sizeof(plan_storage));
  int32_t *entries = (int32_t *)malloc(sizeof(int32_t) * (nnz + 1));
  ikv_work_item *items = (ikv_work_item *)malloc(sizeof(ikv_work_item) * (nnz + (size_t)rows * IKV_PRECISION_COUNT + 1));
  int32_t *row_items = (int32_t *)malloc(sizeof(int32_t) * (rows + 1));
  ikv_status st = ps && entries && items && row_items ? IKV_OK : IKV_E_NO_MEMORY;
  uint32_t n_items = 0;
  if (st == IKV_OK) {
    ikv_plan_partition(host, rows, pages_per_item, NULL, NULL, entries, items, &n_items);
    for (uint32_t r = 0, i = 0; r <= rows; r++) { /* items come ordered by row */
      while (i < n_items && items[i].row < r) i++;
      row_items[r] = (int32_t)i;
    }
    ikv_cuda_plan *p = &ps->plan;
    p->csr = *host;
    for (uint32_t e = 0; e < nnz; e++) p->formats |= 1u << host->precision[e];
    p->n_entries = nnz;
    p->rows = rows;
    p->n_items = n_items;
    const void **dst[10] = {(const void **)&p->csr.indptr, (const void **)&p->csr.page_slot, (const void **)&p->csr.precision,
                            (const void **)&p->csr.page_index, (const void **)&p->csr.first, (const void **)&p->csr.last,
                            (const void **)&p->csr.seq_len, (const void **)&p->items, (const void **)&p->entries,
                            (const void **)&p->row_items};
    const void *src[10] = {host->indptr, host->page_slot, host->precision, host->page_index, host->first, host->last,
                           host->seq_len, items, entries, row_items};
    size_t bytes[10] = {sizeof(int32_t) * (rows + 1), sizeof(int32_t) * nnz, nnz, sizeof(int32_t) * nnz,
                        sizeof(uint16_t) * nnz, sizeof(uint16_t) * nnz, sizeof(int32_t) * host->batch,
                        sizeof(ikv_work_item) * n_items, sizeof(int32_t) * nnz, sizeof(int32_t) * (rows + 1)};
    for (int i = 0; i < 10 && st == IKV_OK; i++) st = upload(ps, i, src[i], bytes[i], dst[i]);
  }
  free(entries), free(items), free(row_items);
  if (st != IKV_OK) {
    ikv_cuda_plan_destroy(ps ? &ps->plan : NULL);
    return st;
  }
  *out = &ps->plan;
  return IKV_OK;
}

extern "C" void ikv_cuda_plan_destroy(ikv_cuda_plan *plan) {
  if (!plan) return;
  plan_storage *ps = (plan_storage *)plan; /* plan is the first member */
  for (int i = 0; i < 10; i++) cudaFree(ps->buffers[i]);
  free(ps);
}
