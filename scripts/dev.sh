#!/usr/bin/env bash
# `make dev`: the Dataverse emulator on 127.0.0.1:8181 with demo data, and `cargo lambda watch` serving
# every function, so a person can poke them with `cargo lambda invoke`. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${EMULATOR_PORT:-8181}"
RUN="$PWD/.run"
mkdir -p "$RUN/state"

target/debug/dataverse-emulator --listen "127.0.0.1:$PORT" --seed demo >"$RUN/emulator.out" 2>&1 &
EMULATOR=$!
trap 'kill "$EMULATOR" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    grep -q '^listening on ' "$RUN/emulator.out" 2>/dev/null && break
    sleep 0.1
done
URL="$(sed -n 's/^listening on //p' "$RUN/emulator.out")"
[ -n "$URL" ] || { echo "the emulator did not start (is port $PORT free?):"; cat "$RUN/emulator.out"; exit 1; }

cat >"$RUN/credentials.json" <<JSON
{"contoso": {"url": "$URL", "tenant_id": "contoso.onmicrosoft.com", "client_id": "local-client",
             "client_secret": "local-secret", "authority": "$URL"}}
JSON
cat >"$RUN/dev.env" <<ENV
CRM_SECRETS=file:$RUN/credentials.json
CRM_STATE=file:$RUN/state
CRM_EVENTS=file:$RUN/events.jsonl
RUST_LOG=info
ENV

cat <<TEXT
Dataverse emulator: $URL (demo data; control API under $URL/_emulator/)
Functions: served by cargo lambda watch on 127.0.0.1:9000, built on first invocation.
In another terminal:
  PATH=$PWD/.venv/bin:\$PATH cargo lambda invoke get-record --data-file functions/get-record/events/get.json
  PATH=$PWD/.venv/bin:\$PATH cargo lambda invoke list-records --data-file functions/list-records/events/list.json
Trigger state: $RUN/state   Events: $RUN/events.jsonl
TEXT
PATH="$PWD/.venv/bin:$PATH" cargo lambda watch --invoke-port 9000 --env-file "$RUN/dev.env"
