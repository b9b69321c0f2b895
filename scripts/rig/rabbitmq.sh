# shellcheck shell=bash
# rig-up: RabbitMQ on 127.0.0.1:5672 (guest/guest, loopback only).
# Sourced by scripts/rig-up after scripts/lib/rig.sh.

# The app, not just the Erlang node: clients are refused until it booted.
rabbit_ping() {
    rabbitmq-diagnostics -q -t 10 check_running
}

if rabbit_ping >/dev/null 2>&1; then
    say rabbitmq "found running (amqp://127.0.0.1:$AMQP_PORT)"
else
    # RabbitMQ recovers every durable queue at boot and needs a file handle
    # for each: with the usual soft limit of 1024 its boot stalls for good
    # once ~900 queues exist (RabbitMQ asks for 65536). Debian's wrapper
    # switches user through su, whose pam_limits puts 1024 back, so the
    # switch is made here with setpriv, which keeps the raised limit
    # (65536 where root may raise the hard limit, else the hard limit).
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    # The listener, the inter-node port and epmd bind loopback only.
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT=$AMQP_PORT \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}' \
        HOME=/var/lib/rabbitmq USER=rabbitmq LOGNAME=rabbitmq \
        setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
        rabbitmq-server -detached >>"$LOGS/rabbitmq-start.log" 2>&1 ||
        die "rabbitmq-server -detached failed; see $LOGS/rabbitmq-start.log and /var/log/rabbitmq/"
    wait_for rabbitmq "/var/log/rabbitmq/rabbit@$(hostname -s).log" 120 rabbit_ping
    say rabbitmq "started rabbitmq-server (log /var/log/rabbitmq/rabbit@$(hostname -s).log)"
fi
