# shellcheck shell=bash
# rig-up: the SSH git remote, an sshd of its own on 127.0.0.1:2222 serving
# bare repositories under /srv/buildbot-git/repos to the user `git` (shell:
# git-shell), and the client keys the tests use (two it accepts, one it
# does not). Sourced by scripts/rig-up after scripts/lib/rig.sh.

keygen() {
    local path=$1
    shift
    [[ -s "$path" && -s "$path.pub" ]] && return 0
    rm -f "$path" "$path.pub"
    ssh-keygen -q -N '' -C "buildbot-rig-$(basename "$path")" -f "$path" "$@"
}

sshd_answers() {
    [[ $(port_banner "$SSH_PORT") == SSH-* ]]
}

keygen "$KEYS/id_ed25519" -t ed25519
keygen "$KEYS/id_rsa" -t rsa -b 3072 -m PEM
keygen "$KEYS/id_unauthorized_ed25519" -t ed25519

mkdir -p "$SSHD_DIR"
chmod 700 "$SSHD_DIR"
keygen "$SSHD_DIR/ssh_host_ed25519_key" -t ed25519

# The git user: git-shell only, home holding the repos and authorized_keys.
if ! getent passwd "$GIT_USER" >/dev/null; then
    useradd --system --user-group --home-dir "$GIT_HOME" --no-create-home \
        --shell "$GIT_SHELL" "$GIT_USER"
fi
IFS=: read -r _ _ _ _ _ git_user_home git_user_shell < <(getent passwd "$GIT_USER")
if [[ "$git_user_home" != "$GIT_HOME" || "$git_user_shell" != "$GIT_SHELL" ]]; then
    usermod --home "$GIT_HOME" --shell "$GIT_SHELL" "$GIT_USER"
fi
# Without PAM, sshd refuses a locked account ("!" password) even for keys;
# "*" means no password login, not locked.
if [[ $(getent shadow "$GIT_USER" | cut -d: -f2) == '!'* ]]; then
    usermod -p '*' "$GIT_USER"
fi
mkdir -p "$GIT_REPOS" "$GIT_HOME/.ssh"
chown root:root "$GIT_HOME" "$GIT_HOME/.ssh" "$GIT_REPOS"
chmod 755 "$GIT_HOME" "$GIT_HOME/.ssh" "$GIT_REPOS"
cat "$KEYS/id_ed25519.pub" "$KEYS/id_rsa.pub" |
    write_file 644 "$GIT_HOME/.ssh/authorized_keys" || true

# Repositories made by root (the tests) are served to git.
for git_bin in /usr/bin/git "$(command -v git)"; do
    [[ -x "$git_bin" ]] || continue
    if ! "$git_bin" config --system --get-all safe.directory 2>/dev/null | grep -qxF '*'; then
        "$git_bin" config --system --add safe.directory '*'
    fi
done

sshd_changed=
cat <<SSHD_CONFIG | write_file 600 "$SSHD_DIR/sshd_config" && sshd_changed=1
# Written by scripts/rig-up: the git remote of the tests, loopback only.
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSHD_DIR/ssh_host_ed25519_key
PidFile $SSHD_DIR/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthenticationMethods publickey
PermitRootLogin no
AllowUsers $GIT_USER
AuthorizedKeysFile $GIT_HOME/.ssh/authorized_keys
StrictModes yes
PermitTTY no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
PrintMotd no
LogLevel VERBOSE
# A fleet clones at once (the dashboard benchmark starts 20 jobs in one
# go): OpenSSH's default 10:30:100 drops connections past 10 unfinished
# handshakes, which a git host serving a fleet raises as well.
MaxStartups 100:30:200
SSHD_CONFIG
mkdir -p /run/sshd
chmod 755 /run/sshd
/usr/sbin/sshd -t -f "$SSHD_DIR/sshd_config" || die "sshd rejects $SSHD_DIR/sshd_config"
if [[ -n "$sshd_changed" ]]; then
    stop_pidfile "$SSHD_DIR/sshd.pid"
fi
banner=$(port_banner "$SSH_PORT")
if [[ "$banner" == SSH-* ]] && pid_alive "$SSHD_DIR/sshd.pid"; then
    say sshd "found running (ssh://$GIT_USER@127.0.0.1:$SSH_PORT)"
elif [[ -n "$banner" ]]; then
    die "127.0.0.1:$SSH_PORT is held by a process that is not this rig's sshd (no live pid in $SSHD_DIR/sshd.pid)"
else
    /usr/sbin/sshd -f "$SSHD_DIR/sshd_config" -E "$LOGS/sshd.log" ||
        die "sshd failed to start; see $LOGS/sshd.log"
    wait_for sshd "$LOGS/sshd.log" 15 sshd_answers
    say sshd "started sshd (pid $(cat "$SSHD_DIR/sshd.pid"), ssh://$GIT_USER@127.0.0.1:$SSH_PORT, log $LOGS/sshd.log)"
fi
