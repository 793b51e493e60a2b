//! Leading + trailing coalescing of triggers per target (DESIGN.md, "Coalescing (guest)").
//! Pure: fed instants by the caller, so it is tested without sleeping.

use std::time::{Duration, Instant};

/// What to do with one trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run the action now (leading edge); a settle window opens.
    Act,
    /// Answer `merged`; when `schedule` is set, the caller arranges a trailing action at that instant.
    Merged {
        /// Set for the first merged trigger of a window only.
        schedule: Option<Instant>,
    },
}

/// Per-target state: the open settle window, and whether a trailing action is owed.
#[derive(Debug)]
pub struct Coalescer {
    settle: Duration,
    window_end: Option<Instant>,
    trailing_owed: bool,
}

impl Coalescer {
    /// A coalescer whose windows last `settle`.
    pub fn new(settle: Duration) -> Coalescer {
        Coalescer { settle, window_end: None, trailing_owed: false }
    }

    /// A trigger arrived at `now`.
    pub fn on_trigger(&mut self, now: Instant) -> Decision {
        match self.window_end {
            Some(end) if now < end && !self.settle.is_zero() => {
                let first = !self.trailing_owed;
                self.trailing_owed = true;
                Decision::Merged { schedule: first.then_some(end) }
            }
            _ => {
                self.window_end = Some(now + self.settle);
                self.trailing_owed = false;
                Decision::Act
            }
        }
    }

    /// The scheduled trailing instant has come: returns whether to act. Acting opens a new
    /// window, so a storm that lasts longer than one window costs one action per window.
    pub fn on_trailing_due(&mut self, now: Instant) -> bool {
        if !self.trailing_owed {
            return false;
        }
        self.trailing_owed = false;
        self.window_end = Some(now + self.settle);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_lone_trigger_acts_at_once() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(ms(200));
        assert_eq!(c.on_trigger(t0), Decision::Act);
        // Nothing owed: a stray trailing call does nothing.
        assert!(!c.on_trailing_due(t0 + ms(200)));
        // After the window, the next trigger leads again.
        assert_eq!(c.on_trigger(t0 + ms(300)), Decision::Act);
    }

    #[test]
    fn a_burst_costs_exactly_two_actions() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(ms(200));
        let mut actions = 0;
        let mut scheduled = Vec::new();
        for i in 0..50 {
            match c.on_trigger(t0 + ms(i * 2)) {
                Decision::Act => actions += 1,
                Decision::Merged { schedule: Some(at) } => scheduled.push(at),
                Decision::Merged { schedule: None } => {}
            }
        }
        assert_eq!(scheduled, vec![t0 + ms(200)]);
        if c.on_trailing_due(t0 + ms(200)) {
            actions += 1;
        }
        assert_eq!(actions, 2);
    }

    #[test]
    fn triggers_after_the_trailing_action_are_merged_into_the_next_window() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(ms(100));
        assert_eq!(c.on_trigger(t0), Decision::Act);
        assert_eq!(c.on_trigger(t0 + ms(50)), Decision::Merged { schedule: Some(t0 + ms(100)) });
        assert!(c.on_trailing_due(t0 + ms(100)));
        assert_eq!(c.on_trigger(t0 + ms(150)), Decision::Merged { schedule: Some(t0 + ms(200)) });
        assert_eq!(c.on_trigger(t0 + ms(160)), Decision::Merged { schedule: None });
        assert!(c.on_trailing_due(t0 + ms(200)));
        assert!(!c.on_trailing_due(t0 + ms(300)));
        assert_eq!(c.on_trigger(t0 + ms(301)), Decision::Act);
    }

    #[test]
    fn zero_settle_acts_on_every_trigger() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::ZERO);
        assert_eq!(c.on_trigger(t0), Decision::Act);
        assert_eq!(c.on_trigger(t0), Decision::Act);
    }
}
