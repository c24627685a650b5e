//! The quota ledger at `/state/quota.json`: limits, usage, and reservations pending or
//! committed, in the style of Cinder's reserve → commit quota protocol.

use std::collections::BTreeMap;
use std::path::PathBuf;

use flowhost_guest::TaskError;
use serde::{Deserialize, Serialize};
use serde_json::json;

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
    /// Reads the ledger; an absent file is an empty ledger with zero limits.
    pub fn load() -> Result<Self, TaskError> {
        Ok(files::read(&path())?.unwrap_or_default())
    }

    /// Writes the ledger atomically.
    pub fn save(&self) -> Result<(), TaskError> {
        files::write(&path(), self)
    }

    /// Records a pending reservation if in-use plus every pending reservation plus `request`
    /// stays within the limits.
    pub fn reserve(&mut self, id: &str, request: Usage) -> Result<(), TaskError> {
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
        Ok(())
    }

    /// Drops a pending reservation; false if there was none.
    pub fn release(&mut self, id: &str) -> bool {
        self.reserved.remove(id).is_some()
    }

    /// Turns a pending reservation into usage.
    pub fn commit(&mut self, id: &str) -> Result<(), TaskError> {
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
