//! State shared by the volume-create tasks, kept as JSON files under the `/state` preopen.
//!
//! Every file is written atomically (a temporary file of its own, renamed over the old one)
//! and formatted deterministically, so a reader never sees half a file and a reverted run
//! leaves the files byte-identical to how it found them. The quota ledger, the one file that
//! many runs change, is changed only under its lock ([`Ledger::update`], [`lock`]).

mod clock;
mod files;
mod id;
pub mod lock;
mod quota;
mod scheduler;
mod volume;

pub use clock::unix_now;
pub use id::{invocation_id, new_id};
pub use quota::{Ledger, Reservation, Usage};
pub use scheduler::ScheduleRequest;
pub use volume::{Volume, VolumeSpec};

/// Where the host preopens the task's state directory.
pub const STATE_DIR: &str = "/state";
