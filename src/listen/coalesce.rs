//! Leading + trailing coalescing of triggers per target (DESIGN.md, "Coalescing (guest)").
//! The settle window opens when an action ends, so a slow action cannot turn a burst into a
//! queue of actions. Pure: fed instants by the caller, so it is tested without sleeping.

use std::time::{Duration, Instant};

/// What to do with one trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run the action now (leading edge); report its end with [`Coalescer::on_done`].
    Act,
    /// Answer `merged`; when `schedule` is set, the caller arranges a trailing action at that instant.
    Merged {
        /// Set for the first merged trigger of an open window only.
        schedule: Option<Instant>,
    },
}

/// Per-target state: an action running, the settle window after it, and a trailing action owed.
#[derive(Debug)]
pub struct Coalescer {
    settle: Duration,
    busy: bool,
    window_end: Option<Instant>,
    owed: bool,
}

impl Coalescer {
    /// How long its windows last.
    pub fn settle(&self) -> Duration {
        self.settle
    }

    /// A coalescer whose windows last `settle`.
    pub fn new(settle: Duration) -> Coalescer {
        Coalescer { settle, busy: false, window_end: None, owed: false }
    }

    /// A trigger arrived at `now`.
    pub fn on_trigger(&mut self, now: Instant) -> Decision {
        if self.busy {
            // The end of the running action schedules the trailing one.
            self.owed = true;
            return Decision::Merged { schedule: None };
        }
        match self.window_end {
            Some(end) if now < end => {
                let first = !self.owed;
                self.owed = true;
                Decision::Merged { schedule: first.then_some(end) }
            }
            _ => {
                self.busy = true;
                self.owed = false;
                Decision::Act
            }
        }
    }

    /// The action ended at `now`: the settle window opens. Returns when to run a trailing
    /// action, if triggers were merged while it ran.
    pub fn on_done(&mut self, now: Instant) -> Option<Instant> {
        self.busy = false;
        let end = now + self.settle;
        self.window_end = Some(end);
        self.owed.then_some(end)
    }

    /// The action failed at `now`: it reloaded nothing, so no settle window protects it, and the
    /// next trigger acts at once and hears its own result. Returns `now` when triggers were
    /// merged while it ran: their trailing action is due at once.
    pub fn on_failed(&mut self, now: Instant) -> Option<Instant> {
        self.busy = false;
        self.window_end = self.owed.then_some(now);
        self.window_end
    }

    /// Whether nothing is running or owed: a receiver may stop without losing a change.
    pub fn idle(&self) -> bool {
        !self.busy && !self.owed
    }

    /// The trailing action scheduled for `scheduled` is due: returns whether to act now (then
    /// report its end with [`Coalescer::on_done`]). One scheduled for a window that is over
    /// does nothing: its thread woke late, and acting now would break the current window.
    pub fn on_trailing_due(&mut self, scheduled: Instant) -> bool {
        if !self.owed || self.busy || self.window_end != Some(scheduled) {
            return false;
        }
        self.owed = false;
        self.busy = true;
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
        assert_eq!(c.on_done(t0 + ms(1)), None, "nothing owed");
        assert!(!c.on_trailing_due(t0 + ms(201)), "a stray trailing call does nothing");
        assert_eq!(c.on_trigger(t0 + ms(300)), Decision::Act, "after the window the next trigger leads again");
    }

    #[test]
    fn a_burst_costs_exactly_two_actions() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(ms(200));
        assert_eq!(c.on_trigger(t0), Decision::Act);
        assert_eq!(c.on_done(t0 + ms(2)), None);
        let mut scheduled = Vec::new();
        for i in 1..50 {
            match c.on_trigger(t0 + ms(2 + i * 2)) {
                Decision::Act => panic!("a second leading action"),
                Decision::Merged { schedule } => scheduled.extend(schedule),
            }
        }
        assert_eq!(scheduled, vec![t0 + ms(202)], "one trailing action, at the window's end");
        assert!(c.on_trailing_due(t0 + ms(202)));
        assert_eq!(c.on_done(t0 + ms(205)), None);
        assert!(!c.on_trailing_due(t0 + ms(202)), "no third action");
    }

    #[test]
    fn triggers_during_a_slow_action_cost_one_trailing_action_after_it() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(ms(100));
        assert_eq!(c.on_trigger(t0), Decision::Act);
        // The action takes 1.5 s; triggers meanwhile are merged, none acts.
        for i in 1..10 {
            assert_eq!(c.on_trigger(t0 + ms(i * 100)), Decision::Merged { schedule: None });
        }
        assert_eq!(c.on_done(t0 + ms(1500)), Some(t0 + ms(1600)));
        assert_eq!(c.on_trigger(t0 + ms(1550)), Decision::Merged { schedule: None }, "already scheduled");
        assert!(c.on_trailing_due(t0 + ms(1600)));
        assert_eq!(c.on_done(t0 + ms(1610)), None);
        assert_eq!(c.on_trigger(t0 + ms(1800)), Decision::Act);
    }

    #[test]
    fn a_storm_longer_than_a_window_costs_one_action_per_window() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(ms(100));
        assert_eq!(c.on_trigger(t0), Decision::Act);
        c.on_done(t0);
        assert_eq!(c.on_trigger(t0 + ms(50)), Decision::Merged { schedule: Some(t0 + ms(100)) });
        assert!(c.on_trailing_due(t0 + ms(100)));
        assert_eq!(c.on_done(t0 + ms(100)), None);
        assert_eq!(c.on_trigger(t0 + ms(150)), Decision::Merged { schedule: Some(t0 + ms(200)) });
        assert_eq!(c.on_trigger(t0 + ms(160)), Decision::Merged { schedule: None });
    }

    /// Plays `triggers` (ms, any order) through a coalescer whose actions take `duration` ms, with
    /// a synthetic clock; each trailing thread wakes `late` ms after its instant (taken in turn,
    /// as a loaded machine would). Returns when each action started.
    fn simulate(triggers: &[u64], settle: u64, duration: u64, late: &[u64]) -> Vec<u64> {
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        enum Event {
            End,
            /// A trailing thread wakes, with the instant it was scheduled for.
            Trailing(u64),
            Trigger,
        }
        let t0 = Instant::now();
        let at = |t: u64| t0 + ms(t);
        let since = |i: Instant| i.duration_since(t0).as_millis() as u64;
        let mut c = Coalescer::new(ms(settle));
        let mut queue: std::collections::BinaryHeap<std::cmp::Reverse<(u64, Event)>> =
            triggers.iter().map(|&t| std::cmp::Reverse((t, Event::Trigger))).collect();
        let mut starts = Vec::new();
        let mut lateness = late.iter().copied().cycle();
        let mut trailing = |due: Instant| {
            let due = since(due);
            std::cmp::Reverse((due + lateness.next().unwrap_or(0), Event::Trailing(due)))
        };
        // Bounded: each trigger causes at most one start, one end and one trailing event.
        for _ in 0..triggers.len() * 4 + 4 {
            let Some(std::cmp::Reverse((t, event))) = queue.pop() else { break };
            let mut start = |queue: &mut std::collections::BinaryHeap<_>| {
                starts.push(t);
                queue.push(std::cmp::Reverse((t + duration, Event::End)));
            };
            match event {
                Event::Trigger => match c.on_trigger(at(t)) {
                    Decision::Act => start(&mut queue),
                    Decision::Merged { schedule: Some(due) } => queue.push(trailing(due)),
                    Decision::Merged { schedule: None } => {}
                },
                Event::End => {
                    if let Some(due) = c.on_done(at(t)) {
                        queue.push(trailing(due));
                    }
                }
                Event::Trailing(due) => {
                    if c.on_trailing_due(at(due)) {
                        start(&mut queue);
                    }
                }
            }
        }
        assert!(queue.is_empty(), "the simulation did not settle");
        starts
    }

    #[test]
    fn a_trailing_thread_that_wakes_after_its_window_does_not_act() {
        // Found by the property below: the first window's trailing thread, 410 ms late, used to
        // act inside the next window.
        let starts = simulate(&[743, 743, 116, 116], 217, 1, &[410]);
        assert!(starts.windows(2).all(|p| p[1] >= p[0] + 218), "{starts:?}");
        assert!(starts.last().is_some_and(|&s| s >= 743), "{starts:?}");
    }

    proptest::proptest! {
        /// For any triggers: actions are at least a settle window apart (so at most two in any
        /// window), never overlap, and the last one starts no earlier than the last trigger.
        #[test]
        fn any_burst_is_coalesced_and_the_last_change_is_picked_up(
            triggers in proptest::collection::vec(0u64..5_000, 1..200),
            settle in 1u64..500,
            duration in 0u64..300,
            late in proptest::collection::vec(proptest::prop_oneof![3 => proptest::strategy::Just(0u64), 1 => 0u64..2_000], 1..8),
        ) {
            let starts = simulate(&triggers, settle, duration, &late);
            for pair in starts.windows(2) {
                proptest::prop_assert!(pair[1] >= pair[0] + settle + duration, "{starts:?}");
            }
            let last_trigger = *triggers.iter().max().unwrap();
            proptest::prop_assert!(starts.last().is_some_and(|&s| s >= last_trigger), "{starts:?} after {last_trigger}");
        }
    }

    #[test]
    fn a_failed_action_opens_no_window() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(ms(200));
        assert_eq!(c.on_trigger(t0), Decision::Act);
        assert_eq!(c.on_failed(t0 + ms(1)), None);
        assert_eq!(c.on_trigger(t0 + ms(2)), Decision::Act, "the next trigger hears its own result");
        assert_eq!(c.on_trigger(t0 + ms(3)), Decision::Merged { schedule: None });
        assert_eq!(c.on_failed(t0 + ms(4)), Some(t0 + ms(4)), "what was merged runs at once");
        assert!(c.on_trailing_due(t0 + ms(4)));
        assert_eq!(c.on_done(t0 + ms(5)), None);
        assert!(c.idle());
    }

    #[test]
    fn zero_settle_acts_on_every_trigger_that_finds_the_target_idle() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::ZERO);
        assert_eq!(c.on_trigger(t0), Decision::Act);
        assert_eq!(c.on_done(t0), None);
        assert_eq!(c.on_trigger(t0), Decision::Act);
        assert_eq!(c.on_trigger(t0), Decision::Merged { schedule: None }, "never two actions at once");
        assert_eq!(c.on_done(t0), Some(t0));
    }
}
