# sluice: one image for every role (scheduler, worker, api, db migrate, and the artifact
# helpers of step pods). Build with `make image`.
#
# Two stages. The build stage compiles bin/sluice from this tree on Debian 12 with the
# same -dev packages as scripts/deps.sh. The runtime stage is debian:bookworm-slim plus
# CA certificates and the shared libraries bin/sluice links against (Debian 12 packages),
# the binary itself, and an unprivileged user: no compiler, no package lists, no source.
# tests/integration/check_chart.c checks these rules against this file.

FROM debian:bookworm AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential pkg-config check ca-certificates \
        libuv1-dev libpq-dev libhiredis-dev libcurl4-openssl-dev libcjson-dev libyaml-dev \
        libgit2-dev libssl-dev libh2o-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make -j"$(nproc)" bin/sluice \
    && strip bin/sluice \
    && ./bin/sluice --help >/dev/null

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates \
        libuv1 libpq5 libhiredis0.14 libcurl4 libcjson1 libyaml-0-2 libgit2-1.5 libssl3 \
        libh2o0.13 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 sluice \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin sluice
COPY --from=build /src/bin/sluice /usr/local/bin/sluice
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["--help"]
