#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include "kernels/device_probe.h"

static ikv_status check(cudaError_t err) { return err == cudaSuccess ? IKV_OK : IKV_E_CUDA; }

extern "C" ikv_status ikv_gpu_count(int *count) {
  if (!count) return IKV_E_NULL;
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
    cudaGetLastError(); /* clear the sticky "no device" error */
    n = 0;
  } else if (err != cudaSuccess) {
    return IKV_E_CUDA;
  }
  *count = n;
  return IKV_OK;
}

extern "C" ikv_status ikv_cuda_versions(int *runtime_version, int *driver_version) {
  if (!runtime_version || !driver_version) return IKV_E_NULL;
  int rt = 0, drv = 0;
  if (cudaRuntimeGetVersion(&rt) != cudaSuccess) return IKV_E_CUDA;
  if (cudaDriverGetVersion(&drv) != cudaSuccess) drv = 0;
  *runtime_version = rt;
  *driver_version = drv;
  return IKV_OK;
}

extern "C" ikv_status ikv_gpu_get_info(int device, ikv_gpu_info *out) {
  if (!out) return IKV_E_NULL;
  int n = 0;
  ikv_status st = ikv_gpu_count(&n);
  if (st != IKV_OK) return st;
  if (device < 0 || device >= n) return IKV_E_INVALID;
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return IKV_E_CUDA;
  ikv_gpu_info info;
  memset(&info, 0, sizeof(info));
  snprintf(info.name, sizeof(info.name), "%s", prop.name);
  st = check(cudaDeviceGetPCIBusId(info.pci_bus_id, sizeof(info.pci_bus_id), device));
  if (st != IKV_OK) return st;
  info.total_memory = prop.totalGlobalMem;
  info.sm_count = prop.multiProcessorCount;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  *out = info;
  return IKV_OK;
}

__global__ void axpy_kernel(float a, const float *__restrict__ x, float *__restrict__ y, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    y[i] = fmaf(a, x[i], y[i]);
}

extern "C" ikv_status ikv_gpu_axpy(int device, float a, const float *x, float *y, size_t n) {
  if (!x || !y) return IKV_E_NULL;
  if (n == 0) return IKV_OK;
  int count = 0;
  ikv_status st = ikv_gpu_count(&count);
  if (st != IKV_OK) return st;
  if (device < 0 || device >= count) return IKV_E_INVALID;
  if (cudaSetDevice(device) != cudaSuccess) return IKV_E_CUDA;
  float *dx = NULL, *dy = NULL;
  size_t bytes = n * sizeof(float);
  st = check(cudaMalloc(&dx, bytes));
  if (st == IKV_OK) st = check(cudaMalloc(&dy, bytes));
  if (st == IKV_OK) st = check(cudaMemcpy(dx, x, bytes, cudaMemcpyHostToDevice));
  if (st == IKV_OK) st = check(cudaMemcpy(dy, y, bytes, cudaMemcpyHostToDevice));
  if (st == IKV_OK) {
    unsigned blocks = (unsigned)((n + 255) / 256 < 1024 ? (n + 255) / 256 : 1024);
    axpy_kernel<<<blocks, 256>>>(a, dx, dy, n);
    st = check(cudaGetLastError());
  }
  if (st == IKV_OK) st = check(cudaMemcpy(y, dy, bytes, cudaMemcpyDeviceToHost));
  cudaFree(dx);
  cudaFree(dy);
  return st;
}
