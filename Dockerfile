# The worker's own image: the `buildbot` binary on a small Debian runtime,
# running as a non-root user. Build and run:
#
#   docker build -t buildbot .
#   docker run -d --name buildbot \
#       -v /var/run/docker.sock:/var/run/docker.sock \
#       --group-add "$(stat -c %g /var/run/docker.sock)" \
#       -e BUILDBOT_AMQP_URL=amqp://user:password@rabbitmq-host:5672/%2f \
#       buildbot
#
# Docker socket access: the worker builds, pushes and runs builder
# containers through the host's Docker Engine, so the user `buildbot`
# (uid 10001) must be able to open the mounted socket. Where the socket
# belongs to a `docker` group (Debian, Ubuntu, most Linux hosts: mode
# 0660, root:docker), add that group's id with `--group-add` (compose:
# `group_add`, see docker-compose.yml). Where it is root:root (Docker
# Desktop, some rootful setups), no group helps: run the container with
# `--user root` instead. Either way, access to the socket is root on the
# host; give it only to workers you trust.
#
# Nothing else is mounted: checkouts live in the container's own temp dir
# and reach the daemon as a build context through the API.
#
# Written for an ordinary machine that can pull `rust` and `debian` from
# Docker Hub. The machine this project is developed and tested on cannot
# pull images, so building this file is not part of the tests;
# tests/tests/e2e/packaging.rs checks its structure.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------- build --
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# aws-lc-sys (rustls' crypto provider, used by the AMQP client) builds
# with cmake; the rest (vendored libgit2, libssh2, OpenSSL) needs only
# the compiler, make and perl the rust image already has.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace: Cargo needs every member's manifest and sources to
# load it, even to build one package. .dockerignore keeps target/ out.
COPY . .
RUN cargo build --release --locked -p buildbot-worker \
    && install -m 0755 target/release/buildbot /usr/local/bin/buildbot

# -------------------------------------------------------------- runtime --
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: HTTPS clones (git2's vendored OpenSSL is pointed at
# the system store at start-up). Nothing else: git2 and bollard are
# linked in, no git, ssh or docker CLI is needed.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 buildbot \
    && useradd --system --uid 10001 --gid buildbot \
        --home-dir /var/lib/buildbot --create-home --shell /usr/sbin/nologin buildbot
COPY --from=build /usr/local/bin/buildbot /usr/local/bin/buildbot
USER buildbot
WORKDIR /var/lib/buildbot
ENTRYPOINT ["buildbot"]
CMD ["worker"]
