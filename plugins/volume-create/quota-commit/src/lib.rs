//! `quota_commit`: once the volume exists, turns its quota reservation into usage.

use cinder_state::{Ledger, Reservation};
use flowhost_guest::{
    FlowFailure, NoConfig, Outcome, Task, TaskError, TaskInfo, export_task, invocation,
};
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

    /// Commits under the ledger's lock; a reservation already committed (by an earlier
    /// attempt of this call) is left as it is.
    fn execute(args: Args, _: NoConfig) -> Result<(), TaskError> {
        Ledger::update(&invocation(), |ledger| ledger.commit(&args.reservations.id))
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
        let id = &args.reservations.id;
        Ledger::update_if_needed(
            &invocation(),
            |ledger| ledger.committed.contains_key(id),
            |ledger| {
                ledger.uncommit(id);
                Ok(())
            },
        )
    }
}

export_task!(QuotaCommit);
