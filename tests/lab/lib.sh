# Shared by the lab scripts (sourced).

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
