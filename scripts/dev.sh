#!/usr/bin/env bash
# `make dev`: the Dataverse emulator on 127.0.0.1:8181 with demo data, and `cargo lambda watch` serving
# every function, so a person can poke them with `cargo lambda invoke`. Ctrl-C stops both.
#
# `scripts/dev.sh --check` (part of `make test`) walks the same path unattended: it starts both on free
# ports, invokes sample events with `cargo lambda invoke` exactly as the README says, checks each
# answer, and stops. The local tool behaves unlike Lambda in places (its deadline header, for one),
# and only running it shows whether the README's path still works.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECK=false
if [ "${1:-}" = "--check" ]; then CHECK=true; fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

if $CHECK; then
    PORT="$(free_port)"
    INVOKE_PORT="$(free_port)"
    RUN="$(mktemp -d)"
else
    PORT="${EMULATOR_PORT:-8181}"
    INVOKE_PORT=9000
    RUN="$PWD/.run"
fi
mkdir -p "$RUN/state"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if $CHECK; then rm -rf "$RUN"; fi
}
trap cleanup EXIT

target/debug/dataverse-emulator --listen "127.0.0.1:$PORT" --seed demo >"$RUN/emulator.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    grep -q '^listening on ' "$RUN/emulator.out" 2>/dev/null && break
    sleep 0.1
done
URL="$(sed -n 's/^listening on //p' "$RUN/emulator.out")"
[ -n "$URL" ] || { echo "the emulator did not start (is port $PORT free?):"; cat "$RUN/emulator.out"; exit 1; }

cat >"$RUN/credentials.json" <<JSON
{"contoso": {"url": "$URL", "tenant_id": "contoso.onmicrosoft.com", "client_id": "local-client",
             "client_secret": "local-secret", "authority": "$URL", "webhook_key": "local-webhook-key"}}
JSON
cat >"$RUN/dev.env" <<ENV
CRM_SECRETS=file:$RUN/credentials.json
CRM_STATE=file:$RUN/state
CRM_EVENTS=file:$RUN/events.jsonl
RUST_LOG=info
ENV

export PATH="$PWD/.venv/bin:$PATH"

if ! $CHECK; then
    cat <<TEXT
Dataverse emulator: $URL (demo data; control API under $URL/_emulator/)
Functions: served by cargo lambda watch on 127.0.0.1:$INVOKE_PORT, built on first invocation.
In another terminal:
  PATH=$PWD/.venv/bin:\$PATH cargo lambda invoke get-record --data-file functions/get-record/events/get.json
  PATH=$PWD/.venv/bin:\$PATH cargo lambda invoke list-records --data-file functions/list-records/events/list.json
Trigger state: $RUN/state   Events: $RUN/events.jsonl
TEXT
    exec cargo lambda watch --invoke-port "$INVOKE_PORT" --env-file "$RUN/dev.env"
fi

cargo lambda watch --invoke-port "$INVOKE_PORT" --env-file "$RUN/dev.env" >"$RUN/watch.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$INVOKE_PORT/" && break
    sleep 0.2
done

# Each sample event must answer with a row or a list, not an error; `.path=value` also checks the value
# (the webhook answers a Function URL response, whose status says whether it published).
status=0
for case in "get-record:get.json:.name" "list-records:list.json:.value" "when-record-created:poll.json:.value" \
            "dataverse-webhook:delete.json:.statusCode=200"; do
    IFS=: read -r function event expect <<<"$case"
    started=$(date +%s)
    if ! answer="$(timeout 600 cargo lambda invoke -P "$INVOKE_PORT" "$function" --data-file "functions/$function/events/$event" 2>&1)"; then
        echo "FAIL $function: $answer"
        status=1
        continue
    fi
    if python3 -c 'import json, sys
path, _, want = sys.argv[2].partition("=")
v = json.loads(sys.argv[1])
for k in path.split(".")[1:]:
    v = v[k]
sys.exit(v is None or (want != "" and str(v) != want))' "$answer" "$expect" 2>/dev/null; then
        echo "ok   $function through cargo lambda watch ($(($(date +%s) - started)) s)"
    else
        echo "FAIL $function: unexpected answer: ${answer:0:500}"
        status=1
    fi
done
if [ "$status" -ne 0 ]; then
    echo "--- cargo lambda watch output ---"
    tail -n 40 "$RUN/watch.out"
fi
exit "$status"
