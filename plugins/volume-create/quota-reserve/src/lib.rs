//! `quota_reserve`: holds quota for the new volume before anything is created, so a request
//! that cannot fit fails early with `over-quota` and nothing to undo.

use cinder_state::{Ledger, Reservation, Usage, new_id};
use flowhost_guest::{FlowFailure, Outcome, Task, TaskError, TaskInfo, export_task};
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

    fn execute(args: Args, config: Config) -> Result<Reservation, TaskError> {
        let mut ledger = Ledger::load()?;
        ledger.limits = Usage {
            gigabytes: config.gigabytes,
            volumes: config.volumes,
        };
        let reservation = Reservation {
            id: new_id()?,
            usage: Usage {
                gigabytes: args.size,
                volumes: 1,
            },
        };
        ledger
            .reserve(&reservation.id, reservation.usage)
            .map_err(|mut e| {
                if let Some(Value::Object(details)) = &mut e.details {
                    details.insert("volume_type".into(), args.volume_type.into());
                }
                e
            })?;
        ledger.save()?;
        Ok(reservation)
    }

    /// Releases the reservation this run made; nothing was reserved if execute failed.
    fn revert(
        _: Args,
        _: Config,
        outcome: Outcome<Reservation>,
        _: Vec<FlowFailure>,
    ) -> Result<(), TaskError> {
        let Outcome::Success(reservation) = outcome else {
            return Ok(());
        };
        let mut ledger = Ledger::load()?;
        if ledger.release(&reservation.id) {
            ledger.save()?;
        }
        Ok(())
    }
}

export_task!(QuotaReserve);
