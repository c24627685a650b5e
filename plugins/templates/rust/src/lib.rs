//! `{{task}}`: greets `name`, with the config's `greeting` ("Hello" by default).

use flowhost_guest::{Level, Task, TaskError, TaskInfo, export_task, log, progress};
use serde::Deserialize;

// Calling a service is one line with `flowhost_guest::http` (wasi:http; a task that sends no
// request imports none of it). Grant the origin in the flow entry, with the token as a secret
// the task names but never reads (see README.md):
//
//     use flowhost_guest::http;
//
//     let volume: Volume = http::post_json(
//         "https://api.example.org/v3/volumes",
//         &Size { size: 10 },
//         &[("authorization", "Bearer {{secret:api_token}}")],
//     )?
//     .error_for_status()?
//     .json()?;
//
// `http::get`, `put_json`, `delete` and `http::Request` for the rest; an origin the flow does
// not grant fails with `http-denied`, an unreachable one with `unavailable`.

/// The arguments: the names the task requires and the optional ones.
#[derive(Deserialize)]
struct Args {
    name: String,
}

/// The flow entry's config.
#[derive(Deserialize)]
struct Config {
    #[serde(default = "hello")]
    greeting: String,
}

fn hello() -> String {
    "Hello".to_owned()
}

struct Greet;

impl Task for Greet {
    type Args = Args;
    type Config = Config;
    type Output = String;

    fn info() -> TaskInfo {
        TaskInfo::new("{{task}}", env!("CARGO_PKG_VERSION"))
            .description("Greets `name`")
            .requires(["name"])
            .provides(["{{task}}"])
    }

    fn execute(args: Args, config: Config) -> Result<String, TaskError> {
        if args.name.is_empty() {
            return Err(TaskError::new("invalid-args", "`name` must not be empty"));
        }
        log(Level::Info, "greeting", &[("name", &args.name)]);
        progress(1.0, None::<()>);
        Ok(format!("{}, {}!", config.greeting, args.name))
    }
}

export_task!(Greet);
