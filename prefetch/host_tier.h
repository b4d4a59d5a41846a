/*
 * The host tier's memory: page pools in host RAM on the NUMA node nearest
 * the GPU that reads them (hwloc), so host <-> GPU copies do not cross the
 * socket interconnect. Where the topology is flat (one NUMA node), unknown,
 * or the GPU's PCI locality is not reported, memory is not bound, and the
 * placement says why. The CUDA backend pins what it gets here
 * (cudaHostRegister); the CPU backend uses it as ordinary aligned memory.
 *
 * Conventions as in runtime/ikv_base.h. A host tier is owned by its opener;
 * memory from ikv_host_tier_alloc is freed with ikv_host_tier_free before
 * the tier is closed.
 */
#ifndef IKV_PREFETCH_HOST_TIER_H
#define IKV_PREFETCH_HOST_TIER_H

#include <stddef.h>

#include "runtime/ikv_base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ikv_host_placement {
  int numa_nodes;   /* NUMA nodes hwloc sees (0: no topology) */
  int node;         /* OS index of the node memory is bound to; -1: not bound */
  char detail[160]; /* where, or why not, in words */
} ikv_host_placement;

typedef struct ikv_host_tier ikv_host_tier;

/* pci_bus_id: the GPU's ("0000:3b:00.0", as cudaDeviceGetPCIBusId writes
 * it), or NULL where no GPU reads the tier (no binding). */
ikv_status ikv_host_tier_open(const char *pci_bus_id, ikv_host_tier **out);
void ikv_host_tier_close(ikv_host_tier *tier);
/* bytes of page-aligned memory, bound as the placement says; NULL if none.
 * A refused binding falls back to unbound memory and the placement says so. */
void *ikv_host_tier_alloc(ikv_host_tier *tier, size_t bytes);
void ikv_host_tier_free(ikv_host_tier *tier, void *memory, size_t bytes);
const ikv_host_placement *ikv_host_tier_placement(const ikv_host_tier *tier);

#ifdef __cplusplus
}
#endif
#endif /* IKV_PREFETCH_HOST_TIER_H */
