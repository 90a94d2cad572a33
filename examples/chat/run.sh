#!/usr/bin/env bash
# The chat example in one command, from a fresh clone:
#
#     bash examples/chat/run.sh
#
# Installs netlab into .venv (if it is not there yet), makes a secret for
# the bearer tokens, prints a link with a token for alice and one for bob
# (open each in its own tab), and serves the chat on 127.0.0.1:8090 (PORT=
# to change it) until Ctrl-C.
#
# Rooms across processes: start a Redis, then run this twice with the same
# BROKER and different ports; a room's members on either process hear each
# other (the password, if Redis needs one, in BROKER_PASSWORD_FILE):
#
#     BROKER=redis://127.0.0.1:6379/0 PORT=8090 bash examples/chat/run.sh
#     BROKER=redis://127.0.0.1:6379/0 PORT=8091 bash examples/chat/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
venv=${NETLAB_VENV:-$top/.venv}
port=${PORT:-8090}

if [ ! -x "$venv/bin/twistd" ] || ! "$venv/bin/python" -c "import netlab" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "$top"
fi
secret="$here/.secret"
if [ ! -s "$secret" ]; then
    (umask 077 && "$venv/bin/python" -c "import secrets; print(secrets.token_hex(32))" > "$secret")
fi
for name in alice bob; do
    token=$("$venv/bin/netlab" token --key "$secret" --sub "$name" --ttl 86400)
    echo "$name: http://127.0.0.1:$port/#token=$token"
done
broker=()
if [ -n "${BROKER:-}" ]; then
    broker=(--broker "$BROKER")
    if [ -n "${BROKER_PASSWORD_FILE:-}" ]; then
        broker+=(--broker-password-file "$BROKER_PASSWORD_FILE")
    fi
fi
cd "$here"
exec "$venv/bin/twistd" -n --pidfile= netlab-http --resource chat:root \
    --listen "tcp:$port:interface=127.0.0.1" --protect /ws --jwt-secret "$secret" \
    "${broker[@]}"
