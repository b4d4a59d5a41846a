/* SM-driven copies of many small pieces (kernels/copy_cuda.h). */
#include <cuda_runtime.h>

#include "kernels/copy_cuda.h"

namespace {

constexpr int THREADS = 256, ILP = 4; /* 16 KiB in flight per block per round */

/* Block b copies pieces b, b + gridDim.x, ...: each thread issues ILP loads
 * before it stores, so a block keeps 16 KiB of reads outstanding. */
__global__ void __launch_bounds__(THREADS) copy_pieces(const ikv_copy_piece *pieces, uint32_t n) {
  for (uint32_t p = blockIdx.x; p < n; p += gridDim.x) {
    const ikv_copy_piece piece = pieces[p];
    const uint4 *src = static_cast<const uint4 *>(piece.src);
    uint4 *dst = static_cast<uint4 *>(piece.dst);
    const uint64_t words = piece.bytes / 16;
    for (uint64_t base = 0; base < words; base += THREADS * ILP) {
      uint4 v[ILP];
#pragma unroll
      for (int k = 0; k < ILP; k++) {
        const uint64_t i = base + k * THREADS + threadIdx.x;
        if (i < words) v[k] = src[i];
      }
#pragma unroll
      for (int k = 0; k < ILP; k++) {
        const uint64_t i = base + k * THREADS + threadIdx.x;
        if (i < words) dst[i] = v[k];
      }
    }
  }
}

} // namespace

extern "C" ikv_status ikv_cuda_copy_pieces(const ikv_copy_piece *pieces, uint32_t n, uint32_t blocks, void *stream) {
  if (!pieces) return IKV_E_NULL;
  if (!n || !blocks) return IKV_E_INVALID;
  for (uint32_t i = 0; i < n; i++)
    if ((reinterpret_cast<uintptr_t>(pieces[i].src) | reinterpret_cast<uintptr_t>(pieces[i].dst) | pieces[i].bytes) % 16)
      return IKV_E_INVALID;
  copy_pieces<<<blocks < n ? blocks : n, THREADS, 0, static_cast<cudaStream_t>(stream)>>>(pieces, n);
  return cudaGetLastError() == cudaSuccess ? IKV_OK : IKV_E_CUDA;
}
