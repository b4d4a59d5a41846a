/* ikv: the intentkv command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/ikv_base.h"
#include "tools/ikv_cli.h"

typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} command;

static const command commands[] = {
    {"info", ikv_cmd_info, "library version, build configuration, host and GPU topology"},
    {"demo", ikv_cmd_demo, "the runtime driving agent sequences step by step (CUDA backend with a GPU, else CPU)"},
    {"bench", ikv_cmd_bench, "benchmarks (bench pagetable | plan | decode | step)"},
    {"accuracy", ikv_cmd_accuracy, "accuracy of each page precision against FP64 attention"},
    {"trace", ikv_cmd_trace, "synthetic agentic page-selection traces (trace gen)"},
    {"sim", ikv_cmd_sim, "GPU page-cache hit rates of a trace per predictor and cache size"},
};
#define N_COMMANDS (sizeof(commands) / sizeof(*commands))

static void usage(FILE *out) {
  fprintf(out, "usage: ikv <command> [options]    (ikv <command> --help for its options)\n\n");
  for (size_t i = 0; i < N_COMMANDS; i++)
    fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
  fprintf(out, "\nintentkv %s\n", ikv_version());
}

int ikv_has_flag(int argc, char **argv, const char *flag) {
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], flag)) return 1;
  return 0;
}

const char *ikv_flag_value(int argc, char **argv, const char *name) {
  for (int i = 1; i + 1 < argc; i++)
    if (!strcmp(argv[i], name)) return argv[i + 1];
  return NULL;
}

int ikv_flag_u32(int argc, char **argv, const char *name, uint32_t fallback, uint32_t *out) {
  const char *v = ikv_flag_value(argc, argv, name);
  *out = fallback;
  if (!v) return 1;
  char *end;
  unsigned long x = strtoul(v, &end, 10);
  if (end == v || *end || x > UINT32_MAX) {
    fprintf(stderr, "ikv: %s needs a number, not '%s'\n", name, v);
    return 0;
  }
  *out = (uint32_t)x;
  return 1;
}

const char *ikv_user_path(const char *path, char *buf, size_t cap) {
  const char *cwd = getenv("BUILD_WORKING_DIRECTORY"); /* set by `bazel run` */
  if (!path || path[0] == '/' || !cwd || (size_t)snprintf(buf, cap, "%s/%s", cwd, path) >= cap) return path;
  return buf;
}

int ikv_wants_help(int argc, char **argv, const char *text) {
  if (!ikv_has_flag(argc, argv, "-h") && !ikv_has_flag(argc, argv, "--help")) return 0;
  fputs(text, stdout);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
    usage(stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("intentkv %s\n", ikv_version());
    return 0;
  }
  for (size_t i = 0; i < N_COMMANDS; i++)
    if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "ikv: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
