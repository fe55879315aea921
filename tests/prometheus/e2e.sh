#!/usr/bin/env bash
# tests/prometheus/e2e.sh — calico-medic's metrics, dashboard and alert rules against a REAL
# Prometheus scraping a REAL agent in the lab (issue 4, "must show" 1, 2, 3 and 5; the probe half of 4).
#
#   sudo tests/prometheus/e2e.sh          # needs root, the lab (tests/lab/setup.sh is run here,
#                                          # it is idempotent) and a built binary:
#                                          #   cargo build -p calico-medic
# Environment: CALICO_MEDIC_BIN (default $CARGO_TARGET_DIR, else target, /debug/calico-medic), KEEP_TMP=1 keeps the temp dir.
#
# What it does (≈ 25 s on a quiet lab):
#   0. `calico-medic run --dry-run`: a --nomac task is reported (endpoint_fault, skipped repair,
#      endpoint_healthy 0), its ICMP probe fails and it stays unreachable; that agent is stopped;
#   1. starts `calico-medic run` on a free loopback port (resync_interval 2 s, see below): it
#      repairs the dry run's endpoint and the probe succeeds; `promtool check metrics` on real
#      scrapes (fresh, and with healthy, repaired and broken endpoints);
#   2. starts Prometheus (Debian package) on loopback: job "calico-medic", scrape and rule
#      evaluation every 1 s, rule_files = dashboards/alerts.yml;
#   3. starts three lab tasks: one --nomac (born with the omit-MAC fault, the agent must repair it),
#      one healthy, one whose host side is broken afterwards (proxy_arp=0 on its cali<id> veth: a
#      Felix-side fault the agent reports but does not repair) so that "bad state" panels/alerts
#      have something real to show;
#   4. asserts metric values: repairs_total{fault="mac_mismatch",result="success"} +1, the
#      repaired endpoint's endpoint_healthy 1 with its Marathon identity, the ICMP probe succeeding
#      after the repair, the host-side fault present and the endpoint unhealthy;
#   5. evaluates EVERY query of dashboards/calico-medic.json (panels and template variables) and
#      EVERY alert expression through Prometheus' HTTP API and asserts each returns data;
#   6. promtool check rules / test rules; HTTP robustness; per-container series deleted after
#      `labctl rm`; after the agent stops, up == 0 and CalicoMedicAgentDown goes pending.
#
# Template variables are substituted like Grafana does with "All" selected: $instance and $app
# → their allValue `.*`, $job → calico-medic, $__rate_interval → 1m, $__interval → 15s, $__range → 5m.
#
# "Returns data" = status success, at least one series, at least one value that is not NaN.
# Alert expressions are conditions on a bad state and may legitimately be empty while things are
# healthy. Rule used for them: evaluate the expression as written; if it is empty, evaluate its
# "health query" instead and require data from that: the same expression with every comparison
# against a number removed (`x == 0` → `x`, `time() - t > 300` → `time() - t`, `a > 3 and b > 10`
# → `a and b`) and `absent(v)` → `v`. So every alert is proven to read series that exist, with
# the label matchers it really uses, and to evaluate without error in a real Prometheus.
#
# Why resync_interval = 2s: Felix-side faults (proxy_arp) raise no netlink notification the agent
# acts on; they are found by the periodic resync (60 s by default), too slow for a test.
#
# The lab is shared: other tasks (and other agents) may be running, and this agent repairs every
# calico container it sees while it runs. Foreign mac_mismatch repairs done by this agent during the
# measured window are counted from its log and reported. If another calico-medic agent (one this
# script did not start) repairs our task first, that check prints SKIP with its pid instead of
# failing; without another agent the same condition is a FAIL. The agent's log must hold no panic.
#
# Output: one PASS/FAIL/SKIP line per check, last line exactly "N passed, M failed"; exit 0 iff M == 0.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PATH="/usr/bin:$PATH" # Debian's docker client first (matches the 20.10 daemon)

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET = /* ]] || TARGET=$ROOT/$TARGET
BIN=${CALICO_MEDIC_BIN:-$TARGET/debug/calico-medic}
LABCTL=$ROOT/tests/lab/labctl
DOCKER=/usr/bin/docker
DASHBOARD=$ROOT/dashboards/calico-medic.json
ALERTS=$ROOT/dashboards/alerts.yml
ALERTS_TEST=$ROOT/dashboards/alerts_test.yml
JOB=calico-medic

PASS=0
FAIL=0
SKIP=0
T=""
MEDIC_PID=""
DRY_PID=""
PROM_PID=""
IPAM_PID=""
HOST3=calico-lab-e2e-host3   # a third host only in the datastore (across hosts: unrouted, unreachable)
TASKS=()

pass() { echo "PASS: $*"; PASS=$((PASS + 1)); }
fail() { echo "FAIL: $*"; FAIL=$((FAIL + 1)); }
skip() { echo "SKIP: $*"; SKIP=$((SKIP + 1)); }
# other_agents: pids of calico-medic agents in the lab that this script did not start
other_agents() {
    local p out=""
    for p in $(pgrep -f 'calico-medic run'); do
        [[ $p == "$MEDIC_PID" || $p == "$DRY_PID" ]] || out+="$p "
    done
    echo "${out% }"
}
info() { echo "      $*"; }
fatal() { fail "$*"; exit 1; }

cleanup() {
    [[ -n $MEDIC_PID ]] && kill "$MEDIC_PID" 2>/dev/null && wait "$MEDIC_PID" 2>/dev/null
    [[ -n $DRY_PID ]] && kill "$DRY_PID" 2>/dev/null && wait "$DRY_PID" 2>/dev/null
    [[ -n $PROM_PID ]] && kill "$PROM_PID" 2>/dev/null && wait "$PROM_PID" 2>/dev/null
    [[ -n $IPAM_PID ]] && kill "$IPAM_PID" 2>/dev/null && wait "$IPAM_PID" 2>/dev/null
    "$ROOT/tests/lab/bgp.sh" bird start >/dev/null 2>&1
    "$ROOT/tests/lab/bgp.sh" forget-node "$HOST3" >/dev/null 2>&1
    ip route del blackhole 10.70.2.0/26 2>/dev/null
    ((${#TASKS[@]})) && "$LABCTL" rm "${TASKS[@]}" >/dev/null 2>&1
    if [[ -n $T ]]; then
        if [[ $FAIL -ne 0 || ${KEEP_TMP:-} == 1 ]]; then
            echo "logs kept in $T (medic.log, prometheus.log)"
        else
            rm -rf "$T"
        fi
    fi
}
on_exit() {
    local rc=$?
    if [[ $rc -ne 0 && $FAIL -eq 0 ]]; then fail "aborted (exit status $rc)"; fi
    if [[ $FAIL -ne 0 && -n $T && -f $T/medic.log ]]; then
        echo "--- last lines of the agent's log (backtrace frames omitted) ---"
        grep -Ev '^ +([0-9]+: |at )' "$T/medic.log" | tail -n 15
    fi
    cleanup
    [[ $SKIP -eq 0 ]] || echo "($SKIP check(s) skipped: another calico-medic agent in the shared lab interfered)"
    echo "$PASS passed, $FAIL failed"
    [[ $FAIL -eq 0 ]] && exit 0 || exit 1
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# wait_for <seconds> <command...>: poll every 0.1 s until the command succeeds.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS >= deadline)) && return 1
        sleep 0.1
    done
}

free_port() {
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 30000))
        # any state: an outgoing connection's local port (or TIME_WAIT) blocks a bind too
        ss -Htan "sport = :$p" | grep -q . || { echo "$p"; return 0; }
    done
    return 1
}

AGENT_PORT="" # the agent scrape/mval talk to
scrape() { curl -fsS --max-time 5 "http://127.0.0.1:$AGENT_PORT/metrics"; }

# mval <metric> [substring...]: value of the first series of <metric> whose line contains every
# substring (e.g. 'fault="mac_mismatch"'); empty if there is none.
mval() {
    local m=$1 body; shift
    body=$(scrape) || return 1
    awk -v m="$m" 'BEGIN { n = ARGC - 1; for (i = 1; i <= n; i++) want[i] = ARGV[i]; ARGC = 1 }
        index($0, m "{") == 1 || index($0, m " ") == 1 {
            ok = 1; for (i = 1; i <= n; i++) if (index($0, want[i]) == 0) ok = 0
            if (ok) { print $NF; exit }
        }' "$@" <<<"$body"
}
mval_is() { local want=$1; shift; [[ $(mval "$@") == "$want" ]]; }

# pq <promql>: instant query through Prometheus' HTTP API (JSON on stdout).
# (no -f: on a bad query Prometheus answers 400 with a JSON error body, which we want to show)
pq() { curl -sS --max-time 10 --data-urlencode "query=$1" "http://127.0.0.1:$PPORT/api/v1/query"; }
# has_data <json>: success, ≥1 series and ≥1 value that is not NaN. Prints the series count.
has_data() {
    jq -e -r 'select(.status? == "success") | .data
        | if .resultType == "scalar" or .resultType == "string" then [.result]
          elif .resultType == "matrix" then [.result[].values[]]
          else [.result[].value] end
        | map(select(.[1] != "NaN")) | length | select(. > 0)' <<<"$1" 2>/dev/null
}
pq_has_data() { local j; j=$(pq "$1") && has_data "$j" >/dev/null; }

# ------------------------------------------------------------------ preflight
[[ $(id -u) == 0 ]] || fatal "must run as root"
for tool in promtool prometheus jq curl ss; do
    command -v "$tool" >/dev/null || fatal "$tool not found (apt-get install -y prometheus jq curl iproute2)"
done
[[ -x $BIN ]] || fatal "$BIN not built (cargo build -p calico-medic)"
out=$("$ROOT/tests/lab/setup.sh" 2>&1) || { echo "$out"; fatal "tests/lab/setup.sh failed"; }
others=$(other_agents)
[[ -n $others ]] && info "note: other calico-medic agents are running in the lab (pids $others); they may race ours"

T=$(mktemp -d /tmp/calico-medic-e2e.XXXXXX)
MPORT=$(free_port) || fatal "no free port"
PPORT=$(free_port) || fatal "no free port"
DPORT=$(free_port) || fatal "no free port"
[[ $MPORT != "$PPORT" && $DPORT != "$MPORT" && $DPORT != "$PPORT" ]] || fatal "port clash, run again"
cid() { "$DOCKER" inspect -f '{{.Id}}' "$1"; }
start_task() { # <var> labctl-task-args...
    local var=$1 name; shift
    name=$("$LABCTL" task "$@") || fatal "labctl task $* failed"
    TASKS+=("$name")
    printf -v "$var" %s "$name"
}
# The agent reads the lab's etcd like a host's Calico datastore (datastore_* series and panels),
# and looks across hosts on the lab's two-host BGP bed (tests/lab/bgp.sh: BIRD here and on host-2).
"$ROOT/tests/lab/bgp.sh" up >"$T/bgp.log" 2>&1 || fatal "tests/lab/bgp.sh up failed (see $T/bgp.log)"
printf 'resync_interval = "2s"\n[probe]\ninterval = "2s"\n[calico]\netcd_endpoints = ["http://127.0.0.1:2379"]\nhostname = "%s"\ncalicoctl_config = ""\n[bgp]\nbird_socket = "/run/calico-lab/bgp/bird.ctl"\n' \
    "$(cat /run/calico-lab/calico-hostname)" >"$T/medic.toml"
start_agent() { # <pid-var> <port> <log> [flags...]
    local var=$1 port=$2 log=$3; shift 3
    "$BIN" run --listen "127.0.0.1:$port" --config "$T/medic.toml" "$@" >"$log" 2>&1 &
    printf -v "$var" %s $!
    wait_for 30 curl -fsS --max-time 1 "http://127.0.0.1:$port/readyz" ||
        fatal "agent $* not ready on 127.0.0.1:$port within 30 s"
    pass "agent${*:+ $*} ready on 127.0.0.1:$port (/readyz 200)"
}
stop_agent() { # <pid-var>
    local pid=${!1} rc
    kill -TERM "$pid"
    if wait_for 10 bash -c "! kill -0 $pid"; then
        wait "$pid"; rc=$?
        printf -v "$1" %s ""
        [[ $rc -eq 0 ]] && pass "agent exits 0 on SIGTERM" || fail "agent exit status $rc on SIGTERM"
    else
        fail "agent still running 10 s after SIGTERM"
    fi
}

# ------------------------------------------------------------------ 0. dry run: broken stays broken, probe fails
# Must-show 4, first half: under --dry-run a --nomac endpoint is reported (fault, skipped repair)
# and its host→workload probe fails; the real agent below repairs the same endpoint and its probe succeeds.
start_agent DRY_PID "$DPORT" "$T/medic-dry.log" --dry-run
AGENT_PORT=$DPORT
S0=$(mval calico_medic_repairs_total 'fault="mac_mismatch"' 'result="skipped"')
start_task DRYRUN --app e2e-dry --nomac
DRYRUN_ID=$(cid "$DRYRUN")
if wait_for 10 mval_is 1 calico_medic_endpoint_fault "container_id=\"$DRYRUN_ID\"" 'fault="mac_mismatch"' &&
   mval_is 0 calico_medic_endpoint_healthy "container_id=\"$DRYRUN_ID\""; then
    pass "--dry-run: endpoint_fault{fault=\"mac_mismatch\"} == 1 and endpoint_healthy == 0 for a --nomac task"
else
    fail "--dry-run: mac_mismatch not reported: $(scrape | grep "container_id=\"$DRYRUN_ID\"" | cut -c1-120 | tr '\n' ' ')"
fi
S1=$(mval calico_medic_repairs_total 'fault="mac_mismatch"' 'result="skipped"')
[[ -n $S0 && -n $S1 && $S1 -gt $S0 ]] && pass "--dry-run: repairs_total{fault=\"mac_mismatch\",result=\"skipped\"} $S0 → $S1" ||
    fail "--dry-run: repairs_total{mac_mismatch,skipped} '$S0' → '$S1' (want an increase)"
if wait_for 10 mval_is 0 calico_medic_probe_success "container_id=\"$DRYRUN_ID\"" 'probe="icmp"'; then
    pass "--dry-run: probe_success{probe=\"icmp\"} == 0 for the broken endpoint"
else
    fail "--dry-run: probe_success{probe=\"icmp\"} for the broken endpoint is '$(mval calico_medic_probe_success "container_id=\"$DRYRUN_ID\"")' (want 0)"
fi
if ! "$LABCTL" ping "$DRYRUN" >/dev/null 2>&1; then
    pass "--dry-run: the --nomac task is unreachable (nothing was written)"
elif others=$(other_agents) && [[ -n $others ]]; then
    skip "--dry-run: the --nomac task became reachable: repaired by another calico-medic (pids $others)"
else
    fail "--dry-run: the --nomac task is reachable although the only agent runs with --dry-run"
fi
stop_agent DRY_PID

# ------------------------------------------------------------------ 1. agent + promtool check metrics
start_agent MEDIC_PID "$MPORT" "$T/medic.log"
AGENT_PORT=$MPORT

check_metrics() { # <label>
    local out rc
    scrape >"$T/scrape.txt" || { fail "promtool check metrics ($1): scrape failed"; return; }
    out=$(promtool check metrics <"$T/scrape.txt" 2>&1); rc=$?
    if [[ $rc -eq 0 && -z $out ]]; then
        pass "promtool check metrics ($1): no problems ($(grep -vc '^#' "$T/scrape.txt") samples)"
    else
        fail "promtool check metrics ($1): rc=$rc"; echo "$out" | sed 's/^/      /'
    fi
}
check_metrics "fresh agent"
# Must-show 4, second half: the real agent repairs the endpoint the dry run left broken (first resync).
if wait_for 10 mval_is 1 calico_medic_probe_success "container_id=\"$DRYRUN_ID\"" 'probe="icmp"' &&
   mval_is 1 calico_medic_endpoint_healthy "container_id=\"$DRYRUN_ID\"" && "$LABCTL" ping "$DRYRUN" >/dev/null 2>&1; then
    pass "real agent: the dry run's broken endpoint repaired, probe_success{probe=\"icmp\"} == 1, ping ok"
else
    fail "real agent: dry-run endpoint not repaired/probed: $(scrape | grep "container_id=\"$DRYRUN_ID\"" | cut -c1-120 | tr '\n' ' ')"
fi

# ------------------------------------------------------------------ 2. Prometheus
# The cluster IPAM job (calico-medic ipam run, one per cluster) on the lab's etcd: the dashboard's
# IPAM row and the IPAM alerts read its series; scraped in the same job.
IPORT=$(free_port) || fatal "no free port"
printf '[calico]\netcd_endpoints = ["http://127.0.0.1:2379"]\ncalicoctl_config = ""\n[ipam]\ninterval = "1s"\nreport_dir = "%s"\n' \
    "$T/ipam" >"$T/ipam.toml"
"$BIN" ipam run --listen "127.0.0.1:$IPORT" --config "$T/ipam.toml" >"$T/ipam.log" 2>&1 &
IPAM_PID=$!
wait_for 30 curl -fsS --max-time 1 "http://127.0.0.1:$IPORT/readyz" || fatal "ipam job not ready on 127.0.0.1:$IPORT"
pass "ipam job ready on 127.0.0.1:$IPORT (/readyz 200)"
cat >"$T/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $ALERTS
scrape_configs:
  - job_name: $JOB
    static_configs:
      - targets: ["127.0.0.1:$MPORT", "127.0.0.1:$IPORT"]
EOF
prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/prom-data" \
    --web.listen-address="127.0.0.1:$PPORT" --log.level=warn >"$T/prometheus.log" 2>&1 &
PROM_PID=$!
wait_for 30 curl -fsS --max-time 1 "http://127.0.0.1:$PPORT/-/ready" ||
    fatal "Prometheus not ready on 127.0.0.1:$PPORT (see $T/prometheus.log)"
wait_for 15 pq_has_data "up{job=\"$JOB\"} == 1" || fatal "Prometheus never scraped the agent (up != 1)"
pass "Prometheus on 127.0.0.1:$PPORT scrapes the agent (up{job=\"$JOB\"} == 1)"

# Across hosts, bad state for the failing-peer/host panels and alerts, set up now (before the
# repairs whose panels look one minute back): host-2's BIRD killed (its session down at once; with
# graceful restart its routes stay ≈ 2 min, so host-2 stays reachable and the round-trip panel has
# data), and a third host in the datastore whose block has no route here (a local blackhole keeps
# the probes to it on this machine).
"$ROOT/tests/lab/bgp.sh" bird stop --kill >>"$T/bgp.log" 2>&1 || fail "tests/lab/bgp.sh bird stop --kill failed"
etcd_put() { curl -fsS --max-time 2 -X PUT --data-urlencode "value=$2" "http://127.0.0.1:2379/v2/keys$1" >/dev/null; }
etcd_put "/calico/bgp/v1/host/$HOST3/ip_addr_v4" 10.71.255.3 &&
    etcd_put "/calico/ipam/v2/host/$HOST3/ipv4/block/10.70.2.0-26" '{}' &&
    etcd_put "/calico/v1/host/$HOST3/workload/libnetwork/libnetwork/endpoint/$(printf 'e2e%061d' 3)" \
        '{"state":"active","name":"calie2e00000000","active_instance_id":"","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["calico-lab"],"ipv4_nets":["10.70.2.1/32"],"ipv6_nets":[]}' ||
    fatal "writing $HOST3 to the lab's etcd failed"
ip route replace blackhole 10.70.2.0/26 || fatal "ip route replace blackhole 10.70.2.0/26 failed"
start_task BGPSRC --app e2e-bgp --network calico-lab
# It is reported (a task on calico-lab to probe host-2 and host-3 from) before any repair is timed.
if wait_for 10 mval_is 0 calico_medic_bgp_peer_up 'peer="Mesh_10_71_255_2"' &&
   wait_for 10 mval_is 1 calico_medic_remote_host_unreachable "host=\"$HOST3\"" &&
   wait_for 10 mval_is 1 calico_medic_remote_blocks_unrouted &&
   wait_for 10 mval_is 1 calico_medic_remote_hosts 'state="reachable"'; then
    pass "across hosts: bgp_peer_up{peer=\"Mesh_10_71_255_2\"} 0 (BIRD killed), $HOST3 unrouted and unreachable, host-2 still reachable"
else
    fail "across hosts not reported: $(scrape | grep -E '^calico_medic_(bgp_|remote_)' | cut -c1-120 | tr '\n' ' ')"
fi

# ------------------------------------------------------------------ 3. tasks
REPAIR_SERIES=('calico_medic_repairs_total' 'fault="mac_mismatch"' 'result="success"')
R0=$(mval "${REPAIR_SERIES[@]}")
[[ -n $R0 ]] || fatal "no calico_medic_repairs_total{fault=\"mac_mismatch\",result=\"success\"} series before any repair"
LOGRE='fault=mac_mismatch.*result=success'
L0=$(grep -c "$LOGRE" "$T/medic.log")
HC0=$(mval calico_medic_repair_latency_seconds_count) HS0=$(mval calico_medic_repair_latency_seconds_sum)

start_task NOMAC --app e2e-nomac --nomac
start_task HEALTHY --app e2e-ok
start_task FELIX --app e2e-felix
NOMAC_ID=$(cid "$NOMAC"); HEALTHY_ID=$(cid "$HEALTHY"); FELIX_ID=$(cid "$FELIX")
FELIX_IF=$("$LABCTL" endpoint "$FELIX" | jq -r '.host_interface // .name')
[[ -n $FELIX_IF && -e /proc/sys/net/ipv4/conf/$FELIX_IF/proxy_arp ]] || fatal "no host veth for $FELIX"
echo 0 >"/proc/sys/net/ipv4/conf/$FELIX_IF/proxy_arp"
info "tasks: nomac=$NOMAC healthy=$HEALTHY felix-broken=$FELIX (proxy_arp=0 on $FELIX_IF)"

# ------------------------------------------------------------------ 4. values match what happened
if wait_for 10 mval_is 1 calico_medic_endpoint_healthy "container_id=\"$NOMAC_ID\""; then
    pass "repaired --nomac task: endpoint_healthy{container_id=${NOMAC_ID:0:12}…} == 1"
else
    fail "--nomac task: endpoint_healthy never 1 (now: '$(mval calico_medic_endpoint_healthy "container_id=\"$NOMAC_ID\"")')"
fi
if "$LABCTL" ping "$NOMAC" >/dev/null 2>&1; then pass "host reaches the repaired --nomac task (labctl ping)"
else fail "host cannot reach the --nomac task after its repair"; fi
sleep 0.5
R1=$(mval "${REPAIR_SERIES[@]}")
L1=$(grep -c "$LOGRE" "$T/medic.log")
HC1=$(mval calico_medic_repair_latency_seconds_count) HS1=$(mval calico_medic_repair_latency_seconds_sum)
# (repaired before its start, the repair line names the container by id: no inspect before start)
mine=$(grep -cE "container=($NOMAC|$NOMAC_ID) .*$LOGRE" "$T/medic.log")
foreign=$((L1 - L0 - mine))
if [[ $mine -eq 0 ]] && others=$(other_agents) && [[ -n $others ]]; then
    skip "repairs_total +1: our agent did not repair $NOMAC; another calico-medic (pids $others) did first"
elif [[ $mine -ne 1 ]]; then
    fail "agent logged $mine mac_mismatch repairs of $NOMAC (want 1)"
elif [[ $((R1 - R0)) -eq $((1 + foreign)) ]]; then
    if [[ $foreign -eq 0 ]]; then
        pass "repairs_total{fault=\"mac_mismatch\",result=\"success\"} increased by exactly 1 ($R0 → $R1)"
    else
        pass "repairs_total{fault=\"mac_mismatch\",result=\"success\"} $R0 → $R1: 1 for our task + $foreign for other lab tasks repaired meanwhile (agent log)"
    fi
else
    fail "repairs_total{fault=\"mac_mismatch\",result=\"success\"} $R0 → $R1, want +$((1 + foreign)) (1 ours + $foreign foreign)"
fi
if [[ -n $HC0 && -n $HC1 ]] && ((HC1 > HC0)) &&
   mean=$(awk -v c=$((HC1 - HC0)) -v s0="$HS0" -v s1="$HS1" 'BEGIN { m = (s1 - s0) / c; printf "%.0f", m * 1000; exit !(m > 0 && m < 5) }'); then
    pass "repair_latency_seconds observed the repair: count $HC0 → $HC1, mean ${mean} ms (Docker event → verified repair)"
else
    fail "repair_latency_seconds: count $HC0 → $HC1, sum $HS0 → $HS1 (want +1 or more, mean in (0, 5 s))"
fi
line=$(scrape | grep "^calico_medic_endpoint_healthy{.*container_id=\"$NOMAC_ID\"")
if [[ $line == *"marathon_app_id=\"/e2e-nomac\""* && $line == *"mesos_task_id=\"e2e-nomac."* &&
      $line == *"container_name=\"$NOMAC\""* && $line == *"network=\"calico-lab-nomac\""* &&
      $line == *"ip=\"$("$LABCTL" ip "$NOMAC")\""* ]]; then
    pass "endpoint_healthy carries the identity labels (name, network, ip, /e2e-nomac, task id)"
else
    fail "endpoint_healthy identity labels wrong: $line"
fi
if wait_for 10 mval_is 1 calico_medic_probe_success "container_id=\"$NOMAC_ID\"" 'probe="icmp"'; then
    pass "probe_success{probe=\"icmp\"} == 1 for the repaired task"
else
    fail "probe_success{container_id=…,probe=\"icmp\"} for the repaired task: '$(mval calico_medic_probe_success "container_id=\"$NOMAC_ID\"")' (want 1)"
fi
if wait_for 10 mval_is 1 calico_medic_endpoint_healthy "container_id=\"$HEALTHY_ID\"" &&
   [[ -z $(mval calico_medic_endpoint_fault "container_id=\"$HEALTHY_ID\"") ]]; then
    pass "healthy task: endpoint_healthy == 1 and no endpoint_fault series"
else
    fail "healthy task: endpoint_healthy '$(mval calico_medic_endpoint_healthy "container_id=\"$HEALTHY_ID\"")', faults: $(scrape | grep -c "endpoint_fault{container_id=\"$HEALTHY_ID\"")"
fi
if wait_for 15 mval_is 1 calico_medic_endpoint_fault "container_id=\"$FELIX_ID\"" 'fault="host_proxy_arp_off"' &&
   wait_for 5 mval_is 0 calico_medic_endpoint_healthy "container_id=\"$FELIX_ID\""; then
    pass "host-side fault: endpoint_fault{fault=\"host_proxy_arp_off\"} == 1, endpoint_healthy == 0"
else
    fail "host-side fault not reported: $(scrape | grep "container_id=\"$FELIX_ID\"" | cut -c1-160 | tr '\n' ' ')"
fi
check_metrics "with healthy, repaired and broken endpoints"
# docs/metrics.md lists every calico_medic_* family the real agent serves (datastore ones included: the
# agent reads the lab's etcd). tests/docs.rs compares the table with the code; this, with a live scrape.
METRICS_DOC=$ROOT/docs/metrics.md
doc_families=$(sed -n '/^<!-- metric-families:begin/,/^<!-- metric-families:end/p' "$METRICS_DOC" |
    grep -oE '^\| `calico_medic_[a-z0-9_]+`' | tr -d '|` ' | sort -u)
served=$(awk '$1 == "#" && $2 == "TYPE" && $3 ~ /^calico_medic_/ { print $3 }' "$T/scrape.txt" | sort -u)
undocumented=$(comm -23 <(echo "$served") <(echo "$doc_families") | tr '\n' ' ')
if [[ -n $served && -n $doc_families && -z ${undocumented// /} ]]; then
    pass "docs/metrics.md lists every calico_medic_* family served ($(wc -l <<<"$served") served, $(wc -l <<<"$doc_families") documented)"
else
    fail "families served but not in docs/metrics.md's table: ${undocumented:-<none>} (served: $(wc -w <<<"$served"), documented: $(wc -w <<<"$doc_families"))"
fi

# Let Prometheus catch up: the new counter value scraped, then a few more samples for rate().
wait_for 10 pq_has_data "calico_medic_repairs_total{job=\"$JOB\",fault=\"mac_mismatch\",result=\"success\"} == $R1" ||
    fail "Prometheus never saw repairs_total == $R1"
sleep 3

# ------------------------------------------------------------------ 5a. every dashboard query
subst() {
    sed -e 's/\$__rate_interval/1m/g; s/\${__rate_interval}/1m/g; s/\$__interval/15s/g; s/\$__range/5m/g' \
        -e "s/\\\$job/$JOB/g; s/\\\${job}/$JOB/g" \
        -e 's/\$instance/.*/g; s/\${instance}/.*/g; s/\$app/.*/g; s/\${app}/.*/g'
}
jq -e . "$DASHBOARD" >/dev/null || fatal "$DASHBOARD is not valid JSON"
# importable and filterable: datasource is a variable used everywhere; every query filters on $instance
jq -e '.schemaVersion >= 36 and (.templating.list | map(.name) | contains(["datasource", "job", "instance", "app"]))
       and (.templating.list[] | select(.name == "datasource") | .type == "datasource" and .query == "prometheus")
       and ([.templating.list[] | select(.name == "instance" or .name == "app") | .includeAll and .allValue == ".*"] | all)' \
    "$DASHBOARD" >/dev/null && pass "dashboard: schemaVersion $(jq .schemaVersion "$DASHBOARD"), variables datasource/job/instance/app (All = .*)" ||
    fail "dashboard: schemaVersion or template variables wrong"
bad=$(jq -r '[.. | objects | select(has("targets"))] | map(select(.datasource.uid != "${datasource}" or
        any(.targets[]; .datasource.uid != "${datasource}" or (.expr | contains("instance=~\"$instance\"") | not)))) | map(.title) | join(", ")' "$DASHBOARD")
[[ -z $bad ]] && pass "dashboard: every panel and query uses \${datasource} and filters on \$instance" ||
    fail "dashboard panels not using \${datasource} or \$instance: $bad"
n=$(jq '[.. | objects | select(has("expr"))] | length' "$DASHBOARD")
[[ $n -gt 0 ]] || fail "dashboard has no queries"
while IFS=$'\t' read -r title ref expr_b64; do
    expr=$(base64 -d <<<"$expr_b64" | subst)
    json=$(pq "$expr")
    if count=$(has_data "$json") && [[ -n $count ]]; then
        pass "dashboard '$title' [$ref]: $count series"
    else
        fail "dashboard '$title' [$ref] returned no data: $(jq -c '{status, error, n: (.data.result | length)}' <<<"$json" 2>/dev/null) for: $expr"
    fi
done < <(jq -r '.. | objects | select(has("targets")) | .title as $t | .targets[]
               | select(has("expr")) | [$t, .refId, (.expr | @base64)] | @tsv' "$DASHBOARD")
# template variables: label_values(<selector>, <label>) through /api/v1/label/<label>/values
while IFS=$'\t' read -r name def; do
    def=$(subst <<<"$def")
    if [[ $def =~ ^label_values\((.*),[[:space:]]*([a-zA-Z_][a-zA-Z0-9_]*)\)$ ]]; then
        sel=${BASH_REMATCH[1]} label=${BASH_REMATCH[2]}
        vals=$(curl -fsS --max-time 10 -G --data-urlencode "match[]=$sel" \
            "http://127.0.0.1:$PPORT/api/v1/label/$label/values" | jq -r '.data | map(select(. != "")) | join(" ")')
        if [[ -n $vals ]]; then pass "dashboard variable \$$name: $(wc -w <<<"$vals") value(s), e.g. ${vals:0:60}"
        else fail "dashboard variable \$$name ($def) has no values"; fi
    else
        fail "dashboard variable \$$name: unexpected query '$def'"
    fi
done < <(jq -r '.templating.list[] | select(.type == "query")
               | [.name, (.query | if type == "object" then .query else . end)] | @tsv' "$DASHBOARD")
apps=$(curl -fsS -G --data-urlencode 'match[]=calico_medic_endpoint_healthy' \
    "http://127.0.0.1:$PPORT/api/v1/label/marathon_app_id/values" | jq -r '.data | join(" ")')
[[ " $apps " == *" /e2e-nomac "* && " $apps " == *" /e2e-felix "* ]] &&
    pass "\$app offers the lab's Marathon apps (/e2e-nomac, /e2e-felix)" || fail "\$app values: $apps"

# ------------------------------------------------------------------ 5b. every alert expression
rules=$(curl -fsS --max-time 10 "http://127.0.0.1:$PPORT/api/v1/rules?type=alert") || fatal "GET /api/v1/rules failed"
want=$(grep -c '^ *- alert:' "$ALERTS")
got=$(jq '[.data.groups[].rules[]] | length' <<<"$rules")
[[ $got -eq $want && $got -gt 0 ]] && pass "Prometheus loaded all $got alert rules from alerts.yml" ||
    fail "Prometheus loaded $got alert rules, alerts.yml has $want"
while IFS=$'\t' read -r name health query_b64 lasterr; do
    query=$(base64 -d <<<"$query_b64")
    [[ $health == ok ]] || fail "alert $name: rule health '$health' $(base64 -d <<<"$lasterr")"
    json=$(pq "$query")
    if count=$(has_data "$json") && [[ -n $count ]]; then
        pass "alert $name: expression returns data ($count series)"
        continue
    fi
    [[ $(jq -r .status <<<"$json") == success ]] || { fail "alert $name: query error $(jq -c .error <<<"$json")"; continue; }
    hq=$(jq -rn --arg q "$query" '$q
        | gsub("\\s*(==|!=|>=|<=|>|<)\\s*(bool\\s+)?-?[0-9][0-9.eE+]*(?=\\s*($|\\)|and\\b|or\\b|unless\\b))"; "")
        | if test("^absent\\(") then sub("^absent\\((?<v>.*)\\)$"; "\(.v)") else . end')
    json=$(pq "$hq")
    if count=$(has_data "$json") && [[ -n $count ]]; then
        pass "alert $name: quiet now (bad-state condition); health query returns data ($count series): $hq"
    else
        fail "alert $name: neither the expression nor its health query returns data: $hq"
    fi
done < <(jq -r '.data.groups[].rules[] | [.name, .health, (.query | @base64), ((.lastError // "") | @base64)] | @tsv' <<<"$rules")
# A real alert from a real broken endpoint: pending (for: 5m) with the Marathon identity in its labels.
if wait_for 10 pq_has_data "ALERTS{alertname=\"CalicoMedicEndpointUnhealthy\",alertstate=\"pending\",marathon_app_id=\"/e2e-felix\",mesos_task_id=~\"e2e-felix\\\\..+\"}"; then
    pass "CalicoMedicEndpointUnhealthy pending for the host-side-broken task, labelled app=/e2e-felix + its task id"
else
    fail "CalicoMedicEndpointUnhealthy not pending for /e2e-felix"
fi

# ------------------------------------------------------------------ promtool on the rule files
out=$(promtool check rules "$ALERTS" 2>&1) && pass "promtool check rules dashboards/alerts.yml: $(grep -o 'SUCCESS.*' <<<"$out")" ||
    { fail "promtool check rules dashboards/alerts.yml"; echo "$out" | sed 's/^/      /'; }
out=$(promtool test rules "$ALERTS_TEST" 2>&1) && pass "promtool test rules dashboards/alerts_test.yml" ||
    { fail "promtool test rules dashboards/alerts_test.yml"; echo "$out" | sed 's/^/      /'; }

# ------------------------------------------------------------------ HTTP robustness
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@"; }
URL=http://127.0.0.1:$MPORT
expect_status() { # <want-regex> <description> curl-args...
    local want=$1 desc=$2 got; shift 2
    got=$(status "$@")
    [[ $got =~ ^($want)$ ]] && pass "HTTP $desc → $got" || fail "HTTP $desc → $got (want $want)"
}
expect_status 404 "GET /nope" "$URL/nope"
expect_status 404 "GET /metrics/extra" "$URL/metrics/extra"
expect_status 404 "GET /../../etc/passwd (path as is)" --path-as-is "$URL/../../etc/passwd"
expect_status 405 "POST /metrics" -X POST --data x "$URL/metrics"
expect_status 405 "PUT /healthz" -X PUT --data x "$URL/healthz"
expect_status 405 "DELETE /readyz" -X DELETE "$URL/readyz"
head -c 1048576 /dev/zero | tr '\0' a | { printf 'X-Big: '; cat; echo; } >"$T/bighdr"
expect_status '431|400|000' "GET /metrics with a 1 MiB header (431 or closed)" -H "@$T/bighdr" "$URL/metrics"
for i in $(seq 300); do echo "X-H$i: v"; done >"$T/manyhdr"
expect_status '431|400|000' "GET /metrics with 300 headers (431 or closed)" -H "@$T/manyhdr" "$URL/metrics"
expect_status '414|431|404|400|000' "GET with a 100 KiB path" "$URL/$(head -c 102400 /dev/zero | tr '\0' a)"
raw() { # send raw bytes on a fresh connection, read (at most 2 s) whatever comes back
    timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$MPORT"'; cat >&3; timeout 2 cat <&3' 2>/dev/null
}
reply=$(head -c 8192 /dev/urandom | raw | head -c 64 | tr -cd '[:print:]')
pass "garbage bytes: connection handled (reply: '${reply:-<closed>}')"
reply=$(printf 'GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n' | raw | head -n1 | tr -d '\r')
pass "truncated request: connection handled (reply: '${reply:-<closed>}')"
reply=$(printf 'BREW /metrics HTCPCP/1.0\r\n\r\n' | raw | head -n1 | tr -d '\r')
[[ $reply =~ ^HTTP/1\.[01]\ (400|405|505) || -z $reply ]] && pass "bogus method/protocol → '${reply:-<closed>}'" ||
    fail "bogus method/protocol → '$reply'"
if kill -0 "$MEDIC_PID" 2>/dev/null && [[ $(curl -fsS --max-time 5 "$URL/healthz") == ok ]] &&
   [[ $(status "$URL/metrics") == 200 ]]; then
    pass "agent still alive after malformed requests: /healthz ok, /metrics 200"
else
    fail "agent did not survive malformed requests"
fi

# ------------------------------------------------------------------ per-container series deleted
"$LABCTL" rm "$NOMAC" "$FELIX" >/dev/null || fail "labctl rm failed"
gone() { local body; body=$(scrape) && ! grep -q "container_id=\"$1\"" <<<"$body"; }
if wait_for 10 gone "$NOMAC_ID"; then pass "after labctl rm: no series with the repaired task's container_id"
else fail "series of removed $NOMAC remain: $(scrape | grep "container_id=\"$NOMAC_ID\"" | cut -d'{' -f1 | sort -u | tr '\n' ' ')"; fi
if wait_for 10 gone "$FELIX_ID"; then pass "after labctl rm: no series (endpoint_fault included) of the broken task"
else fail "series of removed $FELIX remain: $(scrape | grep "container_id=\"$FELIX_ID\"" | cut -d'{' -f1 | sort -u | tr '\n' ' ')"; fi
[[ -n $(mval calico_medic_endpoint_healthy "container_id=\"$HEALTHY_ID\"") ]] &&
    pass "the remaining task's series are kept" || fail "the remaining task's series vanished too"

# ------------------------------------------------------------------ agent down → up == 0, alert pending
stop_agent MEDIC_PID
wait_for 10 pq_has_data "up{job=\"$JOB\"} == 0" && pass "Prometheus sees the agent down (up == 0)" ||
    fail "up never became 0 after the agent stopped"
wait_for 10 pq_has_data 'ALERTS{alertname="CalicoMedicAgentDown",alertstate="pending"}' &&
    pass "CalicoMedicAgentDown pending after the agent stopped" || fail "CalicoMedicAgentDown not pending"

# ------------------------------------------------------------------ the agent's log
for log in "$T/medic-dry.log" "$T/medic.log"; do
    if grep -q 'panicked at' "$log"; then
        fail "the agent panicked ($(basename "$log")): $(grep -m1 -A1 'panicked at' "$log" | tr '\n' ' ')$(grep -m1 -o 'calico_medic::[A-Za-z_:]*' "$log" | sed 's/^/ in /')"
    else
        pass "no panic in the agent's log ($(basename "$log"))"
    fi
done
