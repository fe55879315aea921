#!/usr/bin/env bash
# Set up the calico-medic lab: Docker engine + etcd (v2 API) + Calico v2.6-like plugin + two
# calico networks, and Calico's real libnetwork plugin v1.1.3 (tests/lab/calico-real/, built
# offline with Debian's Go) with its network calico-lab-real.
#
# Idempotent: every step checks what is already there and only does what is missing.
# Run as root on Debian. Prints the time each step took.
#
#   tests/lab/setup.sh            # set up (or check) the lab
#   tests/lab/setup.sh --selftest # also the calico-selftest driver + networks used by the lab's own tests
#   tests/lab/setup.sh --engine26 # also engine 2, Debian 13's docker.io 26.1 (tests/lab/engine26.sh)
#   tests/lab/setup.sh --bgp      # also the BGP bed: host-2 with real BIRD on both hosts (tests/lab/bgp.sh up)
#
# Environment:
#   CALICO_LAB_BIN      plugin binary (default: <target dir>/debug/calico-lab, built with cargo)
#   CALICO_REAL_BIN     Calico's plugin binary (default: built by tests/lab/calico-real/build.sh,
#                       cached by input hash in ~/.cache/calico-real)
#   CALICO_FELIX_BIN    Calico's Felix 2.6.8 (default: built by tests/lab/calico-real/build-felix.sh)
#   CARGO_TARGET_DIR    cargo target dir (default: <repo>/target)
#   DOCKERD_FLAGS       extra flags for dockerd when this script starts it
#   (the lab's etcd: Debian's etcd-server 3.4 on http://127.0.0.1:2379 with --enable-v2, data in
#   /var/lib/calico-lab/etcd, log /run/calico-lab/etcd.log; the plugin stores endpoints there)
#   (DOCKER_HOST is ignored: this script manages the 20.10 engine on /var/run/docker.sock)
set -euo pipefail
unset DOCKER_HOST DOCKER_CONTEXT

LAB_DIR=/run/calico-lab
PLUGIN_DIR=/run/docker/plugins
DOCKER=/usr/bin/docker           # never /usr/local/bin/docker (28.x client vs 20.10 daemon)
IMAGE=calico-lab/busybox:latest
NET=calico-lab
NET_SUBNET=10.65.0.0/17
NOMAC_NET=calico-lab-nomac
NOMAC_SUBNET=10.65.128.0/17
# Calico's real plugin: driver calico-real / calico-real-ipam, one Calico IP pool (both engines'
# calico-lab-real networks allocate from it through Calico's IPAM, so their addresses never clash).
REAL_NET=calico-lab-real
REAL_POOL=10.68.0.0/16
ETCD_URL=http://127.0.0.1:2379
ETCD_PEER=http://127.0.0.1:2380
ETCD_DATA=/var/lib/calico-lab/etcd
# Calico's name for this host (as calico/node: NODENAME, HOSTNAME, the host name); the plugin's
# keys use it and tests read it from $LAB_DIR/calico-hostname.
CALICO_HOSTNAME=${NODENAME:-${HOSTNAME:-$(cat /proc/sys/kernel/hostname)}}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
[[ $TARGET_DIR = /* ]] || TARGET_DIR=$REPO/$TARGET_DIR
BIN=${CALICO_LAB_BIN:-$TARGET_DIR/debug/calico-lab}

SELFTEST=0 ENGINE26=0 BGP=0
for a in "$@"; do
    case $a in
        --selftest) SELFTEST=1 ;;
        --engine26) ENGINE26=1 ;;
        --bgp) BGP=1 ;;
        -h|--help) sed -n '2,22p' "$0" >&2; exit 0 ;;
        *) echo "setup: unknown argument $a" >&2; exit 2 ;;
    esac
done

LAB_TAG=setup
# shellcheck source=tests/lab/lib.sh
source "$HERE/lib.sh"

[[ $(id -u) = 0 ]] || die "must run as root"
mkdir -p "$LAB_DIR" "$PLUGIN_DIR"

# ---------------------------------------------------------------- packages
need_pkgs=()
command -v dockerd >/dev/null 2>&1 && [[ -x $DOCKER ]] || need_pkgs+=(docker.io)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need_pkgs+=(busybox-static)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v ping >/dev/null 2>&1 || need_pkgs+=(iputils-ping)
command -v jq >/dev/null 2>&1 || need_pkgs+=(jq)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v nsenter >/dev/null 2>&1 || need_pkgs+=(util-linux)
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
# tests/lab/calico-real/build.sh: Go, patch, xz
if [[ -z ${CALICO_REAL_BIN:-} ]]; then
    command -v go >/dev/null 2>&1 || need_pkgs+=(golang-go)
    command -v patch >/dev/null 2>&1 || need_pkgs+=(patch)
    command -v xz >/dev/null 2>&1 || need_pkgs+=(xz-utils)
fi
# Calico's real Felix: what it runs (iptables-save/-restore, ipset, conntrack, net-tools' arp) and
# what tests/lab/calico-real/build-felix.sh needs besides Go (protoc)
command -v iptables-restore >/dev/null 2>&1 || need_pkgs+=(iptables)
command -v ipset >/dev/null 2>&1 || need_pkgs+=(ipset)
command -v conntrack >/dev/null 2>&1 || need_pkgs+=(conntrack)
command -v arp >/dev/null 2>&1 || need_pkgs+=(net-tools)
if [[ -z ${CALICO_FELIX_BIN:-} ]]; then
    command -v go >/dev/null 2>&1 || need_pkgs+=(golang-go)
    command -v protoc >/dev/null 2>&1 || need_pkgs+=(protobuf-compiler)
fi
if ((${#need_pkgs[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt_install() { apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${need_pkgs[@]}"; }
    # apt-get update only when the package lists do not know a package we need
    if ! apt-cache show "${need_pkgs[@]}" >/dev/null 2>&1; then
        apt-get -o DPkg::Lock::Timeout=600 update -q >&2
    fi
    apt_install >&2 || { apt-get -o DPkg::Lock::Timeout=600 update -q >&2 && apt_install >&2; } \
        || die "installing ${need_pkgs[*]} failed"
    step_done packages "installed ${need_pkgs[*]}"
else
    step_done packages "all present"
fi

# ---------------------------------------------------------------- dockerd
docker_up() { timeout 10 "$DOCKER" info >/dev/null 2>&1; }
start_dockerd() { # extra flags...
    say "starting dockerd $* ${DOCKERD_FLAGS:-} (log $LAB_DIR/dockerd.log)"
    # shellcheck disable=SC2086
    (close_inherited_fds; exec setsid dockerd "$@" ${DOCKERD_FLAGS:-} >>"$LAB_DIR/dockerd.log" 2>&1 </dev/null) &
    echo $! >"$LAB_DIR/dockerd.pid"
    local pid=$! i
    for i in $(seq 1 300); do       # up to 30 s
        if [[ -S /var/run/docker.sock ]] && docker_up; then return 0; fi
        alive "$pid" || return 1
        sleep 0.1
    done
    return 1
}
if docker_up; then
    step_done dockerd "already running"
else
    if pgrep -x dockerd >/dev/null; then
        die "a dockerd process exists but '$DOCKER info' fails; see $LAB_DIR/dockerd.log"
    fi
    rm -f /var/run/docker.pid
    if start_dockerd; then
        step_done dockerd "started ($($DOCKER info -f '{{.Driver}}') storage)"
    else
        # overlay2 does not work on every backing filesystem (e.g. overlay-on-overlay): vfs always does
        say "dockerd did not come up with the default storage driver; retrying with vfs"
        kill "$(cat "$LAB_DIR/dockerd.pid")" 2>/dev/null || true
        for _ in $(seq 1 50); do pgrep -x dockerd >/dev/null || break; sleep 0.1; done
        rm -f /var/run/docker.pid
        start_dockerd --storage-driver vfs || die "dockerd does not start; see $LAB_DIR/dockerd.log"
        step_done dockerd "started (vfs storage)"
    fi
fi

# ---------------------------------------------------------------- runtime
mkdir -p /etc/docker
if register_runtime /etc/docker/daemon.json "$(cat /var/run/docker.pid)" "$DOCKER"; then
    step_done runtime "calico-medic runtime registered (/etc/docker/daemon.json)"
else
    step_done runtime "calico-medic runtime registered already"
fi

# ---------------------------------------------------------------- image
if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
    step_done image "$IMAGE present"
else
    BB=/bin/busybox
    [[ -x $BB ]] || die "$BB missing (busybox-static)"
    if ldd "$BB" >/dev/null 2>&1; then die "$BB is dynamically linked; install busybox-static"; fi
    ROOTFS=$(mktemp -d /tmp/calico-lab-rootfs.XXXXXX)
    trap 'rm -rf "$ROOTFS"' EXIT
    mkdir -p "$ROOTFS"/{bin,sbin,etc,tmp,proc,sys,dev,root,mnt/mesos/sandbox}
    chmod 1777 "$ROOTFS/tmp"
    cp "$BB" "$ROOTFS/bin/busybox"
    for a in $("$BB" --list); do
        [[ $a = busybox ]] || ln -sf busybox "$ROOTFS/bin/$a"
    done
    for a in ip ifconfig route arp; do ln -sf ../bin/busybox "$ROOTFS/sbin/$a"; done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$ROOTFS/etc/passwd"
    echo 'root:x:0:' >"$ROOTFS/etc/group"
    tar -C "$ROOTFS" --numeric-owner -c . |
        "$DOCKER" import -c 'CMD ["/bin/sleep","1000000"]' -c 'LABEL calico-lab=1' - "$IMAGE" >/dev/null
    rm -rf "$ROOTFS"; trap - EXIT
    step_done image "built $IMAGE"
fi

# ---------------------------------------------------------------- stale containers
# Lab containers that are not running are left from an earlier run that was killed
# (a reboot stops them; a name a test reuses would then conflict): removed. Running
# ones belong to a run in progress and stay.
stale=$("$DOCKER" ps -aq --filter label=calico-lab=1 --filter status=exited --filter status=created --filter status=dead)
if [[ -n $stale ]]; then
    # shellcheck disable=SC2086
    "$DOCKER" rm -f $stale >/dev/null
    step_done stale "removed $(wc -w <<<"$stale") stopped lab container(s) left from an earlier run"
fi

# ---------------------------------------------------------------- etcd
# Calico's datastore: the v2 API (Calico v2.6 speaks only v2), loopback only.
etcd_up() { curl -sf --max-time 2 "$ETCD_URL/v2/keys/" >/dev/null 2>&1; }
if etcd_up; then
    step_done etcd "already running ($ETCD_URL)"
else
    mkdir -p "$ETCD_DATA"
    chmod 700 "$ETCD_DATA"
    (close_inherited_fds; exec setsid etcd --name calico-lab --data-dir "$ETCD_DATA" --enable-v2 \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "$ETCD_PEER" --initial-advertise-peer-urls "$ETCD_PEER" \
        --initial-cluster "calico-lab=$ETCD_PEER" >>"$LAB_DIR/etcd.log" 2>&1 </dev/null) &
    echo $! >"$LAB_DIR/etcd.pid"
    etcd_pid=$!
    for _ in $(seq 1 200); do       # up to 20 s
        etcd_up && break
        alive "$etcd_pid" || die "etcd exited; see $LAB_DIR/etcd.log"
        sleep 0.1
    done
    etcd_up || die "etcd does not answer on $ETCD_URL; see $LAB_DIR/etcd.log"
    step_done etcd "started (pid $etcd_pid, $ETCD_URL, v2 API)"
fi

# ---------------------------------------------------------------- plugin binary
SRC="$REPO/tests/calico-lab"
if [[ -x $BIN ]] && [[ -z $(find "$SRC/src" "$SRC/Cargo.toml" -newer "$BIN" -print -quit 2>/dev/null) ]]; then
    step_done build "$BIN up to date"
elif [[ -n ${CALICO_LAB_BIN:-} ]]; then
    [[ -x $BIN ]] || die "CALICO_LAB_BIN=$BIN is missing"
    say "warning: CALICO_LAB_BIN=$BIN is older than its sources; using it anyway"
    step_done build "using $BIN"
else
    command -v cargo >/dev/null || die "cargo not found (needed to build the plugin)"
    (cd "$REPO" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build -q -p calico-lab) >&2 || die "cargo build -p calico-lab failed"
    step_done build "built $BIN"
fi

# ---------------------------------------------------------------- Calico's real plugin binary
if [[ -n ${CALICO_REAL_BIN:-} ]]; then
    [[ -x $CALICO_REAL_BIN ]] || die "CALICO_REAL_BIN=$CALICO_REAL_BIN is missing"
    REAL_BIN=$CALICO_REAL_BIN
    step_done real-build "using $REAL_BIN"
else
    REAL_BIN=$("$HERE/calico-real/build.sh") || die "building Calico's libnetwork-plugin (tests/lab/calico-real/build.sh) failed"
    step_done real-build "$REAL_BIN"
fi
if [[ -n ${CALICO_FELIX_BIN:-} ]]; then
    [[ -x $CALICO_FELIX_BIN ]] || die "CALICO_FELIX_BIN=$CALICO_FELIX_BIN is missing"
    FELIX_BIN=$CALICO_FELIX_BIN
    step_done felix-build "using $FELIX_BIN"
else
    FELIX_BIN=$("$HERE/calico-real/build-felix.sh") || die "building Calico's Felix (tests/lab/calico-real/build-felix.sh) failed"
    step_done felix-build "$FELIX_BIN"
fi

# ---------------------------------------------------------------- plugin(s)
# veth_mtu_of <pid>: the CALICO_LIBNETWORK_VETH_MTU a running plugin was started with
veth_mtu_of() { tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | sed -n 's/^CALICO_LIBNETWORK_VETH_MTU=//p'; }
activate() { plugin_activate "$@"; }
# ensure_plugin <state dir> <driver name> <ipam driver name> [extra plugin args]
ensure_plugin() {
    local dir=$1 name=$2 ipam=$3 pid="" exe
    shift 3
    local extra=("$@")
    mkdir -p "$dir"
    local pidfile=$dir/plugin.pid log=$dir/plugin.log
    local sock=$PLUGIN_DIR/$name.sock isock=$PLUGIN_DIR/$ipam.sock
    p_ok() { activate "$sock" && activate "$isock"; }
    p_pid() {
        local p
        p=$(cat "$pidfile" 2>/dev/null) || return 1
        [[ $p =~ ^[0-9]+$ ]] && alive "$p" || return 1
        tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q 'calico-lab plugin' || return 1
        echo "$p"
    }
    p_start() {
        (close_inherited_fds; exec setsid "$BIN" plugin --state-dir "$dir" --name "$name" --ipam-name "$ipam" \
            --pidfile "$pidfile" "${extra[@]}" >>"$log" 2>&1 </dev/null) &
        local np=$!
        for _ in $(seq 1 100); do
            if p_ok; then return 0; fi
            alive "$np" || die "plugin $name exited; see $log"
            sleep 0.05
        done
        die "plugin $name does not answer on $sock; see $log"
    }
    if pid=$(p_pid); then
        exe=$(readlink "/proc/$pid/exe" || true)
        local cmdline; cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
        if [[ $exe == *"(deleted)"* || $exe != "$(readlink -f "$BIN")" || $cmdline != *"${extra[*]:-}"* ||
            $(veth_mtu_of "$pid") != "${CALICO_LIBNETWORK_VETH_MTU:-}" ]]; then
            say "plugin $name ($pid) runs '$cmdline' (${exe:-unknown binary}), want $BIN ${extra[*]:-}; restarting it (its state is kept)"
            kill "$pid"
            for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
            p_start
            step_done plugin "$name restarted (pid $(p_pid))"
        elif p_ok; then
            step_done plugin "$name already running (pid $pid)"
        else
            die "plugin $name pid $pid is alive but does not answer on $sock"
        fi
    else
        p_ok && die "something else serves $sock (no live pid in $pidfile)"
        p_start
        step_done plugin "$name started (pid $(p_pid), log $log)"
    fi
}

# ---------------------------------------------------------------- networks
ensure_network() { # <name> <driver> <subnet> [extra args]
    local name=$1 driver=$2 subnet=$3; shift 3
    local info
    if info=$("$DOCKER" network inspect -f '{{.Driver}} {{.IPAM.Driver}} {{range .IPAM.Config}}{{.Subnet}}{{end}}' "$name" 2>/dev/null); then
        [[ $info == "$driver $driver-ipam $subnet" ]] ||
            die "network $name exists but is '$info', expected '$driver $driver-ipam $subnet' (run teardown.sh)"
        step_done network "$name exists"
    else
        "$DOCKER" network create --driver "$driver" --ipam-driver "$driver-ipam" --subnet "$subnet" \
            --label calico-lab=1 "$@" "$name" >/dev/null
        step_done network "created $name ($subnet${*:+ $*})"
    fi
}

# The main instance keeps its endpoints in etcd, like Calico; the self-test instance below in a
# file (its endpoints are not this host's Calico workloads).
echo "$CALICO_HOSTNAME" >"$LAB_DIR/calico-hostname"
ensure_plugin "$LAB_DIR" calico calico-ipam --etcd-endpoint "$ETCD_URL" --calico-hostname "$CALICO_HOSTNAME"
ensure_network "$NET" calico "$NET_SUBNET"
ensure_network "$NOMAC_NET" calico "$NOMAC_SUBNET" -o calico-lab.omit-mac=true

# Calico's real plugin beside the stand-in: its pool written as calicoctl v1.6 writes it (the
# plugin only allocates from a configured pool), the plugin under the names calico-real /
# calico-real-ipam (its patch 03), scope local and no IPv6 gateway (patch 02: Docker 20.10), the
# same Calico node name as the stand-in. The stand-in's Felix programs the host side of its
# endpoints (they are in the same etcd directory).
REAL_POOL_KEY=/calico/v1/ipam/v4/pool/${REAL_POOL/\//-}
REAL_POOL_JSON="{\"cidr\":\"$REAL_POOL\",\"ipip\":\"\",\"ipip_mode\":\"\",\"masquerade\":false,\"ipam\":true,\"disabled\":false}"
if [[ $(curl -sf --max-time 2 "$ETCD_URL/v2/keys$REAL_POOL_KEY" | jq -r '.node.value // empty') == "$REAL_POOL_JSON" ]]; then
    step_done pool "Calico IP pool $REAL_POOL present"
else
    curl -sf --max-time 2 -X PUT --data-urlencode "value=$REAL_POOL_JSON" "$ETCD_URL/v2/keys$REAL_POOL_KEY" >/dev/null ||
        die "writing the Calico IP pool $REAL_POOL_KEY to $ETCD_URL failed"
    step_done pool "wrote Calico IP pool $REAL_POOL_KEY"
fi
REAL_NODE=$(real_node_name)
echo "$REAL_NODE" >"$LAB_DIR/real-hostname"
ensure_real_plugin "$LAB_DIR/real" "$REAL_BIN" calico-real calico-real-ipam unix:///var/run/docker.sock \
    "$ETCD_URL" "$REAL_NODE"
ensure_network "$REAL_NET" calico-real "$REAL_POOL"

# Calico's real Felix for the real plugin's endpoints (its node, its interface prefix): Felix waits
# for /calico/v1/Ready=true, which calicoctl/calico-node write on a real cluster.
if [[ $(curl -sf --max-time 2 "$ETCD_URL/v2/keys/calico/v1/Ready" | jq -r '.node.value // empty') != true ]]; then
    curl -sf --max-time 2 -X PUT -d value=true "$ETCD_URL/v2/keys/calico/v1/Ready" >/dev/null ||
        die "writing /calico/v1/Ready=true to $ETCD_URL failed"
fi
ensure_real_felix "$LAB_DIR/felix" "$FELIX_BIN" "$ETCD_URL" "$REAL_NODE"
echo "$FELIX_BIN" >"$LAB_DIR/felix/binary"

if ((SELFTEST)); then
    # The lab's own tests break containers on purpose. They use a second instance of the same
    # plugin under another driver name, so that a calico-medic daemon running on this host
    # (which selects containers by the driver name "calico") does not repair them under the
    # tests' feet, and the tests do not disturb it.
    ensure_plugin "$LAB_DIR/selftest" calico-selftest calico-selftest-ipam
    ensure_network calico-selftest calico-selftest 10.66.0.0/17
    ensure_network calico-selftest-nomac calico-selftest 10.66.128.0/17 -o calico-lab.omit-mac=true
fi

printf 'setup: %-10s %-45s %6d ms\n' total "lab ready" $(($(now_ms) - T0)) >&2
if ((ENGINE26)); then
    "$HERE/engine26.sh" || die "engine 2 (tests/lab/engine26.sh) failed"
fi
if ((BGP)); then
    "$HERE/bgp.sh" up || die "the BGP bed (tests/lab/bgp.sh up) failed"
fi
