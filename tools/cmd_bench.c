/* ikv bench <what>: dispatches to one benchmark. */
#include <stdio.h>
#include <string.h>

#include "tools/ikv_cli.h"


static const char usage[] =
    "usage: ikv bench <benchmark> [--json]\n\n"
    "benchmarks:\n"
    "  pagetable   block-table manager: alloc/free, append, fork, exports (CPU)\n"
    "  plan        building a step's plan: router and scheduler tables (CPU)\n"
    "  decode      the fused paged decode kernel over a shape and precision sweep (GPU)\n"
    "  step        the runtime's step on the CUDA backend: write_kv, dense vs selective steps (GPU)\n"
    "  prefetch    host <-> GPU page moves, interference, the prefetcher on a trace, real vs simulated (GPU)\n";

int ikv_cmd_bench(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "pagetable")) return ikv_bench_pagetable(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "plan")) return ikv_bench_plan(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "decode")) return ikv_bench_decode(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "step")) return ikv_bench_step(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "prefetch")) return ikv_bench_prefetch(argc - 1, argv + 1);
  if (ikv_wants_help(argc, argv, usage)) return 0;
  fputs(usage, stderr);
  return 2;
}
