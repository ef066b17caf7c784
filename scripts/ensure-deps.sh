#!/usr/bin/env bash
# Installs the system packages the build and tests need when they are
# missing: libopus (the media node links it) and sipp (SIP load and
# conformance tests). As root it installs them; otherwise it names them.
#   ensure-deps.sh build   libopus-dev pkg-config
#   ensure-deps.sh test    libopus-dev pkg-config sip-tester
set -euo pipefail

want=(libopus-dev pkg-config)
[ "${1:-build}" = test ] && want+=(sip-tester)

missing=()
for pkg in "${want[@]}"; do
  case "$pkg" in
    pkg-config) command -v pkg-config >/dev/null 2>&1 || missing+=("$pkg") ;;
    libopus-dev) { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists opus; } || missing+=("$pkg") ;;
    sip-tester) command -v sipp >/dev/null 2>&1 || missing+=("$pkg") ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v go >/dev/null 2>&1; then
  echo "go is not installed: install Go 1.26 or newer first" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
