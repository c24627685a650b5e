"""The server's error answers, as typed errors: 401, 404, 409, 413, 422, 400."""

from __future__ import annotations

import json
import pickle

import pytest

from conftest import TOKEN, Flows, Served, flowhost
from flowhost_client import (
    ApiError,
    BadRequest,
    Client,
    ConnectionFailed,
    NotFound,
    PayloadTooLarge,
    Problem,
    Run,
    TaskFailed,
    Unauthorized,
    ValidationFailed,
)


def test_without_the_token_mutating_requests_are_unauthorized(token_server: Served, token_flows: Flows) -> None:
    probes = token_flows.probes("token")
    anonymous = token_server.client()
    for client in (anonymous, token_server.client(token="wrong-token-0123456789")):
        with pytest.raises(Unauthorized) as caught:
            client.start(probes.name)
        assert caught.value.status == 401
        assert "Bearer" in caught.value.message
    assert anonymous.runs() == [], "a refused start starts nothing"

    fh = token_server.client(token=TOKEN)
    run = fh.run(probes.name, {"seed": 7})
    assert run.fetch("a_out")["value"] == 7
    assert run.store["seed"] == 7

    # Reading is open, but store values are the token holder's.
    seen = anonymous.get_run(run.id)
    assert seen.state == "SUCCESS"
    assert seen.redacted
    assert all(t.result is None for t in seen.tasks)
    with pytest.raises(Unauthorized):
        seen.fetch("a_out")
    with pytest.raises(Unauthorized):
        seen.store
    assert [e.to_state for e in seen.events()][-1] is None  # the end event has no `to`
    with pytest.raises(Unauthorized):
        seen.cancel()
    with pytest.raises(Unauthorized):
        seen.resume()
    assert [r.id for r in anonymous.runs(flow=probes.name)] == [run.id]


def test_a_token_with_surrounding_whitespace_is_the_token(token_server: Served, token_flows: Flows) -> None:
    probes = token_flows.probes("token_ws")
    fh = token_server.client(token=f"  {TOKEN}\n")
    assert fh.run(probes.name).state == "SUCCESS"


def test_unknown_flows_and_runs_are_not_found(fh: Client) -> None:
    with pytest.raises(NotFound) as caught:
        fh.start("no_such_flow")
    assert "no_such_flow" in caught.value.message
    assert caught.value.status == 404
    with pytest.raises(NotFound):
        fh.flow("no_such_flow")
    with pytest.raises(NotFound):
        fh.get_run("no-such-run")
    with pytest.raises(NotFound):
        Run(fh, "no-such-run").fetch("volume")
    with pytest.raises(NotFound):
        Run(fh, "no-such-run").resume()
    with pytest.raises(NotFound):
        fh.start("../volume_create")  # a flow name is never a path


def test_a_store_that_fails_validation_is_422_with_the_problems(fh: Client, flows: Flows, server: Served) -> None:
    probes = flows.probes("invalid")
    before = {r.id for r in fh.runs(flow=probes.name)}
    with pytest.raises(ValidationFailed) as caught:
        fh.start(probes.name, {"a_out": 5})  # provided by task a: a store may not hold it
    error = caught.value
    assert error.status == 422
    assert error.flow == probes.flow_name
    assert error.body["state"] == "INVALID"
    assert error.problems and all(isinstance(p, Problem) for p in error.problems)
    assert error.problems[0].task == "a"
    assert "a_out" in str(error)

    # The same problems as `flowhost check --json` reports.
    check = flowhost("check", str(probes.path), "--json", "--store", "a_out=5", home=server.home)
    assert check.returncode == 65, check.stderr
    expected = json.loads(check.stdout)
    assert [p.__dict__ for p in error.problems] == expected["problems"]
    assert {r.id for r in fh.runs(flow=probes.name)} == before, "nothing ran"
    assert probes.calls() == []


def test_a_body_over_one_mebibyte_is_payload_too_large(fh: Client, flows: Flows) -> None:
    probes = flows.probes("big")
    with pytest.raises(PayloadTooLarge) as caught:
        fh.start(probes.name, {"seed": "x" * (1024 * 1024 + 1)})
    assert caught.value.status == 413
    assert fh.runs(flow=probes.name) == []
    # Under the cap is fine.
    run = fh.run(probes.name, {"seed": "x" * 1000})
    assert run.fetch("a_out")["value"] == "x" * 1000


def test_an_unknown_state_is_a_bad_request(fh: Client) -> None:
    with pytest.raises(BadRequest) as caught:
        fh.runs(state="sleeping")
    assert "sleeping" in caught.value.message


def test_a_store_that_is_not_a_mapping_is_refused_here(fh: Client) -> None:
    with pytest.raises(TypeError):
        fh.start("volume_create", [1, 2])  # type: ignore[arg-type]


def test_an_unreachable_service_is_connection_failed(fh: Client) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gone = Client(f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(ConnectionFailed):
        gone.flows()
    assert not gone.healthy()
    assert fh.healthy()


def test_errors_survive_pickling() -> None:
    error = ValidationFailed(422, "bad", body={"flow": "f"}, problems=[Problem("a", None, "m")], method="POST", path="/x")
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, ValidationFailed) and isinstance(copy, ApiError)
    assert (copy.status, copy.problems, copy.flow) == (422, [Problem("a", None, "m")], "f")
    failed = pickle.loads(pickle.dumps(TaskFailed("t", "code", "msg", {"k": 1}, run_id="r", run_state="REVERTED")))
    assert (failed.task, failed.code, failed.details, failed.run_id) == ("t", "code", {"k": 1}, "r")


def test_the_openapi_document_is_served(fh: Client) -> None:
    document = fh.openapi()
    assert document["openapi"].startswith("3.")
    for path in ("/v1/flows/{name}/runs", "/v1/runs/{id}/events", "/v1/runs/{id}/store/{name}"):
        assert path in document["paths"]
