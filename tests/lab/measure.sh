#!/usr/bin/env bash
# Measure `docker run -d` latency on the lab's calico network vs --network none.
#   tests/lab/measure.sh [runs]      (default 10 runs each; needs setup.sh first)
set -euo pipefail
N=${1:-10}
DOCKER=/usr/bin/docker
IMAGE=calico-lab/busybox:latest
[[ $(id -u) = 0 ]] || { echo "measure: must run as root" >&2; exit 1; }

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

measure() { # <network> -> prints per-run ms, one a line
    local net=$1 i t0 t1 names=()
    for i in $(seq 1 "$N"); do
        local name="lab-measure-$net-$i-$$"
        t0=$(date +%s%N)
        "$DOCKER" run -d --name "$name" --label calico-lab=1 --network "$net" "$IMAGE" /bin/sleep 1000000 >/dev/null
        t1=$(date +%s%N)
        names+=("$name")
        echo $(((t1 - t0) / 1000000))
    done
    "$DOCKER" rm -f "${names[@]}" >/dev/null
}

for net in calico-lab none calico-lab none; do
    runs=$(measure "$net")
    printf '%-12s n=%-3s median %4s ms  min %4s  max %4s   (%s)\n' "$net" "$N" \
        "$(median <<<"$runs")" "$(sort -n <<<"$runs" | head -1)" "$(sort -n <<<"$runs" | tail -1)" "$(tr '\n' ' ' <<<"$runs")"
done
