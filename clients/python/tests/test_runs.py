"""Starting, waiting for, fetching from, cancelling and resuming runs."""

from __future__ import annotations

import time

import pytest

from conftest import Flows
from flowhost_client import (
    Client,
    Conflict,
    NotFound,
    Run,
    TaskFailed,
    WaitTimeout,
)


def test_run_waits_for_success_and_fetch_reads_the_final_store(fh: Client) -> None:
    run = fh.run("volume_create", {"raw_size": 10})

    assert isinstance(run, Run)
    assert run.state == "SUCCESS"
    assert run.finished
    assert run.failure is None
    volume = run.fetch("volume")
    assert volume["size"] == 10
    assert volume["availability_zone"] == "nova"
    assert volume["status"] == "creating"
    assert run.fetch("volume_id") == volume["id"]
    assert run.store["volume"] == volume
    assert run.initial_store["raw_size"] == 10
    assert run.flow == "volume_create_api"
    assert [t.name for t in run.tasks] == [
        "extract_volume_request",
        "quota_reserve",
        "entry_create",
        "quota_commit",
        "volume_cast",
    ]
    assert all(t.state == "SUCCESS" for t in run.tasks)
    assert fh.get_run(run.id).fetch("volume") == volume


def test_the_flows_own_name_serves_it_too(fh: Client) -> None:
    run = fh.run("volume_create_api", {"raw_size": 1, "display_name": "by-name"})
    assert run.fetch("volume")["display_name"] == "by-name"


def test_fetch_of_an_absent_name_is_not_found(fh: Client) -> None:
    run = fh.run("volume_create", {"raw_size": 2})
    with pytest.raises(NotFound) as caught:
        run.fetch("no_such_name")
    assert caught.value.status == 404
    assert "no_such_name" in caught.value.message
    assert isinstance(caught.value, LookupError)


def test_a_reverted_run_raises_task_failed_with_the_tasks_code(fh: Client) -> None:
    with pytest.raises(TaskFailed) as caught:
        fh.run("volume_create", {"raw_availability_zone": "az-down"})
    failed = caught.value
    assert failed.task == "volume_cast"
    assert failed.code == "zone-unavailable"
    assert "az-down" in failed.message
    assert failed.run_state == "REVERTED"

    run = fh.get_run(failed.run_id)
    assert run.state == "REVERTED"
    assert run.failure is not None and run.failure.code == "zone-unavailable"
    assert run.failure.task == "volume_cast"
    # `volume` was stored by entry_create, then reverted: the final store lacks it.
    with pytest.raises(NotFound):
        run.fetch("volume")
    assert "volume" not in run.store
    assert [t.state for t in run.tasks] == ["REVERTED"] * 5
    cast = run.tasks[-1]
    assert cast.error is not None and cast.error.code == "zone-unavailable"
    # wait() on the ended run raises the same failure again.
    with pytest.raises(TaskFailed) as again:
        run.wait()
    assert again.value.code == "zone-unavailable"


def test_task_failed_carries_the_errors_details(fh: Client) -> None:
    with pytest.raises(TaskFailed) as caught:
        fh.run("volume_create", {"raw_size": 5000})
    failed = caught.value
    assert (failed.task, failed.code) == ("quota_reserve", "over-quota")
    assert failed.details["requested"] == 5000
    assert failed.details["resource"] == "gigabytes"
    assert failed.details["limit"] == 1000


def test_a_probe_failing_with_a_given_code(fh: Client, flows: Flows) -> None:
    probes = flows.probes(
        "failing",
        [("a", {}), ("b", {"fail": "disk-full", "message": "no room left"}), ("c", {})],
    )
    with pytest.raises(TaskFailed) as caught:
        fh.run(probes.name, {"seed": 3})
    failed = caught.value
    assert (failed.task, failed.code, failed.message) == ("b", "disk-full", "no room left")
    assert failed.details == {"label": "b"}
    run = fh.get_run(failed.run_id)
    with pytest.raises(NotFound):
        run.fetch("a_out")  # a succeeded, then was reverted
    assert run.fetch("seed") == 3
    assert probes.count("execute", "c") == 0
    assert probes.count("revert", "a") == 1


def test_start_returns_at_once_and_wait_times_out(fh: Client, flows: Flows) -> None:
    probes = flows.probes("gated", [("a", {}), ("b", {"mode": "wait_file", "path": "/signal/go"})])
    begun = time.monotonic()
    run = fh.start(probes.name)
    assert time.monotonic() - begun < 10
    assert run.state in ("PENDING", "RUNNING")
    probes.wait_for("execute", "b")

    begun = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        run.wait(timeout=0.3)
    assert 0.25 <= time.monotonic() - begun < 5
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.state == "RUNNING"
    assert caught.value.run_id == run.id
    with pytest.raises(Conflict):
        run.fetch("b_out")  # no final store yet
    with pytest.raises(Conflict):
        run.store

    probes.release()
    assert run.wait(timeout=60) is run
    assert run.state == "SUCCESS"
    assert run.fetch("b_out")["value"]["value"] == 1


def test_cancel_stops_the_task_in_flight_and_reverts(fh: Client, flows: Flows) -> None:
    probes = flows.probes("cancel", [("a", {}), ("b", {"mode": "wait_file", "path": "/signal/go"}), ("c", {})])
    run = fh.start(probes.name)
    probes.wait_for("execute", "b")

    with pytest.raises(Conflict):
        run.resume()  # going on here: not resumed beside itself
    assert run.cancel() is run
    # `b` is never released: only the cancel ends its wait.
    with pytest.raises(TaskFailed) as caught:
        run.wait(timeout=60)
    assert (caught.value.task, caught.value.code) == ("b", "cancelled")
    assert run.state == "REVERTED"
    assert [t.state for t in run.tasks] == ["REVERTED", "REVERTED", "PENDING"]
    assert probes.count("execute", "c") == 0
    assert (probes.count("revert", "a"), probes.count("revert", "b")) == (1, 1)

    with pytest.raises(Conflict):
        run.cancel()  # finished
    with pytest.raises(NotFound):
        Run(fh, "no-such-run").cancel()


def test_resume_continues_a_run_its_crashed_server_left(serve, new_flows: Flows) -> None:
    probes = new_flows.probes("resume", [("a", {}), ("b", {"mode": "wait_file", "path": "/signal/go"}), ("c", {})])
    first = serve(new_flows)
    fh = first.client()
    run = fh.start(probes.name, {"seed": 5})
    probes.wait_for("execute", "b")
    first.crash()

    second = serve(new_flows, db=first.db)
    fh = second.client()
    run = fh.get_run(run.id)
    assert run.state == "RUNNING"
    assert run.interrupted
    assert run in fh.runs(state="running")
    probes.release()
    assert run.resume() is run
    run.wait(timeout=60)
    assert run.state == "SUCCESS"
    assert run.fetch("c_out")["value"]["value"]["value"] == 5
    assert probes.count("execute", "a") == 1, "a succeeded before the crash: not run again"
    assert probes.count("execute", "c") == 1
    assert run.document["resumes"] == 1
    with pytest.raises(Conflict):
        run.resume()  # finished


def test_flows_lists_the_served_flows_with_their_tasks(fh: Client, flows: Flows) -> None:
    probes = flows.probes("listed")
    listed = {flow.name: flow for flow in fh.flows()}
    assert "volume_create" in listed
    mine = listed[probes.name]
    assert mine.flow == probes.flow_name
    assert mine.store == ["seed"]
    assert [t.name for t in mine.tasks] == ["a", "b", "c"]
    assert mine.tasks[1].requires == ["a_out"]
    assert mine.tasks[1].provides == ["b_out"]
    assert mine.tasks[0].description
    assert mine.error is None

    one = fh.flow(probes.name)
    assert one == mine
    by_own_name = fh.flow(probes.flow_name)
    assert (by_own_name.flow, by_own_name.file) == (mine.flow, mine.file)
    assert by_own_name.tasks == mine.tasks
    volume = listed["volume_create"]
    assert volume.flow == "volume_create_api"
    assert [t.name for t in volume.tasks][0] == "extract_volume_request"
    assert volume.tasks[0].requires == ["raw_size", "raw_availability_zone", "raw_volume_type"]


def test_runs_filters_by_state_and_flow(fh: Client, flows: Flows) -> None:
    ok = flows.probes("listing")
    bad = flows.probes("listing_bad", [("a", {"fail": "nope"})])
    first = fh.run(ok.name)
    second = fh.run(ok.name, {"seed": 2})
    with pytest.raises(TaskFailed) as caught:
        fh.run(bad.name)
    reverted = caught.value.run_id

    mine = fh.runs(flow=ok.name)
    assert [r.id for r in mine] == [second.id, first.id], "newest first"
    assert all(r.flow == ok.flow_name for r in mine)
    assert [r.id for r in fh.runs(flow=ok.flow_name)] == [second.id, first.id]
    assert [r.id for r in fh.runs(flow=ok.name, state="success")] == [second.id, first.id]
    assert fh.runs(flow=ok.name, state="REVERTED") == []
    assert [r.id for r in fh.runs(flow=bad.name, state="reverted")] == [reverted]
    assert [r.id for r in fh.runs(flow=ok.name, limit=1)] == [second.id]
    assert reverted in [r.id for r in fh.runs(state="REVERTED")]
    assert all(r.state == "REVERTED" for r in fh.runs(state="REVERTED"))
    # A listed run is a whole Run: its record is read when asked for.
    listed = fh.runs(flow=ok.name)[0]
    assert listed.fetch("a_out")["value"] == 2
    assert [t.name for t in listed.tasks] == ["a", "b", "c"]


def _until(run: Run, state: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while run.state != state:
        assert time.monotonic() < deadline, f"run {run.id} never became {state}: {run.state}"
        time.sleep(0.05)


def test_a_waiting_run_goes_on_with_the_signals_data_in_its_store(fh: Client, flows: Flows) -> None:
    probes = flows.probes("approval", [("a", {})])
    with probes.path.open("a") as flow:
        flow.write('\n[[task]]\nname = "approve"\nwait = { signal = "approved" }\nprovides = ["approval"]\n')
    run = fh.start(probes.name)
    _until(run, "WAITING")

    assert run.signal("approved", {"by": "ops"}) == "WAITING"
    run.wait(timeout=60)
    assert run.fetch("approval") == {"by": "ops"}
    assert probes.count("execute", "a") == 1
    with pytest.raises(Conflict):
        run.signal("approved")  # the run has ended: nothing waits for it any more


def test_suspend_then_resume_executes_nothing_twice_and_restart_runs_from_a_task(
    fh: Client, flows: Flows
) -> None:
    probes = flows.probes("suspend", [("a", {}), ("b", {"mode": "wait_file", "path": "/signal/go"}), ("c", {})])
    run = fh.start(probes.name)
    probes.wait_for("execute", "b")

    assert run.suspend() is run
    probes.release()
    _until(run, "SUSPENDED")
    assert probes.count("execute", "c") == 0
    with pytest.raises(Conflict):
        run.suspend()  # already suspended

    run.resume().wait(timeout=60)
    assert [probes.count("execute", t) for t in "abc"] == [1, 1, 1]

    again = run.restart("c").wait(timeout=60)
    assert again.id != run.id
    assert [probes.count("execute", t) for t in "abc"] == [1, 1, 2]
    assert again.fetch("c_out") == run.fetch("c_out")
    with pytest.raises(NotFound):
        run.restart("no_such_task")
