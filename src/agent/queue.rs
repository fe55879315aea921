//! The work queue's per-container rules, pure: a container is queued at most once,
//! a container whose pass is running is re-run once after it finishes, and a pass
//! that started before the container died or was destroyed discards its result.

/// Queue bookkeeping of one container.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Slot {
    queued: bool,
    running: bool,
    rerun: bool,
    /// Bumped when the container dies or is destroyed: a pass that started under an
    /// older generation describes a namespace that is gone.
    generation: u64,
}

/// Handed to a pass when it starts; given back when it finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassTicket {
    generation: u64,
}

impl Slot {
    /// Asks for a pass. True when the id must be sent to the workers now (false:
    /// already queued, or running and marked to run again).
    pub fn enqueue(&mut self) -> bool {
        if self.running {
            self.rerun = true;
            false
        } else {
            !std::mem::replace(&mut self.queued, true)
        }
    }

    /// A worker picked the container up.
    pub fn start(&mut self) -> PassTicket {
        self.queued = false;
        self.running = true;
        PassTicket { generation: self.generation }
    }

    /// The pass ended. Returns (its result is still current, send the id again now).
    pub fn finish(&mut self, ticket: PassTicket) -> (bool, bool) {
        self.running = false;
        let current = ticket.generation == self.generation;
        let again = std::mem::take(&mut self.rerun);
        if again {
            self.queued = true;
        }
        (current, again)
    }

    /// The container died or was destroyed: results of passes already running are stale.
    pub fn invalidate(&mut self) {
        self.generation += 1;
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Neither queued nor running: safe to forget.
    pub fn is_idle(&self) -> bool {
        !self.queued && !self.running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_once_rerun_once() {
        let mut s = Slot::default();
        assert!(s.enqueue(), "first request is sent");
        assert!(!s.enqueue(), "already queued: deduplicated");
        let t = s.start();
        assert!(!s.enqueue(), "running: marked for a rerun, not sent");
        assert!(!s.enqueue());
        assert_eq!(s.finish(t), (true, true), "rerun exactly once");
        assert!(!s.enqueue(), "the rerun is queued");
        let t = s.start();
        assert_eq!(s.finish(t), (true, false));
        assert!(s.is_idle());
    }

    #[test]
    fn death_during_a_pass_makes_its_result_stale() {
        let mut s = Slot::default();
        s.enqueue();
        let t = s.start();
        s.invalidate();
        assert_eq!(s.finish(t), (false, false));
        s.enqueue();
        let t = s.start();
        assert_eq!(s.finish(t), (true, false), "the next pass is current");
    }
}
