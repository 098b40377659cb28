#!/usr/bin/env bash
# nhid quick start. Starts a server and an agent on embedded defaults in a
# temporary directory, registers an entry for examples/whoami selected by
# this user's uid and the sha256 of the whoami binary, and runs whoami, which
# prints its SPIFFE ID and then each rotation (the entry's SVID lives 2
# minutes, so a rotation shows about every minute). Ctrl-C stops everything
# and removes the directory.
#
# Run it with `make quickstart` (which builds the binaries first).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${BIN:-bin}
port=${NHID_QUICKSTART_PORT:-18081}
td=example.org
work=$(mktemp -d -t nhid-quickstart.XXXXXX)
pids=()

cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  echo "quickstart: stopped everything and removed $work"
}
trap cleanup EXIT INT TERM

say() { printf '\n== %s\n' "$*"; }
fail() {
  echo "quickstart: $*" >&2
  for f in "$work"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
  exit 1
}
json_field() { tr -d '\n' | sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p"; }
nhidctl() { "$bin/nhidctl" --socket "$work/admin.sock" "$@"; }

for b in nhid-server nhid-agent nhidctl whoami; do
  [ -x "$bin/$b" ] || fail "$bin/$b is missing: run 'make build' (or 'make quickstart')"
done
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  fail "port $port is in use: set NHID_QUICKSTART_PORT to a free port"
fi

say "starting nhid-server (trust domain $td, agent API on 127.0.0.1:$port)"
"$bin/nhid-server" run --data-dir "$work/server" --trust-domain "$td" \
  --bind "127.0.0.1:$port" --admin-socket "$work/admin.sock" --health-address "" --relying-party-address "" \
  >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do nhidctl healthcheck >/dev/null 2>&1 && break; sleep 0.1; done
nhidctl healthcheck >/dev/null || fail "nhid-server did not become healthy"

say "fetching the trust bundle and a join token"
nhidctl bundle show --format pem >"$work/bundle.pem"
token_json=$(nhidctl -o json token generate)
token=$(json_field token <<<"$token_json")
agent_id=$(json_field spiffe_id <<<"$token_json")
[ -n "$token" ] && [ -n "$agent_id" ] || fail "could not read the join token from: $token_json"
echo "agent will be $agent_id"

say "starting nhid-agent (Workload API on $work/agent.sock)"
"$bin/nhid-agent" run --data-dir "$work/agent" --trust-domain "$td" \
  --server "127.0.0.1:$port" --trust-bundle "$work/bundle.pem" --join-token "$token" \
  --socket "$work/agent.sock" --health-address "" \
  >"$work/agent.log" 2>&1 &
pids+=($!)

say "registering examples/whoami by uid and binary hash"
hash=$(sha256sum "$bin/whoami" | cut -d' ' -f1)
nhidctl entry create --spiffe-id "spiffe://$td/whoami" --parent-id "$agent_id" \
  --selector "unix:uid:$(id -u)" --selector "unix:sha256:$hash" \
  --purpose "quick start example: prints its own identity" --owner "$(id -un)@localhost" \
  --x509-ttl 2m

say "running whoami (Ctrl-C to stop)"
SPIFFE_ENDPOINT_SOCKET="unix://$work/agent.sock" "$bin/whoami" &
pids+=($!)
wait "${pids[-1]}"
