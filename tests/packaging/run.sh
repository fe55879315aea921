#!/usr/bin/env bash
# Packaging test (issue 5). As root on Debian:
#   - builds the Debian package with cargo-deb (installs cargo-deb if missing),
#   - installs it with dpkg -i and checks the files, the binary, the conffile,
#     the enabled unit, `systemd-analyze verify` (clean) and
#     `systemd-analyze security --offline=true` (exposure <= 4.0),
#   - checks the shipped example config (parses, lists every key the binary
#     knows, every value equal to its default is accepted) and the Marathon app,
#   - when the lab's Docker engine is up: runs the installed binary with exactly
#     the unit's capability bounding set (and without each needed capability),
#     and in a Docker container configured like unit/marathon-app.json,
#   - removes and purges the package, and checks nothing is left behind.
#
#   tests/packaging/run.sh
#
# Environment:
#   PACKAGING_PROFILE  cargo profile for the package binary (default: dev, i.e. the
#                      target/debug build the test command already made, stripped by
#                      cargo-deb; `release` builds the shipping binary, ~3 min more).
#   CARGO_DEB_VERSION  cargo-deb version to install when missing (default 3.8.0;
#                      the dev profile is only a warning in it).
#   LAB_DOCKER         docker client for the optional lab checks (default /usr/bin/docker).
#
# Ends with "N passed, M failed"; exits 1 if anything failed.
set -uo pipefail

cd "$(dirname "$0")/../.."
REPO=$(pwd)
PKG=calico-medic
PROFILE=${PACKAGING_PROFILE:-dev}
CARGO_DEB_VERSION=${CARGO_DEB_VERSION:-3.8.0}
MAX_EXPOSURE=4.0
UNIT_SRC=unit/calico-medic.service
CONFIG_SRC=unit/config.toml
MARATHON_SRC=unit/marathon-app.json
UNIT=/lib/systemd/system/calico-medic.service
BIN=/usr/bin/calico-medic
CONF=/etc/calico-medic/config.toml
DOC=/usr/share/doc/calico-medic
DOCKER=${LAB_DOCKER:-/usr/bin/docker} # Debian's 20.10 client (see DESIGN.md)
LABCTL=$REPO/tests/lab/labctl
NOSOCK=unix:///nonexistent-calico-medic-test.sock

T0=$(date +%s)
PASSED=0
FAILED=0
WORK=$(mktemp -d /tmp/calico-medic-packaging.XXXXXX)
LAB_TASK=""
IMAGE=""

say() { printf 'packaging: %s\n' "$*"; }
pass() { PASSED=$((PASSED + 1)); printf 'ok   %s\n' "$1"; }
fail() {
    FAILED=$((FAILED + 1))
    printf 'FAIL %s\n' "$1"
    [[ -n ${2:-} ]] && printf '%s\n' "$2" | sed 's/^/     | /' | head -20
    return 0
}
# check <description> <command...>: passes iff the command succeeds.
check() {
    local desc=$1 out
    shift
    if out=$("$@" 2>&1); then pass "$desc"; else fail "$desc" "$out"; fi
}
summary() {
    printf '\npackaging: took %ds\n' $(($(date +%s) - T0))
    printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
}
die() {
    fail "$1" "${2:-}"
    summary
    exit 1
}

cleanup() {
    if [[ -n $LAB_TASK ]]; then "$LABCTL" rm "$LAB_TASK" >/dev/null 2>&1 || true; fi
    if [[ -n $IMAGE ]]; then "$DOCKER" rmi -f "$IMAGE" >/dev/null 2>&1 || true; fi
    # Never leave the package behind, even when a check failed half-way.
    if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -qv 'not-installed'; then
        dpkg --purge "$PKG" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
    # cargo-deb's scratch copy of the stripped binary (target/<pkg>/*.stripped-*.tmp).
    if [[ -n ${TARGET_DIR:-} && -d $TARGET_DIR/$PKG ]]; then
        rm -f "$TARGET_DIR/$PKG"/*.stripped-*.tmp
        rmdir "$TARGET_DIR/$PKG" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- preconditions
[[ $(id -u) = 0 ]] || die "must run as root (dpkg -i)"
need_apt=()
command -v jq >/dev/null || need_apt+=(jq)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v setpriv >/dev/null || need_apt+=(util-linux)
if ((${#need_apt[@]})); then
    say "installing ${need_apt[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null ||
        die "apt-get install ${need_apt[*]}"
fi
# Refuse to touch a machine where calico-medic is already installed: the test
# must leave it exactly as it found it.
if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -qv 'not-installed'; then
    trap - EXIT
    rm -rf "$WORK"
    die "package $PKG is already installed (dpkg --purge $PKG first)"
fi
for p in "$BIN" /etc/calico-medic "$DOC" /usr/lib/systemd/system/calico-medic.service; do
    if [[ -e $p ]]; then
        trap - EXIT
        rm -rf "$WORK"
        die "$p exists but is not from the package: would be overwritten"
    fi
done

if ! cargo deb --version >/dev/null 2>&1; then
    say "installing cargo-deb $CARGO_DEB_VERSION (one-off, a few minutes)"
    t=$(date +%s)
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet ||
        die "cargo install cargo-deb"
    say "cargo-deb installed in $(($(date +%s) - t))s"
fi
say "$(cargo deb --version 2>&1 | head -1)"

# ---------------------------------------------------------------- build
METADATA=$(cargo metadata --no-deps --format-version 1)
VERSION=$(jq -r --arg p "$PKG" '.packages[] | select(.name == $p) | .version' <<<"$METADATA")
TARGET_DIR=$(jq -r .target_directory <<<"$METADATA")
[[ -n $VERSION ]] || die "cannot read the crate version"
say "building the .deb (profile $PROFILE)"
t=$(date +%s)
# --fast: lighter xz compression (3 s instead of 15 s; same contents).
if out=$(cargo deb -p "$PKG" --profile "$PROFILE" --fast -o "$WORK/" 2>&1); then
    pass "cargo deb -p $PKG --profile $PROFILE built a package ($(($(date +%s) - t))s)"
else
    die "cargo deb -p $PKG --profile $PROFILE" "$out"
fi
DEB=$(ls "$WORK"/*.deb 2>/dev/null | head -1)
[[ -f $DEB ]] || die "no .deb in $WORK"
say "$(basename "$DEB"): $(du -h "$DEB" | cut -f1)"

control() { dpkg-deb -f "$DEB" "$1"; }
[[ $(control Package) = "$PKG" && $(control Version) = "$VERSION-1" ]] &&
    pass "control: Package $PKG, Version $VERSION-1" ||
    fail "control: Package/Version" "$(control Package) $(control Version)"
[[ $(control Depends) == *libc6* && -n $(control Maintainer) && $(control Section) = net ]] &&
    pass "control: Depends ($(control Depends)), Maintainer, Section" ||
    fail "control: Depends/Maintainer/Section" "$(dpkg-deb -f "$DEB")"
contents=$(dpkg-deb -c "$DEB" | awk '{print $NF}')
missing=""
for f in ./usr/bin/calico-medic ./usr/lib/systemd/system/calico-medic.service ./etc/calico-medic/config.toml \
    ./usr/share/doc/calico-medic/README.md ./usr/share/doc/calico-medic/copyright \
    ./usr/share/doc/calico-medic/examples/marathon-app.json; do
    grep -qxF "$f" <<<"$contents" || missing+=" $f"
done
[[ -z $missing ]] && pass "package contents: binary, unit, config, README, copyright, Marathon example" ||
    fail "package contents" "missing:$missing"
dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles 2>/dev/null | grep -qxF "$CONF" &&
    pass "$CONF is a conffile" || fail "$CONF is a conffile"

# ---------------------------------------------------------------- install
if out=$(dpkg -i "$DEB" 2>&1); then
    pass "dpkg -i (maintainer scripts tolerate no running systemd)"
else
    die "dpkg -i" "$out"
fi
[[ $(dpkg-query -W -f='${Status}' "$PKG") = "install ok installed" ]] &&
    pass "dpkg: $PKG install ok installed" || fail "dpkg status" "$(dpkg-query -W -f='${Status}' "$PKG")"

check "binary $BIN is executable" test -x "$BIN"
check "unit $UNIT is installed" test -f "$UNIT"
check "config $CONF is installed" test -f "$CONF"
check "README $DOC/README.md is installed" test -f "$DOC/README.md"
check "installed unit = $UNIT_SRC" cmp "$UNIT" "$UNIT_SRC"
check "installed config = $CONFIG_SRC" cmp "$CONF" "$CONFIG_SRC"
check "installed README = README.md" cmp "$DOC/README.md" README.md
[[ $(stat -c %a "$CONF") = 644 && $(stat -c %U "$CONF") = root ]] &&
    pass "config is root-owned, mode 644" || fail "config owner/mode" "$(stat -c '%U %a' "$CONF")"
check "unit enabled at install (multi-user.target.wants symlink)" \
    test -L /etc/systemd/system/multi-user.target.wants/calico-medic.service

out=$("$BIN" --version 2>&1)
[[ $out = "calico-medic $VERSION" ]] && pass "calico-medic --version: $out" ||
    fail "calico-medic --version" "$out"
out=$("$BIN" --help 2>&1)
[[ $out == *run* && $out == *check* && $out == *repair* ]] && pass "calico-medic --help lists run, check, repair" ||
    fail "calico-medic --help" "$out"

# ---------------------------------------------------------------- unit file
if out=$(systemd-analyze verify "$UNIT" 2>&1) && [[ -z $out ]]; then
    pass "systemd-analyze verify $UNIT: clean"
else
    fail "systemd-analyze verify $UNIT" "$out"
fi
sec=$(systemd-analyze security --offline=true "$UNIT" 2>&1)
exposure=$(sed -n 's/.*Overall exposure level for calico-medic.service: \([0-9.]*\).*/\1/p' <<<"$sec")
if [[ -n $exposure ]] && awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }'; then
    pass "systemd-analyze security --offline=true: exposure $exposure <= $MAX_EXPOSURE"
else
    fail "systemd-analyze security: exposure '${exposure:-?}' <= $MAX_EXPOSURE" "$(grep -E '✗|Overall' <<<"$sec")"
fi
# Properties the daemon depends on (easy to lose in a later hardening pass).
unit_has() { grep -qE "$1" "$UNIT"; }
unit_has '^Type=notify$' && unit_has '^NotifyAccess=main$' && unit_has '^WatchdogSec=' &&
    unit_has '^Restart=on-failure$' && unit_has '^ExecReload=/bin/kill -HUP \$MAINPID$' &&
    unit_has "^ExecStart=$BIN run --config $CONF\$" &&
    pass "unit: Type=notify, NotifyAccess=main, WatchdogSec, Restart=on-failure, ExecReload=SIGHUP, ExecStart" ||
    fail "unit: notify/watchdog/restart/reload/ExecStart settings"
unit_has '^(Wants|After)=.*docker\.service' && ! unit_has '^(Requires|BindsTo|PartOf|Requisite)=.*docker' &&
    pass "unit: Wants/After docker.service, no Requires/BindsTo/PartOf (survives Docker restarts)" ||
    fail "unit: docker.service dependency must be Wants/After only"
! unit_has '^(PrivateNetwork|PrivateUsers)=(yes|true|1)' && unit_has '^RestrictNamespaces=net$' &&
    pass "unit: host network and user namespace kept; RestrictNamespaces=net (setns into netns allowed)" ||
    fail "unit: PrivateNetwork/PrivateUsers must be off and RestrictNamespaces=net"
UNIT_CAPS=$(sed -n 's/^CapabilityBoundingSet=//p' "$UNIT" | tr ' ' '\n' | sed 's/^CAP_//' | sort | tr '\n' ' ')
[[ $UNIT_CAPS = "NET_ADMIN NET_RAW SYS_ADMIN SYS_PTRACE " ]] &&
    pass "unit: CapabilityBoundingSet = $UNIT_CAPS" || fail "unit: CapabilityBoundingSet" "$UNIT_CAPS"

# ---------------------------------------------------------------- example config
# `check` loads and validates the config before it contacts Docker: exit 2 with
# "cannot reach Docker" (and not a config error) means the file was accepted.
config_accepted() { # <file>
    local out rc
    out=$("$BIN" check --config "$1" --docker-host "$NOSOCK" 2>&1)
    rc=$?
    [[ $rc = 2 && $out == *"cannot reach Docker"* && $out != *config:* ]] || {
        echo "exit $rc: $out"
        return 1
    }
}
check "installed $CONF parses (check exits 2: Docker unreachable, not a config error)" config_accepted "$CONF"
# Every commented-out default, uncommented, must be accepted too.
sed -E 's/^#([a-z_]+ = )/\1/' "$CONF" >"$WORK/uncommented.toml"
n_keys=$(grep -cE '^[a-z_]+ = ' "$WORK/uncommented.toml")
check "example with all $n_keys default values uncommented parses" config_accepted "$WORK/uncommented.toml"
# Negative control: the same probe rejects a bad key and names it.
printf 'resync_intervall = "60s"\n' >"$WORK/bad.toml"
out=$("$BIN" check --config "$WORK/bad.toml" --docker-host "$NOSOCK" 2>&1)
[[ $? = 2 && $out == *resync_intervall* && $out != *"cannot reach Docker"* ]] &&
    pass "negative control: unknown key rejected with exit 2, key named" || fail "negative control" "$out"
# Completeness: the binary lists the keys it accepts when it meets an unknown one;
# each must be documented in the example (as `key =` or `#key =`) in its section.
example_keys() { # <section or "">: keys of the uncommented example in that section
    awk -v s="$1" '/^\[/ { cur = substr($0, 2, length($0) - 2); next }
        cur == s && /^[a-z_]+ = / { print $1 }' "$WORK/uncommented.toml"
}
for section in "" backoff probe; do
    if [[ -z $section ]]; then printf 'zz_unknown = 1\n' >"$WORK/probe.toml"; else printf '[%s]\nzz_unknown = 1\n' "$section" >"$WORK/probe.toml"; fi
    err=$("$BIN" check --config "$WORK/probe.toml" --docker-host "$NOSOCK" 2>&1)
    known=$(sed -n 's/.*expected one of \(.*\)$/\1/p' <<<"$err" | grep -oE '`[a-z_]+`' | tr -d '`')
    [[ -z $section ]] && known=$(grep -vxE 'backoff|probe' <<<"$known")
    have=$(example_keys "$section")
    missing=$(comm -23 <(sort <<<"$known") <(sort <<<"$have") | tr '\n' ' ')
    if [[ -z $known ]]; then
        fail "config keys [${section:-top}]: could not read the key list from the binary" "$err"
    elif [[ -z $missing ]]; then
        pass "example documents every [${section:-top}] key ($(wc -w <<<"$known"))"
    else
        fail "example misses [${section:-top}] keys: $missing"
    fi
done

# ---------------------------------------------------------------- Marathon app
check "jq . $MARATHON_SRC (valid JSON)" jq -e . "$MARATHON_SRC"
mjq() { jq -e "$1" "$MARATHON_SRC" >/dev/null 2>&1; }
mjq 'any(.constraints[]; . == ["hostname", "UNIQUE"])' && mjq '.instances >= 1' &&
    pass "marathon: one instance per agent (hostname UNIQUE)" || fail "marathon: hostname UNIQUE constraint"
mjq '.container.type == "DOCKER" and (.container.docker.privileged | not)' &&
    ! mjq 'any(.container.docker.parameters[]; .key == "privileged")' &&
    pass "marathon: Docker containerizer, not privileged" || fail "marathon: DOCKER, privileged false"
mjq 'any(.networks[]; .mode == "host") and any(.container.docker.parameters[]; . == {"key": "pid", "value": "host"})' &&
    pass "marathon: host network and host PID namespace" || fail "marathon: host network / pid host"
mjq '.container.volumes | map(select(.hostPath == "/var/run/docker.sock" and .containerPath == "/var/run/docker.sock")) | length == 1' &&
    pass "marathon: Docker socket mounted" || fail "marathon: docker.sock volume"
APP_CAPS=$(jq -r '.container.docker.parameters[] | select(.key == "cap-add") | .value' "$MARATHON_SRC" | sort | tr '\n' ' ')
mjq 'any(.container.docker.parameters[]; . == {"key": "cap-drop", "value": "ALL"})' &&
    [[ $APP_CAPS = "$UNIT_CAPS" ]] &&
    pass "marathon: cap-drop ALL + cap-add = the unit's set ($APP_CAPS)" ||
    fail "marathon: capabilities" "cap-add: $APP_CAPS unit: $UNIT_CAPS"
mjq '.healthChecks | map(select(.path == "/healthz" and .port == 9637 and (.protocol == "MESOS_HTTP" or .protocol == "HTTP"))) | length == 1' &&
    pass "marathon: health check GET /healthz on 9637" || fail "marathon: /healthz health check"
check "installed Marathon example = $MARATHON_SRC" cmp "$DOC/examples/marathon-app.json" "$MARATHON_SRC"

# ---------------------------------------------------------------- privileges, on the lab (optional)
lab_up() {
    [[ -x $LABCTL && -S /var/run/docker.sock ]] && "$DOCKER" network inspect calico-lab >/dev/null 2>&1
}
if lab_up && LAB_TASK=$("$LABCTL" task 2>"$WORK/task.err"); then
    say "lab is up: capability checks on task $LAB_TASK (read-only check)"
    caps_arg() { local c out="-all"; for c in $1; do out+=",+${c,,}"; done; echo "$out"; }
    run_caps() { # <caps> -> output of `check --container` under exactly those capabilities + no_new_privs
        setpriv --bounding-set="$(caps_arg "$1")" --inh-caps=-all --no-new-privs \
            "$BIN" check --container "$LAB_TASK" 2>&1
    }
    out=$(run_caps "$UNIT_CAPS")
    rc=$?
    [[ $rc = 0 && $out == *"$LAB_TASK"*healthy* && $out != *WARN* ]] &&
        pass "installed binary with only the unit's capabilities checks and probes a task" ||
        fail "check with the unit's capabilities (exit $rc)" "$out"
    for drop in SYS_PTRACE SYS_ADMIN NET_RAW; do
        out=$(run_caps "${UNIT_CAPS/$drop/}")
        rc=$?
        case $drop in
        SYS_PTRACE) want="Permission denied" why="opening /proc/<pid>/ns/net" ;;
        SYS_ADMIN) want="Operation not permitted" why="setns" ;;
        NET_RAW) want="ICMP socket" why="the host->workload probe" ;;
        esac
        [[ $out == *"$want"* ]] && pass "without CAP_$drop: $why fails (so it is needed)" ||
            fail "without CAP_$drop: expected '$want'" "$out"
    done
    # The Marathon app's container settings, on the same engine: an image holding
    # only the installed binary and its libraries, run with the app's parameters.
    IMAGE=calico-medic-packaging-test:$VERSION
    root=$WORK/image
    mkdir -p "$root/usr/bin" "$root/etc/calico-medic" "$root/tmp"
    cp "$BIN" "$root/usr/bin/"
    for lib in $(ldd "$BIN" | grep -oE '/[^ ]+\.so[^ ]*'); do
        mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
    done
    if tar -C "$root" -c . | "$DOCKER" import -c 'ENTRYPOINT ["/usr/bin/calico-medic"]' - "$IMAGE" >/dev/null; then
        mapfile -t params < <(jq -r '.container.docker.parameters[] | "--\(.key)=\(.value)"' "$MARATHON_SRC")
        # Host /etc/calico-medic is replaced by an empty directory (defaults) here.
        mkdir -p "$WORK/etc"
        mapfile -t vols < <(jq -r '.container.volumes[] | "-v=\(.hostPath):\(.containerPath):\(.mode | ascii_downcase)"' "$MARATHON_SRC" |
            sed "s#^-v=/etc/calico-medic:#-v=$WORK/etc:#")
        out=$("$DOCKER" run --rm --network host "${params[@]}" "${vols[@]}" "$IMAGE" check --container "$LAB_TASK" 2>&1)
        rc=$?
        [[ $rc = 0 && $out == *"$LAB_TASK"*healthy* && $out != *WARN* ]] &&
            pass "container with the Marathon app's parameters checks and probes a task" ||
            fail "container with the Marathon app's parameters (exit $rc)" "$out"
    else
        fail "docker import of the test image"
    fi
else
    say "SKIP capability and Marathon-container checks: the lab (tests/lab/setup.sh) is not up$([[ -s $WORK/task.err ]] && echo ": $(head -1 "$WORK/task.err")")"
    LAB_TASK=""
fi

# ---------------------------------------------------------------- remove, purge
if out=$(dpkg -r "$PKG" 2>&1); then pass "dpkg -r $PKG"; else fail "dpkg -r $PKG" "$out"; fi
[[ ! -e $BIN && ! -e /usr/lib/systemd/system/calico-medic.service && -f $CONF ]] &&
    pass "after remove: binary and unit gone, conffile kept" || fail "after remove" "$(ls -l "$BIN" "$UNIT" "$CONF" 2>&1)"
if out=$(dpkg --purge "$PKG" 2>&1); then pass "dpkg --purge $PKG"; else fail "dpkg --purge $PKG" "$out"; fi
leftovers=$(
    ls -d /etc/calico-medic "$DOC" 2>/dev/null
    find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
        -name '*calico-medic*' 2>/dev/null
    dpkg-query -W -f='${Status}\n' "$PKG" 2>/dev/null | grep -v not-installed
)
[[ -z $leftovers ]] && pass "after purge: nothing left (config dir, unit symlinks, helper state, dpkg record)" ||
    fail "after purge: leftovers" "$leftovers"

summary
((FAILED == 0))
