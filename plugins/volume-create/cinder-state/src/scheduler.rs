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
}
