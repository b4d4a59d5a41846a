/*
 * The trace-driven hit-rate simulator: a GPU page cache of a given size
 * replays a trace (prefetch/trace.h) under one predictor, with a link model
 * that turns the bytes fetched on demand into stall time.
 *
 * Each step: the pages the step reads that are resident are hits, and so
 * are pages first read past every page their sequence had in earlier steps
 * (appended tokens, written on the GPU: inserted without a transfer; the
 * context of step 0 starts on the host); the rest are fetched on demand
 * (their bytes over the link are stall time) and
 * inserted, evicting by the predictor's rule but never a page the step
 * reads. Then the predictor prefetches for the next step, up to what the
 * link moves during a step's compute (link_gbs x step_us), again evicting
 * by its rule but never what it has just brought for that step.
 */
#ifndef IKV_PREFETCH_SIM_H
#define IKV_PREFETCH_SIM_H

#include "prefetch/predict.h"
#include "prefetch/trace.h"

typedef struct ikv_sim_params {
  double cache_fraction; /* (0, 1]: cache bytes over the bytes of every distinct page of the trace */
  double link_gbs;       /* > 0: host -> GPU, GB/s (1e9 bytes) */
  double step_us;        /* >= 0: compute time of a step, during which prefetches move */
  ikv_predictor predictor;
} ikv_sim_params;

typedef struct ikv_sim_result {
  uint64_t refs, hits;          /* page reads; those resident when their step began */
  uint64_t bytes_demand, bytes_prefetch;
  uint64_t cache_bytes, trace_bytes;
  double hit_rate;              /* hits / refs */
  double stall_us_per_step;     /* demand bytes / link, averaged over the steps */
} ikv_sim_result;

/* Replays trace under params. IKV_E_INVALID for parameters out of range or
 * an empty trace; IKV_E_NO_MEMORY; nothing else changes. */
ikv_status ikv_sim_run(const ikv_trace *trace, const ikv_sim_params *params, ikv_sim_result *out);

#endif /* IKV_PREFETCH_SIM_H */
