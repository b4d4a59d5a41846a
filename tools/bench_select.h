/* ikv bench step --part select (tools/bench_select.c). */
#ifndef IKV_TOOLS_BENCH_SELECT_H
#define IKV_TOOLS_BENCH_SELECT_H

/* Times the GPU page scoring and per-KV-head top-k at 32K and 128K context,
 * batch 1 and 32; prints one line (or JSON object, comma-led unless *first)
 * per configuration. */
void bench_select(double copy_bw, int json, int *first);

#endif
