//! `volume_cast`: the last step of volume-create, handing the volume to the scheduler by
//! writing a scheduling request. The volume record itself is the scheduler's to update.

use cinder_state::{ScheduleRequest, VolumeSpec, unix_now};
use flowhost_guest::{FlowFailure, Outcome, Task, TaskError, TaskInfo, export_task};
use serde::Deserialize;

#[derive(Deserialize)]
struct Args {
    volume_id: String,
    #[serde(flatten)]
    spec: VolumeSpec,
}

/// Zones that are down; a request for one fails here, before anything is written, which is
/// how a flow exercises the revert of everything before it. `busy_refusals`: a scheduler
/// briefly too busy refuses the first that many casts of each volume (`unavailable`), as
/// Cinder's reschedules see it; a retry policy rides it out.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    unavailable_zones: Vec<String>,
    busy_refusals: u32,
}

struct VolumeCast;

impl Task for VolumeCast {
    type Args = Args;
    type Config = Config;
    type Output = ();

    fn info() -> TaskInfo {
        TaskInfo::new("volume_cast", env!("CARGO_PKG_VERSION"))
            .description("Asks the scheduler to place the volume in its availability zone.")
            .requires(["volume_id", "size", "availability_zone", "volume_type"])
    }

    fn execute(args: Args, config: Config) -> Result<(), TaskError> {
        let zone = &args.spec.availability_zone;
        if config.unavailable_zones.contains(zone) {
            return Err(TaskError::new(
                "zone-unavailable",
                format!("availability zone `{zone}` refuses new volumes"),
            ));
        }
        if config.busy_refusals > 0 {
            let cast = ScheduleRequest::count_busy_cast(&args.volume_id)?;
            if cast <= config.busy_refusals {
                return Err(TaskError::new(
                    "unavailable",
                    format!("scheduler busy: cast {cast} of volume {} refused", args.volume_id),
                ));
            }
        }
        ScheduleRequest {
            volume_id: args.volume_id,
            spec: args.spec,
            requested_at: unix_now(),
        }
        .save()
    }

    /// Withdraws the request whatever the outcome: the host may have stopped execute after
    /// it wrote the file, and deleting an absent file is a no-op.
    fn revert(args: Args, config: Config, _: Outcome<()>, _: Vec<FlowFailure>) -> Result<(), TaskError> {
        if config.busy_refusals > 0 {
            ScheduleRequest::forget_busy_casts(&args.volume_id)?;
        }
        ScheduleRequest::delete(&args.volume_id)
    }
}

export_task!(VolumeCast);
