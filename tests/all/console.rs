//! The web console in a real browser (headless Chromium over the DevTools protocol): start
//! the volume-create flow from the console, watch a run's timeline fill in live, open a
//! failed run and see the failed task and the reverted ones — with no console error. The
//! screenshots land in `target/console/` for people to look at.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::kit::cdp::Browser;
use crate::kit::serving::Served;
use crate::kit::{Workspace, assert_contains, plugin, repo_root};

/// The flows folder (the workspace): the volume-create example (its plugins as the tests
/// built them, its state in the workspace) as `volume-create`, and three probes whose middle
/// one waits for `signal/go` as `flow`.
fn flows(ws: &Workspace) -> PathBuf {
    example_as(ws, "flow.toml", "volume-create.toml");
    ws.waiting_flow("slow_probes");
    ws.root().to_path_buf()
}

/// Writes the volume-create example's `file` into the workspace as `name`, its plugins as
/// the tests built them, its state in the workspace.
fn example_as(ws: &Workspace, file: &str, name: &str) {
    std::fs::create_dir_all(ws.path("state")).unwrap();
    let mut example =
        std::fs::read_to_string(repo_root().join("examples/volume-create").join(file)).unwrap();
    for task in [
        "extract_volume_request",
        "quota_reserve",
        "entry_create",
        "quota_commit",
        "volume_cast",
    ] {
        let built = format!("\"../../plugins/target/wasm32-wasip2/release/{task}.wasm\"");
        assert!(example.contains(&built), "the example names {built}");
        example = example.replace(&built, &format!("{:?}", plugin(task)));
    }
    std::fs::write(ws.path(name), example).unwrap();
}

fn screenshots() -> PathBuf {
    repo_root().join("target/console")
}

/// Starts flow `flow` from the console's form with `store`, and waits for its run page.
fn start_from_console(browser: &mut Browser, base: &str, flow: &str, store: &str) -> String {
    browser.open(&format!("{base}/"));
    browser.wait_for(
        &format!("document.querySelector('#start-flow option[value=\"{flow}\"]')"),
        "the flow is offered",
    );
    browser.eval(&format!(
        "(() => {{ document.querySelector('#start-flow').value = {flow:?}; document.querySelector('#start-store').value = {store:?}; \
         document.querySelector('#start').click(); }})()"
    ));
    browser.wait_for(
        "location.pathname.startsWith('/runs/') && document.querySelector('#timeline')",
        "the run page opens",
    );
    browser
        .eval("decodeURIComponent(location.pathname.slice('/runs/'.length))")
        .as_str()
        .unwrap()
        .to_owned()
}

fn count(browser: &mut Browser, selector: &str) -> u64 {
    browser
        .eval(&format!("document.querySelectorAll({selector:?}).length"))
        .as_u64()
        .unwrap()
}

#[test]
fn the_console_starts_runs_shows_them_live_and_explains_a_failure() {
    let ws = Workspace::new();
    let flows = flows(&ws);
    let server = Served::start(&ws, &flows, &[]);
    let mut browser = Browser::start(1366, 900);
    let base = server.base.clone();

    // The volume-create flow, started from the console: five green execute bars.
    let ok = start_from_console(&mut browser, &base, "volume-create", "{\"raw_size\": 20}");
    browser.wait_for(
        "document.querySelector('h1 .badge[data-state=SUCCESS]')",
        "the run succeeds",
    );
    browser.wait_for(
        "document.querySelectorAll('.bar[data-kind=execute][data-outcome=SUCCESS]').length === 5",
        "five successful executes",
    );
    assert_eq!(count(&mut browser, ".bar[data-kind=revert]"), 0);
    assert!(
        browser
            .eval("document.querySelector('#final-store').innerText")
            .as_str()
            .unwrap()
            .contains("\"volume\"")
    );
    assert_eq!(
        server.get(&format!("/v1/runs/{ok}"))["final_store"]["size"],
        20
    );

    // A run whose middle task waits: the page fills in as the run goes, without reloading.
    let slow = start_from_console(&mut browser, &base, "flow", "{}");
    browser.wait_for(
        "document.querySelector('.bar[data-task=a][data-outcome=SUCCESS]')",
        "a's bar, live",
    );
    browser.wait_for(
        "document.querySelector('.bar[data-task=b][data-outcome=RUNNING]')",
        "b running, live",
    );
    assert_eq!(
        count(&mut browser, ".bar[data-task=c]"),
        0,
        "c has not started"
    );
    browser.eval("window.stillTheSamePage = true");
    ws.release();
    browser.wait_for(
        "document.querySelector('.bar[data-task=c][data-outcome=SUCCESS]')",
        "c's bar after the release",
    );
    browser.wait_for(
        "document.querySelector('h1 .badge[data-state=SUCCESS]')",
        "the slow run succeeds",
    );
    assert_eq!(
        browser.eval("window.stillTheSamePage === true"),
        json!(true),
        "filled in by the event stream, not by a reload"
    );
    assert_eq!(server.get(&format!("/v1/runs/{slow}"))["state"], "SUCCESS");

    // The Cancel button: b, waiting, is stopped at once and fails `cancelled`; a and b revert;
    // c never starts.
    std::fs::remove_file(ws.path("signal/go")).unwrap();
    let cancelled = start_from_console(&mut browser, &base, "flow", "{}");
    browser.wait_for(
        "document.querySelector('.bar[data-task=b][data-outcome=RUNNING]')",
        "b running",
    );
    browser.eval("document.querySelector('#cancel').click()");
    browser.wait_for(
        "document.querySelector('#action-result [data-done=cancel]')",
        "the cancel is accepted",
    );
    browser.wait_for(
        "document.querySelector('h1 .badge[data-state=REVERTED]')",
        "the cancelled run is reverted",
    );
    browser.wait_for(
        "document.querySelectorAll('.bar[data-kind=revert][data-outcome=REVERTED]').length === 2",
        "a and b reverted",
    );
    let why = browser.eval("document.querySelector('[data-failed-task=b]').innerText");
    assert_contains(why.as_str().unwrap(), "cancelled");
    assert_eq!(ws.count("execute", "c"), 1, "c ran only in the first run");
    assert_eq!(
        server.get(&format!("/v1/runs/{cancelled}"))["state"],
        "REVERTED"
    );

    // A request for the zone that refuses volumes: the last task fails and all five revert.
    let failed = start_from_console(
        &mut browser,
        &base,
        "volume-create",
        "{\"raw_availability_zone\": \"az-down\"}",
    );
    browser.wait_for(
        "document.querySelector('h1 .badge[data-state=REVERTED]')",
        "the run is reverted",
    );
    browser.wait_for(
        "document.querySelectorAll('.bar[data-kind=revert][data-outcome=REVERTED]').length === 5",
        "five reverts",
    );
    assert_eq!(
        count(
            &mut browser,
            ".bar[data-task=volume_cast][data-kind=execute][data-outcome=FAILURE]"
        ),
        1
    );
    let failure =
        browser.eval("document.querySelector('[data-failed-task=volume_cast]').innerText");
    assert_contains(failure.as_str().unwrap(), "zone-unavailable");
    browser.screenshot(&screenshots().join("failed-run.png"));

    // The same page, opened by its link from scratch.
    browser.open(&format!("{base}/runs/{failed}"));
    browser.wait_for(
        "document.querySelectorAll('.bar[data-kind=revert]').length === 5",
        "the linked page shows the reverts",
    );
    assert_eq!(
        count(&mut browser, "[data-row] .badge[data-state=REVERTED]"),
        5,
        "the failed task and the four before it, all reverted"
    );

    // The runs list, filtered, and the flow drawn as a chain.
    browser.open(&format!("{base}/"));
    browser.wait_for(
        "document.querySelectorAll('#runs tr').length === 4",
        "four runs listed",
    );
    browser.eval("(() => { const s = document.querySelector('#filter-state'); s.value = 'REVERTED'; s.dispatchEvent(new Event('change')); })()");
    browser.wait_for(&format!("document.querySelectorAll('#runs tr').length === 2 && document.querySelector('#runs tr[data-run=\"{failed}\"]') && document.querySelector('#runs tr[data-run=\"{cancelled}\"]')"), "the filter: the two reverted runs");
    browser.screenshot(&screenshots().join("runs.png"));
    browser.open(&format!("{base}/flows/volume-create"));
    browser.wait_for(
        "document.querySelectorAll('#chain .node').length === 5",
        "five tasks drawn",
    );
    browser.screenshot(&screenshots().join("flow.png"));

    assert!(
        browser.errors.is_empty(),
        "the console logged errors: {:#?}",
        browser.errors
    );
    assert!(Path::new(&screenshots().join("failed-run.png")).is_file());
}

#[test]
fn a_bad_address_shows_a_not_found_message_and_no_page_is_left_loading() {
    let ws = Workspace::new();
    let flows = flows(&ws);
    let server = Served::start(&ws, &flows, &[]);
    let mut browser = Browser::start(1024, 700);
    let base = server.base.clone();

    // Malformed percent-encoding: decoding it throws, which the page must catch.
    browser.open(&format!("{base}/runs/%E0%A4%A"));
    browser.wait_for(
        "document.querySelector('#not-found')",
        "the not-found message",
    );
    let text = browser.eval("document.querySelector('#main').innerText");
    assert_contains(text.as_str().unwrap(), "malformed");
    browser.open(&format!("{base}/flows/%E0%A4%A"));
    browser.wait_for(
        "document.querySelector('#not-found')",
        "the same for a flow",
    );

    // Well formed, but nothing by that name.
    browser.open(&format!("{base}/runs/no-such-run"));
    browser.wait_for(
        "document.querySelector('#not-found') && document.querySelector('#main').innerText.includes('There is no run no-such-run')",
        "a run that does not exist",
    );
    browser.open(&format!("{base}/flows/no-such-flow"));
    browser.wait_for(
        "document.querySelector('#not-found') && document.querySelector('#main').innerText.includes('There is no flow no-such-flow')",
        "a flow that does not exist",
    );
    // An address the page itself reaches (history) that is no page of the console.
    browser.eval(
        "history.pushState(null, '', '/nowhere'); dispatchEvent(new PopStateEvent('popstate'))",
    );
    browser.wait_for(
        "document.querySelector('#not-found') && document.querySelector('#main').innerText.includes('no page at this address')",
        "an unknown path",
    );
    let uncaught: Vec<&String> = browser
        .errors
        .iter()
        .filter(|e| e.starts_with("exception"))
        .collect();
    assert!(uncaught.is_empty(), "uncaught errors: {uncaught:#?}");
    assert!(
        !browser
            .eval("document.querySelector('#main').innerText")
            .as_str()
            .unwrap()
            .contains("Loading…")
    );
}

#[test]
fn the_console_shows_ignored_tasks_and_why_on_the_timeline() {
    let ws = Workspace::new();
    example_as(&ws, "conditional.toml", "conditional.toml");
    let server = Served::start(&ws, ws.root(), &[]);
    let (status, started) = server.post(
        "/v1/flows/conditional/runs",
        r#"{"raw_volume_type": "scratch"}"#,
        None,
    );
    assert_eq!(status, 201, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    assert_eq!(server.wait_finished(&id)["state"], "SUCCESS");

    let mut browser = Browser::start(1366, 900);
    browser.open(&format!("{}/runs/{id}", server.base));
    browser.wait_for(
        "document.querySelectorAll('.tl-track.ignored').length === 2",
        "two ignored rows",
    );
    assert_eq!(
        count(&mut browser, "[data-row] .badge[data-state=IGNORE]"),
        2
    );
    let reserve = browser.eval("document.querySelector('[data-ignored=quota_reserve]').innerText");
    assert_contains(
        reserve.as_str().unwrap(),
        "ignored: when volume_type != 'scratch' && size > 0 was false",
    );
    let commit = browser.eval("document.querySelector('[data-ignored=quota_commit]').innerText");
    assert_contains(commit.as_str().unwrap(), "quota_reserve was ignored");
    assert_eq!(
        count(
            &mut browser,
            ".bar[data-kind=execute][data-outcome=SUCCESS]"
        ),
        3,
        "the three tasks that ran"
    );
    browser.screenshot(&screenshots().join("ignored-run.png"));
    // A run without failures has no failures panel, and nothing in its place.
    assert_eq!(
        browser.eval(
            "[...document.querySelector('#main').childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim() !== '')"
        ),
        serde_json::json!(false),
        "stray text between the run page's sections"
    );
    assert!(
        browser.errors.is_empty(),
        "the console logged errors: {:#?}",
        browser.errors
    );
}

#[test]
fn the_flow_page_draws_a_graph_flow_by_its_dependencies() {
    let ws = Workspace::new();
    let flows = flows(&ws);
    let graph = crate::kit::example_text("volume-create", "graph.toml");
    std::fs::write(flows.join("volume-graph.toml"), graph).unwrap();
    let server = Served::start(&ws, &flows, &[]);

    // The API says what each task waits for, as the engine computes it.
    let described = server.get("/v1/flows/volume-graph");
    let edges = |task: &str| -> Vec<String> {
        let entry = described["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == task)
            .unwrap_or_else(|| panic!("{task} in {described}"));
        let mut deps: Vec<String> = serde_json::from_value(entry["depends_on"].clone())
            .unwrap_or_else(|e| panic!("{task}: {e}: {entry}"));
        deps.sort();
        deps
    };
    assert_eq!(edges("extract_volume_request"), Vec::<String>::new());
    assert_eq!(edges("quota_reserve"), ["extract_volume_request"]);
    assert_eq!(edges("entry_create"), ["extract_volume_request"]);
    assert_eq!(edges("quota_commit"), ["entry_create", "quota_reserve"]);
    assert!(edges("volume_cast").contains(&"quota_commit".to_owned()));
    let linear = server.get("/v1/flows/volume-create");
    assert_eq!(
        linear["tasks"][1]["depends_on"],
        json!(["extract_volume_request"])
    );

    // The page draws one arrow per dependency, from the task waited for to the waiting one,
    // and no chain.
    let mut browser = Browser::start(1366, 900);
    browser.open(&format!("{}/flows/volume-graph", server.base));
    browser.wait_for(
        "document.querySelectorAll('#graph .node').length === 5",
        "five tasks drawn",
    );
    let total: usize = [
        "extract_volume_request",
        "quota_reserve",
        "entry_create",
        "quota_commit",
        "volume_cast",
    ]
    .iter()
    .map(|t| edges(t).len())
    .sum();
    assert_eq!(
        count(&mut browser, "#graph svg path[data-from]") as usize,
        total
    );
    assert_eq!(
        count(
            &mut browser,
            "#graph path[data-from=entry_create][data-to=quota_commit]"
        ),
        1
    );
    assert_eq!(count(&mut browser, "#chain"), 0);
    // Dependencies stand left of what waits for them.
    let left = |browser: &mut Browser, task: &str| {
        browser
            .eval(&format!(
                "document.querySelector('#graph .node[data-node={task}]').getBoundingClientRect().left"
            ))
            .as_f64()
            .unwrap()
    };
    assert!(left(&mut browser, "extract_volume_request") < left(&mut browser, "quota_reserve"));
    assert!(left(&mut browser, "quota_reserve") < left(&mut browser, "quota_commit"));
    assert_eq!(
        left(&mut browser, "quota_reserve"),
        left(&mut browser, "entry_create"),
        "independent tasks share a column"
    );
    browser.screenshot(&screenshots().join("graph-flow.png"));
    assert!(
        browser.errors.is_empty(),
        "the console logged errors: {:#?}",
        browser.errors
    );
}
