//! `extract_volume_request`: the first step of volume-create. Turns the raw request into a
//! [`VolumeSpec`] the rest of the flow can trust: a positive size, and a zone and type that
//! exist (defaults filled in). Pure validation, so the default no-op revert is right.

use cinder_state::VolumeSpec;
use flowhost_guest::{Task, TaskError, TaskInfo, export_task};
use serde::Deserialize;
use serde_json::Value;

/// The raw request; zone and type may be null to ask for the defaults.
#[derive(Deserialize)]
struct Args {
    size: Value,
    availability_zone: Option<String>,
    volume_type: Option<String>,
}

/// The zones and types this deployment offers.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    availability_zones: Vec<String>,
    default_availability_zone: String,
    volume_types: Vec<String>,
    default_volume_type: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            availability_zones: vec!["nova".into()],
            default_availability_zone: "nova".into(),
            volume_types: vec!["standard".into()],
            default_volume_type: "standard".into(),
        }
    }
}

/// A positive integer, given as a JSON number or a string of digits (APIs receive both).
fn parse_size(size: &Value) -> Result<u64, TaskError> {
    let parsed = match size {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    };
    parsed.filter(|&n| n > 0).ok_or_else(|| {
        TaskError::new(
            "invalid-size",
            format!("size must be a positive integer number of GiB, got {size}"),
        )
    })
}

/// `requested`, or `default` when absent, provided it is one of `known`.
fn pick(
    requested: Option<String>,
    default: &str,
    known: &[String],
    code: &str,
    what: &str,
) -> Result<String, TaskError> {
    let value = requested.unwrap_or_else(|| default.to_owned());
    if known.contains(&value) {
        return Ok(value);
    }
    Err(TaskError::new(
        code,
        format!("unknown {what} `{value}`; known: {}", known.join(", ")),
    )
    .with_details(serde_json::json!({ "requested": value, "known": known })))
}

struct ExtractVolumeRequest;

impl Task for ExtractVolumeRequest {
    type Args = Args;
    type Config = Config;
    type Output = VolumeSpec;

    fn info() -> TaskInfo {
        TaskInfo::new("extract_volume_request", env!("CARGO_PKG_VERSION"))
            .description("Validates the requested size, availability zone and volume type, filling in defaults.")
            .requires(["size", "availability_zone", "volume_type"])
            .provides(["size", "availability_zone", "volume_type"])
    }

    fn execute(args: Args, config: Config) -> Result<VolumeSpec, TaskError> {
        Ok(VolumeSpec {
            size: parse_size(&args.size)?,
            availability_zone: pick(
                args.availability_zone,
                &config.default_availability_zone,
                &config.availability_zones,
                "unknown-availability-zone",
                "availability zone",
            )?,
            volume_type: pick(
                args.volume_type,
                &config.default_volume_type,
                &config.volume_types,
                "unknown-volume-type",
                "volume type",
            )?,
        })
    }
}

export_task!(ExtractVolumeRequest);
