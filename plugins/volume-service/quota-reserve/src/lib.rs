//! `quota_reserve` against the volume API (examples/volume-service): holds quota for the new
//! volume before anything is created, so a request that cannot fit fails early with
//! `over-quota` and nothing to undo. The API token is the flow's secret `volume_token`, named
//! in the header as a placeholder the host fills in: this task never holds it.
//!
//! Idempotent both ways: the reservation's key is `{run_id}/{task}`, so a repeated execute gets
//! the reservation the first one made, and revert rolls back by that key whether or not
//! execute saw its answer.

use flowhost_guest::{
    FlowFailure, Outcome, Task, TaskError, TaskInfo, export_task, http, invocation,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Args {
    size: u64,
    /// Named in an `over-quota` error's details (the API does not limit per type).
    volume_type: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The API's base URL, e.g. `http://127.0.0.1:8776/v3`; the flow entry's `net.http` must
    /// grant it.
    api: String,
    /// The flow's secret holding the API token.
    #[serde(default = "token_secret")]
    token_secret: String,
}

fn token_secret() -> String {
    "volume_token".into()
}

impl Config {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.api.trim_end_matches('/'))
    }

    fn auth(&self) -> String {
        format!("Bearer {}", http::secret(&self.token_secret))
    }
}

/// What the API answers, and what the flow stores as `reservations`.
#[derive(Serialize, Deserialize)]
struct Reservation {
    id: String,
    key: String,
    volumes: u64,
    gigabytes: u64,
}

fn key() -> String {
    let call = invocation();
    format!("{}/{}", call.run_id, call.task)
}

struct QuotaReserve;

impl Task for QuotaReserve {
    type Args = Args;
    type Config = Config;
    type Output = Reservation;

    fn info() -> TaskInfo {
        TaskInfo::new("quota_reserve", env!("CARGO_PKG_VERSION"))
            .description("Reserves quota for one volume of `size` GiB through the volume API")
            .requires(["size", "volume_type"])
            .provides(["reservations"])
    }

    fn execute(args: Args, config: Config) -> Result<Reservation, TaskError> {
        let request = json!({ "key": key(), "volumes": 1, "gigabytes": args.size });
        let response = http::post_json(
            &config.url("quota/reserve"),
            &request,
            &[("authorization", &config.auth())],
        )?;
        if response.status == 413 {
            let refusal: Value = response.json()?;
            let message = refusal["message"]
                .as_str()
                .unwrap_or("over quota")
                .to_owned();
            let mut details = refusal;
            if let Some(fields) = details.as_object_mut() {
                fields.remove("error");
                fields.remove("message");
                fields.insert("volume_type".into(), args.volume_type.into());
            }
            return Err(TaskError::new("over-quota", message).with_details(details));
        }
        response.error_for_status()?.json()
    }

    /// Rolls the reservation back, found by its id after a success and by its key otherwise
    /// (execute may have failed after the API reserved). Nothing reserved (404) is nothing to
    /// undo, and neither is a reservation rolled back already (a second revert): both say
    /// `{"rolled_back": null}`.
    fn revert_with_result(
        _args: Args,
        config: Config,
        outcome: Outcome<Reservation>,
        _failures: Vec<FlowFailure>,
    ) -> Result<Option<Value>, TaskError> {
        let which = match &outcome {
            Outcome::Success(reservation) => json!({ "reservation_id": reservation.id }),
            Outcome::Failure(_) => json!({ "key": key() }),
        };
        let response = http::post_json(
            &config.url("quota/rollback"),
            &which,
            &[("authorization", &config.auth())],
        )?;
        if response.status == 404 {
            return Ok(Some(json!({ "rolled_back": null })));
        }
        let reservation: Value = response.error_for_status()?.json()?;
        if reservation["changed"] == false {
            return Ok(Some(json!({ "rolled_back": null })));
        }
        Ok(Some(
            json!({ "rolled_back": reservation["id"], "gigabytes": reservation["gigabytes"] }),
        ))
    }
}

export_task!(QuotaReserve);
