/*
 * GPU discovery and a probe kernel that proves a device really runs our code.
 * Works in a build without a GPU: ikv_gpu_count reports 0 devices.
 */
#ifndef IKV_DEVICE_PROBE_H
#define IKV_DEVICE_PROBE_H

#include "runtime/ikv_base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ikv_gpu_info {
  char name[256];
  char pci_bus_id[32]; /* "0000:65:00.0" */
  size_t total_memory;  /* bytes */
  int sm_count;
  int cc_major, cc_minor;
} ikv_gpu_info;

/* Number of usable CUDA devices; 0 (and IKV_OK) when there is no driver or device. */
ikv_status ikv_gpu_count(int *count);
ikv_status ikv_gpu_get_info(int device, ikv_gpu_info *out);
/* CUDA runtime and driver versions (e.g. 13000); driver 0 when there is none. */
ikv_status ikv_cuda_versions(int *runtime_version, int *driver_version);

/* y[i] = a * x[i] + y[i] for n host floats, computed by a kernel on `device`
 * (copies in, launch, copies out, all checked). Synchronous: a probe, not a
 * hot-path call. */
ikv_status ikv_gpu_axpy(int device, float a, const float *x, float *y, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* IKV_DEVICE_PROBE_H */
