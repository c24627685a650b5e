//! Volume records at `/state/volumes/<id>.json`.

use flowhost_guest::TaskError;
use serde::{Deserialize, Serialize};

use crate::files;

/// What a volume is asked to be; the validated output of `extract_volume_request` and the
/// input of the tasks after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// Size in GiB, at least 1.
    pub size: u64,
    /// Availability zone the volume lives in.
    pub availability_zone: String,
    /// Volume type (backend class).
    pub volume_type: String,
}

/// The persisted record of one volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Volume {
    /// Volume id, also the record's file name.
    pub id: String,
    /// Size, zone and type.
    #[serde(flatten)]
    pub spec: VolumeSpec,
    /// Name chosen by the user, if any.
    pub display_name: Option<String>,
    /// Free text from the user, if any.
    pub description: Option<String>,
    /// Lifecycle state, e.g. `creating`.
    pub status: String,
    /// Creation time in Unix seconds.
    pub created_at: u64,
}

impl Volume {
    /// Reads the record of volume `id`; `None` if there is none.
    pub fn load(id: &str) -> Result<Option<Volume>, TaskError> {
        files::read(&files::record_path("volumes", id)?)
    }

    /// Writes the record atomically.
    pub fn save(&self) -> Result<(), TaskError> {
        files::write(&files::record_path("volumes", &self.id)?, self)
    }

    /// Deletes the record of volume `id`, if there is one.
    pub fn delete(id: &str) -> Result<(), TaskError> {
        files::remove(&files::record_path("volumes", id)?)
    }
}
