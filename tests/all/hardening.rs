//! Attacks on workers, submitters and the command line, tried as an attacker would: a plugin
//! planted in a worker's folder under the right hash name, a symlink swapped in for it, a
//! flow granted the plugin folder, a submitted run granting what the worker host does not
//! allow, a stored flow tampered with, passwords in every form of database address, integers
//! that would silently be rounded, a replay from a changed flow file, and plugin text with
//! Unicode line separators.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use flowhost::runs::sha256_hex;
use serde_json::{Value, json};

use crate::kit::serving::Served;
use crate::kit::{
    Postgres, SHORT_LEASE, Workspace, assert_contains, assert_exit, flowhost, plugin, signal,
    stderr, stdout, stdout_json, stdout_json_lines,
};

/// Submits the workspace's `flow.toml` to `pg` and returns the run's id.
fn submit(ws: &Workspace, pg: &Postgres, flow: &Path) -> String {
    let output = ws.flowhost_on(&pg.url(), &["submit", flow.to_str().unwrap()]);
    assert_exit(&output, 0);
    stdout(&output).trim().to_owned()
}

/// `flowhost worker` on `pg`, keeping its plugins in `plugins`, its stderr in `log`.
fn worker(ws: &Workspace, pg: &Postgres, plugins: &Path, log: &Path, extra: &[&str]) -> Child {
    let url = pg.url();
    let mut args = vec![
        "worker",
        "--db",
        &url,
        "--plugin-dir",
        plugins.to_str().unwrap(),
    ];
    args.extend_from_slice(&SHORT_LEASE);
    args.extend_from_slice(extra);
    ws.command(&args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Drains `worker` and waits for it to exit.
fn drain(worker: Child) {
    signal(&worker, "-TERM");
    assert_exit(&worker.wait_with_output().unwrap(), 0);
}

/// `runs show ID --json` on `pg`.
fn show(ws: &Workspace, pg: &Postgres, id: &str) -> Value {
    stdout_json(&ws.flowhost_on(&pg.url(), &["runs", "show", id, "--json"]))
}

/// Waits until run `id` ended, and returns its record.
fn finished(ws: &Workspace, pg: &Postgres, id: &str) -> Value {
    let mut record = Value::Null;
    crate::kit::wait_until(&format!("run {id} ended"), Duration::from_secs(120), || {
        record = show(ws, pg, id);
        ["SUCCESS", "REVERTED", "FAILURE"].contains(&record["state"].as_str().unwrap_or(""))
    });
    record
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A folder only its owner may write, as a worker's plugin folder must be.
fn private_folder(path: &Path) -> PathBuf {
    std::fs::DirBuilder::new().mode(0o700).create(path).unwrap();
    path.to_path_buf()
}

#[test]
fn a_plugin_planted_or_swapped_for_a_symlink_in_a_workers_folder_never_runs() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    let flow = ws.flow("planted", &[("a", json!({}))]);
    let probe = std::fs::read(plugin("probe")).unwrap();
    let folder = private_folder(&ws.path("worker-plugins"));
    let copy = folder.join(format!("{}.wasm", sha256_hex(&probe)));
    let attacker = plugin("describe_escape");

    // Another plugin planted under the submitted plugin's hash name.
    std::fs::copy(&attacker, &copy).unwrap();
    let id = submit(&ws, &pg, &flow);
    let log = ws.path("worker-1.log");
    let first = worker(&ws, &pg, &folder, &log, &[]);
    let record = finished(&ws, &pg, &id);
    drain(first);
    assert_eq!(record["state"], "SUCCESS", "{record}");
    assert_eq!(ws.executions(&["a"]), [1], "the submitted probe ran");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        probe,
        "the planted file was replaced"
    );
    assert_contains(&text(&log), "is not the expected one");
    assert_contains(
        &text(&log),
        "whoever can submit runs may grant their tasks any directory, variable or network destination of this host",
    );

    // The copy swapped for a symlink to another plugin, read by a fresh worker process.
    std::fs::remove_file(&copy).unwrap();
    std::os::unix::fs::symlink(&attacker, &copy).unwrap();
    let id = submit(&ws, &pg, &flow);
    let log = ws.path("worker-2.log");
    let second = worker(&ws, &pg, &folder, &log, &[]);
    let record = finished(&ws, &pg, &id);
    drain(second);
    assert_eq!(record["state"], "SUCCESS", "{record}");
    assert_eq!(ws.executions(&["a"]), [2]);
    assert!(
        !copy.symlink_metadata().unwrap().file_type().is_symlink(),
        "the symlink itself was replaced, its target left alone"
    );
    assert_eq!(std::fs::read(&copy).unwrap(), probe);
    assert_eq!(
        std::fs::read(&attacker).unwrap(),
        std::fs::read(plugin("describe_escape")).unwrap()
    );
    assert_contains(&text(&log), "it is a symlink, which is not followed here");

    // A folder others may write is refused, as the compiled cache is.
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    let log = ws.path("worker-3.log");
    let refused = worker(&ws, &pg, &folder, &log, &[]);
    let output = refused.wait_with_output().unwrap();
    assert_exit(&output, 66);
    assert_contains(&text(&log), "refusing plugin folder");
    assert_contains(&text(&log), "others may write to it (mode 777)");
}

#[test]
fn a_grant_reaching_the_plugin_folder_is_refused_wherever_the_folder_lives() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("shared/plugins")).unwrap();
    let probe = plugin("probe");
    std::fs::write(
        ws.path("grab.toml"),
        format!(
            "name = \"grab\"\n[store]\nvalue = 1\n\n[[task]]\nname = \"grab\"\nplugin = {probe:?}\ndirs = [{{ host = \"shared\", guest = \"/shared\", mode = \"rw\" }}]\n"
        ),
    )
    .unwrap();
    let plugins = ws.path("shared/plugins");
    for command in [
        vec!["check", "--no-cache", "grab.toml"],
        vec!["run", "--no-cache", "--no-db", "grab.toml"],
    ] {
        let output = ws
            .command(&command)
            .env("FLOWHOST_PLUGIN_DIR", &plugins)
            .run();
        assert_exit(&output, 65);
        assert_contains(&stderr(&output), "which flowhost protects");
        assert_contains(&stderr(&output), plugins.to_str().unwrap());
    }
    // Elsewhere the same flow is fine: the grant itself is not the fault.
    let output = ws
        .command(&["check", "--no-cache", "grab.toml"])
        .env("FLOWHOST_PLUGIN_DIR", ws.path("elsewhere"))
        .run();
    assert_exit(&output, 0);
}

#[test]
fn a_worker_policy_fails_a_run_granting_outside_it_once_naming_the_grant() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    // Each probe is granted the workspace's journal/ and signal/.
    let flow = ws.flow("granted", &[("a", json!({}))]);
    let journal = ws.path("journal");
    let folder = private_folder(&ws.path("worker-plugins"));

    let outside = submit(&ws, &pg, &flow);
    let log = ws.path("narrow.log");
    let narrow = worker(
        &ws,
        &pg,
        &folder,
        &log,
        &[
            "--allow-dir",
            journal.to_str().unwrap(),
            "--allow-env",
            "OS_REGION",
        ],
    );
    let record = finished(&ws, &pg, &outside);
    // Longer than a lease: a refused run would have been claimed again by now.
    std::thread::sleep(Duration::from_secs(2));
    drain(narrow);
    assert_eq!(record["state"], "FAILURE", "{record}");
    let reason = record["exit_reason"].as_str().unwrap();
    assert_contains(reason, "refused by the policy of worker");
    assert_contains(reason, "task `a`");
    assert_contains(
        reason,
        &format!("granted directory {}", ws.path("signal").display()),
    );
    assert_contains(reason, "--allow-dir");
    assert_eq!(ws.executions(&["a"]), [0], "nothing ran");
    assert_eq!(
        pg.sql(&format!(
            "SELECT count(*) || ' ' || bool_and(r.lease_owner IS NULL) FROM transitions t JOIN runs r ON r.id = t.run_id WHERE t.run_id = '{outside}'"
        )),
        "1 true",
        "failed once, at its claim, and its lease let go"
    );
    assert!(!text(&log).contains("may grant their tasks any directory"));

    let inside = submit(&ws, &pg, &flow);
    let wide = worker(
        &ws,
        &pg,
        &folder,
        &ws.path("wide.log"),
        &["--allow-dir", ws.root().to_str().unwrap()],
    );
    let record = finished(&ws, &pg, &inside);
    drain(wide);
    assert_eq!(record["state"], "SUCCESS", "{record}");

    // `serve` queueing for the workers refuses such a start before queueing it.
    let served = Served::start_on(
        &ws,
        ws.root(),
        &pg.url(),
        &["--allow-dir", journal.to_str().unwrap()],
    );
    let (status, body) = served.post("/v1/flows/flow/runs", "{}", None);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["problems"][0]["field"], "dirs", "{body}");
    assert_contains(
        body["problems"][0]["message"].as_str().unwrap(),
        "lies outside the directories this host allows",
    );
}

#[test]
fn a_run_whose_stored_flow_fails_its_hash_ends_failure_once_with_the_reason() {
    let pg = Postgres::start();
    let ws = Workspace::new();
    let flow = ws.flow("tampered", &[("a", json!({}))]);
    let id = submit(&ws, &pg, &flow);
    pg.sql(&format!(
        "UPDATE blobs SET bytes = convert_to('name = \"forged\"', 'UTF8') WHERE sha256 = (SELECT flow_hash FROM runs WHERE id = '{id}')"
    ));
    let folder = private_folder(&ws.path("worker-plugins"));
    let log = ws.path("worker.log");
    let worker = worker(&ws, &pg, &folder, &log, &[]);
    let record = finished(&ws, &pg, &id);
    std::thread::sleep(Duration::from_secs(2));
    drain(worker);
    assert_eq!(record["state"], "FAILURE", "{record}");
    assert_contains(
        record["exit_reason"].as_str().unwrap(),
        "its stored flow file does not match its hash",
    );
    assert_eq!(
        pg.sql(&format!(
            "SELECT count(*) FROM transitions WHERE run_id = '{id}'"
        )),
        "1",
        "refused once, not at every lease expiry"
    );
    assert_eq!(text(&log).matches("run ended FAILURE").count(), 1);
}

#[test]
fn a_database_password_is_masked_in_every_form_it_can_be_given() {
    let secret = "hunter2secret";
    // Port 1: nothing listens, so every command fails naming the database.
    for db in [
        format!("postgres://app:{secret}@127.0.0.1:1/runs"),
        format!("postgres://app@127.0.0.1:1/runs?password={secret}"),
        format!("postgresql://127.0.0.1:1/runs?user=app&password={secret}&sslmode=disable"),
        format!("host=127.0.0.1 port=1 password={secret} dbname=runs"),
    ] {
        for args in [
            vec!["runs", "list"],
            vec!["worker"],
            vec!["runs", "show", "x"],
        ] {
            let mut args = args.clone();
            args.extend(["--db", &db]);
            let output = flowhost(&args).run();
            let shown = format!("{}{}", stderr(&output), stdout(&output));
            assert!(
                !shown.contains(secret),
                "flowhost {args:?} showed the password:\n{shown}"
            );
            assert_ne!(output.status.code(), Some(0), "{shown}");
        }
        let output = flowhost(["runs", "list", "--db", &db]).run();
        assert_contains(&stderr(&output), "***");
    }
}

/// The one message every way in gives for an integer beyond 64 bits.
const INEXACT: &str = "the integer 18446744073709551616 does not fit in 64 bits, so it would become the inexact number 18446744073709552000; write it as a string";

#[test]
fn an_integer_beyond_64_bits_is_refused_the_same_way_everywhere_it_can_come_in() {
    let ws = Workspace::new();
    let flow = ws.flow("numbers", &[("a", json!({}))]);
    let big = "18446744073709551616";

    let output = ws.flowhost(&[
        "run",
        "--no-db",
        "flow.toml",
        "--store",
        &format!("seed={big}"),
    ]);
    assert_exit(&output, 64);
    assert_contains(&stderr(&output), INEXACT);

    std::fs::write(ws.path("store.json"), format!("{{\"seed\": {big}}}")).unwrap();
    let output = ws.flowhost(&["run", "--no-db", "flow.toml", "--store-file", "store.json"]);
    assert_exit(&output, 64);
    assert_contains(&stderr(&output), INEXACT);

    std::fs::write(
        ws.path("inputs.jsonl"),
        format!("{{\"seed\": 1}}\n{{\"seed\": {big}}}\n"),
    )
    .unwrap();
    let output = ws.flowhost(&["run", "--no-db", "flow.toml", "--batch", "inputs.jsonl"]);
    let lines = stdout_json_lines(&output);
    let refused = lines.iter().find(|l| l["line"] == 2).unwrap();
    assert_eq!(refused["state"], "INVALID", "{refused}");
    assert_contains(refused["error"].as_str().unwrap(), INEXACT);
    assert!(
        lines
            .iter()
            .any(|l| l["line"] == 1 && l["state"] == "SUCCESS")
    );

    let text = std::fs::read_to_string(&flow).unwrap();
    std::fs::write(
        ws.path("big.toml"),
        text.replace("seed = 1", &format!("seed = {big}")),
    )
    .unwrap();
    let output = ws.flowhost(&["check", "big.toml"]);
    assert_exit(&output, 65);
    assert_contains(&stderr(&output), INEXACT);
    assert_contains(&stderr(&output), "line 4, column 8");

    let served = Served::start(&ws, ws.root(), &[]);
    let (status, body) = served.post("/v1/flows/flow/runs", &format!("{{\"seed\": {big}}}"), None);
    assert_eq!(status, 400, "{body}");
    assert_contains(body["error"].as_str().unwrap(), INEXACT);
    let (status, body) = served.post(
        "/v1/flows/flow/runs",
        "{\"seed\": 18446744073709551615}",
        None,
    );
    assert_eq!(status, 201, "the largest u64 is exact: {body}");
}

#[test]
fn a_replay_from_a_changed_flow_file_is_refused_unless_forced_saying_what_differs() {
    let ws = Workspace::new();
    let flow = ws.flow("replayed", &[("a", json!({}))]);
    assert_exit(&ws.recording(&["run", "flow.toml"]).run(), 0);
    let id = ws.only_run().id;
    let probe = plugin("probe");
    let replay = |extra: &[&str]| {
        let mut args = vec![
            "call",
            probe.to_str().unwrap(),
            "execute",
            "--from-run",
            &id,
            "--task",
            "a",
        ];
        args.extend_from_slice(extra);
        ws.recording(&args).run()
    };
    assert_exit(&replay(&[]), 0);

    // A grant widened after the run was recorded: signal/ made writable.
    let text = std::fs::read_to_string(&flow).unwrap();
    let widened = text.replace(
        "{ host = \"signal\", guest = \"/signal\" }",
        "{ host = \"signal\", guest = \"/signal\", mode = \"rw\" }",
    );
    assert_ne!(widened, text);
    std::fs::write(&flow, widened).unwrap();
    let refused = replay(&[]);
    assert_exit(&refused, 65);
    let message = stderr(&refused);
    assert_contains(&message, &format!("changed since run {id} was recorded"));
    assert_contains(&message, "its SHA-256 was");
    assert_contains(&message, "use it anyway with --force");

    let forced = replay(&["--force"]);
    assert_exit(&forced, 0);
    assert_contains(&stderr(&forced), "taking the entry as it is now (--force)");
}

#[test]
fn unicode_line_and_paragraph_separators_from_a_plugin_are_shown_escaped() {
    let ws = Workspace::new();
    let probe = plugin("probe");
    std::fs::write(
        ws.path("separators.toml"),
        format!(
            "name = \"separators\"\n[store]\nvalue = 1\n\n[[task]]\nname = \"printer\"\nplugin = {probe:?}\nconfig = {{ mode = \"print\", content = \"x\\u2028FAKE LINE\\u2029y\\u0085z\\u200fw\" }}\n"
        ),
    )
    .unwrap();
    let output = ws.flowhost(&["run", "--no-db", "separators.toml"]);
    assert_exit(&output, 0);
    let log = stderr(&output);
    for raw in ['\u{2028}', '\u{2029}', '\u{85}', '\u{200f}'] {
        assert!(
            !log.contains(raw),
            "U+{:04X} reached the terminal:\n{log}",
            raw as u32
        );
    }
    assert_contains(&log, "x\\u{2028}FAKE LINE\\u{2029}y\\u{85}z\\u{200f}w");
}

#[test]
fn a_password_in_the_database_url_never_reaches_serve_answers_or_its_log() {
    let secret = "hunter2secret";
    let mut pg = Postgres::start();
    let ws = Workspace::new();
    ws.flow("served", &[("a", json!({}))]);
    // The test server trusts every local connection: the password is carried, never checked.
    let db = format!("{}?password={secret}", pg.url());
    for extra in [&[][..], &["--in-process"][..]] {
        let served = Served::start_on(&ws, ws.root(), &db, extra);
        pg.stop();
        let mut answers = Vec::new();
        let listed = crate::kit::serving::answer(ureq::get(&served.url("/v1/runs")).call());
        answers.push(listed.clone());
        answers.push(served.post("/v1/flows/flow/runs", "{}", None));
        pg.restart();
        drop(served);
        for (status, body) in &answers {
            assert_eq!(*status, 503, "{body}");
            let text = body.to_string();
            assert!(
                !text.contains(secret),
                "an answer showed the password: {text}"
            );
            assert!(
                !text.contains("127.0.0.1"),
                "an answer named the database: {text}"
            );
        }
        let log = text(&ws.path("serve.log"));
        assert!(
            !log.contains(secret),
            "serve's log showed the password:\n{log}"
        );
    }
}
