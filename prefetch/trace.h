/*
 * Page-selection traces: per decode step, the pages each sequence's attention
 * read, with their stored precision and the kind of span they belong to. The
 * simulator replays them; `ikv trace gen` makes synthetic agentic ones.
 *
 * Text format (docs/simulator.md), one record per line:
 *   ikv-trace 1 layers=L kv_heads=H head_dim=D page_size=P
 *   step
 *   <seq> <page> <precision> <kind>      e.g. "3 517 int8 document"
 *   hint <seq> <first page> <count>      the scheduler says these come next
 *   near <seq> <first page> <count>      scored just under the selection cut
 *   ...
 *   step
 *   ...
 * `#` starts a comment line. Precision and kind use ikv_precision_name and
 * ikv_span_kind_name. A page is (seq, page); its bytes are those of its
 * first record's precision in every layer.
 *
 * Conventions as in runtime/ikv_base.h: a trace is owned by the caller,
 * functions return ikv_status and change nothing on error.
 */
#ifndef IKV_PREFETCH_TRACE_H
#define IKV_PREFETCH_TRACE_H

#include <stddef.h>
#include <stdio.h>

#include "runtime/ikv_base.h"

typedef struct ikv_trace_ref {
  uint32_t seq, page;
  uint8_t precision; /* storable ikv_precision */
  uint8_t kind;      /* ikv_span_kind */
} ikv_trace_ref;

/* What a step said about pages it did not read: */
typedef enum ikv_hint_source {
  IKV_HINT_SCHEDULER = 0, /* "hint": the scheduler will read them soon (a document it
                             is about to re-read) */
  IKV_HINT_MARGIN,        /* "near": their query-aware scores fell just under the cut */
  IKV_HINT_SOURCE_COUNT
} ikv_hint_source;

/* Pages [first, first + count) of a sequence, said during step `step`. */
typedef struct ikv_trace_hint {
  uint32_t step, seq, first, count;
  uint32_t source; /* ikv_hint_source */
} ikv_trace_hint;

typedef struct ikv_trace {
  ikv_geometry geometry;
  uint32_t n_steps;
  uint32_t *step_start; /* [n_steps + 1]: CSR over refs */
  ikv_trace_ref *refs;
  size_t n_refs;
  ikv_trace_hint *hints; /* in step order */
  size_t n_hints;
  size_t cap_refs, cap_steps, cap_hints; /* private */
} ikv_trace;

/* An empty trace for a geometry (no allocation until records come). */
ikv_status ikv_trace_init(ikv_trace *trace, const ikv_geometry *geometry);
void ikv_trace_free(ikv_trace *trace);
/* Starts a step; refs pushed next belong to it. */
ikv_status ikv_trace_step(ikv_trace *trace);
ikv_status ikv_trace_push(ikv_trace *trace, ikv_trace_ref ref);
/* A hint in the current step (count >= 1). */
ikv_status ikv_trace_add_hint(ikv_trace *trace, ikv_hint_source source, uint32_t seq, uint32_t first,
                              uint32_t count);

/* Writes the text form. IKV_E_IO on a write error. */
ikv_status ikv_trace_write(const ikv_trace *trace, FILE *out);
/* Reads the text form into *trace (initialized here; free it after). On a
 * malformed line: IKV_E_INVALID, *trace untouched, and if err is given a
 * message naming the line (err_cap bytes). */
ikv_status ikv_trace_read(FILE *in, ikv_trace *trace, char *err, size_t err_cap);

/* Synthetic agentic traces (seeded, deterministic). */
typedef struct ikv_trace_gen_params {
  uint64_t seed;
  uint32_t sequences;    /* agents */
  uint32_t steps;        /* decode steps */
  uint32_t max_tokens;   /* context each sequence grows to by the last step */
  ikv_geometry geometry; /* page_size matters for the token counts */
} ikv_trace_gen_params;

/* Each sequence: a system prompt and a memory summary read every step; eight
 * retrieved documents, one of them the current topic (which drifts), read
 * in overlapping chunks, and each re-read in part at intervals; tool-output
 * bursts appended every few steps and read hard for a few steps after; a
 * recent window of 1,024 tokens that grows with the sequence. The scheduler
 * announces each re-read one step ahead (a hint); the pages just outside the
 * topic window are the near misses of the selection. */
ikv_status ikv_trace_generate(const ikv_trace_gen_params *params, ikv_trace *trace);

#endif /* IKV_PREFETCH_TRACE_H */
