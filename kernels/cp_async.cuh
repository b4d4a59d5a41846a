/*
 * Asynchronous copies from global into shared memory (cp.async, Ampere and
 * later), 16 bytes a lane: a warp puts all its loads in flight at once and
 * waits once. Shared by the decode and write_kv kernels.
 */
#ifndef IKV_CP_ASYNC_CUH
#define IKV_CP_ASYNC_CUH

#include <stdint.h>

/* Copies 16 bytes (both addresses 16-byte aligned); fill == false writes 16 zeros instead. */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool fill) {
  const uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(fill ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
/* Waits until at most N committed groups are still in flight. */
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

#endif /* IKV_CP_ASYNC_CUH */
