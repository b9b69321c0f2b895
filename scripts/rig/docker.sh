# shellcheck shell=bash
# rig-up: the Docker Engine, dockerd on its default unix socket.
# Sourced by scripts/rig-up after scripts/lib/rig.sh.

docker_ping() {
    [[ $(curl -s --max-time 3 --unix-socket "$DOCKER_SOCK" http://localhost/_ping) == OK ]]
}

if docker_ping; then
    say docker "found running ($DOCKER_SOCK)"
else
    dockerd_pid=$(start_detached "$LOGS/dockerd.log" dockerd --ip 127.0.0.1)
    wait_for dockerd "$LOGS/dockerd.log" 90 docker_ping
    say docker "started dockerd (pid $dockerd_pid, log $LOGS/dockerd.log)"
fi
# Pushes to the plain-HTTP registries on 127.0.0.1 need the daemon to treat
# them as insecure; dockerd does so for 127.0.0.0/8 unless configured away.
insecure=$(docker info --format '{{range .RegistryConfig.InsecureRegistryCIDRs}}{{.}} {{end}}' 2>/dev/null || true)
[[ " $insecure " == *" 127.0.0.0/8 "* ]] ||
    die "dockerd does not treat 127.0.0.0/8 as insecure registries (it has: ${insecure:-none}); pushes to http://127.0.0.1:$REGISTRY_PORT would fail"
