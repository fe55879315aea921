#!/usr/bin/env bash
# Benchmarks (not part of the test command): prints figures for the closing notes.
#   tests/bench/footprint.sh [N_TASKS] [IDLE_SECONDS]
# - one-off `repair --container` wall time (median of 20, each on a freshly broken MAC)
# - daemon reaction: omit-MAC task started → host can ping it (median of 10)
# - idle footprint with N watched tasks: RSS, CPU over IDLE_SECONDS, open sockets
# Uses the release build. Needs root and the lab (tests/lab/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="/usr/bin:$PATH"
N=${1:-20}
IDLE=${2:-60}
LABCTL=tests/lab/labctl
tests/lab/setup.sh >/dev/null
cargo build -q --release -p calico-medic
MEDIC=target/release/calico-medic
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now_ms() { date +%s%3N; }
tasks=()
cleanup() { rm -f "${samples:-}"; [[ -n ${daemon:-} ]] && kill -TERM "$daemon" 2>/dev/null; $LABCTL rm "${tasks[@]}" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== one-off repair wall time"
t=$($LABCTL task --app bench-oneoff); tasks+=("$t")
pid=$($LABCTL pid "$t")
samples=$(mktemp)
for i in $(seq 1 20); do
    nsenter -t "$pid" -n ip link set cali0 address "02:00:00:00:00:$(printf %02x "$i")"
    s=$(date +%s%N); $MEDIC repair --container "$t" >/dev/null 2>&1; e=$(date +%s%N)
    echo $(( (e - s) / 1000 )) >>"$samples"
done
median <"$samples" | awk '{printf "repair --container: median %.1f ms (20 runs)\n", $1/1000}'

echo "== daemon reaction (omit-MAC task: docker run returns → host ping works)"
$MEDIC run --listen 127.0.0.1:19699 2>/tmp/calico-medic-bench.log & daemon=$!
until curl -sf 127.0.0.1:19699/readyz >/dev/null; do sleep 0.1; done
: >"$samples"
for i in $(seq 1 10); do # (no pipeline: the loop must run in this shell to record its tasks)
    t=$($LABCTL task --nomac --app bench-react); tasks+=("$t")
    ip=$($LABCTL ip "$t"); s=$(now_ms)
    until ping -c1 -W0.05 -q "$ip" >/dev/null 2>&1; do :; done
    echo $(( $(now_ms) - s )) >>"$samples"
done
median <"$samples" | awk '{printf "reaction: host ping works a median %d ms after labctl task returned and its IP was looked up (10 tasks)\n", $1}'
curl -s 127.0.0.1:19699/metrics | awk '/^calico_medic_repair_latency_seconds_(sum|count)/ {v[$1]=$2} END {printf "repair_latency (start event → verified repair): mean %.1f ms over %d\n", 1000*v["calico_medic_repair_latency_seconds_sum"]/v["calico_medic_repair_latency_seconds_count"], v["calico_medic_repair_latency_seconds_count"]}'

echo "== idle footprint with $N watched tasks"
for i in $(seq 1 "$N"); do tasks+=("$($LABCTL task --app bench-idle)"); done
sleep 5
ticks() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
c0=$(ticks); sleep "$IDLE"; c1=$(ticks)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$daemon/status")
socks=$(ls -l "/proc/$daemon/fd" | grep -c socket: || true)
watches=$(curl -s 127.0.0.1:19699/metrics | awk '/^calico_medic_watches / {print $2}')
awk -v c=$((c1 - c0)) -v s="$IDLE" -v r="$rss" -v n="${#tasks[@]}" -v k="$socks" -v w="$watches" \
    'BEGIN {printf "idle: %d watched tasks (%s watches incl. the host one), CPU %.2f%% of one core over %ds, RSS %.1f MiB, %d sockets\n", n, w, c/s, s, r/1024, k}'
