/*
 * A kernel that holds its stream for a while yet lets the kernel launched
 * after it as a programmatic dependent start at once: tests of launches
 * that overlap the kernel before them use it to keep that kernel's writes
 * back long enough that reading early gives stale bytes every time.
 */
#ifndef IKV_TEST_GPU_HOLD_H
#define IKV_TEST_GPU_HOLD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Enqueues the hold (ns nanoseconds of GPU time) on stream; 1 on success. */
int test_gpu_hold(void *stream, uint64_t ns);

#ifdef __cplusplus
}
#endif
#endif /* IKV_TEST_GPU_HOLD_H */
