//! Scheduling priority of the calling thread. nix has no wrapper for
//! `sched_setscheduler(2)` or `setpriority(2)`, so the two libc calls live here.

use std::io;

/// The real-time priority asked for: the lowest SCHED_RR priority.
pub const RT_PRIORITY: libc::c_int = 1;
/// The nice value asked for when real-time scheduling is refused.
pub const NICE: libc::c_int = -10;

/// Which raise took effect on the calling thread.
#[derive(Debug)]
pub enum PriorityRaise {
    /// SCHED_RR at [`RT_PRIORITY`].
    RealTime,
    /// SCHED_RR was refused (`realtime`, e.g. no CAP_SYS_NICE); nice [`NICE`] took effect.
    Nice { realtime: io::Error },
    /// Both were refused: the thread keeps its priority.
    Unchanged { realtime: io::Error, nice: io::Error },
}

impl PriorityRaise {
    /// A bounded label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            PriorityRaise::RealTime => "realtime",
            PriorityRaise::Nice { .. } => "nice",
            PriorityRaise::Unchanged { .. } => "unchanged",
        }
    }
}

/// Raises the calling thread (only that thread, not the process) to SCHED_RR at the
/// lowest real-time priority; without CAP_SYS_NICE to nice −10; else leaves it as it is.
/// The kernel's RT throttling bounds what an RT thread can take.
pub fn raise_current_thread_priority() -> PriorityRaise {
    let param = libc::sched_param { sched_priority: RT_PRIORITY };
    // SAFETY: sched_setscheduler(2) with pid 0 = the calling thread only; `param` is
    // a valid sched_param for the duration of the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) } == 0 {
        return PriorityRaise::RealTime;
    }
    let realtime = io::Error::last_os_error();
    let tid = nix::unistd::gettid().as_raw() as libc::id_t;
    // SAFETY: setpriority(2) on this thread's id only; no pointers are passed.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, NICE) } != 0 {
        return PriorityRaise::Unchanged { realtime, nice: io::Error::last_os_error() };
    }
    PriorityRaise::Nice { realtime }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_reports_what_took_effect() {
        // On a thread of its own: the raise must not outlive the check.
        std::thread::spawn(|| {
            let raised = raise_current_thread_priority();
            // SAFETY: plain queries of the calling thread's scheduling policy and nice value.
            let (policy, nice) = unsafe {
                let tid = nix::unistd::gettid().as_raw() as libc::id_t;
                (libc::sched_getscheduler(0), libc::getpriority(libc::PRIO_PROCESS, tid))
            };
            match raised {
                PriorityRaise::RealTime => assert_eq!(policy, libc::SCHED_RR),
                PriorityRaise::Nice { .. } => assert_eq!((policy, nice), (libc::SCHED_OTHER, NICE)),
                PriorityRaise::Unchanged { .. } => assert_eq!(policy, libc::SCHED_OTHER),
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn labels_are_bounded() {
        let e = || io::Error::from_raw_os_error(libc::EPERM);
        let all = [
            PriorityRaise::RealTime,
            PriorityRaise::Nice { realtime: e() },
            PriorityRaise::Unchanged { realtime: e(), nice: e() },
        ];
        assert_eq!(all.map(|r| r.as_str()), ["realtime", "nice", "unchanged"]);
    }
}
