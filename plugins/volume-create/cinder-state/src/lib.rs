//! State shared by the volume-create tasks, kept as JSON files under the `/state` preopen.
//!
//! Every file is written atomically and formatted deterministically, so a reverted run
//! leaves the files byte-identical to how it found them.

mod clock;
mod files;
mod id;
mod quota;
mod scheduler;
mod volume;

pub use clock::unix_now;
pub use id::new_id;
pub use quota::{Ledger, Reservation, Usage};
pub use scheduler::ScheduleRequest;
pub use volume::{Volume, VolumeSpec};

/// Where the host preopens the task's state directory.
pub const STATE_DIR: &str = "/state";
