#!/usr/bin/env bash
# The README's demo. Until the engine lands, it shows the DAG language at work on
# the example DAGs: validation, a precise error on a broken copy, and the graph.
set -euo pipefail
cd "$(dirname "$0")/.."
sluice=bin/sluice

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
echo "== sluice dag graph dags/iris.yaml --format mermaid"
$sluice dag graph dags/iris.yaml --format mermaid

echo
echo "== sluice dag show dags/etl-fanout.yaml (first step of the normalized model)"
$sluice dag show dags/etl-fanout.yaml | sed -n '/"steps"/,/"retries"/p'
