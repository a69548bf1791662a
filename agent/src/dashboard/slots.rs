//! Connection slots: a bound on the connections open at once, overall and
//! per address, that idle connections cannot exhaust.
//!
//! A fixed number of slots alone is a lock anyone can close: open them all
//! with half-sent requests and no one else gets in. So a connection that is
//! not serving anything (its request head not yet complete, or idle between
//! requests) can be evicted: when the slots are full, or its address has
//! all of its own, a new connection takes the slot of the one idle longest.
//! A page's live feed and a request being answered are never evicted; when
//! every slot is busy like that, the new connection is refused. hyper's
//! header timeout ends a half-request after a few seconds anyway; eviction
//! is what keeps a flood of them from starving a real request meanwhile.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::oneshot;

/// Connections open at once (each page keeps one for its feed).
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one address may hold at once.
pub const MAX_PER_ADDRESS: usize = 64;

#[derive(Default)]
pub struct Slots {
    /// By id; ids grow, so this is also the order of arrival.
    open: Mutex<BTreeMap<u64, Entry>>,
    next_id: std::sync::atomic::AtomicU64,
}

struct Entry {
    addr: IpAddr,
    /// Requests (or a feed) being served right now.
    busy: u32,
    /// Since when it has served nothing.
    idle_since: Instant,
    /// Dropping the connection: sent on eviction.
    evict: Option<oneshot::Sender<()>>,
}

/// A connection's slot, held by its task; dropping it frees the slot.
pub struct Slot {
    pub handle: SlotHandle,
    /// Fires if the slot was given to another connection: drop this one.
    pub evicted: oneshot::Receiver<()>,
}

/// What a connection's requests use to mark it busy.
#[derive(Clone)]
pub struct SlotHandle {
    id: u64,
    slots: Arc<Slots>,
}

/// While held, the connection is serving and cannot be evicted.
pub struct Busy {
    handle: SlotHandle,
}

/// A poisoned lock only means a panic elsewhere; the table is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slots {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn open_count(&self) -> usize {
        lock(&self.open).len()
    }

    /// A slot for a new connection from `addr`, evicting the connection
    /// idle longest (of that address when it holds its share, else of
    /// anyone) when needed; `None` when every slot is busy serving.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Option<Slot> {
        let mut open = lock(&self.open);
        let mine = open.values().filter(|e| e.addr == addr).count();
        if mine >= MAX_PER_ADDRESS && !evict_idlest(&mut open, Some(addr)) {
            return None;
        }
        if open.len() >= MAX_CONNECTIONS && !evict_idlest(&mut open, None) {
            return None;
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (evict, evicted) = oneshot::channel();
        open.insert(
            id,
            Entry {
                addr,
                busy: 0,
                idle_since: Instant::now(),
                evict: Some(evict),
            },
        );
        Some(Slot {
            handle: SlotHandle {
                id,
                slots: Arc::clone(self),
            },
            evicted,
        })
    }
}

/// Evicts the connection idle longest (from `addr` only, if given).
fn evict_idlest(open: &mut BTreeMap<u64, Entry>, addr: Option<IpAddr>) -> bool {
    let idlest = open
        .iter()
        .filter(|(_, e)| e.busy == 0 && addr.is_none_or(|a| e.addr == a))
        .min_by_key(|(_, e)| e.idle_since)
        .map(|(id, _)| *id);
    let Some(id) = idlest else {
        return false;
    };
    if let Some(mut entry) = open.remove(&id)
        && let Some(evict) = entry.evict.take()
    {
        let _ = evict.send(());
    }
    true
}

impl SlotHandle {
    /// Marks the connection busy until the returned guard is dropped.
    pub fn busy(&self) -> Busy {
        if let Some(entry) = lock(&self.slots.open).get_mut(&self.id) {
            entry.busy += 1;
        }
        Busy {
            handle: self.clone(),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(entry) = lock(&self.handle.slots.open).get_mut(&self.handle.id) {
            entry.busy = entry.busy.saturating_sub(1);
            if entry.busy == 0 {
                entry.idle_since = Instant::now();
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.handle.slots.open).remove(&self.handle.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn idle_connections_give_way_and_busy_ones_do_not() {
        let slots = Slots::new();
        let mut held: Vec<Slot> = (0..MAX_PER_ADDRESS)
            .map(|_| slots.admit(addr(1)).expect("a slot"))
            .collect();
        // The address has its share: the next one evicts the first.
        let next = slots.admit(addr(1)).expect("a slot by eviction");
        assert!(held[0].evicted.try_recv().is_ok(), "the idlest went");
        assert_eq!(slots.open_count(), MAX_PER_ADDRESS);
        held.push(next);
        // Every one of them busy: the address gets no more.
        let busy: Vec<Busy> = held.iter().skip(1).map(|s| s.handle.busy()).collect();
        assert!(slots.admit(addr(1)).is_none());
        // Another address still does.
        assert!(slots.admit(addr(2)).is_some());
        drop(busy);
        assert!(
            slots.admit(addr(1)).is_some(),
            "idle again, evictable again"
        );
    }

    #[test]
    fn a_full_house_evicts_across_addresses_and_frees_on_drop() {
        let slots = Slots::new();
        let held: Vec<Slot> = (0..MAX_CONNECTIONS)
            .map(|i| slots.admit(addr((i % 200) as u8)).expect("a slot"))
            .collect();
        let busy: Vec<Busy> = held.iter().map(|s| s.handle.busy()).collect();
        assert!(slots.admit(addr(250)).is_none(), "all busy: refused");
        drop(busy);
        assert!(slots.admit(addr(250)).is_some());
        drop(held);
        assert_eq!(slots.open_count(), 0);
    }
}
