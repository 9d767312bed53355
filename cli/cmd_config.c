/*
 * cli/cmd_config.c - sluice config check: is this configuration one sluice accepts?
 *
 * Loads sluice.yaml and the SLUICE_* variables exactly as every role does, then checks
 * what the roles would refuse at start: the Git source's options, and the kubernetes
 * executor's when worker.executor is kubernetes. Connects to nothing. For operators (and
 * the Helm chart's tests) before a rollout, rather than after pods crash.
 */
#include "cli/cli.h"
#include "common/config.h"
#include "worker/kube.h"

#include <stdio.h>
#include <string.h>

static void config_usage(FILE *f)
{
    fprintf(f, "usage: sluice config check [--config FILE]\n"
               "  loads the configuration (the file, then SLUICE_* variables) and reports\n"
               "  every problem; exit 0 if sluice accepts it, 2 if not\n");
}

int cmd_config(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "check") != 0) {
        bool help = argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"));
        config_usage(help ? stdout : stderr);
        return help ? 0 : 2;
    }
    const char *path = NULL;
    for (int i = 2; i < argc; i++) {
        const char *v;
        if ((v = cli_flag_value(argc, argv, &i, "--config"))) {
            path = v;
        } else {
            fprintf(stderr, "error: unknown or incomplete argument '%s'\n", argv[i]);
            config_usage(stderr);
            return 2;
        }
    }
    struct sl_config c;
    struct strbuf err = STRBUF_INIT;
    int rc = sl_config_load(&c, path, &err) < 0 ? 2 : 0;
    if (rc)
        fprintf(stderr, "error: configuration:\n%s", err.buf);
    strbuf_release(&err);
    struct cli_git git;
    if (rc == 0 && (rc = cli_git_options(&git, &c)) == 0)
        cli_git_options_release(&git);
    struct kube_options ko;
    if (rc == 0 && c.worker.executor && !strcmp(c.worker.executor, "kubernetes"))
        rc = cli_kube_options(&ko, &c);
    if (rc == 0)
        printf("%s: ok\n", c.path ? c.path : "(no file: defaults and environment)");
    sl_config_release(&c);
    return rc;
}
