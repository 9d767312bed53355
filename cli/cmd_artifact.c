/*
 * cli/cmd_artifact.c - `sluice artifact get|put`: the artifact repository by hand, and
 * the staging a step pod's init container (get) and sidecar (put) run.
 *
 *   sluice artifact get [--config F] SOURCE DEST
 *   sluice artifact get [--config F] --git URL --commit SHA DEST
 *   sluice artifact get [--config F] --spec FILE --workdir DIR
 *   sluice artifact put [--config F] KEY PATH
 *   sluice artifact put [--config F] --spec FILE --workdir DIR [--log FILE]
 *
 * --spec-env NAME instead of --spec FILE reads the spec from the variable NAME: what a
 * step pod's stage-in init container runs (docs/kubernetes.md, "Artifacts").
 *
 * SOURCE is a key (<dag>/<run>/<step>/<attempt>/<name>, below artifacts.prefix), a JSON
 * list of keys, s3://bucket/key, file:///path or an http(s):// URL. --spec reads a step's
 * dispatch spec (the JSON the scheduler renders; "-" for stdin) and stages all of its
 * inputs, or stores all of its declared outputs (and, with --log and
 * artifacts.archive_logs, the log). The repository comes from sluice.yaml and
 * SLUICE_ARTIFACTS_* variables, credentials from AWS_* variables or
 * artifacts.credentials_dir (docs/artifacts.md).
 *
 * Exit status: 0 done; 1 the transfer or the repository failed (worth a retry); 2 a usage
 * or configuration error; 3 not found (no such object, commit or declared output);
 * 4 refused (an unsafe archive, a bad key or source).
 */
#include "cli/cli.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "worker/artifacts.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: sluice artifact get [--config F] SOURCE DEST\n"
                 "       sluice artifact get [--config F] --git URL --commit SHA DEST\n"
                 "       sluice artifact get [--config F] --spec FILE --workdir DIR\n"
                 "       sluice artifact put [--config F] KEY PATH\n"
                 "       sluice artifact put [--config F] --spec FILE --workdir DIR [--log FILE]\n"
                 "       (--spec-env NAME: the spec from the variable NAME instead of a file)\n"
                 "\n"
                 "SOURCE: a key, s3://bucket/key, file:///path or http(s)://url.\n"
                 "exit status: 0 done, 1 transfer failed, 2 usage or configuration, 3 not found,\n"
                 "4 refused (unsafe archive, bad key)\n");
}

static int exit_code(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case SL_ENOENT:
        return 3;
    case SL_EINVAL:
        return 4;
    default:
        return 1;
    }
}

static cJSON *read_spec(const char *path, const char *env_name)
{
    struct strbuf sb = STRBUF_INIT;
    if (env_name) {
        const char *v = getenv(env_name);
        if (!v) {
            fprintf(stderr, "error: the variable '%s' that should hold the spec is not set\n",
                    env_name);
            return NULL;
        }
        strbuf_addstr(&sb, v);
        path = env_name;
    } else if (!strcmp(path, "-")) {
        char buf[8192];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
            strbuf_add(&sb, buf, n);
    } else if (strbuf_read_file(&sb, path, 16 << 20) < 0) {
        fprintf(stderr, "error: cannot read the spec '%s'\n", path);
        strbuf_release(&sb);
        return NULL;
    }
    cJSON *spec = cJSON_Parse(sb.buf);
    strbuf_release(&sb);
    if (!cJSON_IsObject(spec)) {
        fprintf(stderr, "error: the spec '%s' is not a JSON object\n", path);
        cJSON_Delete(spec);
        return NULL;
    }
    return spec;
}

int cmd_artifact(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *verb = argv[1];
    if (strcmp(verb, "get") != 0 && strcmp(verb, "put") != 0) {
        fprintf(stderr, "error: unknown artifact command '%s'\n\n", verb);
        usage(stderr);
        return 2;
    }
    const char *config = NULL, *git = NULL, *commit = NULL, *spec_path = NULL, *workdir = NULL,
               *log_path = NULL, *spec_env = NULL;
    const char *pos[2];
    int npos = 0;
    for (int i = 2; i < argc; i++) {
        const char *v;
        if ((v = cli_flag_value(argc, argv, &i, "--config")))
            config = v;
        else if ((v = cli_flag_value(argc, argv, &i, "--git")))
            git = v;
        else if ((v = cli_flag_value(argc, argv, &i, "--commit")))
            commit = v;
        else if ((v = cli_flag_value(argc, argv, &i, "--spec")))
            spec_path = v;
        else if ((v = cli_flag_value(argc, argv, &i, "--spec-env")))
            spec_env = v;
        else if ((v = cli_flag_value(argc, argv, &i, "--workdir")))
            workdir = v;
        else if ((v = cli_flag_value(argc, argv, &i, "--log")))
            log_path = v;
        else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "error: unknown or incomplete option '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (npos < 2) {
            pos[npos++] = argv[i];
        } else {
            fprintf(stderr, "error: too many arguments\n\n");
            usage(stderr);
            return 2;
        }
    }
    bool is_get = !strcmp(verb, "get");
    if (spec_env && spec_path) {
        fprintf(stderr, "error: --spec and --spec-env are exclusive\n\n");
        usage(stderr);
        return 2;
    }
    if (spec_env)
        spec_path = spec_env; /* read from the variable below */
    bool ok_usage = spec_path ? (workdir && npos == 0 && !git)
                    : git     ? (is_get && commit && npos == 1)
                              : (npos == 2 && !workdir && !commit && !log_path);
    if (!ok_usage || (log_path && is_get)) {
        usage(stderr);
        return 2;
    }

    struct strbuf err = STRBUF_INIT;
    int rc;
    struct sl_config c;
    rc = sl_config_load(&c, config, &err);
    if (rc < 0) {
        fprintf(stderr, "error: configuration:\n%s", err.buf);
        sl_config_release(&c);
        strbuf_release(&err);
        return 2;
    }
    enum sl_log_level level;
    if (sl_log_parse_level(&level, c.log_level) == 0)
        sl_log_set_level(level);
    struct artifacts_repo *repo = NULL;
    rc = artifacts_open(&repo, &c, &err);
    sl_config_release(&c);
    if (rc < 0) {
        fprintf(stderr, "error: configuration:\n%s", err.buf);
        strbuf_release(&err);
        return 2;
    }

    if (git) {
        rc = artifacts_get_git(repo, git, commit, pos[0], &err);
    } else if (spec_path) {
        cJSON *spec = read_spec(spec_path, spec_env);
        if (!spec) {
            artifacts_close(repo);
            strbuf_release(&err);
            return 2;
        }
        enum artifacts_blame blame = ARTIFACTS_BLAME_ERROR;
        /* progress lines go to stderr, as the pod's container log */
        rc = is_get ? artifacts_stage_in(repo, spec, workdir, 2, NULL, &blame, &err)
                    : artifacts_stage_out(repo, spec, workdir, 2, NULL, &blame, &err);
        if (rc == 0 && !is_get && log_path && artifacts_archive_logs(repo))
            rc = artifacts_put_log(repo, spec, log_path, &err);
        cJSON_Delete(spec);
    } else if (is_get) {
        rc = artifacts_get(repo, pos[0], pos[1], NULL, &err);
    } else {
        rc = artifacts_put(repo, pos[0], pos[1], NULL, &err);
    }
    if (rc < 0)
        fprintf(stderr, "error: %s\n", err.buf);
    artifacts_close(repo);
    strbuf_release(&err);
    return exit_code(rc);
}
