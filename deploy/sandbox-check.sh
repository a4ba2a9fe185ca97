#!/usr/bin/env bash
# Runs `hypod serve` under the closest equivalents of deploy/hypod.service's sandbox that can be
# applied without systemd as init, traces it, and checks what the unit forbids never happens.
# Needs root (mount namespaces, setpriv, strace), curl, python3 and systemd-analyze.
#   deploy/sandbox-check.sh [path/to/hypod]      (default target/debug/hypod)
# With HYPOD_CHECK_DATABASE_URL=postgres://… (an empty database) it runs on PostgreSQL, the
# audit key from the environment; otherwise on SQLite in the state directory.
# What is applied (the unit's directive → its stand-in here):
#   DynamicUser=yes            → setpriv --reuid/--regid 61234 (a uid owning nothing but the state dir)
#   CapabilityBoundingSet= / AmbientCapabilities= / NoNewPrivileges=yes
#                              → setpriv --bounding-set=-all --inh-caps=-all --no-new-privs
#   StateDirectory=hypod       → a 0700 folder owned by that uid, bind-mounted at /var/lib/hypod
#   ProtectSystem=strict       → / and /sys remounted read-only in a private mount namespace
#   ProtectHome=yes            → empty 0000 tmpfs over /home and /root
#   PrivateTmp=yes             → an empty tmpfs on /tmp and /var/tmp
#   PrivateDevices=yes         → /dev: a tmpfs holding null, zero, full, random, urandom, tty
#   ProtectProc=invisible      → a new PID namespace with /proc mounted hidepid=invisible
#   UMask=0077                 → umask 077
# What is checked from the trace instead of enforced (seccomp needs systemd here):
#   SystemCallFilter=@system-service ~@privileged, RestrictAddressFamilies=AF_INET AF_INET6
#   AF_UNIX, MemoryDenyWriteExecute=yes: every system call hypod made is in the allowed set,
#   every socket() is of an allowed family, no mapping was made or turned writable+executable.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$here/target/debug/hypod}")
port=${HYPOD_CHECK_PORT:-$(python3 -c "import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])")}
work=$(mktemp -d /tmp/hypod-sandbox.XXXXXX)
server=
trap 'set +e; [ -n "$server" ] && kill "$server" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"; [ -n "$created_var_lib" ] && rmdir /var/lib/hypod; true' EXIT
state=$work/state
created_var_lib=
if [ ! -d /var/lib/hypod ]; then mkdir /var/lib/hypod; created_var_lib=1; fi
mkdir -m 0700 "$state"
cp -r "$here/policies" "$state/policies"
printf '[server]\nlisten = "127.0.0.1:%s"\n[schedule]\ncron = "0 0 3 1 1 *"\nmissed = "run_once"\n' \
    "$port" >"$state/hypod.toml"
database_url=${HYPOD_CHECK_DATABASE_URL:-}
extra_env=
if [ -n "$database_url" ]; then
    printf '[database]\nurl = "%s"\n' "$database_url" >>"$state/hypod.toml"
    extra_env="HYPOD_AUDIT_KEY=sandbox-check-audit-key-0123456789"
fi
cp "$here/examples/sample-history.ndjson" "$state/sample.ndjson"
chown -R 61234:61234 "$state"

# The sandbox: a private mount and PID namespace, then the unprivileged user.
inner() {
    cat <<INNER
set -e
mount --make-rprivate /
mount --bind '$state' /var/lib/hypod
mkdir -p '$work/dev'
mount -t tmpfs -o mode=0755 none '$work/dev'
for d in null zero full random urandom tty; do
    touch '$work/dev/'\$d
    mount --bind /dev/\$d '$work/dev/'\$d
done
mkdir -m 1777 '$work/dev/shm'
mount --move '$work/dev' /dev
mount -t tmpfs -o mode=1777 none /dev/shm
mount -o remount,bind,ro /
mount -o remount,bind,ro /sys
mount -t tmpfs -o mode=0000 none /home
mount -t tmpfs -o mode=0000 none /root
mount -t tmpfs -o mode=1777 none /tmp
mount -t tmpfs -o mode=1777 none /var/tmp
mount -t proc -o hidepid=invisible proc /proc
umask 077
cd /var/lib/hypod
exec setpriv --reuid=61234 --regid=61234 --clear-groups --no-new-privs \
    --bounding-set=-all --inh-caps=-all env -i HYPOD_CONFIG=/var/lib/hypod/hypod.toml \
    HYPOD_LOG=info PATH=/usr/bin:/bin $extra_env "$bin" "\$@"
INNER
}
sandboxed() {
    # strace runs outside the sandbox's user switch, on everything after hypod's exec.
    strace -f -qq -o "$work/trace.$1" -e trace=all -e signal=none \
        unshare --mount --pid --fork bash -c "$(inner)" hypod "${@:2}"
}
sandboxed import import /var/lib/hypod/sample.ndjson >/dev/null
token=$(sandboxed token token create --user ada --role admin --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
sandboxed serve serve 2>"$work/serve.log" &
server=$!
for _ in $(seq 1 600); do
    if curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null |
        grep -q 'hypod_recorded_runs_total{trigger="schedule"'; then break; fi
    sleep 0.2
done
curl -fsS -X POST -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/runs" >/dev/null
ready=$(curl -sS "http://127.0.0.1:$port/readyz")
metrics=$(curl -fsS "http://127.0.0.1:$port/metrics")
# hypod is the leaf of strace → unshare → (PID namespace) hypod: signalled by its id.
pid=$server
while child=$(ps -o pid= --ppid "$pid" | head -n1 | tr -d ' ') && [ -n "$child" ]; do pid=$child; done
[ "$(ps -o comm= -p "$pid")" = hypod ] || { echo "no hypod process under $server" >&2; exit 1; }
kill -TERM "$pid"
wait "$server" && code=0 || code=$?
echo "readyz: $ready"
echo "$metrics" | grep '^hypod_recorded_runs_total'
echo "serve exited with $code"
echo "state directory:"; ls -la "$state"
python3 "$here/deploy/sandbox-trace.py" "$bin" "$work"/trace.*
[ "$code" = 0 ] && echo "$ready" | grep -q '"ready":true' &&
    echo "$metrics" | grep -q 'hypod_recorded_runs_total{trigger="api"' &&
    echo "sandbox check: OK"
