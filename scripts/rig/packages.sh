# shellcheck shell=bash
# rig-up, step 1: the Debian packages of every service, and the state dir.
# Sourced by scripts/rig-up after scripts/lib/rig.sh.

RIG_PACKAGES=(
    docker.io rabbitmq-server docker-registry openssh-server openssh-client
    busybox-static apache2-utils git curl ca-certificates
    pkg-config libssl-dev cmake
    # tests/tests/e2e/packaging.rs reads docker-compose.yml through
    # `docker-compose config`; scripts/compose-test starts it.
    docker-compose
    # The dashboard's browser tests: headless Chromium driven through
    # ChromeDriver's WebDriver API (tests/tests/e2e/dashboard.rs).
    chromium chromium-driver
)
ensure_packages packages "${RIG_PACKAGES[@]}"

[[ -x "$GIT_SHELL" ]] || die "$GIT_SHELL is missing (Debian package git)"

mkdir -p "$STATE" "$LOGS" "$KEYS"
chmod 700 "$STATE" "$KEYS"
