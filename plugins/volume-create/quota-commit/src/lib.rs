//! `quota_commit`: once the volume exists, turns its quota reservation into usage.

use cinder_state::{Ledger, Reservation};
use flowhost_guest::{FlowFailure, NoConfig, Outcome, Task, TaskError, TaskInfo, export_task};
use serde::Deserialize;

#[derive(Deserialize)]
struct Args {
    reservations: Reservation,
}

struct QuotaCommit;

impl Task for QuotaCommit {
    type Args = Args;
    type Config = NoConfig;
    type Output = ();

    fn info() -> TaskInfo {
        TaskInfo::new("quota_commit", env!("CARGO_PKG_VERSION"))
            .description("Commits the quota reservation, counting the volume as in use.")
            .requires(["reservations"])
    }

    fn execute(args: Args, _: NoConfig) -> Result<(), TaskError> {
        let mut ledger = Ledger::load()?;
        ledger.commit(&args.reservations.id)?;
        ledger.save()
    }

    /// Takes the usage back whatever the outcome: the host may have stopped execute after it
    /// saved the ledger. The reservation is not restored; `quota_reserve`'s revert, which
    /// would release it, then finds nothing to do.
    fn revert(
        args: Args,
        _: NoConfig,
        _: Outcome<()>,
        _: Vec<FlowFailure>,
    ) -> Result<(), TaskError> {
        let mut ledger = Ledger::load()?;
        if ledger.uncommit(&args.reservations.id) {
            ledger.save()?;
        }
        Ok(())
    }
}

export_task!(QuotaCommit);
