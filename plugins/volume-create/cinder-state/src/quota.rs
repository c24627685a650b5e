//! The quota ledger at `/state/quota.json`: limits, usage, and reservations pending or
//! committed, in the style of Cinder's reserve → commit quota protocol.

use std::collections::BTreeMap;
use std::path::PathBuf;

use flowhost_guest::{Invocation, TaskError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::lock::FileLock;
use crate::{STATE_DIR, files};

/// An amount of each quota-limited resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// GiB of volume storage.
    pub gigabytes: u64,
    /// Number of volumes.
    pub volumes: u64,
}

impl Usage {
    fn plus(self, other: Usage) -> Usage {
        Usage {
            gigabytes: self.gigabytes.saturating_add(other.gigabytes),
            volumes: self.volumes.saturating_add(other.volumes),
        }
    }

    fn minus(self, other: Usage) -> Usage {
        Usage {
            gigabytes: self.gigabytes.saturating_sub(other.gigabytes),
            volumes: self.volumes.saturating_sub(other.volumes),
        }
    }
}

/// A reservation as handed from `quota_reserve` to `quota_commit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Key of the reservation in the ledger.
    pub id: String,
    /// What it holds.
    #[serde(flatten)]
    pub usage: Usage,
}

/// The whole ledger. BTreeMaps keep the file's key order stable across runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The most that may be in use plus reserved.
    pub limits: Usage,
    /// Committed usage.
    pub in_use: Usage,
    /// Pending reservations by id, counted against the limits until committed or released.
    pub reserved: BTreeMap<String, Usage>,
    /// Committed reservations by id, kept so a commit can be undone exactly.
    pub committed: BTreeMap<String, Usage>,
}

fn path() -> PathBuf {
    PathBuf::from(STATE_DIR).join("quota.json")
}

/// Fails with `over-quota` unless `requested` fits in what `limit` leaves after `used`.
fn check(
    resource: &str,
    unit: &str,
    limit: u64,
    used: u64,
    requested: u64,
) -> Result<(), TaskError> {
    let remaining = limit.saturating_sub(used);
    if requested <= remaining {
        return Ok(());
    }
    Err(TaskError::new(
        "over-quota",
        format!("requested {requested} {unit} but only {remaining} of {limit} {unit} remain"),
    )
    .with_details(json!({
        "resource": resource,
        "requested": requested,
        "remaining": remaining,
        "limit": limit,
        "used": used,
    })))
}

impl Ledger {
    /// Reads the ledger as it stands, without the lock; an absent file is an empty ledger
    /// with zero limits. The file is only ever replaced whole, so this is a ledger some
    /// writer wrote, though it may be out of date the moment after: change the ledger only
    /// through [`Ledger::update`].
    pub fn load() -> Result<Self, TaskError> {
        Ok(files::read(&path())?.unwrap_or_default())
    }

    /// Reads the ledger, applies `change` and writes the result, all under the ledger's lock
    /// (`/state/quota.lock`, see [`crate::lock`]), so concurrent runs never lose each other's
    /// updates. Writes only if `change` succeeded and changed something, atomically (a reader
    /// sees the old ledger or the new one); an error from `change` leaves the file as it was.
    pub fn update<R>(
        caller: &Invocation,
        change: impl FnOnce(&mut Ledger) -> Result<R, TaskError>,
    ) -> Result<R, TaskError> {
        let path = path();
        let lock = FileLock::acquire(&path, caller)?;
        let before: Ledger = files::read(&path)?.unwrap_or_default();
        let mut ledger = before.clone();
        let result = change(&mut ledger)?;
        if ledger != before {
            lock.ensure_held()?;
            files::write(&path, &ledger)?;
        }
        drop(lock);
        Ok(result)
    }

    /// [`Ledger::update`] for a change that only this call's own earlier calls can have
    /// made necessary, such as releasing or uncommitting its own reservation: `needed` first
    /// looks at the ledger as it stands, without the lock, and only if it says there is
    /// something to do is the lock taken and `change` applied. Nothing else adds or removes
    /// a reservation under this call's id, so a ledger without it stays without it; reverts
    /// with nothing to undo (a request refused over quota) thereby never wait for the lock.
    pub fn update_if_needed(
        caller: &Invocation,
        needed: impl FnOnce(&Ledger) -> bool,
        change: impl FnOnce(&mut Ledger) -> Result<(), TaskError>,
    ) -> Result<(), TaskError> {
        if needed(&Ledger::load()?) {
            Ledger::update(caller, change)
        } else {
            Ok(())
        }
    }

    /// Records a pending reservation if in-use plus every pending reservation plus `request`
    /// stays within the limits; returns what the reservation holds. A reservation `id`
    /// already pending or committed is left as it is, and what it holds returned: an earlier
    /// attempt of the same call made it (see [`crate::invocation_id`]).
    pub fn reserve(&mut self, id: &str, request: Usage) -> Result<Usage, TaskError> {
        if let Some(held) = self.reserved.get(id).or_else(|| self.committed.get(id)) {
            return Ok(*held);
        }
        let used = self
            .reserved
            .values()
            .fold(self.in_use, |sum, r| sum.plus(*r));
        check(
            "gigabytes",
            "GiB",
            self.limits.gigabytes,
            used.gigabytes,
            request.gigabytes,
        )?;
        check(
            "volumes",
            "volumes",
            self.limits.volumes,
            used.volumes,
            request.volumes,
        )?;
        self.reserved.insert(id.to_owned(), request);
        Ok(request)
    }

    /// Drops a pending reservation; false if there was none.
    pub fn release(&mut self, id: &str) -> bool {
        self.reserved.remove(id).is_some()
    }

    /// Turns a pending reservation into usage; one already committed is left as it is (an
    /// earlier attempt of the same call committed it).
    pub fn commit(&mut self, id: &str) -> Result<(), TaskError> {
        if self.committed.contains_key(id) {
            return Ok(());
        }
        let usage = self.reserved.remove(id).ok_or_else(|| {
            TaskError::new(
                "unknown-reservation",
                format!("no pending reservation `{id}` in the quota ledger"),
            )
        })?;
        self.in_use = self.in_use.plus(usage);
        self.committed.insert(id.to_owned(), usage);
        Ok(())
    }

    /// Undoes [`Ledger::commit`], leaving the reservation neither pending nor committed;
    /// false if it was not committed.
    pub fn uncommit(&mut self, id: &str) -> bool {
        let Some(usage) = self.committed.remove(id) else {
            return false;
        };
        self.in_use = self.in_use.minus(usage);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> Ledger {
        Ledger {
            limits: Usage {
                gigabytes: 1000,
                volumes: 10,
            },
            in_use: Usage {
                gigabytes: 10,
                volumes: 1,
            },
            ..Ledger::default()
        }
    }

    #[test]
    fn reserve_commit_and_undo_restore_the_ledger() {
        let before = ledger();
        let mut l = before.clone();
        l.reserve(
            "r1",
            Usage {
                gigabytes: 5,
                volumes: 1,
            },
        )
        .unwrap();
        l.commit("r1").unwrap();
        l.commit("r1").unwrap();
        assert_eq!(
            l.in_use,
            Usage {
                gigabytes: 15,
                volumes: 2
            }
        );
        assert!(l.uncommit("r1"));
        assert!(!l.uncommit("r1"));
        assert!(!l.release("r1"));
        assert_eq!(l, before);
    }

    #[test]
    fn reserving_again_under_the_same_id_reserves_nothing_more() {
        let mut l = ledger();
        let size = Usage {
            gigabytes: 600,
            volumes: 1,
        };
        l.reserve("r1", size).unwrap();
        let bigger = Usage {
            gigabytes: 700,
            volumes: 1,
        };
        assert_eq!(
            l.reserve("r1", bigger).unwrap(),
            size,
            "the held reservation"
        );
        assert_eq!(l.reserved.len(), 1);
        l.commit("r1").unwrap();
        l.reserve("r1", size).unwrap();
        assert!(
            l.reserved.is_empty(),
            "a committed reservation is not made again"
        );
        assert_eq!(l.in_use.gigabytes, 610);
    }

    #[test]
    fn pending_reservations_count_against_the_limit() {
        let mut l = ledger();
        l.reserve(
            "r1",
            Usage {
                gigabytes: 900,
                volumes: 1,
            },
        )
        .unwrap();
        let err = l
            .reserve(
                "r2",
                Usage {
                    gigabytes: 100,
                    volumes: 1,
                },
            )
            .unwrap_err();
        assert_eq!(err.code, "over-quota");
        assert_eq!(
            err.message,
            "requested 100 GiB but only 90 of 1000 GiB remain"
        );
    }
}
