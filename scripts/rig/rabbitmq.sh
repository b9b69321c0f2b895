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
    # The listener, the inter-node port and epmd bind loopback only.
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT=$AMQP_PORT \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}' \
        rabbitmq-server -detached >>"$LOGS/rabbitmq-start.log" 2>&1 ||
        die "rabbitmq-server -detached failed; see $LOGS/rabbitmq-start.log and /var/log/rabbitmq/"
    wait_for rabbitmq "/var/log/rabbitmq/rabbit@$(hostname -s).log" 120 rabbit_ping
    say rabbitmq "started rabbitmq-server (log /var/log/rabbitmq/rabbit@$(hostname -s).log)"
fi
