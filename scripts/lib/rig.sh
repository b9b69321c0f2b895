# shellcheck shell=bash
# The library of the rig scripts (scripts/rig-up, scripts/rig/*.sh,
# scripts/test, scripts/demo, scripts/bench): where the rig lives and
# listens, and the helpers every service file uses. Only definitions: sourcing
# it starts nothing.
#
# Its variables are used by the files that source it:
# shellcheck disable=SC2034

# Where everything the rig makes lives: keys, configs, logs, and `rig.env`,
# which the tests and scripts/demo read.
STATE="${BUILDBOT_RIG_DIR:-/var/lib/buildbot-rig}"
LOGS="$STATE/logs"
KEYS="$STATE/keys"
SSHD_DIR="$STATE/sshd"
RIG_ENV="$STATE/rig.env"
AUTH_REGISTRY_PASSWORD_FILE="$KEYS/auth-registry-password"

GIT_HOME=/srv/buildbot-git
GIT_REPOS="$GIT_HOME/repos"
GIT_USER=git
GIT_SHELL=/usr/bin/git-shell
SSH_PORT=2222
AMQP_PORT=5672
REGISTRY_PORT=5000
AUTH_REGISTRY_PORT=5001
AUTH_REGISTRY_USER=buildbot
BASE_IMAGE=buildbot-base:busybox
DOCKER_SOCK=/var/run/docker.sock

# Erlang's port mapper (started by RabbitMQ and by its CLI tools) listens on
# loopback only.
export ERL_EPMD_ADDRESS=127.0.0.1

# The name errors are reported under: the script that was run.
RIG_PROG=$(basename "$0")

die() {
    echo "$RIG_PROG: error: $*" >&2
    exit 1
}

say() {
    printf '%-14s %s\n' "$1:" "$2"
}

need_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root ($*)"
}

# ensure_packages LABEL PKG...: installs the Debian packages that are
# missing and says, under LABEL, which (or that all were present). apt-get
# install is tried first; when it fails (no or stale package lists), once
# more after apt-get update. The packages' own services are kept from
# starting (a system registry on :5000, sshd on :22, RabbitMQ on all
# interfaces): the rig starts its own, configured for loopback.
ensure_packages() {
    local label=$1 pkg status missing=()
    shift
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        say "$label" "all present"
        return 0
    fi
    need_root "it installs ${missing[*]}"
    local own_policy=
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local install=(apt-get install -y -q --no-install-recommends "${missing[@]}") ok=
    if DEBIAN_FRONTEND=noninteractive "${install[@]}" ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive "${install[@]}"; }; then
        ok=1
    fi
    [[ -z "$own_policy" ]] || rm -f /usr/sbin/policy-rc.d
    [[ -n "$ok" ]] || die "apt-get could not install ${missing[*]}"
    say "$label" "installed ${missing[*]}"
}

# write_file MODE PATH: writes stdin to PATH only when the content differs.
# Returns 0 when the file was (re)written, 1 when it was already up to date.
write_file() {
    local mode=$1 path=$2 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f "$path" ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        [[ $(stat -c %a "$path") == "$mode" ]] || chmod "$mode" "$path"
        return 1
    fi
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$path"
    return 0
}

# wait_for NAME LOG SECONDS COMMAND...: retries COMMAND until it succeeds;
# after SECONDS, fails naming the service and its log.
wait_for() {
    local name=$1 log=$2 seconds=$3
    shift 3
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "$RIG_PROG: error: $name did not answer within ${seconds}s; its log is $log" >&2
            if [[ -f "$log" ]]; then
                echo "---- last lines of $log ----" >&2
                tail -n 20 "$log" >&2 || true
            fi
            exit 1
        fi
        sleep 0.5
    done
}

# start_detached LOG COMMAND...: runs COMMAND in its own session, detached
# from this script, output to LOG; prints its pid.
start_detached() {
    local log=$1
    shift
    setsid nohup "$@" >>"$log" 2>&1 </dev/null &
    echo $!
}

pid_alive() {
    local pidfile=$1
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

stop_pidfile() {
    local pidfile=$1 pid
    pid_alive "$pidfile" || return 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "$pidfile"
}

http_code() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$@" || true
}

# port_banner PORT: the first bytes 127.0.0.1:PORT sends, if any.
port_banner() {
    timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -c 8 <&3" 2>/dev/null || true
}
