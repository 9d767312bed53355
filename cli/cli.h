/*
 * cli/cli.h - the subcommands of the sluice binary.
 *
 * Each subcommand takes argc/argv starting at its own name and returns the
 * process exit status: 0 success, 1 the command's work found a problem (an
 * invalid DAG, a failed run), 2 a usage error.
 */
#ifndef SLUICE_CLI_CLI_H
#define SLUICE_CLI_CLI_H

#include "common/config.h"
#include "scheduler/gitsync.h"

struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
};

/* sluice dag validate|graph|show */
int cmd_dag(int argc, char **argv);
/* sluice db migrate|version */
int cmd_db(int argc, char **argv);
/* sluice config check */
int cmd_config(int argc, char **argv);
/* sluice scheduler */
int cmd_scheduler(int argc, char **argv);
/* sluice worker */
int cmd_worker(int argc, char **argv);
/* sluice standalone */
int cmd_standalone(int argc, char **argv);
/* sluice artifact get|put (cli/cmd_artifact.c) */
int cmd_artifact(int argc, char **argv);
/* sluice pod install|exec: the kubernetes executor's pod-side helper */
int cmd_pod(int argc, char **argv);
struct kube_options;
struct sl_config;
/* The kubernetes.* keys of c as the executor's options (strings point into c). Returns 0,
 * or 2 after printing what is wrong. */
int cli_kube_options(struct kube_options *ko, const struct sl_config *c);
/* sluice dag test (argv[0] is "test") */
int cmd_dag_test(int argc, char **argv);

/* --- the REST API (cli/cmd_api.c) and its clients (cli/cmd_client*.c) --- */

/* sluice api */
int cmd_api(int argc, char **argv);

struct sl_config;
struct cli_api;
struct artifacts_repo;
/* Starts the API server in a thread of this process (sluice standalone): migrates, makes
 * and prints the bootstrap admin token on a database without tokens, binds api.listen.
 * Returns 0 and sets *out, or -1 after printing why. */
int cli_api_start(struct cli_api **out, const struct sl_config *c, const char *db_url,
                  const char *redis_url, struct artifacts_repo *artifacts);
/* The port it listens on. */
int cli_api_port(const struct cli_api *a);
/* Stops it gracefully and frees it; NULL is fine. */
void cli_api_stop(struct cli_api *a);

/* The API's clients (cli/cmd_client.c): SLUICE_API_URL, SLUICE_TOKEN. */
int cmd_client_dags(int argc, char **argv);
int cmd_client_pause(int argc, char **argv);
int cmd_client_unpause(int argc, char **argv);
int cmd_client_trigger(int argc, char **argv);
int cmd_client_runs(int argc, char **argv);
int cmd_client_run(int argc, char **argv);
int cmd_client_logs(int argc, char **argv);
int cmd_client_cancel(int argc, char **argv);
int cmd_client_retry(int argc, char **argv);
int cmd_client_backfill(int argc, char **argv);
int cmd_client_import_errors(int argc, char **argv);
int cmd_client_token(int argc, char **argv);

/* Reads "--name VALUE" or "--name=VALUE" at argv[*i] (advancing *i past a separate
 * value); returns the value, or NULL if argv[*i] is not that flag or lacks a value. */
const char *cli_flag_value(int argc, char **argv, int *i, const char *name);

/* The Git source from the configuration's git.* keys: o->url stays NULL when git.url is
 * unset. The directory is <data_dir>/git made absolute (step working directories are
 * inside it); the password comes from git.password, else git.password_file. Strings
 * that had to be made are put in *owned (free each with cli_git_options_release()).
 * Returns 0, or 2 after printing what is wrong. */
struct cli_git {
    struct gitsync_options o;
    char *dir, *password;
};
int cli_git_options(struct cli_git *g, const struct sl_config *c);
void cli_git_options_release(struct cli_git *g);

#endif
