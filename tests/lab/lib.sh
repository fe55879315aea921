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
