/* Host-tier memory on the GPU's nearest NUMA node (prefetch/host_tier.h). */
#include "prefetch/host_tier.h"

#include <errno.h>
#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ikv_host_tier {
  hwloc_topology_t topo; /* NULL: hwloc could not read the topology */
  hwloc_nodeset_t nodes; /* bind to these; NULL: no binding */
  ikv_host_placement where;
};

/* The nodes nearest the PCI device, or NULL with the reason in `where`. */
static hwloc_nodeset_t nearest_nodes(ikv_host_tier *t, const char *pci_bus_id) {
  ikv_host_placement *w = &t->where;
  if (w->numa_nodes <= 1) {
    snprintf(w->detail, sizeof(w->detail), "not bound: flat topology (%d NUMA node%s)", w->numa_nodes,
             w->numa_nodes == 1 ? "" : "s");
    return NULL;
  }
  hwloc_obj_t pci = hwloc_get_pcidev_by_busidstring(t->topo, pci_bus_id);
  hwloc_obj_t near = pci ? hwloc_get_non_io_ancestor_obj(t->topo, pci) : NULL;
  if (!near || !near->nodeset || hwloc_bitmap_iszero(near->nodeset)) {
    snprintf(w->detail, sizeof(w->detail), "not bound: the topology does not place GPU %s", pci_bus_id);
    return NULL;
  }
  hwloc_nodeset_t nodes = hwloc_bitmap_dup(near->nodeset);
  if (!nodes) return NULL;
  char list[64];
  hwloc_bitmap_list_snprintf(list, sizeof(list), nodes);
  w->node = hwloc_bitmap_first(nodes);
  snprintf(w->detail, sizeof(w->detail), "bound to NUMA node %s, nearest GPU %s", list, pci_bus_id);
  return nodes;
}

ikv_status ikv_host_tier_open(const char *pci_bus_id, ikv_host_tier **out) {
  if (!out) return IKV_E_NULL;
  ikv_host_tier *t = calloc(1, sizeof(*t));
  if (!t) return IKV_E_NO_MEMORY;
  t->where.node = -1;
  if (!pci_bus_id) { /* nothing to be near: aligned memory, no topology needed */
    snprintf(t->where.detail, sizeof(t->where.detail), "not bound: no GPU reads this tier");
    *out = t;
    return IKV_OK;
  }
  if (hwloc_topology_init(&t->topo)) {
    t->topo = NULL;
  } else {
    hwloc_topology_set_io_types_filter(t->topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT); /* the GPU's PCI locality */
    if (hwloc_topology_load(t->topo)) hwloc_topology_destroy(t->topo), t->topo = NULL;
  }
  if (!t->topo) {
    snprintf(t->where.detail, sizeof(t->where.detail), "not bound: hwloc could not read the topology");
  } else {
    t->where.numa_nodes = hwloc_get_nbobjs_by_type(t->topo, HWLOC_OBJ_NUMANODE);
    t->nodes = nearest_nodes(t, pci_bus_id);
  }
  *out = t;
  return IKV_OK;
}

void ikv_host_tier_close(ikv_host_tier *t) {
  if (!t) return;
  hwloc_bitmap_free(t->nodes);
  if (t->topo) hwloc_topology_destroy(t->topo);
  free(t);
}

void *ikv_host_tier_alloc(ikv_host_tier *t, size_t bytes) {
  if (!t || !bytes) return NULL;
  if (t->nodes) {
    void *p = hwloc_alloc_membind(t->topo, bytes, t->nodes, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_BYNODESET);
    if (p) return p;
    snprintf(t->where.detail, sizeof(t->where.detail), "not bound: the system refused the binding (%s)",
             strerror(errno));
    hwloc_bitmap_free(t->nodes);
    t->nodes = NULL, t->where.node = -1;
  }
  if (t->topo) return hwloc_alloc(t->topo, bytes);
  void *p = NULL;
  return posix_memalign(&p, 4096, bytes) ? NULL : p;
}

void ikv_host_tier_free(ikv_host_tier *t, void *memory, size_t bytes) {
  if (!t || !memory) return;
  if (t->topo) hwloc_free(t->topo, memory, bytes);
  else free(memory);
}

const ikv_host_placement *ikv_host_tier_placement(const ikv_host_tier *t) { return t ? &t->where : NULL; }
