#!/usr/bin/env bash
# Writes RabbitMQ's definitions (the accounts of buildbot's roles and what
# each may do) with the passwords from the environment, then runs its
# arguments: docker-compose.yml starts the rabbitmq service as
#   rabbitmq-definitions.sh docker-entrypoint.sh rabbitmq-server
# and rabbitmq.conf's load_definitions reads the file at every boot, so a
# changed password takes effect with the next start.
#
#   BUILDBOT_ADMIN_USER, BUILDBOT_ADMIN_PASSWORD   the operator (management UI)
#   BUILDBOT_ORCHESTRATOR_PASSWORD                 user buildbot-orchestrator
#   BUILDBOT_WORKER_PASSWORD                       user buildbot-worker
#   BUILDBOT_DASHBOARD_PASSWORD                    user buildbot-dashboard
#   BUILDBOT_DEFINITIONS_TEMPLATE                  default /etc/rabbitmq/buildbot/definitions.json
#   BUILDBOT_DEFINITIONS                           default /etc/rabbitmq/definitions.json
set -euo pipefail

template=${BUILDBOT_DEFINITIONS_TEMPLATE:-/etc/rabbitmq/buildbot/definitions.json}
out=${BUILDBOT_DEFINITIONS:-/etc/rabbitmq/definitions.json}

# $1 as the inside of a JSON string. Control characters are refused rather
# than escaped: no password needs them.
json_string() {
    local value=$1
    if [[ $value =~ [[:cntrl:]] ]]; then
        echo "rabbitmq-definitions.sh: a control character in $2" >&2
        exit 1
    fi
    value=${value//\\/\\\\}
    value=${value//\"/\\\"}
    printf '%s' "$value"
}

# Each @NAME@ of the template becomes $BUILDBOT_NAME, in one pass from the
# left, so a value that contains "@...@" is never substituted again.
rest=$(<"$template")
definitions=
while [[ $rest =~ @([A-Z_]+)@ ]]; do
    placeholder=${BASH_REMATCH[0]}
    variable=BUILDBOT_${BASH_REMATCH[1]}
    if [[ -z ${!variable:-} ]]; then
        echo "rabbitmq-definitions.sh: set $variable" >&2
        exit 1
    fi
    definitions+=${rest%%"$placeholder"*}
    definitions+=$(json_string "${!variable}" "$variable")
    rest=${rest#*"$placeholder"}
done
definitions+=$rest

# Passwords inside: readable by RabbitMQ's user only.
umask 077
printf '%s\n' "$definitions" >"$out"
if [[ $(id -u) == 0 ]] && id rabbitmq >/dev/null 2>&1; then
    chown rabbitmq:rabbitmq "$out"
fi
exec "$@"
