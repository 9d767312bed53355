/*
 * cli/cli.h - the subcommands of the sluice binary.
 *
 * Each subcommand takes argc/argv starting at its own name and returns the
 * process exit status: 0 success, 1 the command's work found a problem (an
 * invalid DAG, a failed run), 2 a usage error.
 */
#ifndef SLUICE_CLI_CLI_H
#define SLUICE_CLI_CLI_H

struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
};

/* sluice dag validate|graph|show */
int cmd_dag(int argc, char **argv);
/* sluice db migrate|version */
int cmd_db(int argc, char **argv);
/* sluice scheduler */
int cmd_scheduler(int argc, char **argv);
/* sluice worker */
int cmd_worker(int argc, char **argv);
/* sluice standalone */
int cmd_standalone(int argc, char **argv);
/* sluice pod install|exec: the kubernetes executor's pod-side helper */
int cmd_pod(int argc, char **argv);
struct kube_options;
struct sl_config;
/* The kubernetes.* keys of c as the executor's options (strings point into c). Returns 0,
 * or 2 after printing what is wrong. */
int cli_kube_options(struct kube_options *ko, const struct sl_config *c);
/* sluice dag test (argv[0] is "test") */
int cmd_dag_test(int argc, char **argv);

/* Reads "--name VALUE" or "--name=VALUE" at argv[*i] (advancing *i past a separate
 * value); returns the value, or NULL if argv[*i] is not that flag or lacks a value. */
const char *cli_flag_value(int argc, char **argv, int *i, const char *name);

#endif
