#!/usr/bin/env bash
# Runs the local stack: the proxy (which starts the embedded NATS server with
# JetStream on 127.0.0.1:4222 when NATS_URL is not set) and one media node.
# Ctrl-C drains both; a second Ctrl-C stops them at once.
set -euo pipefail
cd "$(dirname "$0")/.."

proxy_cfg=${PROXY_CONFIG:-deploy/local/proxy.yaml}
media_cfg=${MEDIA_CONFIG:-deploy/local/media.yaml}

bin/proxy -config "$proxy_cfg" &
proxy_pid=$!
# The media node joins the bus the proxy embeds; give it a moment to listen.
for _ in $(seq 1 50); do
  if (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null || [ -n "${NATS_URL:-}" ]; then break; fi
  sleep 0.1
done
bin/media -config "$media_cfg" &
media_pid=$!

stop() {
  kill -TERM "$media_pid" "$proxy_pid" 2>/dev/null || true
}
trap stop INT TERM
cat <<MSG

  callgrid is running
    SIP        127.0.0.1:5060 (UDP and TCP), domain 127.0.0.1
    users      alice / alice-secret, bob / bob-secret (realm callgrid)
    services   dial 9196 for the echo test, 9197 for a tone
    metrics    proxy http://127.0.0.1:9101/metrics, media http://127.0.0.1:9102/metrics
    bus        nats://127.0.0.1:4222 (embedded, JetStream)
  Ctrl-C drains and stops.

MSG
wait "$media_pid" || true
kill -TERM "$proxy_pid" 2>/dev/null || true
wait "$proxy_pid" || true
