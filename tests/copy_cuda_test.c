/* GPU test (tag `gpu`): ikv_cuda_copy_pieces against memcpy, host -> device
 * from pinned memory and device -> device, pieces of many sizes at random
 * places, destinations poisoned first; argument errors. */
#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/copy_cuda.h"
#include "tests/cmocka_all.h"
#include "tests/require_gpu.h"
#include "tests/test_rng.h"

#define CUDA_CHECK(call) assert_int_equal((call), cudaSuccess)
enum { ARENA = 8 << 20, PIECES = 700 };

static void pieces_land_exactly(void **state) {
  (void)state;
  require_gpu();
  uint8_t *host, *dev, *dev2, *back = malloc(ARENA), *want = malloc(ARENA);
  ikv_copy_piece *list;
  CUDA_CHECK(cudaHostAlloc((void **)&host, ARENA, cudaHostAllocDefault));
  CUDA_CHECK(cudaHostAlloc((void **)&list, sizeof(ikv_copy_piece) * PIECES, cudaHostAllocMapped));
  CUDA_CHECK(cudaMalloc((void **)&dev, ARENA));
  CUDA_CHECK(cudaMalloc((void **)&dev2, ARENA));
  test_rng rng = {0x5eed0c0f};
  for (size_t i = 0; i < ARENA; i++) host[i] = (uint8_t)(rng_next(&rng) >> 24);
  for (int from_device = 0; from_device < 2; from_device++) {
    if (from_device) CUDA_CHECK(cudaMemcpy(dev2, host, ARENA, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemset(dev, 0xa5, ARENA)); /* poison */
    memset(want, 0xa5, ARENA);
    /* disjoint destinations: piece i owns [i * slot, (i + 1) * slot) */
    const size_t slot = ARENA / PIECES / 16 * 16;
    for (uint32_t i = 0; i < PIECES; i++) {
      const size_t bytes = 16 * (1 + rng_next(&rng) % (slot / 16)); /* 16 B .. the slot */
      const size_t src = 16 * (rng_next(&rng) % ((ARENA - bytes) / 16));
      list[i] = (ikv_copy_piece){(from_device ? dev2 : host) + src, dev + i * slot, bytes};
      memcpy(want + i * slot, host + src, bytes);
    }
    for (uint32_t blocks = 1; blocks <= 64; blocks *= 8) {
      assert_int_equal(ikv_cuda_copy_pieces(list, PIECES, blocks, NULL), IKV_OK);
      CUDA_CHECK(cudaDeviceSynchronize());
      CUDA_CHECK(cudaMemcpy(back, dev, ARENA, cudaMemcpyDeviceToHost));
      assert_memory_equal(back, want, ARENA);
    }
  }
  /* errors change nothing */
  assert_int_equal(ikv_cuda_copy_pieces(NULL, 1, 1, NULL), IKV_E_NULL);
  assert_int_equal(ikv_cuda_copy_pieces(list, 0, 1, NULL), IKV_E_INVALID);
  assert_int_equal(ikv_cuda_copy_pieces(list, 1, 0, NULL), IKV_E_INVALID);
  list[0] = (ikv_copy_piece){host + 8, dev, 16};
  assert_int_equal(ikv_cuda_copy_pieces(list, 1, 1, NULL), IKV_E_INVALID);
  list[0] = (ikv_copy_piece){host, dev, 24};
  assert_int_equal(ikv_cuda_copy_pieces(list, 1, 1, NULL), IKV_E_INVALID);
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemcpy(back, dev, ARENA, cudaMemcpyDeviceToHost));
  assert_memory_equal(back, want, ARENA);
  cudaFreeHost(host), cudaFreeHost(list), cudaFree(dev), cudaFree(dev2);
  free(back), free(want);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(pieces_land_exactly)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
