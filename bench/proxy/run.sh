#!/usr/bin/env bash
# Call-rate sweep of callgrid's SIP proxy against Kamailio, on 127.0.0.1.
#
# sipp UAC -> proxy -> round-robin over two sipp UAS, 1 s calls with
# Record-Route (ACK and BYE go through the proxy). Both proxies run side by
# side; at each rate callgrid's step runs, then Kamailio's, so load from
# anything else on the machine hits both alike. A step offers
# BENCH_STEP_SECONDS of calls at the step's rate. A proxy leaves the sweep at
# its first step with a failed call, a retransmission, a stray message or a
# rate sipp could not offer, after one confirming retry. Per step it reports
# the proxy's CPU (utime+stime from /proc; summed over every Kamailio
# process) divided by the calls completed.
#
#   bench/proxy/run.sh [both|callgrid|kamailio]      (make bench-proxy)
#
# Environment:
#   BENCH_RATES          calls/s of the steps (default "250 500 1000 1500 2000 2500 3000 3500 4000 5000 6000 7000 8000")
#   BENCH_STEP_SECONDS   seconds of calls offered per step (default 10)
#   BENCH_RETRIES        repeats of a failed step before a proxy leaves the sweep (default 1)
#   BENCH_BUDGET         seconds the whole sweep may take; no step starts past it (default 420)
#   BENCH_KAMAILIO_CHILDREN  Kamailio UDP worker processes (default 4)
#   BENCH_PORT_BASE      first of the ports used (default 15060; 6 ports)
#   BENCH_KEEP=1         keep the work directory (logs, sipp stats) and print it
#
# As root it installs what is missing (sip-tester, kamailio); otherwise it
# names the packages. Only loopback traffic.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

case "${1:-both}" in
  both) engines=(callgrid kamailio) ;;
  callgrid | kamailio) engines=("$1") ;;
  *) echo "usage: $0 [both|callgrid|kamailio]" >&2; exit 2 ;;
esac

read -r -a rates <<<"${BENCH_RATES:-250 500 1000 1500 2000 2500 3000 3500 4000 5000 6000 7000 8000}"
step_seconds=${BENCH_STEP_SECONDS:-10}
retries=${BENCH_RETRIES:-1}
budget=${BENCH_BUDGET:-420}
kam_children=${BENCH_KAMAILIO_CHILDREN:-4}
port_base=${BENCH_PORT_BASE:-15060}

declare -A sip_port=([callgrid]=$port_base [kamailio]=$((port_base + 1)))
uac_port=$((port_base + 2))
uas1_port=$((port_base + 3))
uas2_port=$((port_base + 4))
http_port=$((port_base + 5))

hold_seconds=1   # the UAC scenario's pause between ACK and BYE
number=15550001  # matches the dialplan prefix 1555 in proxy.yaml
clk_tck=$(getconf CLK_TCK)

# --- what must be installed -------------------------------------------------

rc_policy=/usr/sbin/policy-rc.d
created_rc_policy=0
remove_rc_policy() {
  if [ "$created_rc_policy" = 1 ]; then rm -f "$rc_policy"; created_rc_policy=0; fi
}

kamailio_bin() { command -v kamailio 2>/dev/null || echo /usr/sbin/kamailio; }

ensure_packages() {
  local missing=()
  command -v go >/dev/null 2>&1 || { echo "go is not installed: install Go 1.26 or newer first" >&2; exit 1; }
  command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
  if [[ " ${engines[*]} " == *" kamailio "* ]] && [ ! -x "$(kamailio_bin)" ]; then
    missing+=(kamailio)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian enables the kamailio service on install; only the benchmark's own
  # instance may run (policy-rc.d keeps the package from starting one).
  if [ ! -e "$rc_policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$rc_policy" && chmod +x "$rc_policy" && created_rc_policy=1
  fi
  apt-get install -y -qq "${missing[@]}" >/dev/null
  remove_rc_policy
}

kamailio_modules() {
  local d
  for d in /usr/lib/x86_64-linux-gnu/kamailio/modules /usr/lib/*/kamailio/modules /usr/lib/kamailio/modules /usr/local/lib64/kamailio/modules; do
    [ -f "$d/tm.so" ] && { echo "$d"; return 0; }
  done
  echo "kamailio modules (tm.so) not found" >&2
  return 1
}

port_busy() { ss -Hlnu "sport = :$1" | grep -q . || ss -Hlnt "sport = :$1" | grep -q .; }

# --- processes: everything started here is stopped here ---------------------

work=$(mktemp -d /tmp/bench-proxy.XXXXXX)
declare -A engine_pid=()
sipp_pids=()

descendants() { # pid -> the pid and every descendant
  local p=$1 c
  echo "$p"
  for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do descendants "$c"; done
}

stop_pid_tree() {
  local pids p alive
  pids=$(descendants "$1")
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 50); do
    alive=0
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  kill -KILL $pids 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

cleanup() {
  local p
  for p in "${sipp_pids[@]}"; do stop_pid_tree "$p"; done
  for p in "${engine_pid[@]}"; do stop_pid_tree "$p"; done
  remove_rc_policy
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    echo "work directory kept: $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# CPU ticks (utime + stime) of a process and all its descendants.
cpu_ticks() {
  local total=0 p stat rest f
  for p in $(descendants "$1"); do
    stat=$(cat /proc/"$p"/stat 2>/dev/null) || continue
    rest=${stat##*) }       # the fields after "(comm) "
    read -r -a f <<<"$rest" # f[0] is field 3 (state): utime is f[11], stime f[12]
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

# Busy CPU ticks of the whole machine (all cores, everything but idle and iowait).
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# Datagrams the kernel dropped on full UDP receive buffers, machine-wide.
udp_drops() { awk '/^Udp:/ { if (++n == 1) { for (i = 2; i <= NF; i++) col[$i] = i } else print $col["RcvbufErrors"] }' /proc/net/snmp; }

# --- the proxies -------------------------------------------------------------

build_callgrid() {
  mkdir -p "$work/callgrid"
  echo "building services/proxy" >&2
  (cd "$root/services/proxy" && CGO_ENABLED=0 go build -o "$work/callgrid/proxy" ./cmd/proxy)
}

start_callgrid() {
  local dir=$work/callgrid
  rm -rf "$dir/store"
  mkdir -p "$dir/store"
  sed -e "s|@HTTP_PORT@|$http_port|" -e "s|@STORE_DIR@|$dir/store|" \
    -e "s|@SIP_PORT@|${sip_port[callgrid]}|" -e "s|@UAS1_PORT@|$uas1_port|" -e "s|@UAS2_PORT@|$uas2_port|" \
    "$here/proxy.yaml" >"$dir/proxy.yaml"
  # Unknown keys are rejected, so a renamed media setting stops the run here
  # instead of silently measuring anchored calls.
  "$dir/proxy" -config "$dir/proxy.yaml" -check-config >/dev/null
  "$dir/proxy" -config "$dir/proxy.yaml" >>"$dir/proxy.log" 2>&1 &
  engine_pid[callgrid]=$!
  for _ in $(seq 1 100); do
    if curl -sf -o /dev/null "http://127.0.0.1:$http_port/readyz"; then return 0; fi
    kill -0 "${engine_pid[callgrid]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "callgrid proxy did not become ready; its log:" >&2
  tail -20 "$dir/proxy.log" >&2
  return 1
}

start_kamailio() {
  local dir=$work/kamailio mods pid
  mkdir -p "$dir/run"
  mods=$(kamailio_modules)
  printf '1 sip:127.0.0.1:%s\n1 sip:127.0.0.1:%s\n' "$uas1_port" "$uas2_port" >"$dir/dispatcher.list"
  sed -e "s|@CHILDREN@|$kam_children|" -e "s|@SIP_PORT@|${sip_port[kamailio]}|g" \
    -e "s|@MODULES@|$mods|" -e "s|@DISPATCHER_LIST@|$dir/dispatcher.list|" \
    "$here/kamailio.cfg" >"$dir/kamailio.cfg"
  "$(kamailio_bin)" -c -f "$dir/kamailio.cfg" -Y "$dir/run" >"$dir/check.log" 2>&1 || {
    echo "kamailio rejected its configuration:" >&2
    tail -20 "$dir/check.log" >&2
    return 1
  }
  # -DD: the main process stays in the foreground (workers are still
  # forked), -E: log to stderr, -m: shared memory in MB (1024 needed at
  # ~2,000 calls/s), -M: private memory per process in MB.
  "$(kamailio_bin)" -f "$dir/kamailio.cfg" -DD -E -m 1024 -M 16 -Y "$dir/run" -w "$dir/run" >>"$dir/kamailio.log" 2>&1 &
  pid=$!
  engine_pid[kamailio]=$pid
  for _ in $(seq 1 100); do
    if ss -Hlnu "sport = :${sip_port[kamailio]}" | grep -q . && [ "$(descendants "$pid" | wc -l)" -gt "$kam_children" ]; then
      sleep 0.5
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "kamailio did not start; its log:" >&2
  tail -20 "$dir/kamailio.log" >&2
  return 1
}

# A bypassed call makes no media request: warn when callgrid made any.
check_bypass() {
  local n
  n=$(curl -sf "http://127.0.0.1:$http_port/metrics" | awk '/^sip_proxy_media_requests_total/ { n += $2 } END { print n + 0 }')
  if [ "${n%.*}" != 0 ]; then
    echo "WARNING: callgrid made $n media requests: its calls were anchored, not bypassed" >&2
  fi
}

stop_engine() {
  [ -n "${engine_pid[$1]:-}" ] || return 0
  [ "$1" = callgrid ] && check_bypass
  stop_pid_tree "${engine_pid[$1]}"
  unset "engine_pid[$1]"
}

# --- one step ----------------------------------------------------------------

# csv_field FILE NAME: NAME's value on the last line of a sipp -trace_stat file.
csv_field() {
  awk -F';' -v name="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) col = i; next }
    { last = $col } END { print (col && last != "" ? last : "0") }' "$1" 2>/dev/null || echo 0
}

# csv_epoch FILE N: the epoch seconds in time column N (1 start, 3 current) of the last line.
csv_epoch() {
  awk -F';' -v n="$2" 'NR > 1 { last = $n } END { split(last, t, "\t"); print (t[3] != "" ? t[3] : 0) }' "$1" 2>/dev/null || echo 0
}

sipp_common=(-i 127.0.0.1 -nostdin -trace_stat -fd 1 -buff_size 1048576 -max_recv_loops 5000 -max_sched_loops 5000)

# run_step ENGINE RATE TRY: prints one result line
# "rate achieved ok failed retrans stray udp_drops setup_ms cpu_s cpu_us_per_call calls_per_core_s sipp_cpu_s machine_busy_s verdict"
run_step() {
  local engine=$1 rate=$2 try=$3
  local dir=$work/$engine/step-$rate-$try
  local pid=${engine_pid[$engine]}
  local calls=$((rate * step_seconds))
  local per_uas=$(((calls + 1) / 2))
  local limit=$((rate * 4))
  local sipp_timeout=$((step_seconds + 25))
  local uas1 uas2 uac t0 t1 g0 g1 d0 d1 m0 m1
  mkdir -p "$dir"

  (cd "$dir" && exec timeout -k 2 $((sipp_timeout + 5)) sipp -sf "$here/uas.xml" "${sipp_common[@]}" \
    -p "$uas1_port" -m "$per_uas" -timeout "${sipp_timeout}s" -stf uas1.csv >uas1.out 2>&1) &
  uas1=$!
  (cd "$dir" && exec timeout -k 2 $((sipp_timeout + 5)) sipp -sf "$here/uas.xml" "${sipp_common[@]}" \
    -p "$uas2_port" -m "$per_uas" -timeout "${sipp_timeout}s" -stf uas2.csv >uas2.out 2>&1) &
  uas2=$!
  sipp_pids=("$uas1" "$uas2")
  sleep 0.5

  t0=$(cpu_ticks "$pid")
  g0=$(($(cpu_ticks "$uas1") + $(cpu_ticks "$uas2")))
  d0=$(udp_drops)
  m0=$(machine_ticks)
  (cd "$dir" && exec timeout -k 2 $((sipp_timeout + 5)) sipp "127.0.0.1:${sip_port[$engine]}" -sf "$here/uac.xml" "${sipp_common[@]}" \
    -p "$uac_port" -s "$number" -m "$calls" -r "$rate" -rp 1000 -l "$limit" \
    -recv_timeout 5000 -timeout "${sipp_timeout}s" -stf uac.csv >uac.out 2>&1) &
  uac=$!
  sipp_pids+=("$uac")
  # Sample the load generators' CPU until the UAC exits, keeping each one's
  # highest reading: a process that has exited is gone from /proc.
  local -A gen=()
  local gp v
  while kill -0 "$uac" 2>/dev/null; do
    for gp in "$uac" "$uas1" "$uas2"; do
      v=$(cpu_ticks "$gp")
      [ "$v" -gt "${gen[$gp]:-0}" ] && gen[$gp]=$v
    done
    sleep 0.2
  done
  g1=$((${gen[$uac]:-0} + ${gen[$uas1]:-0} + ${gen[$uas2]:-0}))
  [ "$g1" -ge "$g0" ] || g1=$g0
  wait "$uac" || true
  t1=$(cpu_ticks "$pid")
  d1=$(udp_drops)
  m1=$(machine_ticks)

  # The UAS end on their own once they have had their share of calls; a
  # step with lost calls leaves them waiting, so stop them (their stats file
  # is dumped every second).
  for _ in $(seq 1 30); do
    kill -0 "$uas1" 2>/dev/null || kill -0 "$uas2" 2>/dev/null || break
    sleep 0.1
  done
  stop_pid_tree "$uas1"
  stop_pid_tree "$uas2"
  sipp_pids=()

  local uac_csv=$dir/uac.csv f
  local ok failed retrans=0 stray=0 setup start end
  ok=$(csv_field "$uac_csv" 'SuccessfulCall(C)')
  failed=$(($(csv_field "$uac_csv" 'FailedCall(C)') + $(csv_field "$dir/uas1.csv" 'FailedCall(C)') + $(csv_field "$dir/uas2.csv" 'FailedCall(C)')))
  for f in "$uac_csv" "$dir/uas1.csv" "$dir/uas2.csv"; do
    retrans=$((retrans + $(csv_field "$f" 'Retransmissions(C)')))
    stray=$((stray + $(csv_field "$f" 'OutOfCallMsgs(C)') + $(csv_field "$f" 'DeadCallMsgs(C)')))
  done
  setup=$(csv_field "$uac_csv" 'ResponseTime1(C)') # hh:mm:ss:µs, INVITE -> 200, 1 ms resolution
  start=$(csv_epoch "$uac_csv" 1)
  end=$(csv_epoch "$uac_csv" 3)

  awk -v rate="$rate" -v calls="$calls" -v ok="$ok" -v failed="$failed" -v retrans="$retrans" \
    -v stray="$stray" -v setup="$setup" -v start="$start" -v end="$end" -v hold="$hold_seconds" \
    -v ticks=$((t1 - t0)) -v gen_ticks=$((g1 - g0)) -v busy_ticks=$((m1 - m0)) -v drops=$((d1 - d0)) \
    -v hz="$clk_tck" 'BEGIN {
      split(setup, s, ":"); setup_ms = (s[1] * 3600 + s[2] * 60 + s[3]) * 1000 + s[4] / 1000
      span = end - start - hold - setup_ms / 1000
      achieved = (span > 0) ? ok / span : 0
      cpu = ticks / hz
      per_call = (ok > 0) ? cpu * 1e6 / ok : 0
      per_core = (cpu > 0) ? ok / cpu : 0
      verdict = "clean"
      if (failed > 0 || ok < calls) verdict = "failed-calls"
      else if (retrans > 0 || stray > 0) verdict = "retransmissions"
      else if (achieved < 0.9 * rate) verdict = "rate-not-reached"
      printf "%d %.0f %d %d %d %d %d %.0f %.2f %.0f %.0f %.2f %.2f %s\n", rate, achieved, ok, failed, retrans, stray,
        drops, setup_ms, cpu, per_call, per_core, gen_ticks / hz, busy_ticks / hz, verdict
    }'
}

# --- the sweep ---------------------------------------------------------------

results=$work/results.txt
: >"$results"
declare -A best_rate=() best_cpu_call=() best_per_core=()

ensure_packages
for p in "${sip_port[callgrid]}" "${sip_port[kamailio]}" "$uac_port" "$uas1_port" "$uas2_port" "$http_port"; do
  if port_busy "$p"; then
    echo "port $p is in use: set BENCH_PORT_BASE to a free range" >&2
    exit 1
  fi
done

[[ " ${engines[*]} " == *" callgrid "* ]] && build_callgrid
for engine in "${engines[@]}"; do
  "start_$engine"
  best_rate[$engine]=0
done

echo "proxy call-rate sweep: ${rates[*]} calls/s, ${step_seconds}s per step, 1 s calls, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
started=$(date +%s)
active=("${engines[@]}")
stopped_by_budget=0
for rate in "${rates[@]}"; do
  [ ${#active[@]} -gt 0 ] || break
  still=()
  for engine in "${active[@]}"; do
    verdict=""
    for try in $(seq 0 "$retries"); do
      if [ $(($(date +%s) - started + step_seconds + 8)) -gt "$budget" ]; then
        echo "  time budget of ${budget}s reached: sweep stopped" >&2
        stopped_by_budget=1
        break 3
      fi
      line=$(run_step "$engine" "$rate" "$try")
      echo "$engine $line" >>"$results"
      read -r r achieved ok failed retrans stray drops setup cpu per_call per_core gen busy verdict <<<"$line"
      printf '  %-8s %5s calls/s offered, %5s achieved, %6s ok, %s failed, %s retrans, %s stray, %s UDP drops, %5s µs CPU/call: %s\n' \
        "$engine" "$r" "$achieved" "$ok" "$failed" "$retrans" "$stray" "$drops" "$per_call" "$verdict" >&2
      if [ "$verdict" = clean ]; then
        sleep 2 # let the step's last transactions end
        break
      fi
      # A failed step leaves transactions retransmitting towards the UAS
      # ports for up to 32 s; stop the proxy so none of that reaches the
      # next step, and start it afresh for a retry.
      stop_engine "$engine"
      [ "$try" -lt "$retries" ] && "start_$engine"
    done
    if [ "$verdict" = clean ]; then
      best_rate[$engine]=$r
      best_cpu_call[$engine]=$per_call
      best_per_core[$engine]=$per_core
      still+=("$engine")
    fi
  done
  active=("${still[@]}")
done

for engine in "${engines[@]}"; do stop_engine "$engine"; done

echo
echo "| proxy | offered calls/s | achieved | calls ok | failed (UAC+UAS) | retrans | stray | UDP drops | INVITE→200 ms (mean) | proxy CPU s | CPU µs/call | calls per core-s | sipp CPU s | machine busy CPU s | step |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
while read -r engine r achieved ok failed retrans stray drops setup cpu per_call per_core gen busy verdict; do
  echo "| $engine | $r | $achieved | $ok | $failed | $retrans | $stray | $drops | $setup | $cpu | $per_call | $per_core | $gen | $busy | ${verdict//-/ } |"
done <"$results"
echo

# CPU per call of ENGINE at RATE (its clean try; empty when none).
cpu_at() { awk -v e="$1" -v r="$2" '$1 == e && $2 == r && $NF == "clean" { print $11 }' "$results"; }

for engine in "${engines[@]}"; do
  if [ "${best_rate[$engine]}" -gt 0 ]; then
    echo "$engine: highest clean rate ${best_rate[$engine]} calls/s, ${best_cpu_call[$engine]} µs CPU per call (${best_per_core[$engine]} calls per core-second) at that rate"
  else
    echo "$engine: no clean step"
  fi
  if [[ " ${active[*]} " == *" $engine "* ]]; then
    echo "$engine: still clean when the sweep ended, so its figure is a lower bound (raise BENCH_RATES or BENCH_BUDGET)"
  fi
done

if [ ${#engines[@]} = 2 ] && [ "${best_rate[kamailio]}" -gt 0 ]; then
  ref=${best_rate[kamailio]}
  ours=$(cpu_at callgrid "$ref")
  if [ -n "$ours" ] && [ "$ours" -lt "${best_cpu_call[kamailio]}" ]; then
    echo "goal met: callgrid is clean at Kamailio's ${ref} calls/s with $ours µs CPU per call against Kamailio's ${best_cpu_call[kamailio]}"
  elif [ -n "$ours" ]; then
    echo "goal not met: callgrid is clean at Kamailio's ${ref} calls/s but uses $ours µs CPU per call against Kamailio's ${best_cpu_call[kamailio]}"
  else
    both=$(awk '$NF == "clean" { seen[$2 " " $1] = 1 } END { m = 0; for (k in seen) { split(k, a, " "); if (seen[a[1] " callgrid"] && seen[a[1] " kamailio"] && a[1] + 0 > m) m = a[1] + 0 }; print m }' "$results")
    msg="goal not met: callgrid is not clean at Kamailio's ${ref} calls/s"
    if [ "$both" -gt 0 ]; then
      msg="$msg; at $both calls/s, the highest rate both ran clean: callgrid $(cpu_at callgrid "$both") µs, Kamailio $(cpu_at kamailio "$both") µs CPU per call"
    fi
    echo "$msg"
  fi
fi
[ "$stopped_by_budget" = 0 ] || echo "the time budget ended the sweep before every proxy had failed"
