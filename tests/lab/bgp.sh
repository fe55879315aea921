#!/usr/bin/env bash
# The lab's second Calico host (issue 26): network namespace calico-lab-host2 on a veth to the lab
# host, one Docker-free workload on it as Calico's libnetwork plugin + Felix make them, its node,
# pool, block and endpoint in the lab's etcd as calico/node v2.6 / libcalico-go v1 write them, and
# real BIRD 1.6 (Debian's `bird`) on both hosts speaking BGP as calico/node v2.6's confd configures
# it (AS 64512, full mesh, protocol kernel exporting routes), hold time 9 s, filtered to the lab's
# prefixes: the lab host's BIRD imports and exports to its kernel only 10.70.0.0/16.
#
#   tests/lab/bgp.sh up                 idempotent; prints per-step timings; needs tests/lab/setup.sh's etcd
#   tests/lab/bgp.sh down               BIRDs, namespaces, veth, routes, forward rule, etcd keys it wrote
#   tests/lab/bgp.sh bird stop [--kill|--freeze]   host-2's BIRD only:
#                                         (default) SIGTERM: BIRD's own shutdown, Cease to the peer
#                                         --kill    SIGKILL (a crash: the peer keeps the routes, graceful restart)
#                                         --freeze  SIGSTOP (a hung/unreachable host: the hold timer expires)
#   tests/lab/bgp.sh bird start         host-2's BIRD back (a frozen one is killed first)
#   tests/lab/bgp.sh status             peers (birdc show protocols, both hosts) and routes
#   tests/lab/bgp.sh selftest [--all]   up, then proves peers, route, cross-host ping, stop/start
#                                       (--all: also the --kill and --freeze cases; ≈ 70 s more)
#   tests/lab/bgp.sh forget-node <node> a Calico node's datastore directories (e2e's third host)
#
# Never touches the machine's own routes or interfaces: only labh2, the two namespaces, routes in
# 10.70.0.0/16 with proto bird, labh2's own sysctls and one iptables chain LAB-BGP (FORWARD accept
# for labh2; the FORWARD policy is Docker's DROP). Run as root; the caller holds the lab lock.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_TAG=bgp
# shellcheck source=tests/lab/lib.sh
source "$HERE/lib.sh"

LAB_DIR=/run/calico-lab
BGP_DIR=$LAB_DIR/bgp
H2_DIR=$BGP_DIR/host2
ETCD_URL=${CALICO_LAB_ETCD:-http://127.0.0.1:2379}
ETCD_KEYS=$ETCD_URL/v2/keys

NS_H2=calico-lab-host2            # host-2's network namespace; also its Calico node name
H2_NODE=calico-lab-host2
NS_W1=calico-lab-h2w1             # the workload on host-2
LINK=labh2                        # lab host side of the host-1 ↔ host-2 link (eth0 in host-2)
HOST_IP=10.71.255.1
H2_IP=10.71.255.2
LINK_NET=10.71.255.0/30
POOL=10.70.0.0/16
BLOCK=10.70.1.0/26
W1_IP=10.70.1.1                   # ordinal 1 of the block
W1_ORDINAL=1
W1_MAC=ee:ee:ee:ee:ee:ee
W1_VETH=calih2w1
W1_PROFILE=calico-lab
W1_ID=$(printf '%s' "$NS_W1" | sha256sum | cut -c1-64)   # the endpoint id (Docker's are 64 hex too)
AS=64512
HOLD=9
KEEPALIVE=3
FWD_CHAIN=LAB-BGP                 # not cali-*: Felix and teardown.sh own those
HOST_PROTO=Mesh_${H2_IP//./_}     # the peer as the lab host's BIRD names it
H2_PROTO=Mesh_${HOST_IP//./_}
HOST_CONF=$BGP_DIR/bird.conf HOST_SOCK=$BGP_DIR/bird.ctl HOST_PID=$BGP_DIR/bird.pid HOST_LOG=$BGP_DIR/bird.log
H2_CONF=$H2_DIR/bird.conf H2_SOCK=$H2_DIR/bird.ctl H2_PID=$H2_DIR/bird.pid H2_LOG=$H2_DIR/bird.log
KEYS_FILE=$BGP_DIR/etcd-created    # keys that existed before `up` are not ours to delete
BIRD=/usr/sbin/bird
BIRDC=/usr/sbin/birdc
MTU=${CALICO_LIBNETWORK_VETH_MTU:-1500}   # lib.sh: the uplink's, as the lab's veths

[[ $(id -u) = 0 ]] || die "must run as root"

in_h2() { ip netns exec "$NS_H2" "$@"; }
in_w1() { ip netns exec "$NS_W1" "$@"; }
ns_exists() { [[ -e /run/netns/$1 ]]; }

# ------------------------------------------------------------------------------------ etcd
etcd_get() { curl -sf --max-time 2 "$ETCD_KEYS$1" | jq -r '.node.value // empty'; }
etcd_put() { # <key> <value>
    curl -sf --max-time 2 -X PUT --data-urlencode "value=$2" "$ETCD_KEYS$1" >/dev/null ||
        die "writing $1 to $ETCD_URL failed"
}
etcd_del() { curl -sf --max-time 2 -X DELETE "$ETCD_KEYS$1" >/dev/null 2>&1; }
forget_node() { # <node>: its datastore directories (node, BGP, IPAM affinities, Felix); prints how many were there
    local k n=0
    for k in v1/host bgp/v1/host ipam/v2/host felix/v1/host; do
        etcd_del "/calico/$k/$1?recursive=true" && n=$((n + 1))
    done
    echo "$n"
}
# ensure_key <key> <value>: writes it unless it holds that value; remembers keys it created
ensure_key() {
    local cur
    if cur=$(curl -sf --max-time 2 "$ETCD_KEYS$1"); then
        [[ $(jq -r '.node.value // empty' <<<"$cur") == "$2" ]] && return 1
    else
        echo "$1" >>"$KEYS_FILE"
    fi
    etcd_put "$1" "$2"
}
# ensure_default <key> <value>: written only when absent (calico/node's defaults)
ensure_default() {
    curl -sf --max-time 2 "$ETCD_KEYS$1" >/dev/null && return 1
    echo "$1" >>"$KEYS_FILE"
    etcd_put "$1" "$2"
}

lab_node() { cat "$LAB_DIR/calico-hostname" 2>/dev/null || die "$LAB_DIR/calico-hostname missing: run tests/lab/setup.sh"; }

block_json() { # libcalico-go v1's block with only the workload's ordinal allocated
    local allocations unallocated
    # ordinal 0 went first (libcalico-go hands out the front of `unallocated`) and was released
    # (a released ordinal goes to the end): [2..63, 0]
    allocations=$(jq -c -n --argjson o "$W1_ORDINAL" '[range(64) | if . == $o then 0 else null end]')
    unallocated=$(jq -c -n --argjson o "$W1_ORDINAL" '[range(64) | select(. != $o and . != 0)] + [0]')
    printf '{"cidr":"%s","affinity":"host:%s","strictAffinity":false,"allocations":%s,"unallocated":%s,"attributes":[{"handle_id":null,"secondary":null}]}' \
        "$BLOCK" "$H2_NODE" "$allocations" "$unallocated"
}

endpoint_key() { echo "/calico/v1/host/$H2_NODE/workload/libnetwork/libnetwork/endpoint/$W1_ID"; }
endpoint_json() {
    printf '{"state":"active","name":"%s","active_instance_id":"","mac":"%s","profile_ids":["%s"],"ipv4_nets":["%s/32"],"ipv6_nets":[]}' \
        "$W1_VETH" "$W1_MAC" "$W1_PROFILE" "$W1_IP"
}

ensure_etcd() {
    curl -sf --max-time 2 "$ETCD_KEYS/" >/dev/null || die "the lab's etcd does not answer on $ETCD_URL (tests/lab/setup.sh)"
    local node n=0 k v
    node=$(lab_node)
    touch "$KEYS_FILE"
    # tests/prometheus/e2e.sh's third host, if a killed run left it (its trap removes it):
    # the bed's tests count the other hosts exactly.
    forget_node calico-lab-e2e-host3 >/dev/null
    # calico/node's startup defaults (only when absent)
    ensure_default /calico/bgp/v1/global/as_num "$AS" && n=$((n + 1))
    ensure_default /calico/bgp/v1/global/node_mesh '{"enabled":true}' && n=$((n + 1))
    # The nodes as libcalico-go v1 stores a Node (toNodeComponents): metadata, BGP addresses, the
    # host IP Felix reads (bird_ip), the BGP network.
    local pairs=(
        "/calico/v1/host/$H2_NODE/metadata" '{}'
        "/calico/bgp/v1/host/$H2_NODE/ip_addr_v4" "$H2_IP"
        "/calico/bgp/v1/host/$H2_NODE/ip_addr_v6" ''
        "/calico/bgp/v1/host/$H2_NODE/network_v4" "$LINK_NET"
        "/calico/v1/host/$H2_NODE/bird_ip" "$H2_IP"
        "/calico/bgp/v1/host/$node/ip_addr_v4" "$HOST_IP"
        "/calico/v1/host/$node/bird_ip" "$HOST_IP"
        # the pool as calicoctl v1.6 writes it (setup.sh's 10.68.0.0/16 alike)
        "/calico/v1/ipam/v4/pool/${POOL/\//-}" "{\"cidr\":\"$POOL\",\"ipip\":\"\",\"ipip_mode\":\"\",\"masquerade\":false,\"ipam\":true,\"disabled\":false}"
        # host-2's block: affinity key and block (libcalico-go v1)
        "/calico/ipam/v2/host/$H2_NODE/ipv4/block/${BLOCK/\//-}" '{}'
        "/calico/ipam/v2/assignment/ipv4/block/${BLOCK/\//-}" "$(block_json)"
        # the workload's endpoint as the libnetwork plugin writes it
        "$(endpoint_key)" "$(endpoint_json)"
    )
    local i
    for ((i = 0; i < ${#pairs[@]}; i += 2)); do
        k=${pairs[i]} v=${pairs[i + 1]}
        ensure_key "$k" "$v" && n=$((n + 1))
    done
    sort -u "$KEYS_FILE" -o "$KEYS_FILE"
    step_done etcd "$n key(s) written ($((${#pairs[@]} / 2 + 2)) checked)"
}

# ------------------------------------------------------------------------------------ package
ensure_bird_pkg() {
    if [[ -x $BIRD && -x $BIRDC ]]; then
        step_done package "bird $($BIRD --version 2>&1 | awk '{print $NF}') present"
    else
        export DEBIAN_FRONTEND=noninteractive
        # Debian's policy-rc.d (exit 101 in containers) keeps the package's own services from
        # starting; they are masked below in any case.
        apt-cache show bird >/dev/null 2>&1 || apt-get -o DPkg::Lock::Timeout=600 update -q >&2
        apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends bird >&2 || die "installing bird failed"
        step_done package "installed bird $($BIRD --version 2>&1 | awk '{print $NF}')"
    fi
    # The package's BIRDs (/etc/bird/bird{,6}.conf, /run/bird/) must never run here: ours have
    # their own configs, pid files and sockets.
    local u p
    for u in bird bird6; do
        if [[ -e /lib/systemd/system/$u.service && $(readlink "/etc/systemd/system/$u.service" 2>/dev/null) != /dev/null ]]; then
            deb-systemd-helper disable "$u.service" >/dev/null 2>&1 || true
            mkdir -p /etc/systemd/system
            ln -sfn /dev/null "/etc/systemd/system/$u.service"      # what `systemctl mask` does
            say "masked $u.service"
        fi
        if [[ -x /etc/init.d/$u ]] && ls /etc/rc[2345].d/S*"$u" >/dev/null 2>&1; then
            update-rc.d "$u" disable >/dev/null 2>&1 && say "disabled /etc/init.d/$u"
        fi
        p=$(cat "/run/bird/$u.pid" 2>/dev/null || true)
        if [[ $p =~ ^[0-9]+$ ]] && alive "$p" && [[ $(readlink "/proc/$p/exe") == /usr/sbin/$u ]] &&
            tr '\0' ' ' <"/proc/$p/cmdline" | grep -qv "$BGP_DIR"; then
            kill "$p" && say "stopped the package's $u (pid $p)"
        fi
    done
}

# ------------------------------------------------------------------------------------ namespaces
ensure_links() {
    local did=()
    ns_exists "$NS_H2" || { ip netns add "$NS_H2"; did+=("netns $NS_H2"); }
    ns_exists "$NS_W1" || { ip netns add "$NS_W1"; did+=("netns $NS_W1"); }
    in_h2 ip link set lo up
    in_w1 ip link set lo up
    if ! ip link show "$LINK" >/dev/null 2>&1; then
        ip link add "$LINK" mtu "$MTU" type veth peer name eth0 mtu "$MTU" netns "$NS_H2"
        did+=("veth $LINK")
    fi
    in_h2 ip link show eth0 >/dev/null 2>&1 || die "$LINK exists but host-2 has no eth0 (run bgp.sh down)"
    ip addr replace "$HOST_IP/30" dev "$LINK"
    ip link set "$LINK" up
    in_h2 ip addr replace "$H2_IP/30" dev eth0
    in_h2 ip link set eth0 up
    in_h2 ip route replace default via "$HOST_IP" dev eth0
    in_h2 sysctl -qw net.ipv4.ip_forward=1
    # The lab host forwards a task's packets (cali… → labh2) and the replies: labh2's own
    # sysctls only (the host's ip_forward is Docker's, already 1).
    [[ $(cat /proc/sys/net/ipv4/ip_forward) == 1 ]] || die "net.ipv4.ip_forward is 0 on the lab host (dockerd sets it); not changing it"
    sysctl -qw "net.ipv4.conf.$LINK.forwarding=1" "net.ipv4.conf.$LINK.rp_filter=2"
    # Docker's FORWARD policy is DROP; Felix's chain only accepts its own interfaces.
    if ! iptables -w -S "$FWD_CHAIN" >/dev/null 2>&1; then
        iptables -w -N "$FWD_CHAIN"
        did+=("iptables $FWD_CHAIN")
    fi
    iptables -w -C "$FWD_CHAIN" -i "$LINK" -j ACCEPT 2>/dev/null || iptables -w -A "$FWD_CHAIN" -i "$LINK" -j ACCEPT
    iptables -w -C "$FWD_CHAIN" -o "$LINK" -j ACCEPT 2>/dev/null || iptables -w -A "$FWD_CHAIN" -o "$LINK" -j ACCEPT
    iptables -w -C FORWARD -j "$FWD_CHAIN" 2>/dev/null || iptables -w -I FORWARD -j "$FWD_CHAIN"
    step_done links "${did[*]:-all present} ($LINK $HOST_IP ↔ $NS_H2 eth0 $H2_IP)"
}

# The workload as Calico's libnetwork plugin (cali0, /32, the two routes) and Felix (proxy ARP,
# /32 route, PERMANENT neighbour) program a container and its host side.
ensure_workload() {
    local did=""
    if ! in_w1 ip link show cali0 >/dev/null 2>&1; then
        in_h2 ip link del "$W1_VETH" 2>/dev/null || true
        ip link add "$W1_VETH" mtu "$MTU" netns "$NS_H2" type veth peer name cali0 mtu "$MTU" netns "$NS_W1"
        did="created"
    fi
    in_h2 ip link show "$W1_VETH" >/dev/null 2>&1 || die "$NS_W1 has cali0 but host-2 has no $W1_VETH (run bgp.sh down)"
    in_w1 ip link set cali0 address "$W1_MAC"
    in_w1 ip addr replace "$W1_IP/32" dev cali0
    in_w1 ip link set cali0 up
    in_w1 ip route replace 169.254.1.1 dev cali0 scope link
    in_w1 ip route replace default via 169.254.1.1 dev cali0
    in_h2 sysctl -qw "net.ipv4.conf.$W1_VETH.proxy_arp=1" "net.ipv4.neigh.$W1_VETH.proxy_delay=0" \
        "net.ipv4.conf.$W1_VETH.rp_filter=1" "net.ipv4.conf.$W1_VETH.forwarding=1"
    in_h2 ip link set "$W1_VETH" up
    in_h2 ip route replace "$W1_IP" dev "$W1_VETH" scope link
    in_h2 ip neigh replace "$W1_IP" lladdr "$W1_MAC" dev "$W1_VETH" nud permanent
    step_done workload "${did:-present} $NS_W1 cali0 $W1_IP ($W1_MAC) ↔ $W1_VETH"
}

# ------------------------------------------------------------------------------------ BIRD
# The configurations: calico/node v2.6's confd templates (bird.cfg.mesh.template, bird_aggr,
# bird_ipam) rendered for the two nodes, with the lab's changes marked "LAB:".
conf_head() { # <conf> <router id> <node>
    cat <<EOF
# Generated by tests/lab/bgp.sh (calico-lab BGP bed) for node $3: calico/node v2.6's bird.cfg
# (mesh template) with bird_aggr.cfg and bird_ipam.cfg as confd renders them; lab changes marked "LAB:".
log "$(dirname "$1")/bird.log" all;   # LAB: calico/node runs bird -d (log to stderr)
router id $2;

EOF
}

common_conf() { # <router id> <peer ip> <peer protocol> <kernel import filter> <bgp import> <direct interface> <peer node>
    cat <<EOF
# bird_ipam.cfg: LAB: calico_ipip accepts every route (and sets Calico BIRD's krt_tunnel, which
# Debian's BIRD does not have); here only the lab pool reaches the kernel
filter calico_ipip {
  if ( net ~ $POOL ) then {
    accept;
  }
  reject;
}
filter calico_pools {
  calico_aggr();
  if ( net ~ $POOL ) then {
    accept;
  }
  reject;
}
filter lab_pool {                 # LAB: Calico imports everything
  if ( net ~ $POOL ) then accept;
  reject;
}

# Configure synchronization between routing tables and kernel.
protocol kernel {
  learn;             # Learn all alien routes from the kernel
  persist;           # Don't remove routes on bird shutdown
  scan time 2;       # Scan kernel routing table every 2 seconds
  import filter $4;  # LAB: import all
  export filter calico_ipip; # Default is export none
  graceful restart;  # Turn on graceful restart to reduce potential flaps in
                     # routes when reloading BIRD configuration.
}

# Watch interface up/down events.
protocol device {
  debug { states };
  scan time 2;    # Scan interfaces every 2 seconds
}

# LAB: Calico's is interface -"cali*", "*"; here only the link between the hosts, so that the
# peer's next hop resolves (gateway recursive) and nothing else of the machine enters BIRD
protocol direct {
  debug { states };
  interface "$6";
}

# Template for all BGP clients
template bgp bgp_template {
  debug { states };
  description "Connection to BGP peer";
  local as $AS;
  multihop;
  gateway recursive; # This should be the default, but just in case.
  import $5;         # LAB: import all
  export filter calico_pools;  # Only want to export routes for workloads.
  next hop self;     # Disable next hop processing and always advertise our
                     # local address as nexthop
  source address $1;  # The local address we use for the TCP connection
  add paths on;
  graceful restart;  # See comment in kernel section about graceful restart.
  hold time $HOLD;   # LAB: BIRD's default 240
  keepalive time $KEEPALIVE; # LAB: default hold time / 3
}

# ------------- Node-to-node mesh -------------
# For peer /host/$7/ip_addr_v4
protocol bgp $3 from bgp_template {
  neighbor $2 as $AS;
}
EOF
}

host_conf() {
    conf_head "$HOST_CONF" "$HOST_IP" "$(lab_node)"
    cat <<EOF
# LAB: listen on the lab link only, not on the machine's own addresses (BIRD 1.x default: any)
listen bgp address $HOST_IP;

# bird_aggr.cfg: the lab host has no block in the lab pool
# No static routes configured.
function calico_aggr ()
{
}

EOF
    common_conf "$HOST_IP" "$H2_IP" "$HOST_PROTO" lab_pool "filter lab_pool" "$LINK" "$H2_NODE"
}

h2_conf() {
    conf_head "$H2_CONF" "$H2_IP" "$H2_NODE"
    cat <<EOF
# bird_aggr.cfg: host-2's block (/calico/ipam/v2/host/$H2_NODE/ipv4/block/${BLOCK/\//-})
protocol static {
   route $BLOCK blackhole;
}

# Aggregation of routes on this host; export the block, nothing beneath it.
function calico_aggr ()
{
  if ( net = $BLOCK ) then { accept; }
  if ( net ~ $BLOCK ) then { reject; }
}

EOF
    common_conf "$H2_IP" "$HOST_IP" "$H2_PROTO" lab_pool none eth0 "$(lab_node)"
}

bird_pid() { # <pidfile> <conf>: the pid of our BIRD with that config
    local p
    p=$(cat "$1" 2>/dev/null) || return 1
    [[ $p =~ ^[0-9]+$ ]] && alive "$p" || return 1
    [[ $(readlink "/proc/$p/exe" 2>/dev/null) == "$BIRD" ]] || return 1
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "-c $2 " || return 1
    echo "$p"
}
frozen() { [[ $(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) == T ]]; }

stop_bird() { # <pidfile> <conf> <name> [signal]
    local p i sig=${4:-TERM}
    p=$(bird_pid "$1" "$2") || { rm -f "$1"; return 0; }
    frozen "$p" && sig=KILL
    kill -"$sig" "$p"
    for i in $(seq 1 50); do alive "$p" || break; sleep 0.1; done
    alive "$p" && kill -KILL "$p"
    rm -f "$1"
    say "stopped $3's BIRD (pid $p, SIG$sig)"
}

start_bird() { # <name> <conf> <sock> <pidfile> [netns]
    local name=$1 conf=$2 sock=$3 pidfile=$4 ns=${5:-} i p
    local cmd=("$BIRD" -c "$conf" -s "$sock" -P "$pidfile")
    [[ -n $ns ]] && cmd=(ip netns exec "$ns" "${cmd[@]}")
    "$BIRD" -p -c "$conf" || die "$conf does not parse"
    rm -f "$pidfile"
    # BIRD daemonizes; it must not inherit the caller's lock descriptor
    (close_inherited_fds; exec setsid "${cmd[@]}" </dev/null >>"$(dirname "$conf")/bird.stderr" 2>&1) ||
        die "$name's BIRD did not start; see $(dirname "$conf")/bird.stderr"
    for i in $(seq 1 50); do
        p=$(bird_pid "$pidfile" "$conf") && [[ -S $sock ]] && "$BIRDC" -s "$sock" show status >/dev/null 2>&1 && break
        sleep 0.1
    done
    p=$(bird_pid "$pidfile" "$conf") || die "$name's BIRD is not running; see $(dirname "$conf")/bird.log"
    echo "$p"
}

# ensure_bird <name> <conf> <sock> <pidfile> <render function> [netns]
ensure_bird() {
    local name=$1 conf=$2 sock=$3 pidfile=$4 render=$5 ns=${6:-} p new
    mkdir -p "$(dirname "$conf")"
    new=$("$render")
    if p=$(bird_pid "$pidfile" "$conf"); then
        if [[ $new == "$(cat "$conf" 2>/dev/null)" ]] && ! frozen "$p"; then
            step_done "bird-$name" "running (pid $p)"
            return 0
        fi
        stop_bird "$pidfile" "$conf" "$name"
    fi
    printf '%s\n' "$new" >"$conf"
    p=$(start_bird "$name" "$conf" "$sock" "$pidfile" "$ns")
    step_done "bird-$name" "started (pid $p${ns:+, netns $ns}, $sock)"
}

peer_state() { # <sock> <protocol>: BIRD's state column and info ("up Established", "start Active", …)
    "$BIRDC" -s "$1" show protocols "$2" 2>/dev/null | awk -v p="$2" '$1 == p {s = $4; $1 = $2 = $3 = $4 = $5 = ""; sub(/^ +/, ""); print s, $0}'
}
established() { [[ $(peer_state "$1" "$2") == "up Established" ]]; }
kernel_route() { ip route show exact "$BLOCK" 2>/dev/null; }
route_ok() { [[ $(kernel_route) == "$BLOCK via $H2_IP dev $LINK proto bird"* ]]; }

wait_for() { # <timeout s> <command...>: polls every 50 ms; prints the ms it took
    local t0 limit=$1; shift
    t0=$(now_ms)
    while ! "$@"; do
        (($(now_ms) - t0 > limit * 1000)) && return 1
        sleep 0.05
    done
    echo $(($(now_ms) - t0))
}

cmd_up() {
    mkdir -p "$H2_DIR"
    ensure_bird_pkg
    if ss -Hltn 'sport = :179' | grep -v -e "$HOST_IP:179" >/dev/null; then
        die "something else listens on TCP port 179 in the host namespace: $(ss -Hltnp 'sport = :179' | tr -s ' ')"
    fi
    local others
    others=$(ip route show proto bird | grep -v "^${POOL%.0.0/16}\." || true)
    [[ -z $others ]] || die "the host has routes with proto bird outside $POOL (another BIRD?); BIRD would prune them: $others"
    ensure_links
    ensure_workload
    ensure_etcd
    # host-2's first: when both start in the same second, both connect when their start delay
    # (5 s) ends and the collision costs ≈ 4 s more; a second apart, the lab host accepts host-2's.
    local h2_pid_before
    h2_pid_before=$(bird_pid "$H2_PID" "$H2_CONF" || true)
    ensure_bird host2 "$H2_CONF" "$H2_SOCK" "$H2_PID" h2_conf "$NS_H2"
    if [[ $(bird_pid "$H2_PID" "$H2_CONF" || true) != "$h2_pid_before" ]] && ! bird_pid "$HOST_PID" "$HOST_CONF" >/dev/null; then
        sleep 1
    fi
    ensure_bird host "$HOST_CONF" "$HOST_SOCK" "$HOST_PID" host_conf
    local ms
    ms=$(wait_for 30 established "$HOST_SOCK" "$HOST_PROTO") ||
        die "$HOST_PROTO not Established after 30 s: $(peer_state "$HOST_SOCK" "$HOST_PROTO") (logs $HOST_LOG, $H2_LOG)"
    established "$H2_SOCK" "$H2_PROTO" || die "host-2's $H2_PROTO is not Established: $(peer_state "$H2_SOCK" "$H2_PROTO")"
    step_done peer "$HOST_PROTO / $H2_PROTO Established (waited $ms ms)"
    ms=$(wait_for 10 route_ok) || die "no kernel route $BLOCK via $H2_IP dev $LINK proto bird: '$(kernel_route)'"
    step_done route "$(kernel_route | tr -s ' ') (waited $ms ms)"
    printf '%s: %-10s %-50s %6d ms\n' "$LAB_TAG" total "bed up" $(($(now_ms) - T0)) >&2
}

cmd_down() {
    stop_bird "$H2_PID" "$H2_CONF" host2
    stop_bird "$HOST_PID" "$HOST_CONF" host
    rm -f "$HOST_SOCK" "$H2_SOCK"
    # `persist`: the kernel routes stay when BIRD stops; only ours (proto bird, the lab pool)
    if [[ -n $(ip route show root "$POOL" proto bird) ]]; then
        ip route flush root "$POOL" proto bird && say "removed the lab host's bird routes in $POOL"
    fi
    if iptables -w -C FORWARD -j "$FWD_CHAIN" 2>/dev/null; then iptables -w -D FORWARD -j "$FWD_CHAIN"; fi
    if iptables -w -S "$FWD_CHAIN" >/dev/null 2>&1; then
        iptables -w -F "$FWD_CHAIN" && iptables -w -X "$FWD_CHAIN" && say "removed iptables chain $FWD_CHAIN"
    fi
    if ip link show "$LINK" >/dev/null 2>&1; then ip link del "$LINK" && say "removed veth $LINK"; fi
    local ns
    for ns in "$NS_W1" "$NS_H2"; do
        if ns_exists "$ns"; then ip netns del "$ns" && say "removed netns $ns"; fi
    done
    # etcd: host-2's node, block and affinity, the pool, the endpoint; the lab host's BGP keys and
    # the global defaults only if this script created them
    if curl -sf --max-time 2 "$ETCD_KEYS/" >/dev/null; then
        local k n
        n=$(forget_node "$H2_NODE")
        for k in "/calico/ipam/v2/assignment/ipv4/block/${BLOCK/\//-}" "/calico/v1/ipam/v4/pool/${POOL/\//-}"; do
            etcd_del "$k" && n=$((n + 1))
        done
        if [[ -s $KEYS_FILE ]]; then
            while read -r k; do
                [[ $k == /calico/* ]] && etcd_del "$k" && n=$((n + 1))
            done <"$KEYS_FILE"
        fi
        # parent directories left empty (as libcalico-go removes them)
        local node; node=$(cat "$LAB_DIR/calico-hostname" 2>/dev/null || true)
        [[ -n $node ]] && etcd_del "/calico/bgp/v1/host/$node?dir=true"
        for k in /calico/bgp/v1/host /calico/bgp/v1/global /calico/bgp/v1 /calico/bgp; do etcd_del "$k?dir=true" || true; done
        ((n)) && say "removed $n key(s)/directories from the lab's etcd"
    else
        say "the lab's etcd does not answer: its keys stay (run bgp.sh down again when it does)"
    fi
    rm -rf "$BGP_DIR"
    say "down"
}

cmd_bird() {
    local what=${1:-} mode=${2:-}
    case $what in
        stop)
            local p
            p=$(bird_pid "$H2_PID" "$H2_CONF") || { say "host-2's BIRD is not running"; return 0; }
            case $mode in
                "") stop_bird "$H2_PID" "$H2_CONF" host2 TERM ;;
                --kill) kill -KILL "$p"; say "killed host-2's BIRD (pid $p, SIGKILL)" ;;
                --freeze) kill -STOP "$p"; say "froze host-2's BIRD (pid $p, SIGSTOP; bird start kills it)" ;;
                *) die "usage: bgp.sh bird stop [--kill|--freeze]" ;;
            esac
            ;;
        start)
            [[ -s $H2_CONF ]] || die "no $H2_CONF: run bgp.sh up"
            local p
            if p=$(bird_pid "$H2_PID" "$H2_CONF"); then
                if ! frozen "$p"; then say "host-2's BIRD already running (pid $p)"; return 0; fi
                stop_bird "$H2_PID" "$H2_CONF" host2 KILL
            fi
            p=$(start_bird host2 "$H2_CONF" "$H2_SOCK" "$H2_PID" "$NS_H2")
            say "started host-2's BIRD (pid $p)"
            ;;
        *) die "usage: bgp.sh bird stop [--kill|--freeze] | bird start" ;;
    esac
}

cmd_status() {
    local p
    echo "== lab host ($(cat "$LAB_DIR/calico-hostname" 2>/dev/null)): BIRD $HOST_SOCK"
    if p=$(bird_pid "$HOST_PID" "$HOST_CONF"); then
        echo "pid $p"
        "$BIRDC" -s "$HOST_SOCK" show protocols || true
        "$BIRDC" -s "$HOST_SOCK" show route || true
    else
        echo "not running"
    fi
    echo "kernel routes in $POOL:"
    ip route show root "$POOL" | sed 's/^/  /'
    echo "== host-2 ($NS_H2, node $H2_NODE): BIRD $H2_SOCK"
    if p=$(bird_pid "$H2_PID" "$H2_CONF"); then
        echo "pid $p$(frozen "$p" && echo ' (FROZEN)')"
        frozen "$p" || { "$BIRDC" -s "$H2_SOCK" show protocols || true; "$BIRDC" -s "$H2_SOCK" show route || true; }
    else
        echo "not running"
    fi
    if ns_exists "$NS_H2"; then
        echo "kernel routes:"
        in_h2 ip route show | sed 's/^/  /'
    fi
    if ns_exists "$NS_W1"; then
        echo "== workload $NS_W1: $(in_w1 ip -br addr show cali0 2>/dev/null | tr -s ' ') $(in_w1 cat /sys/class/net/cali0/address 2>/dev/null)"
    fi
}

# ------------------------------------------------------------------------------------ selftest
FAILS=0
ok() { echo "selftest: ok   $*"; }
bad() { echo "selftest: FAIL $*"; FAILS=$((FAILS + 1)); }
check() { # <description> <command...>
    local d=$1; shift
    if "$@"; then ok "$d"; else bad "$d"; fi
}
TASK=""
task_ping() { nsenter -t "$("$HERE/labctl" pid "$TASK")" -n ping -c 1 -W 1 -q "$W1_IP" >/dev/null 2>&1; }
task_ping_retry() { local i; for i in 1 2 3; do task_ping && return 0; done; return 1; }
not() { ! "$@"; }
peer_down_and_route_gone() { ! established "$HOST_SOCK" "$HOST_PROTO" && ! route_ok; }

# stop_case <mode> <peer limit s> <route limit s>: stops host-2's BIRD, measures, starts it again
stop_case() {
    local mode=$1 plimit=$2 rlimit=$3 t0 ms label=${1:-TERM}
    label=${label#--}
    t0=$(now_ms)
    "$0" bird stop $mode 2>&1 | sed 's/^/  /'
    if ms=$(wait_for "$plimit" not established "$HOST_SOCK" "$HOST_PROTO"); then
        ok "[$label] $HOST_PROTO not Established after $ms ms (limit ${plimit} s): $(peer_state "$HOST_SOCK" "$HOST_PROTO")"
    else
        bad "[$label] $HOST_PROTO still Established after ${plimit} s"
    fi
    if [[ $mode == --kill ]]; then
        # graceful restart: the peer's routes stay (stale) until it is back or 120 s passed
        sleep 3
        check "[$label] $BLOCK kept by graceful restart 3 s after the crash: $(kernel_route | tr -s ' ')" route_ok
        check "[$label] the task still reaches $W1_IP (host-2's forwarding is intact)" task_ping_retry
    else
        if ms=$(wait_for "$rlimit" not route_ok); then
            ok "[$label] $BLOCK withdrawn from the kernel $(( $(now_ms) - t0 )) ms after the stop (limit ${rlimit} s)"
        else
            bad "[$label] $BLOCK still in the kernel ${rlimit} s after the stop: $(kernel_route)"
        fi
        check "[$label] the task no longer reaches $W1_IP" not task_ping
    fi
    t0=$(now_ms)
    "$0" bird start 2>&1 | sed 's/^/  /'
    local back=75   # after a hold-timer expiry BIRD waits its error wait time (60 s) before a new session
    if ms=$(wait_for "$back" established "$HOST_SOCK" "$HOST_PROTO"); then
        ok "[$label] $HOST_PROTO Established again $ms ms after bird start"
    else
        bad "[$label] $HOST_PROTO not Established ${back} s after bird start: $(peer_state "$HOST_SOCK" "$HOST_PROTO")"
    fi
    if ms=$(wait_for 10 route_ok); then
        ok "[$label] $BLOCK back in the kernel $(( $(now_ms) - t0 )) ms after bird start"
    else
        bad "[$label] $BLOCK not back: '$(kernel_route)'"
    fi
    check "[$label] the task reaches $W1_IP again" task_ping_retry
}

cmd_selftest() {
    local all=0 t0 ms
    [[ ${1:-} == --all ]] && all=1
    t0=$(now_ms)
    "$0" up || { echo "selftest: FAIL bgp.sh up"; exit 1; }
    ok "up in $(($(now_ms) - t0)) ms"
    check "lab host: $HOST_PROTO Established ($(peer_state "$HOST_SOCK" "$HOST_PROTO"))" established "$HOST_SOCK" "$HOST_PROTO"
    check "host-2: $H2_PROTO Established ($(peer_state "$H2_SOCK" "$H2_PROTO"))" established "$H2_SOCK" "$H2_PROTO"
    check "kernel route: $(kernel_route | tr -s ' ')" route_ok
    check "nothing else of the lab host's BIRD reaches the kernel (proto bird only in $POOL)" \
        bash -c "[[ -z \$(ip route show proto bird | grep -v '^${POOL%.0.0/16}\.') ]]"
    check "host-2's kernel has the block's blackhole (as Calico's BIRD exports it)" \
        bash -c "ip netns exec $NS_H2 ip route show $BLOCK | grep -q '^blackhole $BLOCK proto bird'"
    check "the lab host's BIRD exports nothing to host-2" \
        bash -c "[[ -z \$($BIRDC -s $HOST_SOCK show route export $HOST_PROTO | grep -v '^BIRD') ]]"
    check "host-2 announces only its block: $($BIRDC -s "$HOST_SOCK" show route protocol "$HOST_PROTO" | grep -v '^BIRD' | tr -s ' ')" \
        bash -c "[[ \$($BIRDC -s $HOST_SOCK show route protocol $HOST_PROTO | grep -v '^BIRD' | awk '{print \$1}') == $BLOCK ]]"
    TASK=$("$HERE/labctl" task --app bgp-selftest) || { echo "selftest: FAIL labctl task"; exit 1; }
    trap '"$HERE/labctl" rm "$TASK" >/dev/null 2>&1 || true' EXIT
    check "task $TASK ($("$HERE/labctl" ip "$TASK")) pings $W1_IP on host-2" task_ping_retry
    stop_case "" $((HOLD + 3)) $((HOLD + 3))
    if ((all)); then
        stop_case --kill 3 0
        stop_case --freeze $((HOLD + 3)) $((HOLD + 5))
    fi
    if ((FAILS)); then
        echo "selftest: $FAILS check(s) FAILED"
        exit 1
    fi
    echo "selftest: all checks passed ($(($(now_ms) - t0)) ms)"
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    bird) shift; cmd_bird "$@" ;;
    status) cmd_status ;;
    selftest) shift; cmd_selftest "$@" ;;
    forget-node) [[ -n ${2:-} ]] || die "usage: bgp.sh forget-node <node>"; forget_node "$2" >/dev/null ;;
    -h|--help|help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
