//! `quota_reserve`: holds quota for the new volume before anything is created, so a request
//! that cannot fit fails early with `over-quota` and nothing to undo.

use cinder_state::{Ledger, Reservation, Usage, invocation_id};
use flowhost_guest::{FlowFailure, Outcome, Task, TaskError, TaskInfo, export_task, invocation};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Args {
    size: u64,
    /// Not limited per type yet; named in an `over-quota` error's details.
    volume_type: String,
}

/// The project's limits; written into the ledger on every run so the flow file is the
/// source of truth for them.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    gigabytes: u64,
    volumes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            gigabytes: 1000,
            volumes: 10,
        }
    }
}

struct QuotaReserve;

impl Task for QuotaReserve {
    type Args = Args;
    type Config = Config;
    type Output = Reservation;

    fn info() -> TaskInfo {
        TaskInfo::new("quota_reserve", env!("CARGO_PKG_VERSION"))
            .description("Reserves gigabytes and one volume of the project's quota.")
            .requires(["size", "volume_type"])
            .provides(["reservations"])
    }

    /// Reserves under the ledger's lock. The reservation's id comes from the run and the task
    /// entry ([`invocation_id`]), so a retried or resumed call finds the reservation its
    /// earlier attempt made and returns it instead of reserving twice.
    fn execute(args: Args, config: Config) -> Result<Reservation, TaskError> {
        let caller = invocation();
        let id = invocation_id(&caller.run_id, &caller.task, "reservation");
        let request = Usage {
            gigabytes: args.size,
            volumes: 1,
        };
        let usage = Ledger::update(&caller, |ledger| {
            ledger.limits = Usage {
                gigabytes: config.gigabytes,
                volumes: config.volumes,
            };
            ledger.reserve(&id, request).map_err(|mut e| {
                if let Some(Value::Object(details)) = &mut e.details {
                    details.insert("volume_type".into(), args.volume_type.into());
                }
                e
            })
        })?;
        Ok(Reservation { id, usage })
    }

    /// Releases the reservation this call made. Also after a failed execute: it may have
    /// reserved before it was stopped (a deadline), and its id is known; releasing one that
    /// is not there (over quota) changes nothing.
    fn revert(
        _: Args,
        _: Config,
        outcome: Outcome<Reservation>,
        _: Vec<FlowFailure>,
    ) -> Result<(), TaskError> {
        let caller = invocation();
        let id = match outcome {
            Outcome::Success(reservation) => reservation.id,
            Outcome::Failure(_) => invocation_id(&caller.run_id, &caller.task, "reservation"),
        };
        Ledger::update_if_needed(
            &caller,
            |ledger| ledger.reserved.contains_key(&id),
            |ledger| {
                ledger.release(&id);
                Ok(())
            },
        )
    }
}

export_task!(QuotaReserve);
