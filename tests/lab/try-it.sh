#!/usr/bin/env bash
# Try calico-medic on this machine (root, Debian/Ubuntu): sets up the lab (real Docker
# engine + Calico v2.6 stand-in), starts Marathon-like tasks of which some are broken,
# and shows calico-medic finding them, then the daemon repairing them.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="/usr/bin:$PATH"
[[ $(id -u) == 0 ]] || { echo "run as root (it enters network namespaces and drives Docker)" >&2; exit 1; }

say() { printf '\n\033[1m>>> %s\033[0m\n' "$*"; }
MEDIC=target/debug/calico-medic
LABCTL=tests/lab/labctl

tests/lab/setup.sh
say "building calico-medic"
cargo build -q -p calico-medic

say "starting tasks: 2 healthy, 2 born broken (Docker dropped the plugin's MAC), 1 that loses its routes"
tasks=()
tasks+=("$($LABCTL task --app shop)")
tasks+=("$($LABCTL task --app shop)")
tasks+=("$($LABCTL task --nomac --app billing)")
tasks+=("$($LABCTL task --nomac --app billing)")
tasks+=("$($LABCTL task --app search)")
$LABCTL break "${tasks[4]}" routes >/dev/null
trap '$LABCTL rm "${tasks[@]}" >/dev/null 2>&1 || true' EXIT

ping_all() { for t in "${tasks[@]}"; do printf '  %-44s %s\n' "$t" "$($LABCTL ping "$t" 2>&1 | tail -1)"; done; }
say "host → task reachability"
ping_all

say "calico-medic check (read-only; exit 1 = faults remain)"
$MEDIC check --container "${tasks[0]}" --container "${tasks[1]}" --container "${tasks[2]}" \
    --container "${tasks[3]}" --container "${tasks[4]}" || echo "(exit $?)"

say "calico-medic run (the daemon) for 3 seconds — every repair is one log line"
$MEDIC run --listen 127.0.0.1:19637 &
daemon=$!
sleep 3
curl -s 127.0.0.1:19637/metrics | grep -E '^calico_medic_(endpoints|repairs_total\{.*success)' | grep -v ' 0$' || true
kill -TERM $daemon; wait $daemon || true

say "calico-medic check again"
$MEDIC check --container "${tasks[0]}" --container "${tasks[1]}" --container "${tasks[2]}" \
    --container "${tasks[3]}" --container "${tasks[4]}" && echo "(exit 0: all healthy)"
say "host → task reachability"
ping_all
say "tasks removed; the lab stays up (tests/lab/teardown.sh removes it)"
