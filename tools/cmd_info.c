/* ikv info: version, build configuration, host topology (hwloc) and GPUs. */
#define _GNU_SOURCE
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <hwloc.h>
#include <stdio.h>

#include "kernels/device_probe.h"
#include "prefetch/host_tier.h"
#include "runtime/ikv_base.h"
#include "tools/ikv_cli.h"

static const char usage[] =
    "usage: ikv info\n\n"
    "Prints the library version, how it was built (CUDA archs compiled in, CUDA,\n"
    "NCCL and hwloc versions), the host topology from hwloc (packages, NUMA nodes,\n"
    "cores) and each GPU with its nearest NUMA node.\n";

/* NCCL is loaded at run time so the library runs where NCCL is absent. */
static void print_nccl(void) {
  void *lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    printf("  nccl:        not found (libnccl.so.2): multi-GPU sharding unavailable\n");
    return;
  }
  int (*get_version)(int *) = (int (*)(int *))dlsym(lib, "ncclGetVersion");
  int v = 0;
  if (get_version && get_version(&v) == 0)
    printf("  nccl:        %d.%d.%d (libnccl.so.2)\n", v / 10000, v / 100 % 100, v % 100);
  else
    printf("  nccl:        libnccl.so.2 present, version unknown\n");
  dlclose(lib);
}

static void print_build(void) {
  unsigned hw = hwloc_get_api_version();
  int rt = 0, drv = 0;
  printf("build\n");
  printf("  cuda archs:  %s\n", IKV_CUDA_ARCHS);
  printf("  cuda:        built with %d.%d", CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
  if (ikv_cuda_versions(&rt, &drv) == IKV_OK && drv)
    printf(", driver supports %d.%d\n", drv / 1000, drv % 1000 / 10);
  else
    printf(", no CUDA driver on this host\n");
  printf("  hwloc:       %u.%u.%u (built against %u.%u.%u)\n", hw >> 16, (hw >> 8) & 0xff, hw & 0xff,
         HWLOC_API_VERSION >> 16, (HWLOC_API_VERSION >> 8) & 0xff, HWLOC_API_VERSION & 0xff);
  print_nccl();
}

static void print_host(hwloc_topology_t topo) {
  int packages = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PACKAGE);
  int numa = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
  int cores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
  int pus = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU);
  printf("host topology (hwloc)\n");
  printf("  packages %d, NUMA nodes %d, cores %d, hardware threads %d\n", packages, numa, cores, pus);
  for (int i = 0; i < numa; i++) {
    hwloc_obj_t node = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, (unsigned)i);
    char cpus[256];
    hwloc_bitmap_list_snprintf(cpus, sizeof(cpus), node->cpuset);
    printf("  NUMA node %u: %.1f GiB, cpus %s\n", node->os_index,
           (double)node->attr->numanode.local_memory / (1u << 30), cpus);
  }
  if (numa <= 1)
    printf("  flat topology: host-tier memory is not NUMA-bound (nothing to bind to)\n");
}

static void print_gpus(void) {
  int n = 0;
  printf("GPUs\n");
  if (ikv_gpu_count(&n) != IKV_OK || n == 0) {
    printf("  none found: the CUDA backend is unavailable, the CPU backend is used\n");
    return;
  }
  for (int d = 0; d < n; d++) {
    ikv_gpu_info info;
    if (ikv_gpu_get_info(d, &info) != IKV_OK) {
      printf("  gpu %d: could not be queried\n", d);
      continue;
    }
    printf("  gpu %d: %s, sm_%d%d, %d SMs, %.1f GiB, pci %s\n", d, info.name, info.cc_major, info.cc_minor,
           info.sm_count, (double)info.total_memory / (1u << 30), info.pci_bus_id);
    ikv_host_tier *tier; /* where the CUDA backend would put this GPU's host tier */
    if (ikv_host_tier_open(info.pci_bus_id, &tier) == IKV_OK)
      printf("    host tier: %s\n", ikv_host_tier_placement(tier)->detail);
    ikv_host_tier_close(tier);
  }
}

int ikv_cmd_info(int argc, char **argv) {
  if (ikv_wants_help(argc, argv, usage)) return 0;
  printf("intentkv %s\n", ikv_version());
  print_build();
  hwloc_topology_t topo;
  if (hwloc_topology_init(&topo)) {
    printf("host topology: hwloc could not start\n");
    return 1;
  }
  if (hwloc_topology_load(topo)) {
    printf("host topology: hwloc could not read it\n");
    hwloc_topology_destroy(topo);
    return 1;
  }
  print_host(topo);
  print_gpus();
  hwloc_topology_destroy(topo);
  return 0;
}
