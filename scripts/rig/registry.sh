# shellcheck shell=bash
# rig-up: two registries, 127.0.0.1:5000 without auth and 127.0.0.1:5001
# with htpasswd auth (user `buildbot`, random password kept in the state
# dir). Sets AUTH_REGISTRY_PASSWORD. Sourced by scripts/rig-up after
# scripts/lib/rig.sh.

if [[ ! -s "$AUTH_REGISTRY_PASSWORD_FILE" ]]; then
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$AUTH_REGISTRY_PASSWORD_FILE")
fi
AUTH_REGISTRY_PASSWORD=$(cat "$AUTH_REGISTRY_PASSWORD_FILE")

registry_answers() {
    [[ $(http_code "http://127.0.0.1:$1/v2/") == "$2" ]]
}

# registry NAME PORT AUTH: writes the config of one registry and makes sure
# it runs with it.
registry() {
    local name=$1 port=$2 auth=$3
    local dir="$STATE/$name" log="$LOGS/$name.log"
    mkdir -p "$dir/data"
    if [[ ! -s "$dir/http-secret" ]]; then
        (umask 077 && head -c 24 /dev/urandom | base64 >"$dir/http-secret")
    fi
    local changed=
    if [[ "$auth" == yes ]]; then
        if [[ ! -s "$dir/htpasswd" ]] ||
            ! htpasswd -vi "$dir/htpasswd" "$AUTH_REGISTRY_USER" <<<"$AUTH_REGISTRY_PASSWORD" >/dev/null 2>&1; then
            # -i: the password comes from stdin, never argv.
            htpasswd -iBn "$AUTH_REGISTRY_USER" <<<"$AUTH_REGISTRY_PASSWORD" |
                write_file 600 "$dir/htpasswd" && changed=1
        fi
    fi
    {
        cat <<CONFIG
# Written by scripts/rig-up.
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: $(cat "$dir/http-secret")
CONFIG
        if [[ "$auth" == yes ]]; then
            cat <<CONFIG
auth:
  htpasswd:
    realm: buildbot-rig
    path: $dir/htpasswd
CONFIG
        fi
    } | write_file 600 "$dir/config.yml" && changed=1

    local want=200
    [[ "$auth" == yes ]] && want=401
    local code
    code=$(http_code "http://127.0.0.1:$port/v2/")
    if [[ -n "$changed" ]] && pid_alive "$dir/pid"; then
        stop_pidfile "$dir/pid"
        code=000
    fi
    if [[ "$code" == "$want" ]]; then
        say "$name" "found running (http://127.0.0.1:$port)"
    elif [[ "$code" != 000 ]]; then
        die "127.0.0.1:$port answers /v2/ with HTTP $code instead of $want: something else holds the port"
    else
        local pid
        pid=$(start_detached "$log" docker-registry serve "$dir/config.yml")
        echo "$pid" >"$dir/pid"
        wait_for "registry $name on 127.0.0.1:$port" "$log" 30 registry_answers "$port" "$want"
        say "$name" "started docker-registry (pid $pid, http://127.0.0.1:$port, log $log)"
    fi
    if [[ "$auth" == yes ]]; then
        # The kept password must open it (the password goes to curl through
        # a config on stdin, not argv).
        code=$(printf 'user = "%s:%s"\n' "$AUTH_REGISTRY_USER" "$AUTH_REGISTRY_PASSWORD" |
            http_code -K - "http://127.0.0.1:$port/v2/")
        [[ "$code" == 200 ]] ||
            die "registry on 127.0.0.1:$port refuses user $AUTH_REGISTRY_USER with the password in $AUTH_REGISTRY_PASSWORD_FILE (HTTP $code)"
    fi
}

registry registry "$REGISTRY_PORT" no
registry auth-registry "$AUTH_REGISTRY_PORT" yes
