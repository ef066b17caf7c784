#!/usr/bin/env bash
# Media node load benchmark: builds the media node and the load generator,
# then runs the generator against the node binary (passthrough PCMU↔PCMU,
# then transcoded PCMU↔Opus). Everything runs on loopback and is bounded
# (-max-time, 7 minutes by default); the node is stopped on every exit.
# Extra arguments go to the generator, e.g.
#   scripts/bench-media.sh -modes passthrough -window 5s
# The report (markdown) is printed and kept in $BENCH_MEDIA_OUT when set.
set -euo pipefail
cd "$(dirname "$0")/.."

export GOFLAGS="${GOFLAGS:--buildvcs=false -tags=nolibopusfile}"
case "$GOFLAGS" in *nolibopusfile*) ;; *) GOFLAGS="$GOFLAGS -tags=nolibopusfile" ;; esac

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-media.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "building the media node and the load generator" >&2
(cd services/media && CGO_ENABLED=1 go build -o "$work/media" ./cmd/media && CGO_ENABLED=1 go build -o "$work/mediaload" ./cmd/mediaload)

if [ -n "${BENCH_MEDIA_OUT:-}" ]; then
  "$work/mediaload" -node "$work/media" "$@" | tee "$BENCH_MEDIA_OUT"
else
  "$work/mediaload" -node "$work/media" "$@"
fi
