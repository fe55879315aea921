#!/usr/bin/env bash
# The test command (README.md): on a fresh Debian machine as root, installs and
# starts what the tests need (Docker engine, test image, Calico stand-in, Prometheus
# tools), then runs every suite. Fails loudly if anything is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI="${CI:-}"
export PATH="/usr/bin:$PATH" # Debian's docker client first (matches the 20.10 daemon)

step() { printf '\n=== %s ===\n' "$*"; }

[[ $(id -u) == 0 ]] || { echo "tests/run.sh must run as root (namespaces, Docker)" >&2; exit 1; }

step "packages (Debian): Docker engine, busybox for the test image, iproute2, ping, Prometheus tools, systemd-analyze"
need=()
for pkg in docker.io busybox-static iproute2 iputils-ping jq curl prometheus systemd util-linux procps; do
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

step "unit + namespace tests (no Docker)"
cargo test -p calico-medic --lib --test netns_repair --test fixtures_core

step "lab: Docker engine, test image, Calico v2.6 stand-in, networks"
tests/lab/setup.sh --selftest

step "lab tests"
cargo test -p calico-lab

step "end-to-end: one-off check/repair"
cargo test -p calico-medic --test lab_oneoff

step "end-to-end: daemon"
cargo test -p calico-medic --test lab_daemon

step "end-to-end: tasks on two networks (bridge + calico, calico + calico)"
cargo test -p calico-medic --test lab_multinet

step "end-to-end: kernel 3.10 fallbacks (every newer request refused; one-off and daemon suites again)"
cargo test -p calico-medic --test old_kernel
CALICO_MEDIC_EMULATE_KERNEL=3.10 cargo test -p calico-medic --test lab_oneoff --test lab_daemon

step "end-to-end: live netlink watches"
cargo test -p calico-medic --test live_watch

step "end-to-end: operations (Docker restart, storm, flapping, vanishing containers, config, signals)"
cargo test -p calico-medic --test daemon_ops

step "end-to-end: cannot wedge (stalled Docker, connection flood, failing event stream, config bounds, netlink spray, tenant text)"
cargo test -p calico-medic --test wedge

step "end-to-end: metrics, Grafana dashboard and alert rules on a real Prometheus"
tests/prometheus/e2e.sh

step "packaging: .ci/release (portable glibc-2.17 binary, .deb, .rpm, tarball), artifact checks, dpkg -i, unit on systemd 219/229, omit-MAC repair by the packaged binary, purge"
tests/packaging/run.sh
