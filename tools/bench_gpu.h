/* GPU helpers shared by the GPU benchmarks. */
#ifndef IKV_TOOLS_BENCH_GPU_H
#define IKV_TOOLS_BENCH_GPU_H

#include <cuda_runtime_api.h>
#include <stddef.h>

#include "runtime/intentkv.h"

/* The attention shape the GPU benchmarks run (Llama-3.1-8B's: head_dim 128,
 * 32 query heads over 8 KV heads) on 16-token pages. */
enum { BENCH_HEAD_DIM = 128, BENCH_PAGE = 16, BENCH_Q_HEADS = 32, BENCH_KV_HEADS = 8 };

/* Exits with the CUDA error and what failed unless e is cudaSuccess. */
void bench_cuda_ok(cudaError_t e, const char *what);
#define BENCH_CUDA(call) bench_cuda_ok((call), #call)

/* Exits with the status and the runtime's message unless st is IKV_OK. */
void bench_ikv_ok(const ikv_runtime *rt, ikv_status st, const char *what);
/* Milliseconds between two recorded events. */
float bench_elapsed_ms(cudaEvent_t a, cudaEvent_t b);

/* Device-to-device copy bandwidth (bytes read + written per second), the
 * median of 7 timed 2 GiB copies inside scratch (at least 4 GiB). */
double bench_copy_bandwidth(void *scratch);

/* Fill n halves (f16) or floats (f32) of device memory with random values
 * of magnitude in [0.05, 2) (never zeros) and the given sign (0: either). */
void bench_fill_random_f16(void *device, size_t n, int sign, unsigned long long seed);
void bench_fill_random_f32(float *device, size_t n, int sign, unsigned long long seed);

/* Median GPU time of `replays` replays of a graph after 3 warm-up ones, in
 * microseconds. */
double bench_replay_us(cudaGraphExec_t exec, cudaStream_t s, int replays);

#endif
