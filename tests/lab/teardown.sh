#!/usr/bin/env bash
# Remove what tests/lab/setup.sh (and labctl) created, and nothing else:
# containers labelled calico-lab=1, the networks calico-lab / calico-lab-nomac / calico-lab-real
# (and the self-test ones, calico-selftest / calico-selftest-nomac), the plugin processes (the
# stand-in's and Calico's real one) and their sockets, the 169.254.1.1 sink link, the lab's state
# files, what the plugins wrote to the lab's etcd (this host's endpoints, the real plugin's pool,
# IPAM blocks and affinities, the lab networks' profiles); on engine 2 (tests/lab/engine26.sh),
# when it runs, its lab containers and networks first (while the shared plugin still answers); the
# BGP bed of tests/lab/bgp.sh (host-2, both BIRDs, their routes and etcd keys) when it is up.
#
#   tests/lab/teardown.sh [--image] [--dockerd] [--all]
#     --image    also remove the image calico-lab/busybox:latest
#     --dockerd  also stop dockerd, but only if setup.sh started it (its pid is in /run/calico-lab/dockerd.pid);
#                and engine 2's dockerd (its unpacked package and data root stay: engine26.sh --purge)
#     --all      both
set -uo pipefail
unset DOCKER_HOST DOCKER_CONTEXT # the 20.10 engine on /var/run/docker.sock; engine 2 is handled below

LAB_DIR=/run/calico-lab
PLUGIN_DIR=/run/docker/plugins
DOCKER=/usr/bin/docker
IMAGE=calico-lab/busybox:latest
NETS=(calico-lab calico-lab-nomac calico-lab-real calico-selftest calico-selftest-nomac)
REAL_POOL=10.68.0.0/16
ETCD_KEYS=http://127.0.0.1:2379/v2/keys

rm_image=0 stop_dockerd=0
for a in "$@"; do
    case $a in
        --image) rm_image=1 ;;
        --dockerd) stop_dockerd=1 ;;
        --all) rm_image=1; stop_dockerd=1 ;;
        *) echo "usage: $0 [--image] [--dockerd] [--all]" >&2; exit 2 ;;
    esac
done
[[ $(id -u) = 0 ]] || { echo "teardown: must run as root" >&2; exit 1; }
LAB_TAG=teardown
# shellcheck source=tests/lab/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
rc=0

docker_ok=0
timeout 10 "$DOCKER" info >/dev/null 2>&1 && docker_ok=1

# Engine 2 first: removing its containers and networks needs the shared plugin.
keep_plugin_e2=0
if [[ -S $LAB_DIR/docker26.sock || -e $LAB_DIR/docker26/docker.pid ]]; then
    e2_args=(--down)
    ((rm_image)) && e2_args+=(--image)
    ((stop_dockerd)) && e2_args+=(--dockerd)
    "$(dirname "$0")/engine26.sh" "${e2_args[@]}" || { keep_plugin_e2=1 rc=1; }
fi

# The BGP bed (tests/lab/bgp.sh): host-2, both BIRDs, their routes and etcd keys.
if [[ -d $LAB_DIR/bgp || -e /run/netns/calico-lab-host2 || -e /sys/class/net/labh2 ]]; then
    "$(dirname "$0")/bgp.sh" down || rc=1
fi

keep_plugin=$keep_plugin_e2
if ((docker_ok)); then
    ids=$("$DOCKER" ps -aq --filter label=calico-lab=1)
    if [[ -n $ids ]]; then
        # shellcheck disable=SC2086
        "$DOCKER" rm -f $ids >/dev/null && say "removed $(wc -w <<<"$ids") lab container(s)"
    fi
    for net in "${NETS[@]}"; do
        "$DOCKER" network inspect "$net" >/dev/null 2>&1 || continue
        others=$("$DOCKER" network inspect -f '{{range $k, $v := .Containers}}{{$v.Name}} {{end}}' "$net")
        if [[ -n ${others// /} ]]; then
            say "NOT removing network $net: containers not labelled calico-lab=1 still use it: $others"
            say "keeping the plugin running so Docker can still detach them"
            keep_plugin=1 rc=1
            continue
        fi
        "$DOCKER" network rm "$net" >/dev/null && say "removed network $net" || rc=1
    done
    if ((rm_image)) && "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
        "$DOCKER" rmi "$IMAGE" >/dev/null && say "removed image $IMAGE" || rc=1
    fi
else
    say "dockerd not reachable: skipping containers, networks and image"
fi

stop_plugin() { # <state dir> <driver> <ipam driver>
    local dir=$1 pid
    pid=$(cat "$dir/plugin.pid" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'calico-lab plugin'; then
        kill "$pid"
        for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && kill -9 "$pid"
        say "stopped plugin $2 (pid $pid)"
    fi
    rm -f "$PLUGIN_DIR/$2.sock" "$PLUGIN_DIR/$3.sock" "$dir/plugin.pid" "$dir/datastore.json" "$dir/state.json"
}
if ((!keep_plugin)); then
    stop_plugin "$LAB_DIR/selftest" calico-selftest calico-selftest-ipam
    stop_plugin "$LAB_DIR" calico calico-ipam
    stop_real_plugin "$LAB_DIR/real" calico-real calico-real-ipam
    stop_real_felix "$LAB_DIR/felix"
    felix_cleanup
    restore_default_rp_filter "$LAB_DIR/felix" && rm -f "$LAB_DIR/felix/default-rp_filter"
    if [[ -e /sys/class/net/labgw0 ]]; then ip link del labgw0 && say "removed link labgw0 (169.254.1.1 sink)"; fi
    # The plugin's endpoints in the lab's etcd go with it (the etcd process and its data stay).
    if curl -sf --max-time 2 -X DELETE "http://127.0.0.1:2379/v2/keys/calico/v1/host/$(cat "$LAB_DIR/calico-hostname" 2>/dev/null || hostname)/workload/libnetwork?recursive=true" >/dev/null 2>&1; then
        say "removed this host's libnetwork endpoints from the lab's etcd"
    fi
    # Calico's real plugin: its pool, its IPAM blocks in the pool (and this host's affinities for
    # them), the lab networks' profiles (the stand-in writes those too)
    host=$(cat "$LAB_DIR/real-hostname" 2>/dev/null || echo "$(hostname)-real")
    prefix=${REAL_POOL%%.0.0/16}.
    del() { curl -sf --max-time 2 -X DELETE "$ETCD_KEYS$1" >/dev/null 2>&1; }
    del "/calico/v1/host/$host?recursive=true" && say "removed the real node $host from the lab's etcd"
    del "/calico/felix/v1/host/$host?recursive=true" && say "removed real Felix's status reports from the lab's etcd"
    del "/calico/v1/ipam/v4/pool/${REAL_POOL/\//-}" && say "removed the Calico IP pool $REAL_POOL from the lab's etcd"
    for dir in /calico/ipam/v2/assignment/ipv4/block "/calico/ipam/v2/host/$host/ipv4/block"; do
        for key in $(curl -sf --max-time 2 "$ETCD_KEYS$dir" | jq -r '.node.nodes[]?.key' 2>/dev/null); do
            [[ ${key##*/} == "$prefix"* ]] && del "$key?recursive=true"
        done
    done
    for net in "${NETS[@]}"; do del "/calico/v1/policy/profile/$net?recursive=true"; done
fi

if ((stop_dockerd)); then
    pid=$(cat "$LAB_DIR/dockerd.pid" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]]; then
        kill "$pid"
        for _ in $(seq 1 150); do alive "$pid" || break; sleep 0.1; done
        say "stopped dockerd (pid $pid)"
        rm -f "$LAB_DIR/dockerd.pid"
    else
        say "dockerd was not started by setup.sh; left running"
    fi
fi
exit $rc
