/*
 * cli/cmd_dag.c - sluice dag validate|graph|show (placeholder until dsl/ lands).
 */
#include "cli/cli.h"

#include <stdio.h>

int cmd_dag(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "error: not built yet\n");
    return 2;
}
