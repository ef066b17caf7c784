#!/usr/bin/env bash
# Places one authenticated call with audio through a running local stack
# (make run): sipp answers the proxy's digest challenge as
# alice, dials the echo service (9196) and plays G.711 A-law for 4 seconds.
# Exit status 0 means the call was set up, carried audio and hung up cleanly.
#   scripts/smoke.sh [proxy-host:port] [number]
set -euo pipefail
cd "$(dirname "$0")"
target=${1:-127.0.0.1:5060}
number=${2:-9196}
command -v sipp >/dev/null 2>&1 || { echo "sipp is missing: apt-get install -y sip-tester" >&2; exit 1; }
before=$(curl -fsS 127.0.0.1:9102/metrics 2>/dev/null | awk '/^media_rtp_packets_total\{.*direction="in"/ {s+=$2} END {print s+0}')
timeout 30 sipp "$target" -sf sipp/smoke-uac.xml -s "$number" \
  -au alice -ap alice-secret -i 127.0.0.1 -mi 127.0.0.1 -p 15099 -mp 16000 \
  -m 1 -l 1 -timeout 20s -timeout_error -nostdin >/dev/null 2>&1 \
  || { echo "smoke call failed (is 'make run' up?)" >&2; exit 1; }
after=$(curl -fsS 127.0.0.1:9102/metrics 2>/dev/null | awk '/^media_rtp_packets_total\{.*direction="in"/ {s+=$2} END {print s+0}')
echo "smoke call to $number through $target: ok; media node received $((after - before)) RTP packets"
