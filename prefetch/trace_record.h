/*
 * Recording real plans as a trace: each call appends one step holding the
 * pages a plan reads, so `ikv sim` can replay what a serving engine's router
 * actually selected (docs/simulator.md).
 */
#ifndef IKV_PREFETCH_TRACE_RECORD_H
#define IKV_PREFETCH_TRACE_RECORD_H

#include "prefetch/trace.h"
#include "runtime/intentkv.h"

/* Appends a step to trace (whose geometry must be the runtime's): every page
 * the plan in flight reads, once however many KV-head rows read it, as
 * (trace_seqs[b], logical page index, precision read, kind of the first span
 * covering the page, else IKV_SPAN_OTHER). seqs is the request's batch;
 * trace_seqs numbers its sequences in the trace (the caller's own ids, stable
 * across steps). Allocates scratch; on error the trace is unchanged. */
ikv_status ikv_trace_record_plan(ikv_trace *trace, const ikv_runtime *rt, const ikv_plan *plan,
                                 const ikv_seq_id *seqs, const uint32_t *trace_seqs);

#endif /* IKV_PREFETCH_TRACE_RECORD_H */
