# Shared by the lab scripts (sourced). Set LAB_TAG (the script's name in messages) first.

die() { echo "$LAB_TAG: error: $*" >&2; exit 1; }
say() { echo "$LAB_TAG: $*" >&2; }
now_ms() { date +%s%3N; }
# alive <pid>: running and not a zombie (PID 1 here may reap orphans only every few seconds)
alive() { local st; st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [[ $st != Z && $st != X ]]; }
T0=$(now_ms)
STEP_T=$T0
step_done() { # <step name> <what happened>: prints how long the step took
    local t; t=$(now_ms)
    printf '%s: %-10s %-50s %6d ms\n' "$LAB_TAG" "$1" "$2" $((t - STEP_T)) >&2
    STEP_T=$t
}

# Long-lived daemons must not inherit our descriptors: a caller's `flock LOCK setup.sh`
# lock fd would stay held by dockerd and the plugin long after the caller exited.
close_inherited_fds() {
    local fd
    for fd in /proc/$BASHPID/fd/*; do
        fd=${fd##*/}
        ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
    done
    return 0
}

# The veths' MTU, as CALICO_LIBNETWORK_VETH_MTU sets it for the real plugin (v1.1.1+) and the
# stand-in alike: the host uplink's, so no task's path is larger than the host's (else
# calico-medic rightly reports mtu_mismatch: plugin v1.1.0 left 1500 on a 1400 uplink, calicoctl#610).
UPLINK_DEV=$(ip route get 203.0.113.1 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p' | head -1)
if [[ -n $UPLINK_DEV && -r /sys/class/net/$UPLINK_DEV/mtu ]]; then
    CALICO_LIBNETWORK_VETH_MTU=$(cat "/sys/class/net/$UPLINK_DEV/mtu")
    export CALICO_LIBNETWORK_VETH_MTU
fi

# The calico-medic runtime (issue 23) as the lab registers it with each engine: a runc
# wrapper that adds calico-medic's prestart hook. The tests that use it
# (`docker run --runtime calico-medic`) link their binary as $RUNTIME_DIR/calico-medic-runtime
# (the runtime: `calico-medic runtime …`) and $RUNTIME_DIR/calico-medic (the hook), and write $RUNTIME_DIR/config.toml; the hook appends what it
# saw to $RUNTIME_DIR/trace.jsonl.
RUNTIME_DIR=/run/calico-lab/runtime
# register_runtime <daemon.json> <dockerd pid> <docker command...>: adds the runtime to the
# file (other keys kept) and reloads the engine (SIGHUP reloads `runtimes`) unless it is there.
register_runtime() {
    local file=$1 pid=$2 want cur i
    shift 2
    mkdir -p "$RUNTIME_DIR"
    want=$(jq -c -n --arg d "$RUNTIME_DIR" '{path: ($d + "/calico-medic-runtime"), runtimeArgs: ["runtime",
        "--calico-medic-hook=" + $d + "/calico-medic", "--calico-medic-config=" + $d + "/config.toml",
        "--calico-medic-trace=" + $d + "/trace.jsonl"]}')
    cur='{}'
    [[ -s $file ]] && cur=$(cat "$file")
    if [[ $(jq -c '.runtimes["calico-medic"] // empty' <<<"$cur") == "$want" ]] \
        && "$@" info -f '{{json .Runtimes}}' 2>/dev/null | grep -q calico-medic; then
        return 1
    fi
    jq --argjson r "$want" '.runtimes = ((.runtimes // {}) + {"calico-medic": $r})' <<<"$cur" >"$file.new"
    mv "$file.new" "$file"
    kill -HUP "$pid"
    for i in $(seq 1 100); do
        "$@" info -f '{{json .Runtimes}}' 2>/dev/null | grep -q calico-medic && return 0
        sleep 0.1
    done
    die "the engine did not load the calico-medic runtime from $file"
}

# ---------------------------------------------------------------- Calico's real libnetwork plugin
# (tests/lab/calico-real/: libnetwork-plugin v1.1.3, built by its build.sh; setup.sh runs one for
# 20.10, engine26.sh one for engine 2: its CreateEndpoint asks "the" Docker of $DOCKER_HOST for the
# network's name, so one process serves one engine.)

plugin_activate() { # <socket>: a plugin answers Plugin.Activate there
    curl -sf --max-time 2 --unix-socket "$1" -X POST http://plugin/Plugin.Activate >/dev/null 2>&1
}

# real_plugin_pid <dir>: the pid in <dir>/plugin.pid when it is a live libnetwork-plugin
real_plugin_pid() {
    local p
    p=$(cat "$1/plugin.pid" 2>/dev/null) || return 1
    [[ $p =~ ^[0-9]+$ ]] && alive "$p" || return 1
    [[ $(readlink "/proc/$p/exe" 2>/dev/null) == */libnetwork-plugin-* ]] || return 1
    echo "$p"
}

# The real stack (Calico's plugin and real Felix) runs as its own Calico node with its own host
# interface prefix, so that real Felix programs and polices only the real plugin's endpoints
# (Felix owns every interface that starts with its prefix: it would delete the stand-in's routes).
REAL_IFPREFIX=calr
real_node_name() { echo "$(cat /run/calico-lab/calico-hostname)-real"; }

# ensure_real_plugin <dir> <binary> <driver> <ipam driver> <docker host> <etcd url> <calico node name>
# Runs Calico's plugin (pidfile and log in <dir>) serving /run/docker/plugins/<driver>.sock and
# <ipam driver>.sock, host veths named $REAL_IFPREFIX<id> (patch 04); restarts it when its binary
# or its environment differ.
ensure_real_plugin() {
    local dir=$1 bin=$2 name=$3 ipam=$4 dhost=$5 etcd=$6 node=$7 pid exe i
    local sock=/run/docker/plugins/$name.sock isock=/run/docker/plugins/$ipam.sock
    local envs=("ETCD_ENDPOINTS=$etcd" "HOSTNAME=$node" "DOCKER_HOST=$dhost" CALICO_LIBNETWORK_SCOPE=local
        CALICO_LIBNETWORK_IPV6_GATEWAY=false "CALICO_LIBNETWORK_PLUGIN_NAME=$name"
        "CALICO_LIBNETWORK_IPAM_PLUGIN_NAME=$ipam" "CALICO_LIBNETWORK_HOST_IFPREFIX=$REAL_IFPREFIX")
    [[ -n ${CALICO_LIBNETWORK_VETH_MTU:-} ]] && envs+=("CALICO_LIBNETWORK_VETH_MTU=$CALICO_LIBNETWORK_VETH_MTU")
    mkdir -p "$dir"
    rp_ok() { plugin_activate "$sock" && plugin_activate "$isock"; }
    rp_env_ok() { # <pid>: every wanted variable in its environment
        local e env
        env=$(tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null) || return 1
        for e in "${envs[@]}"; do grep -qxF -- "$e" <<<"$env" || return 1; done
    }
    if pid=$(real_plugin_pid "$dir"); then
        exe=$(readlink "/proc/$pid/exe" || true)
        if [[ $exe == "$(readlink -f "$bin")" ]] && rp_env_ok "$pid"; then
            rp_ok || die "Calico's plugin $name (pid $pid) is alive but does not answer on $sock"
            step_done real "$name already running (pid $pid)"
            return 0
        fi
        say "Calico's plugin $name ($pid) runs ${exe:-?} with other settings; restarting it"
        kill "$pid"
        for i in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    else
        rp_ok && die "something else serves $sock (no live pid in $dir/plugin.pid)"
    fi
    (close_inherited_fds; exec setsid env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "${envs[@]}" "$bin" \
        >>"$dir/plugin.log" 2>&1 </dev/null) &
    pid=$!
    echo "$pid" >"$dir/plugin.pid"
    for i in $(seq 1 200); do      # up to 10 s
        rp_ok && break
        alive "$pid" || die "Calico's plugin $name exited; see $dir/plugin.log"
        sleep 0.05
    done
    rp_ok || die "Calico's plugin $name does not answer on $sock; see $dir/plugin.log"
    step_done real "$name started (pid $pid, log $dir/plugin.log)"
}

# stop_real_plugin <dir> <driver> <ipam driver> [tag]: stops it and removes its sockets
stop_real_plugin() {
    local pid i
    if pid=$(real_plugin_pid "$1"); then
        kill "$pid"
        for i in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && kill -9 "$pid"
        say "stopped Calico's plugin $2 (pid $pid)"
    fi
    rm -f "/run/docker/plugins/$2.sock" "/run/docker/plugins/$3.sock" "$1/plugin.pid"
}

# ---------------------------------------------------------------- Calico's real Felix 2.6.8
# (tests/lab/calico-real/build-felix.sh) for the real plugin's endpoints: node $(real_node_name),
# interface prefix $REAL_IFPREFIX, IPv4 only, health on 127.0.0.1:9099. Pidfile and log in <dir>.
FELIX_HEALTH=http://127.0.0.1:9099

felix_envs() { # <etcd url> <node>: Felix's environment in the lab
    printf '%s\n' "FELIX_ETCDENDPOINTS=$1" "FELIX_FELIXHOSTNAME=$2" "FELIX_INTERFACEPREFIX=$REAL_IFPREFIX" \
        FELIX_HEALTHENABLED=true FELIX_HEALTHHOST=127.0.0.1 FELIX_IPINIPENABLED=false \
        FELIX_USAGEREPORTINGENABLED=false FELIX_IPV6SUPPORT=false FELIX_LOGFILEPATH=none \
        FELIX_LOGSEVERITYSCREEN=info FELIX_LOGSEVERITYSYS=none FELIX_ROUTEREFRESHINTERVAL=5 \
        FELIX_IPTABLESREFRESHINTERVAL=10
}

real_felix_pid() { # <dir>
    local p
    p=$(cat "$1/felix.pid" 2>/dev/null) || return 1
    [[ $p =~ ^[0-9]+$ ]] && alive "$p" || return 1
    [[ $(readlink "/proc/$p/exe" 2>/dev/null) == */calico-felix-* ]] || return 1
    echo "$p"
}

felix_live() { [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$FELIX_HEALTH/liveness") == 204 ]]; }

# ensure_real_felix <dir> <binary> <etcd url> <node>: runs it (restarts it when its binary or its
# environment differ) and waits until it answers 204 on /liveness
ensure_real_felix() {
    local dir=$1 bin=$2 pid exe i e env
    local -a envs
    mapfile -t envs < <(felix_envs "$3" "$4")
    mkdir -p "$dir"
    if pid=$(real_felix_pid "$dir"); then
        exe=$(readlink "/proc/$pid/exe" || true)
        env=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null || true)
        local same=1
        for e in "${envs[@]}"; do grep -qxF -- "$e" <<<"$env" || same=0; done
        if [[ $exe == "$(readlink -f "$bin")" ]] && ((same)); then
            felix_live || die "Felix (pid $pid) is alive but $FELIX_HEALTH/liveness does not answer 204"
            step_done felix "Felix already running (pid $pid)"
            return 0
        fi
        say "Felix ($pid) runs ${exe:-?} with other settings; restarting it"
        stop_real_felix "$dir"
    fi
    # Felix sets net.ipv4.conf.default.rp_filter=1 when it starts (strict reverse-path filtering
    # for every interface created after it: Docker's bridges too, which breaks the lab's
    # bridge + calico tasks). The host's own value is kept and put back once Felix is up.
    [[ -e $dir/default-rp_filter ]] || cat /proc/sys/net/ipv4/conf/default/rp_filter >"$dir/default-rp_filter"
    (close_inherited_fds; exec setsid env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "${envs[@]}" "$bin" \
        >>"$dir/felix.log" 2>&1 </dev/null) &
    pid=$!
    echo "$pid" >"$dir/felix.pid"
    for i in $(seq 1 200); do      # up to 20 s
        felix_live && break
        alive "$pid" || die "Felix exited; see $dir/felix.log"
        sleep 0.1
    done
    felix_live || die "Felix does not answer on $FELIX_HEALTH/liveness; see $dir/felix.log"
    restore_default_rp_filter "$dir"
    step_done felix "Felix started (pid $pid, log $dir/felix.log)"
}

# restore_default_rp_filter <dir>: the host's net.ipv4.conf.default.rp_filter from before Felix
restore_default_rp_filter() {
    local v
    v=$(cat "$1/default-rp_filter" 2>/dev/null) || return 0
    [[ $v =~ ^[0-2]$ ]] && echo "$v" >/proc/sys/net/ipv4/conf/default/rp_filter
}

# stop_real_felix <dir>: stops it; what it programmed stays (see felix_cleanup)
stop_real_felix() {
    local pid i
    pid=$(real_felix_pid "$1") || return 0
    kill "$pid"
    for i in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -9 "$pid"
    rm -f "$1/felix.pid"
    say "stopped Felix (pid $pid)"
}

# felix_cleanup: removes what Felix programmed in the host's firewall: the jumps from the built-in
# chains to cali-*, the cali-* chains, the cali* ipsets (routes and neighbours go with the veths)
felix_cleanup() {
    local t rule c n=0
    for t in raw mangle filter nat; do
        iptables -t "$t" -S 2>/dev/null | grep -q '^-N cali-' || continue
        while read -r rule; do
            eval "iptables -t $t ${rule/#-A/-D}" && n=$((n + 1))
        done < <(iptables -t "$t" -S | grep -E '^-A [A-Z]+ .*-j cali-')
        for c in $(iptables -t "$t" -S | awk '/^-N cali-/{print $2}'); do iptables -t "$t" -F "$c"; done
        for c in $(iptables -t "$t" -S | awk '/^-N cali-/{print $2}'); do iptables -t "$t" -X "$c"; done
    done
    if command -v ipset >/dev/null; then
        for c in $(ipset list -n 2>/dev/null | grep '^cali'); do ipset destroy "$c" 2>/dev/null || true; done
    fi
    say "removed Felix's iptables chains and ipsets ($n jumps)"
}
