#!/usr/bin/env bash
# A second Docker engine for the lab: Debian 13's docker.io (26.1, API 1.45) beside Debian 12's
# 20.10 (tests/lab/setup.sh), with its own socket, data root, exec root and bridge, sharing the
# lab's Calico stand-in plugin (one process, found by both engines in /run/docker/plugins), and
# with its own instance of Calico's real plugin (driver calico-real26: that plugin asks the Docker
# of its $DOCKER_HOST for a network's name in CreateEndpoint, so one process serves one engine).
#
#   tests/lab/engine26.sh                     set up (or check) engine 2; idempotent, prints per-step timings
#   tests/lab/engine26.sh --down [--image] [--dockerd]
#                                             remove its lab containers and networks (and its image, and stop
#                                             its dockerd); teardown.sh calls this
#   tests/lab/engine26.sh --purge             --down --image --dockerd, then delete the unpacked package, data
#                                             root and private apt state
#   tests/lab/setup.sh --engine26             the 20.10 lab, then this
#
# Use it:   DOCKER_HOST=unix:///run/calico-lab/docker26.sock /usr/bin/docker ps
#           DOCKER_HOST=unix:///run/calico-lab/docker26.sock cargo test -p calico-medic --test lab_oneoff -- --include-ignored
#
# The package is fetched with apt from the trixie suite through a private sources list and state
# directory (the host's apt configuration and package lists are not touched) and unpacked with
# dpkg-deb -x; nothing is installed. Its dockerd runs as "dockerd26" (a hard link), so the
# `pgrep/pkill -x dockerd` of setup.sh and tests/daemon_ops.rs only ever see the 20.10 engine.
# Containers run through the host's containerd binary and runc: the system containerd
# (/run/containerd/containerd.sock) when one runs, else one that this dockerd supervises under its
# exec root; always in containerd namespace "calico-lab-26", never 20.10's "moby".
#
# Environment:
#   ENGINE26_DIR     package, apt state and data root (default /var/lib/calico-lab/docker26)
#   ENGINE26_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   DOCKERD26_FLAGS  extra flags for this dockerd
#   CALICO_REAL_BIN  Calico's plugin binary (default: tests/lab/calico-real/build.sh's, as setup.sh)
set -euo pipefail
unset DOCKER_HOST DOCKER_CONTEXT # every docker command below names its engine
LAB_TAG=engine26
# shellcheck source=tests/lab/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

LAB_DIR=/run/calico-lab
PLUGIN_DIR=/run/docker/plugins
DOCKER=/usr/bin/docker           # the 20.10 client; it speaks to 26.1 with API 1.41
IMAGE=calico-lab/busybox:latest
E2_DIR=${ENGINE26_DIR:-/var/lib/calico-lab/docker26}
APT_DIR=$E2_DIR/apt
PKG_DIR=$E2_DIR/pkg
DATA_ROOT=$E2_DIR/data
RUN_DIR=$LAB_DIR/docker26
SOCK=$LAB_DIR/docker26.sock
DOCKERD=$PKG_DIR/usr/sbin/dockerd26
MIRROR=${ENGINE26_MIRROR:-http://deb.debian.org/debian}
SUITE=trixie
BRIDGE=lab26br0                  # engine 2's default "bridge" network (20.10 owns docker0)
BRIDGE_CIDR=172.30.26.1/24
CTR_NS=calico-lab-26
# Same network names as on 20.10 (so labctl and the suites need only DOCKER_HOST), other pools.
NET=calico-lab
NET_SUBNET=10.67.0.0/17
NOMAC_NET=calico-lab-nomac
NOMAC_SUBNET=10.67.128.0/17
# Calico's real plugin for engine 2: same pool as 20.10's (one Calico IPAM), its own process.
REAL_NET=calico-lab-real
REAL_POOL=10.68.0.0/16
REAL_DRIVER=calico-real26
REAL_DIR=$LAB_DIR/real26
ETCD_URL=http://127.0.0.1:2379
D2=("$DOCKER" -H "unix://$SOCK")

mode=up rm_image=0 stop_dockerd=0
for a in "$@"; do
    case $a in
        --down) mode=down ;;
        --purge) mode=purge rm_image=1 stop_dockerd=1 ;;
        --image) rm_image=1 ;;
        --dockerd) stop_dockerd=1 ;;
        -h|--help) sed -n '2,34p' "$0" >&2; exit 0 ;;
        *) echo "engine26: unknown argument $a" >&2; exit 2 ;;
    esac
done
if [[ $mode == up ]] && ((rm_image || stop_dockerd)); then
    echo "engine26: --image/--dockerd go with --down" >&2; exit 2
fi

e2_up() { timeout 10 "${D2[@]}" version -f '{{.Server.Version}}' 2>/dev/null; }
# e2_pid: the pid of engine 2's dockerd, if it runs
e2_pid() {
    local p
    p=$(cat "$RUN_DIR/docker.pid" 2>/dev/null) || return 1
    [[ $p =~ ^[0-9]+$ ]] && alive "$p" && [[ $(cat "/proc/$p/comm" 2>/dev/null) == dockerd26 ]] || return 1
    echo "$p"
}

[[ $(id -u) = 0 ]] || die "must run as root"

# ================================================================ down / purge
if [[ $mode != up ]]; then
    rc=0
    if e2_up >/dev/null; then
        ids=$("${D2[@]}" ps -aq --filter label=calico-lab=1)
        if [[ -n $ids ]]; then
            # shellcheck disable=SC2086
            "${D2[@]}" rm -f $ids >/dev/null && say "removed $(wc -w <<<"$ids") lab container(s) on engine 2" || rc=1
        fi
        for net in "$NET" "$NOMAC_NET" "$REAL_NET"; do
            "${D2[@]}" network inspect "$net" >/dev/null 2>&1 || continue
            others=$("${D2[@]}" network inspect -f '{{range $k, $v := .Containers}}{{$v.Name}} {{end}}' "$net")
            if [[ -n ${others// /} ]]; then
                say "NOT removing network $net on engine 2: containers not labelled calico-lab=1 use it: $others"
                rc=1
                continue
            fi
            "${D2[@]}" network rm "$net" >/dev/null && say "removed network $net on engine 2" || rc=1
        done
        if ((rm_image)) && "${D2[@]}" image inspect "$IMAGE" >/dev/null 2>&1; then
            "${D2[@]}" rmi "$IMAGE" >/dev/null && say "removed image $IMAGE on engine 2" || rc=1
        fi
    elif [[ -S $SOCK ]]; then
        say "engine 2 not reachable on $SOCK: skipping its containers and networks"
    fi
    # its real plugin serves engine 2 only: it goes once its network is gone
    if ! e2_up >/dev/null || ! timeout 10 "${D2[@]}" network inspect "$REAL_NET" >/dev/null 2>&1; then
        stop_real_plugin "$REAL_DIR" "$REAL_DRIVER" "$REAL_DRIVER-ipam"
    fi
    if ((stop_dockerd)); then
        if pid=$(e2_pid); then
            kill "$pid"
            for _ in $(seq 1 150); do alive "$pid" || break; sleep 0.1; done
            alive "$pid" && { say "dockerd26 (pid $pid) still running after 15 s"; rc=1; }
            say "stopped engine 2's dockerd (pid $pid)"
        fi
        if ! e2_pid >/dev/null; then
            rm -f "$SOCK" "$RUN_DIR/docker.pid"
            if [[ -e /sys/class/net/$BRIDGE ]]; then ip link del "$BRIDGE" && say "removed bridge $BRIDGE"; fi
        fi
    fi
    if [[ $mode == purge ]]; then
        if e2_pid >/dev/null; then
            say "dockerd26 still runs: not deleting $E2_DIR"; rc=1
        else
            # containers' mounts under the data root are gone with the daemon; never follow into other mounts
            if grep -q " $DATA_ROOT/" /proc/self/mounts; then
                say "mounts remain under $DATA_ROOT: not deleting it"; rc=1
            else
                rm -rf "$E2_DIR" "$RUN_DIR" && say "deleted $E2_DIR and $RUN_DIR"
            fi
        fi
    fi
    exit $rc
fi

# ================================================================ up
mkdir -p "$RUN_DIR" "$E2_DIR"

# ---------------------------------------------------------------- the 20.10 lab underneath
activate() { curl -sf --max-time 2 --unix-socket "$1" -X POST http://plugin/Plugin.Activate >/dev/null 2>&1; }
timeout 10 "$DOCKER" -H unix:///var/run/docker.sock image inspect "$IMAGE" >/dev/null 2>&1 ||
    die "the 20.10 lab is not up (no $IMAGE on /var/run/docker.sock): run tests/lab/setup.sh --engine26"
activate "$PLUGIN_DIR/calico.sock" && activate "$PLUGIN_DIR/calico-ipam.sock" ||
    die "the lab plugin does not answer on $PLUGIN_DIR/calico{,-ipam}.sock: run tests/lab/setup.sh --engine26"
step_done lab "20.10 lab up (image, plugin)"

# ---------------------------------------------------------------- package
pkg_version() { "$DOCKERD" --version 2>/dev/null | sed -n 's/^Docker version \([^,]*\),.*/\1/p'; }
if [[ -x $DOCKERD ]] && [[ -n $(pkg_version) ]]; then
    step_done package "docker.io $(pkg_version) unpacked in $PKG_DIR"
else
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "needs apt-get and dpkg-deb (Debian)"
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $SUITE main" >"$APT_DIR/sources.list"
    APT=(-q -o "Dir::Etc::sourcelist=$APT_DIR/sources.list" -o Dir::Etc::sourceparts=-
        -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache" -o APT::Sandbox::User=root
        -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::CNF::DefaultEnabled=false)
    if ! compgen -G "$APT_DIR/lists/*_dists_${SUITE}_main_binary-*_Packages*" >/dev/null; then
        apt-get "${APT[@]}" update >&2 || die "apt-get update of $SUITE (private lists in $APT_DIR) failed"
    fi
    rm -f "$APT_DIR"/docker.io_*.deb
    (cd "$APT_DIR" && apt-get "${APT[@]}" download "docker.io/$SUITE" >&2) || die "apt-get download docker.io/$SUITE failed"
    deb=$(ls "$APT_DIR"/docker.io_*.deb)
    step_done download "$(basename "$deb") ($(($(stat -c %s "$deb") / 1048576)) MiB)"
    rm -rf "$PKG_DIR.new"
    dpkg-deb -x "$deb" "$PKG_DIR.new" || die "dpkg-deb -x $deb failed"
    ln -f "$PKG_DIR.new/usr/sbin/dockerd" "$PKG_DIR.new/usr/sbin/dockerd26"
    "$PKG_DIR.new/usr/sbin/dockerd26" --version >/dev/null ||
        die "$PKG_DIR.new/usr/sbin/dockerd does not run here (it needs glibc >= 2.34; ldd says: $(ldd --version | head -1))"
    rm -rf "$PKG_DIR"
    mv "$PKG_DIR.new" "$PKG_DIR"
    rm -f "$deb" # unpacked; keep only the lists
    step_done package "unpacked docker.io $(pkg_version) into $PKG_DIR"
fi

# ---------------------------------------------------------------- bridge for engine 2's "bridge" network
if [[ ! -e /sys/class/net/$BRIDGE ]]; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$BRIDGE_CIDR" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    step_done bridge "created $BRIDGE ($BRIDGE_CIDR)"
else
    [[ -d /sys/class/net/$BRIDGE/bridge ]] || die "$BRIDGE exists and is not a bridge"
    ip -4 -o addr show dev "$BRIDGE" | grep -q " ${BRIDGE_CIDR} " || ip addr add "$BRIDGE_CIDR" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    step_done bridge "$BRIDGE present"
fi

# ---------------------------------------------------------------- dockerd26
start_dockerd() { # <storage driver>
    local ctr=() pid i
    # docker-init (--init) comes from PATH: the package's is a link to tini's tini-static,
    # which the host has (a dependency of docker.io 20.10 too).
    # The system containerd when there is one; else dockerd supervises its own (host's binary).
    [[ -S /run/containerd/containerd.sock ]] && ctr=(--containerd /run/containerd/containerd.sock)
    echo '{}' >"$RUN_DIR/daemon.json" # not /etc/docker/daemon.json, which belongs to 20.10
    rm -f "$RUN_DIR/docker.pid"
    say "starting $DOCKERD (log $RUN_DIR/dockerd.log)"
    # shellcheck disable=SC2086
    (close_inherited_fds; exec setsid "$DOCKERD" -H "unix://$SOCK" --data-root "$DATA_ROOT" --exec-root "$RUN_DIR/exec" \
        --pidfile "$RUN_DIR/docker.pid" --config-file "$RUN_DIR/daemon.json" "${ctr[@]}" \
        --containerd-namespace "$CTR_NS" --containerd-plugins-namespace "$CTR_NS-plugins" \
        --storage-driver "$1" --bridge "$BRIDGE" --iptables=false --ip6tables=false --ip-masq=false \
        --userland-proxy-path "$PKG_DIR/usr/sbin/docker-proxy" \
        ${DOCKERD26_FLAGS:-} >>"$RUN_DIR/dockerd.log" 2>&1 </dev/null) &
    pid=$!
    for i in $(seq 1 600); do       # up to 60 s (first start migrates an empty data root)
        if [[ -S $SOCK ]] && e2_up >/dev/null; then return 0; fi
        alive "$pid" || return 1
        sleep 0.1
    done
    return 1
}
if v=$(e2_up); then
    [[ $v == 26.* ]] || die "something else answers on $SOCK: Docker $v"
    step_done dockerd "already running (Docker $v, pid $(e2_pid || echo ?))"
else
    if pid=$(e2_pid); then
        die "dockerd26 (pid $pid) runs but does not answer on $SOCK; see $RUN_DIR/dockerd.log"
    fi
    # The same storage driver as 20.10: it is the one known to work on this backing filesystem.
    driver=$("$DOCKER" -H unix:///var/run/docker.sock info -f '{{.Driver}}')
    start_dockerd "$driver" || die "dockerd26 does not start; see $RUN_DIR/dockerd.log (last lines: $(tail -3 "$RUN_DIR/dockerd.log"))"
    step_done dockerd "started Docker $(e2_up) ($driver storage, pid $(e2_pid))"
fi

# ---------------------------------------------------------------- runtime
if register_runtime "$RUN_DIR/daemon.json" "$(e2_pid)" "${D2[@]}"; then
    step_done runtime "calico-medic runtime registered ($RUN_DIR/daemon.json)"
else
    step_done runtime "calico-medic runtime registered already"
fi

# ---------------------------------------------------------------- image
if "${D2[@]}" image inspect "$IMAGE" >/dev/null 2>&1; then
    step_done image "$IMAGE present"
else
    "$DOCKER" -H unix:///var/run/docker.sock save "$IMAGE" | "${D2[@]}" load -q >/dev/null ||
        die "copying $IMAGE from 20.10 to engine 2 failed"
    step_done image "copied $IMAGE from 20.10 (docker save | docker load)"
fi

# ---------------------------------------------------------------- networks (through the shared plugin)
ensure_network() { # <name> <driver> <subnet> [extra args]
    local name=$1 driver=$2 subnet=$3 info; shift 3
    if info=$("${D2[@]}" network inspect -f '{{.Driver}} {{.IPAM.Driver}} {{range .IPAM.Config}}{{.Subnet}}{{end}}' "$name" 2>/dev/null); then
        [[ $info == "$driver $driver-ipam $subnet" ]] ||
            die "network $name on engine 2 is '$info', expected '$driver $driver-ipam $subnet' (run engine26.sh --down)"
        step_done network "$name exists"
    else
        "${D2[@]}" network create --driver "$driver" --ipam-driver "$driver-ipam" --subnet "$subnet" \
            --label calico-lab=1 "$@" "$name" >/dev/null
        step_done network "created $name ($subnet${*:+ $*})"
    fi
}
ensure_network "$NET" calico "$NET_SUBNET"
ensure_network "$NOMAC_NET" calico "$NOMAC_SUBNET" -o calico-lab.omit-mac=true

# ---------------------------------------------------------------- Calico's real plugin for engine 2
# setup.sh wrote the pool and built the binary (build.sh answers from its cache).
if [[ -n ${CALICO_REAL_BIN:-} ]]; then
    real_bin=$CALICO_REAL_BIN
else
    real_bin=$("$(dirname "${BASH_SOURCE[0]}")/calico-real/build.sh") || die "tests/lab/calico-real/build.sh failed"
fi
ensure_real_plugin "$REAL_DIR" "$real_bin" "$REAL_DRIVER" "$REAL_DRIVER-ipam" "unix://$SOCK" "$ETCD_URL" \
    "$(real_node_name)"
ensure_network "$REAL_NET" "$REAL_DRIVER" "$REAL_POOL"

printf 'engine26: %-10s %-50s %6d ms\n' total "engine 2 ready: DOCKER_HOST=unix://$SOCK" $(($(now_ms) - T0)) >&2
