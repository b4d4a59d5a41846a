/* Kernel launches that may overlap the kernel before them on the stream
 * (programmatic dependent launch, Hopper and later). A kernel so launched may
 * start before its predecessor ends and must execute griddepcontrol.wait
 * before it reads anything that kernel writes; a predecessor lets its
 * dependents start early with griddepcontrol.launch_dependents. */
#ifndef IKV_LAUNCH_CUH
#define IKV_LAUNCH_CUH

#include <cuda_runtime.h>

/* Launches k on grid x block with smem bytes on s; as a programmatic
 * dependent of the kernel before it when overlap is set. */
template <typename... Args>
static inline cudaError_t ikv_launch(void (*k)(Args...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                                     bool overlap, Args... args) {
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = s;
  cfg.attrs = &attr, cfg.numAttrs = overlap ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, k, args...);
}

/* The current device's SM count, 0 where it cannot be read. */
static inline int ikv_cuda_sm_count() {
  int device, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
    return 0;
  return sms;
}

#endif /* IKV_LAUNCH_CUH */
