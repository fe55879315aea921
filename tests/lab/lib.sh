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
