//! Connection slots (DESIGN.md, "Security"): who may hold one of the receiver's connections. A
//! connection that has not yet sent a valid first line ("pre-auth") may use only part of the
//! cap, and only a few per peer address; when that part is full, a newcomer takes the slot of the
//! oldest pre-auth connection. So peers without the token can never keep out a sender that has
//! it. Pure bookkeeping, generic over the handle used to close an evicted connection.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// Pre-auth connections one peer address may hold at once.
pub const PER_PEER: usize = 16;

/// What to do with a new connection.
#[derive(Debug, PartialEq)]
pub enum Admit<H> {
    /// Serve it in slot `id`.
    Accept(u64),
    /// Serve it in slot `id`, after closing `victim`, the oldest pre-auth connection.
    Evict {
        /// The new connection's slot.
        id: u64,
        /// The connection to close.
        victim: H,
    },
    /// Turn it away: the cap is full of authenticated connections, or its peer holds enough.
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
        let from_peer = self.open.values().filter(|s| !s.authenticated && s.peer == peer).count();
        if from_peer >= PER_PEER {
            return Admit::Busy("too many connections from this address that have not sent a request yet");
        }
        let victim = if self.open.len() >= self.cap || pre_auth >= self.pre_auth_cap {
            let oldest = self.open.iter().find(|(_, s)| !s.authenticated).map(|(id, _)| *id);
            match oldest.and_then(|id| self.open.remove(&id)) {
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
    fn one_address_holds_only_a_few_pre_auth_slots() {
        let mut slots = Slots::new(128);
        for i in 0..PER_PEER {
            assert!(matches!(slots.admit(ip(2), i), Admit::Accept(_)));
        }
        assert!(matches!(slots.admit(ip(2), 99), Admit::Busy(_)));
        assert!(matches!(slots.admit(ip(1), 98), Admit::Accept(_)), "another address is not held up");
        slots.authenticated(0);
        assert!(matches!(slots.admit(ip(2), 97), Admit::Accept(_)), "an authenticated one no longer counts");
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
