//! `entry_create`: records the volume in state `creating`, giving it its id.

use cinder_state::{Volume, VolumeSpec, new_id, unix_now};
use flowhost_guest::{FlowFailure, NoConfig, Outcome, Task, TaskError, TaskInfo, export_task};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Args {
    #[serde(flatten)]
    spec: VolumeSpec,
    display_name: Option<String>,
    description: Option<String>,
}

/// Both provided names: the id for later tasks, the record for the flow's result.
#[derive(Serialize, Deserialize)]
struct Output {
    volume_id: String,
    volume: Volume,
}

struct EntryCreate;

impl Task for EntryCreate {
    type Args = Args;
    type Config = NoConfig;
    type Output = Output;

    fn info() -> TaskInfo {
        TaskInfo::new("entry_create", env!("CARGO_PKG_VERSION"))
            .description("Creates the volume record in state `creating`.")
            .requires(["size", "availability_zone", "volume_type"])
            .optional(["display_name", "description"])
            .provides(["volume_id", "volume"])
    }

    fn execute(args: Args, _: NoConfig) -> Result<Output, TaskError> {
        let volume = Volume {
            id: new_id()?,
            spec: args.spec,
            display_name: args.display_name,
            description: args.description,
            status: "creating".into(),
            created_at: unix_now(),
        };
        volume.save()?;
        Ok(Output {
            volume_id: volume.id.clone(),
            volume,
        })
    }

    /// Deletes the record this run wrote; a failed execute wrote none.
    fn revert(
        _: Args,
        _: NoConfig,
        outcome: Outcome<Output>,
        _: Vec<FlowFailure>,
    ) -> Result<(), TaskError> {
        match outcome {
            Outcome::Success(output) => Volume::delete(&output.volume_id),
            Outcome::Failure(_) => Ok(()),
        }
    }
}

export_task!(EntryCreate);
