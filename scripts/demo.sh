#!/usr/bin/env bash
# The README's demo: the iris pipeline (preprocess -> train -> evaluate -> deploy if
# accuracy >= 0.9) runs for real through `sluice dag test`, on a private PostgreSQL and
# Redis that sluice starts itself under .sluice/. Then the same DAG with a shallow,
# one-tree forest, whose accuracy is too low: deploy is skipped. Before that, the DAG
# language's precise errors on a broken copy.
set -euo pipefail
cd "$(dirname "$0")/.."
sluice=bin/sluice

# As root, the embedded PostgreSQL runs as nobody, who must be able to reach the data
# directory; a checkout under /root is not reachable, so keep the data elsewhere then.
if [ "$(id -u)" -eq 0 ] && [ -z "${SLUICE_DATA_DIR:-}" ] &&
   ! runuser -u nobody -- test -x "$PWD" 2>/dev/null; then
    export SLUICE_DATA_DIR=/var/tmp/sluice-demo
    echo "(data directory: $SLUICE_DATA_DIR, since nobody cannot reach $PWD)"
fi

echo "== sluice dag validate dags/"
$sluice dag validate dags/

echo
echo "== a broken copy of iris.yaml: every error at once, with its position"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed -e 's/depends_on: \[train\]/depends_on: [trian]/' \
    -e 's/outputs.params.accuracy >= 0.9/outputs.params.acuracy >= 0.9/' \
    -e 's/timeout: 10m/timeout: 10/' dags/iris.yaml > "$tmp/iris.yaml"
if $sluice dag validate "$tmp/iris.yaml"; then
    echo "demo: the broken DAG was accepted" >&2
    exit 1
fi

echo
echo "== sluice dag test dags/iris.yaml"
$sluice dag test dags/iris.yaml | tee "$tmp/run1.txt"
grep -q '^deploy  *succeeded' "$tmp/run1.txt" || { echo "demo: deploy did not run" >&2; exit 1; }

echo
echo "== sluice dag test dags/iris.yaml -p n_estimators=1 -p max_depth=1   (too weak to deploy)"
$sluice dag test dags/iris.yaml -p n_estimators=1 -p max_depth=1 | tee "$tmp/run2.txt"
grep -q '^deploy  *skipped' "$tmp/run2.txt" || { echo "demo: deploy was not skipped" >&2; exit 1; }

echo
echo "The deployed model and its manifest are in /tmp/sluice-serving/iris/; the step logs"
echo "and run directories under ${SLUICE_DATA_DIR:-.sluice}/. \`sluice standalone\` keeps the same setup running."
