"""examples/volume-create/cinder_api.py: Cinder's create() over the client."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import EXAMPLE, Flows, Served


@pytest.fixture(scope="module")
def cinder_server(serve, tmp_path_factory) -> Served:
    """The example's folder as `serve --flows examples/volume-create` serves it: flow.toml is
    flow `flow`, and `volume_create_api` by its own name."""
    flows = Flows(tmp_path_factory.mktemp("cinder"))
    flows.volume_create("flow")
    return serve(flows)


@pytest.fixture(scope="module")
def cinder_api():
    spec = importlib.util.spec_from_file_location("cinder_api", EXAMPLE / "cinder_api.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    # No __pycache__ left beside the example.
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


def test_create_returns_the_volume(cinder_server: Served, cinder_api) -> None:
    api = cinder_api.API(cinder_server.client())
    volume = api.create(size=3, name="orders")
    assert (volume["size"], volume["display_name"], volume["status"]) == (3, "orders", "creating")


def test_a_refusing_zone_is_invalid_availability_zone_and_refreshes_the_cache(cinder_server: Served, cinder_api) -> None:
    api = cinder_api.API(cinder_server.client())
    with pytest.raises(cinder_api.InvalidAvailabilityZone) as caught:
        api.create(size=1, availability_zone="az-down")
    assert caught.value.failure.code == "zone-unavailable"
    assert caught.value.failure.task == "volume_cast"
    assert caught.value.code == 400
    assert api.availability_zone_refreshes == 1


def test_quota_and_input_errors_map_to_cinder_exceptions(cinder_server: Served, cinder_api) -> None:
    api = cinder_api.API(cinder_server.client())
    with pytest.raises(cinder_api.VolumeSizeExceedsAvailableQuota) as caught:
        api.create(size=5000)
    assert "5000G" in caught.value.msg
    with pytest.raises(cinder_api.InvalidInput):
        api.create(size=0)
    with pytest.raises(cinder_api.InvalidAvailabilityZone):
        api.create(size=1, availability_zone="mars")
    assert api.availability_zone_refreshes == 0, "only a refusing zone refreshes the cache"


def test_the_script_runs_against_the_service(cinder_server: Served) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("FLOWHOST_TOKEN", None)
    script = [sys.executable, str(EXAMPLE / "cinder_api.py"), "--url", cinder_server.url]
    ok = subprocess.run(script + ["--size", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["volume"]["size"] == 2
    down = subprocess.run(
        script + ["--availability-zone", "az-down"], capture_output=True, text=True, env=env, timeout=120
    )
    assert down.returncode == 1, down.stderr
    assert "InvalidAvailabilityZone" in json.loads(down.stdout)
