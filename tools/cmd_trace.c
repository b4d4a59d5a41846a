/* ikv trace gen: writes a seeded synthetic agentic trace (prefetch/trace.h). */
#include <string.h>

#include "prefetch/trace.h"
#include "tools/ikv_cli.h"

static const char usage[] =
    "usage: ikv trace gen --out FILE [--seed N] [--sequences N] [--steps N] [--tokens N]\n\n"
    "Writes a synthetic agentic page-selection trace (format: docs/simulator.md)\n"
    "for a Llama-3.1-8B-shaped cache (32 layers, 8 KV heads, head_dim 128,\n"
    "16-token pages): per sequence a system prompt and memory summary read every\n"
    "step, eight retrieved documents (one the drifting topic, read around a\n"
    "moving focus; the others re-read in part at intervals), tool-output bursts\n"
    "read hard for a few steps, and a 1,024-token recent window. Defaults: seed 1,\n"
    "4 sequences, 200 steps, sequences growing to 131072 tokens.\n";

int ikv_cmd_trace(int argc, char **argv) {
  if (ikv_wants_help(argc, argv, usage)) return 0;
  if (argc < 2 || strcmp(argv[1], "gen")) {
    fputs(usage, stderr);
    return 2;
  }
  char buf[4096];
  const char *path = ikv_user_path(ikv_flag_value(argc, argv, "--out"), buf, sizeof(buf));
  ikv_trace_gen_params gp = {.geometry = {.layers = 32, .kv_heads = 8, .head_dim = 128, .page_size = 16}};
  uint32_t seed;
  if (!path || !ikv_flag_u32(argc, argv, "--seed", 1, &seed) ||
      !ikv_flag_u32(argc, argv, "--sequences", 4, &gp.sequences) || !ikv_flag_u32(argc, argv, "--steps", 200, &gp.steps) ||
      !ikv_flag_u32(argc, argv, "--tokens", 131072, &gp.max_tokens)) {
    if (!path) fputs("ikv trace gen: --out FILE is required\n", stderr);
    return 2;
  }
  gp.seed = seed;
  ikv_trace t;
  ikv_status st = ikv_trace_generate(&gp, &t);
  if (st != IKV_OK) {
    fprintf(stderr, "ikv trace gen: %s (sequences and steps >= 1, tokens >= 69632)\n", ikv_status_str(st));
    return 2;
  }
  FILE *f = fopen(path, "w");
  if (!f) {
    perror(path);
    ikv_trace_free(&t);
    return 1;
  }
  st = ikv_trace_write(&t, f);
  if (fclose(f) != 0 && st == IKV_OK) st = IKV_E_IO;
  if (st == IKV_OK)
    fprintf(stderr, "ikv trace gen: %u steps, %zu page reads, %u sequences -> %s\n", t.n_steps, t.n_refs, gp.sequences, path);
  else
    fprintf(stderr, "ikv trace gen: writing %s: %s\n", path, ikv_status_str(st));
  ikv_trace_free(&t);
  return st == IKV_OK ? 0 : 1;
}
