#!/usr/bin/env bash
# tests/prometheus/scale.sh — scrape cost of /metrics with many endpoints (issue 4's closing note).
# Not part of the default test run.
#
#   sudo tests/prometheus/scale.sh [N]     # N lab tasks (default 100), started 50 at a time
# Environment: CALICO_MEDIC_BIN (default $CARGO_TARGET_DIR, else target, /debug/calico-medic), SCRAPES (default 15),
#              NOMAC_EVERY (every k-th task is born broken with --nomac, default 5).
#
# Starts `calico-medic run` on a free loopback port, measures GET /metrics (curl time_total and
# size_download, median of SCRAPES scrapes) with no tasks of its own, with N tasks, and after
# removing them again (series must be gone). Prints one summary line per phase.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PATH="/usr/bin:$PATH"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET = /* ]] || TARGET=$ROOT/$TARGET
BIN=${CALICO_MEDIC_BIN:-$TARGET/debug/calico-medic}
LABCTL=$ROOT/tests/lab/labctl
N=${1:-100}
SCRAPES=${SCRAPES:-15}
NOMAC_EVERY=${NOMAC_EVERY:-5}
APP=scale-$$

[[ $(id -u) == 0 ]] || { echo "scale: must run as root" >&2; exit 1; }
[[ -x $BIN ]] || { echo "scale: $BIN not built (cargo build -p calico-medic)" >&2; exit 1; }
out=$("$ROOT/tests/lab/setup.sh" 2>&1) || { echo "$out" >&2; echo "scale: tests/lab/setup.sh failed" >&2; exit 1; }

T=$(mktemp -d /tmp/calico-medic-scale.XXXXXX)
MEDIC_PID=""
cleanup() {
    [[ -n $MEDIC_PID ]] && kill "$MEDIC_PID" 2>/dev/null && wait "$MEDIC_PID" 2>/dev/null
    if [[ -s $T/tasks ]]; then xargs -r -n 50 "$LABCTL" rm <"$T/tasks" >/dev/null 2>&1; fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do ((SECONDS >= deadline)) && return 1; sleep 0.2; done
}
for _ in $(seq 100); do
    PORT=$((20000 + RANDOM % 30000)); ss -Htln "sport = :$PORT" | grep -q . || break
done
URL=http://127.0.0.1:$PORT/metrics

"$BIN" run --listen "127.0.0.1:$PORT" >"$T/medic.log" 2>&1 &
MEDIC_PID=$!
wait_for 30 curl -fsS "http://127.0.0.1:$PORT/readyz" || { echo "scale: agent not ready" >&2; exit 1; }

ours() { curl -fsS "$URL" | grep -c "^calico_medic_endpoint_healthy{.*marathon_app_id=\"/$APP\".*} 1$"; }
measure() { # <phase>
    local i
    curl -fsS -o /dev/null "$URL" # warm up
    for i in $(seq "$SCRAPES"); do
        curl -fsS -o /dev/null -w '%{time_total} %{size_download}\n' "$URL"
    done >"$T/samples"
    curl -fsS "$URL" >"$T/body"
    sort -n "$T/samples" | awk -v phase="$1" -v n="$SCRAPES" \
        -v series="$(grep -vc '^#' "$T/body")" -v eps="$(grep -c '^calico_medic_endpoint_healthy{' "$T/body")" '
        { t[NR] = $1 * 1000; s[NR] = $2 }
        END { printf "%-28s endpoints=%-4d series=%-5d scrape median=%.2f ms (min %.2f, max %.2f, n=%d) size=%d bytes\n",
                     phase, eps, series, t[int((n + 1) / 2)], t[1], t[n], n, s[int((n + 1) / 2)] }'
}

measure "before (lab as found)"

start=$SECONDS
pids=()
for ((i = 1; i <= N; i++)); do
    if ((i % NOMAC_EVERY == 0)); then "$LABCTL" task --app "$APP" --nomac; else "$LABCTL" task --app "$APP"; fi >>"$T/tasks" &
    pids+=($!)
    if ((i % 50 == 0 || i == N)); then wait "${pids[@]}"; pids=(); fi # not a bare `wait`: the agent is a child too
done
started=$(wc -l <"$T/tasks")
echo "started $started tasks (every ${NOMAC_EVERY}th --nomac) in $((SECONDS - start)) s"
wait_for 60 bash -c "[[ \$(curl -fsS '$URL' | grep -c '^calico_medic_endpoint_healthy{.*marathon_app_id=\"/$APP\".*} 1\$') -ge $started ]]" ||
    echo "warning: only $(ours) of $started endpoints healthy after 60 s"
echo "healthy endpoints of ours: $(ours); mac_mismatch repairs: $(curl -fsS "$URL" | awk '/^calico_medic_repairs_total\{fault="mac_mismatch",result="success"\}/ { print $NF }')"
measure "with $started tasks"

start=$SECONDS
xargs -r -n 50 "$LABCTL" rm <"$T/tasks" >/dev/null
: >"$T/tasks"
wait_for 30 bash -c "[[ \$(curl -fsS '$URL' | grep -c 'marathon_app_id=\"/$APP\"') -eq 0 ]]" &&
    echo "removed them in $((SECONDS - start)) s; their series are gone" ||
    echo "warning: $(curl -fsS "$URL" | grep -c "marathon_app_id=\"/$APP\"") series of removed tasks remain"
measure "after removing them"
echo "agent: $(awk '/^process_resident_memory_bytes/ { printf "rss %.1f MiB", $2 / 1048576 }' "$T/body"), binary $(basename "$BIN") ($(file -b "$BIN" | grep -o 'not stripped\|stripped' | head -1), $([[ $BIN == */debug/* ]] && echo debug || echo release) build)"
