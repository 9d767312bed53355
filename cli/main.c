/*
 * cli/main.c - the sluice binary: dispatch to subcommands.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

static const struct cli_command commands[] = {
    {"dag", cmd_dag, "validate, draw and show DAG files"},
    {"db", cmd_db, "migrate the database schema, show its version"},
    {"config", cmd_config, "check a configuration (sluice.yaml and SLUICE_* variables)"},
    {"scheduler", cmd_scheduler, "run the scheduler (leader election, DAG sync, cron, runs)"},
    {"worker", cmd_worker, "run a worker: take steps off a queue and run them"},
    {"standalone", cmd_standalone, "run everything on this machine, servers included"},
    /* the REST API and its clients */
    {"api", cmd_api, "run the REST API server"},
    {"dags", cmd_client_dags, "list DAGs (API); `dags sync` syncs the DAG repository now"},
    {"pause", cmd_client_pause, "pause a DAG's schedule (API)"},
    {"unpause", cmd_client_unpause, "unpause a DAG's schedule (API)"},
    {"trigger", cmd_client_trigger, "start a run of a DAG, optionally --wait for it (API)"},
    {"runs", cmd_client_runs, "list runs (API)"},
    {"run", cmd_client_run, "show a run and its steps (API)"},
    {"logs", cmd_client_logs, "print or follow (-f) a step's log (API)"},
    {"cancel", cmd_client_cancel, "cancel a run (API)"},
    {"retry", cmd_client_retry, "retry a run's failed steps, or --from a step (API)"},
    {"backfill", cmd_client_backfill, "run a DAG over past dates (API)"},
    {"import-errors", cmd_client_import_errors, "DAG files that do not parse (API)"},
    {"token", cmd_client_token, "create, list and revoke API tokens (API)"},
    {"artifact", cmd_artifact, "get and put step artifacts (used inside step pods)"},
    {"pod", cmd_pod, "inside a step's pod: install the helper, run the step (kubernetes)"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: sluice <command> [<args>]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-13s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "error: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
