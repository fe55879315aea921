//! The kernel layer's small concerns, beside `netns.rs` (entering namespaces) and
//! `netlink/` (rtnetlink requests and watches): the kernel-version fallbacks
//! (`compat`, with `CALICO_MEDIC_EMULATE_KERNEL`), scheduling priority, ICMP
//! sockets, bounded `/proc` and `/sys` reads, and one line to the system log.
//!
//! `src/kernel/`, `src/netns.rs` and `src/netlink/` are the kernel layer: the only
//! code that holds `unsafe` or calls libc (libc's constants and types are fine
//! everywhere), and the only code that reads `/proc` or `/sys`.
//! `tests/kernel_layer.rs` keeps that true.

pub mod compat;
pub mod icmp;
pub mod procfs;
pub mod sched;
pub mod syslog;
