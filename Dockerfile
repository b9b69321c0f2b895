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
# The base images are the official `rust` and `debian` ones; pick others
# with --build-arg RUST_VERSION=…, DEBIAN_RELEASE=…, or whole names with
# RUST_IMAGE=… and RUNTIME_IMAGE=… (a mirror, a hardened base). It needs
# no BuildKit-only syntax: the legacy builder, which compose v1 uses,
# builds it too.
# scripts/test builds it and starts docker-compose.yml with it
# (scripts/compose-test), on local stand-ins for the official images made
# by scripts/stand-in-images, since the CI machine cannot pull.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG RUST_IMAGE=rust:${RUST_VERSION}-${DEBIAN_RELEASE}
ARG RUNTIME_IMAGE=debian:${DEBIAN_RELEASE}-slim

# ---------------------------------------------------------------- build --
FROM ${RUST_IMAGE} AS build
# aws-lc-sys (rustls' crypto provider, used by the AMQP client) builds
# with cmake; the rest (vendored libgit2, libssh2, OpenSSL) needs only
# the compiler, make and perl the rust image already has.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The dependencies first, in a layer of their own that depends only on the
# manifests and Cargo.lock: a change to buildbot's sources rebuilds the two
# workspace crates, not the ~300 crates under them. Cargo loads the whole
# workspace even to build one package, so every member gets an empty
# stand-in source here.
COPY Cargo.toml Cargo.lock ./
COPY protocol/Cargo.toml protocol/
COPY worker/Cargo.toml worker/
COPY tests/Cargo.toml tests/
RUN for member in protocol worker tests; do \
        mkdir -p "$member/src" && touch "$member/src/lib.rs"; \
    done \
    && echo 'fn main() {}' >worker/src/main.rs \
    && cargo build --release --locked -p buildbot-worker \
    && rm -rf protocol/src worker/src tests/src
# The whole workspace. .dockerignore keeps target/ out. COPY keeps the
# files' own times, older than the stand-ins' build: touch them so Cargo
# rebuilds the workspace crates from the real sources.
COPY . .
RUN find protocol worker tests -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p buildbot-worker \
    && install -m 0755 target/release/buildbot /usr/local/bin/buildbot

# -------------------------------------------------------------- runtime --
FROM ${RUNTIME_IMAGE} AS runtime
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
