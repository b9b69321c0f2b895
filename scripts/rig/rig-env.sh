# shellcheck shell=bash
# rig-up, last step: `rig.env` in the state dir, where the tests and
# scripts/demo find every address, key and credential of the rig. Sourced
# by scripts/rig-up after the service files (AUTH_REGISTRY_PASSWORD comes
# from registry.sh).

if cat <<RIG_ENV | write_file 600 "$RIG_ENV"; then
BUILDBOT_AMQP_URL=amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f
BUILDBOT_REGISTRY=127.0.0.1:$REGISTRY_PORT
BUILDBOT_AUTH_REGISTRY=127.0.0.1:$AUTH_REGISTRY_PORT
BUILDBOT_AUTH_REGISTRY_USER=$AUTH_REGISTRY_USER
BUILDBOT_AUTH_REGISTRY_PASSWORD=$AUTH_REGISTRY_PASSWORD
BUILDBOT_GIT_SSH_HOST=127.0.0.1
BUILDBOT_GIT_SSH_PORT=$SSH_PORT
BUILDBOT_GIT_SSH_USER=$GIT_USER
BUILDBOT_GIT_REPOS=$GIT_REPOS
BUILDBOT_SSH_KEY=$KEYS/id_ed25519
BUILDBOT_SSH_RSA_KEY=$KEYS/id_rsa
BUILDBOT_SSH_UNAUTHORIZED_KEY=$KEYS/id_unauthorized_ed25519
BUILDBOT_SSH_HOST_PUBKEY=$SSHD_DIR/ssh_host_ed25519_key.pub
BUILDBOT_BASE_IMAGE=$BASE_IMAGE
RIG_ENV
    say rig.env "wrote $RIG_ENV"
else
    say rig.env "unchanged $RIG_ENV"
fi
