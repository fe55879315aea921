//! The kernel layer's small concerns, beside `netns.rs` (entering namespaces) and
//! `netlink/` (rtnetlink requests, watches, kernel-version fallbacks): scheduling
//! priority, ICMP sockets, and bounded `/proc` and `/sys` reads.
//!
//! `src/kernel/`, `src/netns.rs` and `src/netlink/` are the kernel layer: the only
//! code that holds `unsafe` or calls libc (libc's constants and types are fine
//! everywhere), and the only code that reads `/proc` or `/sys`.
//! `tests/kernel_layer.rs` keeps that true.

pub mod icmp;
pub mod procfs;
pub mod sched;
