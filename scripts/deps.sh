#!/usr/bin/env bash
# Installs what sluice's build, tests, benchmarks and demo need on Debian 12.
# Idempotent and quiet when everything is already there. Run as root (or with sudo).
set -euo pipefail

packages=(
    build-essential pkg-config git ca-certificates tzdata
    libuv1-dev libpq-dev libhiredis-dev libcurl4-openssl-dev libcjson-dev libyaml-dev
    libgit2-dev check libssl-dev libsubunit-dev libh2o-dev zlib1g-dev
    postgresql postgresql-contrib redis-server redis-tools openssh-server
    python3 python3-sklearn python3-numpy python3-croniter python3-tz python3-dateutil
    python3-celery python3-redis python3-yaml
    clang clang-format clang-tidy cppcheck bear libclang-rt-14-dev
    hyperfine
    wrk
    openssl
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

SUDO=
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
fi
export SUDO
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Tools that do not come as Debian packages (from the npm registry), one script each,
# each idempotent and quiet when its tool is already there.
for extra in "$(dirname "$0")"/deps.d/*.sh; do
    [ -e "$extra" ] || continue
    bash "$extra"
done
# The Debian package starts a system-wide Redis; sluice's tests and demo start their own.
