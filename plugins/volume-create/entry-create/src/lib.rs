//! `entry_create`: records the volume in state `creating`, giving it its id.

use cinder_state::{Volume, VolumeSpec, invocation_id, unix_now};
use flowhost_guest::{
    FlowFailure, NoConfig, Outcome, Task, TaskError, TaskInfo, export_task, invocation,
};
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

    /// Writes the record. Its id comes from the run and the task entry ([`invocation_id`]),
    /// so a retried or resumed call finds the record its earlier attempt wrote and returns
    /// it instead of writing a second volume.
    fn execute(args: Args, _: NoConfig) -> Result<Output, TaskError> {
        let caller = invocation();
        let id = invocation_id(&caller.run_id, &caller.task, "volume");
        let volume = match Volume::load(&id)? {
            Some(volume) => volume,
            None => {
                let volume = Volume {
                    id,
                    spec: args.spec,
                    display_name: args.display_name,
                    description: args.description,
                    status: "creating".into(),
                    created_at: unix_now(),
                };
                volume.save()?;
                volume
            }
        };
        Ok(Output {
            volume_id: volume.id.clone(),
            volume,
        })
    }

    /// Deletes the record this call wrote. Also after a failed execute: it may have written
    /// the record before it was stopped, and its id is known; deleting an absent record is
    /// a no-op.
    fn revert(
        _: Args,
        _: NoConfig,
        outcome: Outcome<Output>,
        _: Vec<FlowFailure>,
    ) -> Result<(), TaskError> {
        match outcome {
            Outcome::Success(output) => Volume::delete(&output.volume_id),
            Outcome::Failure(_) => {
                let caller = invocation();
                Volume::delete(&invocation_id(&caller.run_id, &caller.task, "volume"))
            }
        }
    }
}

export_task!(EntryCreate);
