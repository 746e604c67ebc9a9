/* commands.h - the subcommands of the deltaslice binary.
 *
 * Each takes (argc, argv) with argv[0] the subcommand name, parses its own
 * options (every one accepts -h/--help and --version) and returns the exit
 * status: 0 ok, 1 runtime failure, 2 bad usage or bad configuration. */
#ifndef DS_COMMANDS_H
#define DS_COMMANDS_H

int ds_cmd_master(int argc, char **argv);
int ds_cmd_worker(int argc, char **argv);
int ds_cmd_trainer(int argc, char **argv);
int ds_cmd_config(int argc, char **argv);
int ds_cmd_run(int argc, char **argv);
int ds_cmd_zoo(int argc, char **argv);
int ds_cmd_infer(int argc, char **argv);
int ds_cmd_trace(int argc, char **argv);
int ds_cmd_dag(int argc, char **argv);

/* Prints "deltaslice <version>" to stdout. */
void ds_cli_version(void);
/* Prints "deltaslice CMD: <message>" and a hint to use --help; returns 2. */
int ds_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The options every command shares, for the default branch of its getopt
 * switch (optstring starting with ':', --version mapped to 'V'): 'h' prints
 * help, 'V' the version, a missing value or an unknown option is a usage
 * error. Returns the exit status. */
int ds_cli_common_option(int opt, const char *cmd, const char *help, char **argv);

#endif
