/* The `ikv` command line: one function per subcommand (argv[0] is its name). */
#ifndef IKV_TOOLS_CLI_H
#define IKV_TOOLS_CLI_H

#include <stdio.h>
#include <stdlib.h>

#include "runtime/ikv_base.h"

int ikv_cmd_info(int argc, char **argv);
int ikv_cmd_demo(int argc, char **argv);
int ikv_cmd_bench(int argc, char **argv);
int ikv_cmd_accuracy(int argc, char **argv);
int ikv_cmd_trace(int argc, char **argv);
int ikv_cmd_sim(int argc, char **argv);
int ikv_bench_pagetable(int argc, char **argv);
int ikv_bench_plan(int argc, char **argv);
int ikv_bench_decode(int argc, char **argv);
int ikv_bench_step(int argc, char **argv);
int ikv_bench_prefetch(int argc, char **argv);

/* 1 if argv holds -h or --help (after printing usage to stdout). */
int ikv_wants_help(int argc, char **argv, const char *usage);
/* 1 if argv holds the flag. */
int ikv_has_flag(int argc, char **argv, const char *flag);
/* The argument after `name` in argv, or NULL. */
const char *ikv_flag_value(int argc, char **argv, const char *name);
/* *out = the number after `name`, or fallback when absent; 0 (and a message
 * on stderr) when what follows is not a number. */
int ikv_flag_u32(int argc, char **argv, const char *name, uint32_t fallback, uint32_t *out);
/* A relative path as the user meant it: under `bazel run` the tool runs in
 * its runfiles, so the path is taken from BUILD_WORKING_DIRECTORY (into buf). */
const char *ikv_user_path(const char *path, char *buf, size_t cap);

/* For the tools' own calls, which cannot fail on their fixed inputs: if one
 * does, say which and why, and exit. */
#define IKV_CLI_CHECK(call)                                                   \
  do {                                                                        \
    ikv_status st_ = (call);                                                  \
    if (st_ != IKV_OK) {                                                      \
      fprintf(stderr, "ikv: %s failed: %s\n", #call, ikv_status_str(st_));    \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

#endif
