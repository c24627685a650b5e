//! `quota_commit` against the volume API (examples/volume-service): turns the reservation into
//! usage once the volume record exists. Revert takes the usage back into the reservation
//! (`quota/uncommit`), which `quota_reserve`'s revert then rolls back; both are no-ops the
//! second time.

use flowhost_guest::{FlowFailure, Outcome, Task, TaskError, TaskInfo, export_task, http};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Reservation {
    id: String,
}

#[derive(Deserialize)]
struct Args {
    reservations: Reservation,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The API's base URL, e.g. `http://127.0.0.1:8776/v3`.
    api: String,
    /// The flow's secret holding the API token.
    #[serde(default = "token_secret")]
    token_secret: String,
}

fn token_secret() -> String {
    "volume_token".into()
}

impl Config {
    fn post(&self, path: &str, reservation: &Reservation) -> Result<http::Response, TaskError> {
        let url = format!("{}/{path}", self.api.trim_end_matches('/'));
        let auth = format!("Bearer {}", http::secret(&self.token_secret));
        http::post_json(
            &url,
            &json!({ "reservation_id": reservation.id }),
            &[("authorization", &auth)],
        )
    }
}

struct QuotaCommit;

impl Task for QuotaCommit {
    type Args = Args;
    type Config = Config;
    /// Nothing is provided.
    type Output = ();

    fn info() -> TaskInfo {
        TaskInfo::new("quota_commit", env!("CARGO_PKG_VERSION"))
            .description("Commits the quota reservation through the volume API")
            .requires(["reservations"])
    }

    fn execute(args: Args, config: Config) -> Result<(), TaskError> {
        let response = config.post("quota/commit", &args.reservations)?;
        if response.status == 409 {
            let refusal: Value = response.json()?;
            let message = refusal["message"]
                .as_str()
                .unwrap_or("the reservation cannot be committed")
                .to_owned();
            return Err(TaskError::new("reservation-gone", message).with_details(refusal));
        }
        response.error_for_status()?;
        Ok(())
    }

    fn revert_with_result(
        args: Args,
        config: Config,
        _outcome: Outcome<()>,
        _failures: Vec<FlowFailure>,
    ) -> Result<Option<Value>, TaskError> {
        let response = config.post("quota/uncommit", &args.reservations)?;
        if response.status == 404 {
            return Ok(Some(json!({ "uncommitted": null })));
        }
        let reservation: Value = response.error_for_status()?.json()?;
        if reservation["changed"] == false {
            // Never committed, or taken back already.
            return Ok(Some(json!({ "uncommitted": null })));
        }
        Ok(Some(
            json!({ "uncommitted": reservation["id"], "gigabytes": reservation["gigabytes"] }),
        ))
    }
}

export_task!(QuotaCommit);
