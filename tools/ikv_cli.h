/* The `ikv` command line: one function per subcommand (argv[0] is its name). */
#ifndef IKV_TOOLS_CLI_H
#define IKV_TOOLS_CLI_H

int ikv_cmd_info(int argc, char **argv);
int ikv_cmd_demo(int argc, char **argv);
int ikv_cmd_bench(int argc, char **argv);
int ikv_bench_pagetable(int argc, char **argv);

/* 1 if argv holds -h or --help (after printing usage to stdout). */
int ikv_wants_help(int argc, char **argv, const char *usage);
/* 1 if argv holds the flag. */
int ikv_has_flag(int argc, char **argv, const char *flag);

#endif
