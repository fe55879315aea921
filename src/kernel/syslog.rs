//! One line to the system log (`/dev/log`: journald or syslogd), for processes that
//! have no log of their own: the prestart hook runs under runc, which drops what a
//! successful hook writes to stderr. Nothing happens where no logger listens.

use std::ffi::CString;

/// Logs `message` at `info` (or `warning`) under `calico-medic-hook[pid]`.
pub fn log_line(message: &str, warning: bool) {
    let Ok(text) = CString::new(message.replace('\0', " ")) else { return };
    let priority = if warning { libc::LOG_WARNING } else { libc::LOG_INFO };
    // SAFETY: openlog keeps the ident pointer: a 'static C string literal.
    unsafe { libc::openlog(c"calico-medic-hook".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    // SAFETY: a constant "%s" format with one valid C string argument.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), text.as_ptr()) };
}
