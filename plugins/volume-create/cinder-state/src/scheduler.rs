//! Scheduling requests at `/state/scheduler/<volume id>.json`, the hand-off to the scheduler.

use flowhost_guest::TaskError;
use serde::Serialize;

use crate::VolumeSpec;
use crate::files;

/// A request to place one volume on a backend.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleRequest {
    /// The volume to place; also the request's file name.
    pub volume_id: String,
    /// Size, zone and type to place it by.
    #[serde(flatten)]
    pub spec: VolumeSpec,
    /// When the request was made, in Unix seconds.
    pub requested_at: u64,
}

impl ScheduleRequest {
    /// Writes the request atomically.
    pub fn save(&self) -> Result<(), TaskError> {
        files::write(&files::record_path("scheduler", &self.volume_id)?, self)
    }

    /// Withdraws the request for `volume_id`, if there is one.
    pub fn delete(volume_id: &str) -> Result<(), TaskError> {
        files::remove(&files::record_path("scheduler", volume_id)?)
    }

    /// Counts one more cast of `volume_id` at a busy scheduler, in
    /// `/state/scheduler-busy/<volume id>.json`, and returns the count, this one included:
    /// the state survives fresh instances, so a retried cast sees the earlier ones.
    pub fn count_busy_cast(volume_id: &str) -> Result<u32, TaskError> {
        let path = files::record_path("scheduler-busy", volume_id)?;
        let seen: u32 = files::read(&path)?.unwrap_or(0);
        files::write(&path, &(seen + 1))?;
        Ok(seen + 1)
    }

    /// Forgets the busy casts of `volume_id` (its volume is being undone).
    pub fn forget_busy_casts(volume_id: &str) -> Result<(), TaskError> {
        files::remove(&files::record_path("scheduler-busy", volume_id)?)
    }
}
