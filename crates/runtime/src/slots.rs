//! Instance slots, handed out oldest run first.
//!
//! Every fresh instance takes one of a fixed number of slots (the pooling allocator's, or
//! the bound on instances at once). When calls wait for slots, the call of the run that
//! started first gets the next one, not the call that asked first: a run that has started
//! goes on to its end before later runs take its place. With calls served in the order
//! they asked, every run in flight advanced one task per round and none finished until all
//! were nearly done — each holding its store and records the whole time (100,000 runs in
//! flight peaked with every one of them half done) and each waiting as long as the slowest.
//! Served by run, a run's latency is its own work plus the runs ahead of it, and the runs
//! not yet started hold only their first call. A run never waits on runs that started after
//! it, so none waits forever.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// The slots, and the calls waiting for one in the order they are to get them.
pub(crate) struct Slots {
    state: Mutex<State>,
}

struct State {
    free: usize,
    /// By (the run's place in line, the call's ticket): the earliest run first, and within
    /// a run the call that asked first.
    waiting: BTreeMap<(u64, u64), oneshot::Sender<Slot>>,
    next_ticket: u64,
}

/// One slot, given back when dropped: to the first call waiting, else to the free ones.
pub(crate) struct Slot {
    slots: Arc<Slots>,
}

impl Slots {
    pub(crate) fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                free: slots,
                waiting: BTreeMap::new(),
                next_ticket: 0,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a call of the run whose place in line is `order` (lower goes first).
    pub(crate) async fn acquire(self: &Arc<Self>, order: u64) -> Slot {
        let (key, taken) = {
            let mut state = self.state();
            if state.free > 0 {
                state.free -= 1;
                return Slot {
                    slots: self.clone(),
                };
            }
            let key = (order, state.next_ticket);
            state.next_ticket += 1;
            let (give, taken) = oneshot::channel();
            state.waiting.insert(key, give);
            (key, taken)
        };
        // A call dropped while it waits (cancelled, past its run's deadline) leaves the line.
        let mut waiter = Waiter {
            slots: self,
            key: Some(key),
        };
        let slot = taken
            .await
            .expect("a waiting call's sender is kept until it is given a slot");
        waiter.key = None;
        slot
    }

    /// Gives a slot back: to the first call still waiting, else to the free ones.
    fn give_back(self: &Arc<Self>) {
        loop {
            let mut state = self.state();
            let Some((_, give)) = state.waiting.pop_first() else {
                state.free += 1;
                return;
            };
            drop(state);
            match give.send(Slot {
                slots: self.clone(),
            }) {
                Ok(()) => return,
                // That call stopped waiting just now: the next one gets the slot. (Forgotten,
                // not dropped, so that giving it back does not recurse.)
                Err(slot) => std::mem::forget(slot),
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.give_back();
    }
}

/// Takes a waiting call out of the line when it stops waiting before it got a slot.
struct Waiter<'a> {
    slots: &'a Arc<Slots>,
    key: Option<(u64, u64)>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.slots.state().waiting.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_earliest_run_waiting_not_the_first_call() {
        let slots = Slots::new(1);
        let held = slots.acquire(0).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut calls = Vec::new();
        // Asked in the order 30, 10, 20: served 10, 20, 30.
        for run in [30, 10, 20] {
            let (slots, order) = (slots.clone(), order.clone());
            calls.push(tokio::spawn(async move {
                let _slot = slots.acquire(run).await;
                order.lock().unwrap().push(run);
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(held);
        for call in calls {
            call.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [10, 20, 30]);
    }

    #[tokio::test]
    async fn a_call_that_stops_waiting_leaves_the_line_and_loses_no_slot() {
        let slots = Slots::new(1);
        let held = slots.acquire(0).await;
        // Dropped while waiting: out of the line.
        let gone = tokio::time::timeout(Duration::from_millis(5), slots.acquire(1)).await;
        assert!(gone.is_err());
        assert!(slots.state().waiting.is_empty());
        // Given a slot, then dropped before taking it: the slot goes on to the next caller.
        let (slots2, next) = (
            slots.clone(),
            tokio::spawn({
                let slots = slots.clone();
                async move { slots.acquire(3).await }
            }),
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let abandoned = {
            let mut state = slots2.state();
            let (give, taken) = oneshot::channel();
            state.waiting.insert((2, u64::MAX), give);
            taken
        };
        drop(abandoned);
        drop(held);
        let slot = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the next caller gets the slot")
            .unwrap();
        drop(slot);
        assert_eq!(slots.state().free, 1, "every slot is back");
    }
}
