#!/usr/bin/env bash
# s3rver: an S3-compatible server on loopback for the artifact tests and the S3 benchmark
# (tests/integration/check_s3.c, bench/bench_s3.c). From the npm registry, installed
# globally; Debian's nodejs and npm first if the machine has no node yet.
# Idempotent and quiet when s3rver is already there.
set -euo pipefail

if command -v s3rver >/dev/null 2>&1; then
    exit 0
fi
SUDO=${SUDO:-}
if [ -z "$SUDO" ] && [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "deps: installing nodejs npm"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
echo "deps: installing s3rver (npm)"
$SUDO npm install --global --no-fund --no-audit --loglevel=error s3rver@3 >/dev/null
command -v s3rver >/dev/null
