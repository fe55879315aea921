#!/usr/bin/env bash
# The test command (README.md): on a fresh Debian machine as root, installs and
# starts what the tests need (Docker engine, test image, Calico stand-in, Prometheus
# tools), then runs every suite. Fails loudly if anything is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI="${CI:-}"
export PATH="/usr/bin:$PATH" # Debian's docker client first (matches the 20.10 daemon)

step() { printf '\n=== %s === [at %d s]\n' "$*" "$SECONDS"; } # CI's budget is 40 min: where it goes
timed() { # <label> <command...>: runs it, prints how long it took
    local label=$1 t0 ms; shift
    t0=$(date +%s%3N)
    "$@"
    ms=$(($(date +%s%3N) - t0))
    printf '=== %s: %d.%d s\n' "$label" $((ms / 1000)) $((ms % 1000 / 100))
}

[[ $(id -u) == 0 ]] || { echo "tests/run.sh must run as root (namespaces, Docker)" >&2; exit 1; }

step "packages (Debian): Docker engine, busybox for the test image, iproute2, ping, Prometheus tools, systemd-analyze, etcd, Go (Calico's real plugin), rpm/binutils/venv (.ci/release, built in the background: no apt of its own then)"
need=()
for pkg in docker.io busybox-static iproute2 iputils-ping jq curl prometheus systemd util-linux procps etcd-server openssl \
    golang-go patch xz-utils rpm binutils python3-venv; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

step "static checks"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

step "build"
cargo build --workspace --all-targets

# The release artifacts are built while the suites run: on a fresh machine `.ci/release`'s
# one-off tool installs and the portable binary take ≈ 10 min of CPU, and the suites mostly
# wait on Docker and timers. Lowest priority and one cargo job, so the suites keep a core to
# themselves; a target directory of its own, so their cargo never waits on its lock. The
# packaging step waits for it and tests what it built.
step "release artifacts: .ci/release started in the background (nice 19, one cargo job, target/ci-release)"
RELEASE_DIR=$PWD/target/ci-release
mkdir -p "$RELEASE_DIR"
rm -f "$RELEASE_DIR/release.rc"
# Its own session: a run that stops early kills the whole build, not only its shell.
RELEASE_DIR=$RELEASE_DIR setsid bash -c 'rc=0
    CARGO_TARGET_DIR=$RELEASE_DIR CARGO_BUILD_JOBS=1 nice -n 19 .ci/release "$RELEASE_DIR/release-artifacts" \
        >"$RELEASE_DIR/release.log" 2>&1 || rc=$?
    echo "$rc" >"$RELEASE_DIR/release.rc"' &
RELEASE_PID=$!
trap 'kill -- "-$RELEASE_PID" 2>/dev/null || true' EXIT

step "unit + namespace tests (no Docker)"
cargo test -p calico-medic --lib --test netns_repair --test fixtures_core -- --include-ignored

step "docs: the configuration reference and the metric table equal the code (no root, no Docker)"
cargo test -p calico-medic --test docs -- --include-ignored

step "architecture: layering, kernel access in the kernel layer, file sizes (no Docker)"
cargo test -p calico-medic --test layers --test kernel_layer --test code_size -- --include-ignored

step "datastore client against a real etcd (read, watch, cleared index, failover, deadlines; no Docker)"
cargo test -p calico-medic --test datastore_etcd -- --include-ignored

step "lab: Docker engine, test image, Calico v2.6 stand-in, Calico's real libnetwork plugin (built offline), networks"
timed "lab setup" tests/lab/setup.sh --selftest

step "lab tests"
cargo test -p calico-lab

step "end-to-end: one-off check/repair"
cargo test -p calico-medic --test lab_oneoff -- --include-ignored

step "end-to-end: daemon"
cargo test -p calico-medic --test lab_daemon -- --include-ignored

step "end-to-end: tasks on two networks (bridge + calico, calico + calico)"
cargo test -p calico-medic --test lab_multinet -- --include-ignored

step "end-to-end: kernel 3.10 fallbacks (every newer request refused; one-off and daemon suites again)"
cargo test -p calico-medic --test old_kernel -- --include-ignored
CALICO_MEDIC_EMULATE_KERNEL=3.10 cargo test -p calico-medic --test lab_oneoff --test lab_daemon -- --include-ignored

step "end-to-end: live netlink watches"
cargo test -p calico-medic --test live_watch -- --include-ignored

step "end-to-end: operations (Docker restart, storm, flapping, vanishing containers, config, signals)"
cargo test -p calico-medic --test daemon_ops -- --include-ignored

step "end-to-end: cannot wedge (stalled Docker, connection flood, failing event stream, config bounds, netlink spray, tenant text)"
cargo test -p calico-medic --test wedge -- --include-ignored

step "end-to-end: Calico's datastore in etcd (datastore MAC, watch, orphans, outage and recovery, index cleared, TLS)"
cargo test -p calico-medic --test lab_datastore -- --include-ignored

step "end-to-end: Calico's IPAM across the cluster (leaks found and released with proof, a block changed just before the compare-and-swap, doubles never released; the ipam job as its Marathon app)"
timed "lab_ipam marathon_ipam" cargo test -p calico-medic --test lab_ipam --test marathon_ipam -- --include-ignored --nocapture

# Calico's real libnetwork plugin (v1.1.3, tests/lab/calico-real/, network calico-lab-real): the
# one-off, daemon and datastore suites again on its tasks and records (faults injected after start).
step "end-to-end on Calico's real libnetwork plugin (20.10): one-off, daemon, datastore on calico-lab-real"
timed "20.10 real plugin: lab_oneoff lab_daemon lab_datastore" env CALICO_LAB_NET=calico-lab-real \
    cargo test -p calico-medic --test lab_oneoff --test lab_daemon --test lab_datastore -- --include-ignored

step "end-to-end: Marathon (escalation to a Marathon REST stand-in, per-app policy labels, the Marathon app container as its JSON says)"
cargo test -p calico-medic --test marathon_client --test lab_marathon --test marathon_app -- --include-ignored

step "end-to-end: repair before start (100 omit-MAC tasks see ee:ee:ee:ee:ee:ee as their first act; docker run not slowed; bridge/none untouched; --mac-address kept)"
cargo test -p calico-medic --test lab_prestart -- --include-ignored --nocapture
CALICO_MEDIC_EMULATE_KERNEL=3.10 cargo test -p calico-medic --test lab_prestart -- --include-ignored --nocapture omit_mac

step "end-to-end: pre-start under churn (200 start/remove cycles, reused namespace inodes, a wrapped PID counter, an overflowed subscription)"
cargo test -p calico-medic --test lab_prestart_churn -- --include-ignored --nocapture --test-threads 1

step "end-to-end: repair before start by construction (the calico-medic runtime's prestart hook: after Docker's network setup; 100/100 under full load with no agent; docker run not slowed; faults never stop a start)"
cargo test -p calico-medic --test lab_hook -- --include-ignored --nocapture --test-threads 1

step "end-to-end: the host's Calico (Felix's per-interface settings, static ARP entry, MTU)"
cargo test -p calico-medic --test lab_node -- --include-ignored --nocapture

step "end-to-end: Calico's real Felix 2.6.8 (its host side of real-plugin tasks reported healthy and reachable; its work undone by hand reported at once and cleared when Felix puts it back; a deleted profile cuts tasks off each other, is reported and written back only by opt-in; Felix stopped and started)"
cargo test -p calico-medic --test lab_felix -- --include-ignored --nocapture --test-threads 1

step "end-to-end: a hostile tenant (a million routes in its namespace: bounded agent memory, other tasks still repaired)"
cargo test -p calico-medic --test lab_hostile -- --include-ignored --nocapture

# Engine matrix (issue 10): the full suites above ran on Debian 12's docker.io 20.10 with a
# negotiated API (1.41). Engine 2, Debian 13's docker.io 26.1 (API 1.45), runs beside it
# (tests/lab/engine26.sh); the one-off, daemon and live-watch suites run on it, and the one-off
# and daemon suites run again on 20.10 with the API pinned to 1.25 (Docker 1.13's shapes).
# CALICO_LAB_ENGINE makes each suite check it really talks to that engine.
E26_HOST=unix:///run/calico-lab/docker26.sock
MATRIX_T0=$SECONDS

step "Engine API version on the wire (pinned and negotiated; fake Docker socket)"
timed "docker_api_wire" cargo test -p calico-medic --test docker_api_wire -- --include-ignored

step "lab: engine 2 (Debian 13 docker.io 26.1) beside 20.10, sharing the stand-in plugin; its own instance of Calico's real plugin"
timed "engine 2 setup" tests/lab/setup.sh --engine26

step "engine 26.1: one-off check/repair"
timed "26.1 lab_oneoff" env DOCKER_HOST=$E26_HOST CALICO_LAB_ENGINE=26.1 cargo test -p calico-medic --test lab_oneoff -- --include-ignored

step "engine 26.1: daemon"
timed "26.1 lab_daemon" env DOCKER_HOST=$E26_HOST CALICO_LAB_ENGINE=26.1 cargo test -p calico-medic --test lab_daemon -- --include-ignored

step "engine 26.1: live netlink watches"
timed "26.1 live_watch" env DOCKER_HOST=$E26_HOST CALICO_LAB_ENGINE=26.1 cargo test -p calico-medic --test live_watch -- --include-ignored

step "engine 26.1: repair before start"
timed "26.1 lab_prestart" env DOCKER_HOST=$E26_HOST CALICO_LAB_ENGINE=26.1 cargo test -p calico-medic --test lab_prestart -- --include-ignored --nocapture

step "engine 26.1: the runtime's prestart hook"
timed "26.1 lab_hook" env DOCKER_HOST=$E26_HOST CALICO_LAB_ENGINE=26.1 cargo test -p calico-medic --test lab_hook -- --include-ignored --nocapture --test-threads 1

step "engine 26.1, Calico's real libnetwork plugin: one-off check/repair and daemon on calico-lab-real"
timed "26.1 real plugin: lab_oneoff lab_daemon" env DOCKER_HOST=$E26_HOST CALICO_LAB_ENGINE=26.1 CALICO_LAB_NET=calico-lab-real \
    cargo test -p calico-medic --test lab_oneoff --test lab_daemon -- --include-ignored

step "engine 20.10, API pinned to 1.25 (DOCKER_API_VERSION): one-off check/repair"
timed "20.10 API 1.25 lab_oneoff" env DOCKER_API_VERSION=1.25 CALICO_LAB_ENGINE=20.10 cargo test -p calico-medic --test lab_oneoff -- --include-ignored

step "engine 20.10, API pinned to 1.25 (DOCKER_API_VERSION): daemon"
timed "20.10 API 1.25 lab_daemon" env DOCKER_API_VERSION=1.25 CALICO_LAB_ENGINE=20.10 cargo test -p calico-medic --test lab_daemon -- --include-ignored
echo "=== engine matrix total: $((SECONDS - MATRIX_T0)) s"

step "lab: a second host with real BIRD (tests/lab/bgp.sh: host-2 in its own namespace, BIRD 1.6.8 on both sides speaking BGP as calico/node configures it)"
timed "bgp bed" tests/lab/bgp.sh up

step "end-to-end: across hosts (BGP peers from BIRD's socket, routes to host-2's block, a task here reaching host-2's workload; host-2's BIRD stopped: peer, unrouted block and unreachable host reported, local tasks left alone; back)"
cargo test -p calico-medic --test lab_bgp -- --include-ignored --nocapture

step "end-to-end: metrics, Grafana dashboard and alert rules on a real Prometheus"
tests/prometheus/e2e.sh

step "packaging: .ci/release (portable glibc-2.17 binary, .deb, .rpm, tarball), artifact checks, dpkg -i, unit on systemd 219/229, omit-MAC repair by the packaged binary, purge"
timed "waiting for the background .ci/release" wait "$RELEASE_PID"
sed 's/^/     | /' "$RELEASE_DIR/release.log" | grep -E 'installed in|built in|done in' || true
if [[ $(cat "$RELEASE_DIR/release.rc" 2>/dev/null) != 0 ]]; then
    tail -40 "$RELEASE_DIR/release.log" >&2
    echo "FAILED: .ci/release (log: $RELEASE_DIR/release.log)" >&2
    exit 1
fi
PACKAGING_ARTIFACTS=$RELEASE_DIR/release-artifacts tests/packaging/run.sh
