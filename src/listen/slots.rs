//! Connection slots (DESIGN.md, "Security"): who may hold one of the receiver's connections. A
//! connection that has not yet sent a valid first line ("pre-auth") may use only part of the
//! cap; when that part is full, a newcomer takes the slot of the oldest pre-auth connection of
//! the peer address that holds the most of them. So peers without the token can never keep out
//! a sender that has it: a flood from one address evicts its own connections, and a burst of
//! honest connections from one host is never turned away for its address alone. Pure
//! bookkeeping, generic over the handle used to close an evicted connection.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// What to do with a new connection.
#[derive(Debug, PartialEq)]
pub enum Admit<H> {
    /// Serve it in slot `id`.
    Accept(u64),
    /// Serve it in slot `id`, after closing `victim`, the oldest pre-auth connection of the
    /// address holding the most.
    Evict {
        /// The new connection's slot.
        id: u64,
        /// The connection to close.
        victim: H,
    },
    /// Turn it away: the cap is full of authenticated connections.
    Busy(&'static str),
}

struct Slot<H> {
    peer: IpAddr,
    authenticated: bool,
    handle: H,
}

/// The open connections, in the order they came (ids only grow).
pub struct Slots<H> {
    cap: usize,
    pre_auth_cap: usize,
    next: u64,
    open: BTreeMap<u64, Slot<H>>,
}

impl<H> Slots<H> {
    /// Slots for at most `cap` connections, three quarters of them (at least one) pre-auth.
    pub fn new(cap: usize) -> Slots<H> {
        let cap = cap.max(1);
        Slots { cap, pre_auth_cap: (cap * 3 / 4).max(1), next: 0, open: BTreeMap::new() }
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// A new connection from `peer`, closed through `handle` if it is evicted later.
    pub fn admit(&mut self, peer: IpAddr, handle: H) -> Admit<H> {
        let pre_auth = self.open.values().filter(|s| !s.authenticated).count();
        let victim = if self.open.len() >= self.cap || pre_auth >= self.pre_auth_cap {
            match self.victim().and_then(|id| self.open.remove(&id)) {
                Some(slot) => Some(slot.handle),
                None => return Admit::Busy("every connection is in use"),
            }
        } else {
            None
        };
        let id = self.next;
        self.next += 1;
        self.open.insert(id, Slot { peer, authenticated: false, handle });
        match victim {
            Some(victim) => Admit::Evict { id, victim },
            None => Admit::Accept(id),
        }
    }

    /// The oldest pre-auth connection of the address that holds the most pre-auth connections.
    fn victim(&self) -> Option<u64> {
        let mut held: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for slot in self.open.values().filter(|s| !s.authenticated) {
            *held.entry(slot.peer).or_default() += 1;
        }
        let most = held.values().copied().max()?;
        // Ids grow with age: the first match is the oldest.
        self.open.iter().find(|(_, s)| !s.authenticated && held.get(&s.peer) == Some(&most)).map(|(id, _)| *id)
    }

    /// Connection `id` sent a valid request: it keeps its slot until it ends.
    pub fn authenticated(&mut self, id: u64) {
        if let Some(slot) = self.open.get_mut(&id) {
            slot.authenticated = true;
        }
    }

    /// Whether connection `id` still holds its slot (an evicted one does not).
    pub fn holds(&self, id: u64) -> bool {
        self.open.contains_key(&id)
    }

    /// Connection `id` ended; returns its handle if it still held its slot.
    pub fn release(&mut self, id: u64) -> Option<H> {
        self.open.remove(&id).map(|slot| slot.handle)
    }

    /// Every handle, to close them all at stop.
    pub fn handles(&self) -> impl Iterator<Item = &H> {
        self.open.values().map(|s| &s.handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_flood_without_the_token_never_keeps_a_newcomer_out() {
        let mut slots = Slots::new(8);
        // Six peers fill the pre-auth part (6 of 8).
        for i in 0..6u8 {
            assert_eq!(slots.admit(ip(10 + i), u64::from(i)), Admit::Accept(u64::from(i)));
        }
        // The next newcomer evicts the oldest pre-auth connection.
        assert_eq!(slots.admit(ip(1), 100), Admit::Evict { id: 6, victim: 0 });
        slots.authenticated(6);
        assert!(!slots.holds(0) && slots.holds(6));
        // An authenticated connection is never evicted: floods take their own kind's slots.
        for round in 0..20u8 {
            match slots.admit(ip(50 + round), 200 + u64::from(round)) {
                Admit::Evict { victim, .. } => assert_ne!(victim, 100),
                Admit::Accept(_) => assert_eq!(round, 0, "only the one free pre-auth slot is taken freely"),
                Admit::Busy(why) => panic!("{why}"),
            }
        }
        assert!(slots.holds(6));
        assert_eq!(slots.len(), 7, "six pre-auth and one authenticated");
    }

    #[test]
    fn a_flood_from_one_address_evicts_its_own_connections() {
        let mut slots = Slots::new(8);
        // The flood holds five of the six pre-auth slots; an honest host holds one.
        for i in 0..5 {
            assert!(matches!(slots.admit(ip(2), i), Admit::Accept(_)));
        }
        assert!(matches!(slots.admit(ip(1), 100), Admit::Accept(5)));
        for round in 0..50u64 {
            match slots.admit(ip(2), 200 + round) {
                Admit::Evict { victim, .. } => assert_ne!(victim, 100, "the honest connection stays"),
                other => panic!("{other:?}"),
            }
        }
        assert!(slots.holds(5));
        // A burst from one honest address is never turned away for its address.
        let mut burst = Slots::new(200);
        for i in 0..100 {
            assert!(matches!(burst.admit(ip(1), i), Admit::Accept(_)));
        }
    }

    #[test]
    fn a_cap_full_of_authenticated_connections_is_busy() {
        let mut slots = Slots::new(2);
        for i in 0..2 {
            let Admit::Accept(id) = slots.admit(ip(1), i) else { panic!() };
            slots.authenticated(id);
        }
        assert!(matches!(slots.admit(ip(3), 9), Admit::Busy(_)));
        slots.release(0);
        assert!(matches!(slots.admit(ip(3), 9), Admit::Accept(2)));
        assert!(slots.handles().count() == 2);
    }
}
