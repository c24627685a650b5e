#!/usr/bin/env python3
"""Cinder's volume API ``create`` (cinder/volume/api.py) over ``flowhost serve``.

In Cinder the API builds the ``volume_create_api`` TaskFlow flow, runs it in its own process
and fetches the new volume from the engine's storage::

    flow_engine = create_volume.get_flow(...)
    with flow_utils.DynamicLogListener(flow_engine, logger=LOG):
        try:
            flow_engine.run()
        except exception.InvalidAvailabilityZone:
            with excutils.save_and_reraise_exception():
                self.list_availability_zones(enable_cache=True, refresh_cache=True)
        vref = flow_engine.storage.fetch('volume')
        return vref

Here the flow's tasks are WebAssembly components run by a flowhost service; the API process
only asks for a run and reads the result. A task's failure arrives as
:class:`flowhost_client.TaskFailed`, whose error ``code`` stands where Cinder catches an
exception type; the codes are turned back into Cinder-style exceptions below. The zone
``az-down`` refuses new volumes at ``volume_cast`` (code ``zone-unavailable``): as Cinder does
for ``InvalidAvailabilityZone``, the zone cache is refreshed and the error raised again.

Run it against the example folder (the repository root is the working directory)::

    cd plugins && cargo build --release --locked && cd ..
    target/debug/flowhost serve --flows examples/volume-create &
    python3 examples/volume-create/cinder_api.py --size 10
    python3 examples/volume-create/cinder_api.py --availability-zone az-down   # exit 1

``serve --flows DIR`` serves every ``NAME.toml`` of the folder as flow ``NAME``, so
``flow.toml`` is flow ``flow``, and also, since no other flow there has its name,
``volume_create_api``, which is the name used here. With a token file, set
``FLOWHOST_TOKEN``. The tasks keep their state (quota ledger, volume records) in
``examples/volume-create/state/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

try:
    from flowhost_client import Client, NotFound, TaskFailed
except ImportError:  # run from a checkout without the client installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python" / "src"))
    from flowhost_client import Client, NotFound, TaskFailed

LOG = logging.getLogger("cinder.volume.api")

#: The flow Cinder's API runs, by its own name.
FLOW = "volume_create_api"


# -- Cinder's exceptions (cinder/exception.py), those this flow can end in -----------------


class CinderException(Exception):
    """The base of Cinder's exceptions; ``code`` is the HTTP status the API answers with."""

    code = 500

    def __init__(self, message: str, failure: Optional[TaskFailed] = None) -> None:
        super().__init__(message)
        self.msg = message
        self.failure = failure


class Invalid(CinderException):
    code = 400


class InvalidInput(Invalid):
    """``invalid-size``: the size is not a positive integer."""


class InvalidAvailabilityZone(Invalid):
    """``unknown-availability-zone``, and ``zone-unavailable``: a zone refusing volumes."""


class InvalidVolumeType(Invalid):
    """``unknown-volume-type``."""


class QuotaError(CinderException):
    code = 413


class VolumeSizeExceedsAvailableQuota(QuotaError):
    """``over-quota`` on gigabytes."""


class VolumeLimitExceeded(QuotaError):
    """``over-quota`` on the number of volumes."""


def _over_quota(failure: TaskFailed) -> CinderException:
    details: Dict[str, Any] = failure.details if isinstance(failure.details, dict) else {}
    if details.get("resource") == "volumes":
        return VolumeLimitExceeded(
            f"Maximum number of volumes allowed ({details.get('limit')}) exceeded", failure
        )
    return VolumeSizeExceedsAvailableQuota(
        "Requested volume or snapshot exceeds allowed gigabytes quota. Requested "
        f"{details.get('requested')}G, quota is {details.get('limit')}G and "
        f"{details.get('used')}G has been consumed.",
        failure,
    )


#: The tasks' error codes, as the Cinder exceptions their failures stand for.
ERRORS = {
    "invalid-size": lambda f: InvalidInput(f"Invalid input received: {f.message}", f),
    "unknown-availability-zone": lambda f: InvalidAvailabilityZone(f.message, f),
    "zone-unavailable": lambda f: InvalidAvailabilityZone(f.message, f),
    "unknown-volume-type": lambda f: InvalidVolumeType(f.message, f),
    "over-quota": _over_quota,
}


def to_cinder_exception(failure: TaskFailed) -> CinderException:
    """The Cinder exception a task failure stands for (a ``CinderException`` for a code
    Cinder has no type for: the host's ``deadline-exceeded``, ``trap``...)."""
    make = ERRORS.get(failure.code)
    if make is None:
        return CinderException(f"Failed to create api volume flow: {failure}", failure)
    return make(failure)


class API:
    """The part of Cinder's ``cinder.volume.api.API`` that creates volumes."""

    def __init__(self, client: Client, flow: str = FLOW, timeout: float = 60.0) -> None:
        self.client = client
        self.flow = flow
        self.timeout = timeout
        self.availability_zones: List[str] = []
        self.availability_zones_refreshed_at: Optional[float] = None
        self.availability_zone_refreshes = 0

    def list_availability_zones(self, enable_cache: bool = False, refresh_cache: bool = False) -> List[str]:
        """Cinder asks its volume services which zones are up and caches the answer. This
        example has no volume services to ask, so the cache only counts its refreshes."""
        if refresh_cache or not enable_cache or self.availability_zones_refreshed_at is None:
            self.availability_zones_refreshed_at = time.time()
            self.availability_zone_refreshes += 1
        return self.availability_zones

    def create(
        self,
        size: Any,
        name: Optional[str] = None,
        description: Optional[str] = None,
        volume_type: Optional[str] = None,
        availability_zone: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Creates a volume: runs the ``volume_create_api`` flow and returns the new volume
        (the flow's ``volume``).

        Raises:
            InvalidInput, InvalidAvailabilityZone, InvalidVolumeType,
            VolumeSizeExceedsAvailableQuota, VolumeLimitExceeded: The request was refused;
                every task that had done its work was reverted.
            CinderException: The flow failed in another way.
        """
        # `create_what`: the request, over the flow file's [store] defaults.
        create_what: Dict[str, Any] = {"raw_size": size}
        if name is not None:
            create_what["display_name"] = name
        if description is not None:
            create_what["description"] = description
        if volume_type is not None:
            create_what["raw_volume_type"] = volume_type
        if availability_zone is not None:
            create_what["raw_availability_zone"] = availability_zone

        try:
            # flow_engine.run()
            run = self.client.run(self.flow, create_what, timeout=self.timeout)
        except TaskFailed as failure:
            LOG.warning("volume create flow %s reverted: %s", failure.run_id, failure)
            error = to_cinder_exception(failure)
            if failure.code == "zone-unavailable":
                # save_and_reraise_exception: refresh the zone cache, raise the same error.
                self.list_availability_zones(enable_cache=True, refresh_cache=True)
            raise error from failure
        # vref = flow_engine.storage.fetch('volume')
        try:
            vref = run.fetch("volume")
        except NotFound as missing:  # the flow succeeded without storing it: a bug
            raise CinderException(f"Failed to create api volume flow: {missing}") from missing
        LOG.info("Create volume request issued successfully. (run %s, volume %s)", run.id, vref.get("id"))
        return vref


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("FLOWHOST_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--flow", default=FLOW, help="the served flow's name (default: %(default)s)")
    parser.add_argument("--size", default=10, type=int, help="GiB (default: %(default)s)")
    parser.add_argument("--name", default=None)
    parser.add_argument("--description", default=None)
    parser.add_argument("--volume-type", default=None)
    parser.add_argument("--availability-zone", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    api = API(Client(args.url, token=os.environ.get("FLOWHOST_TOKEN")), flow=args.flow)
    try:
        volume = api.create(
            size=args.size,
            name=args.name,
            description=args.description,
            volume_type=args.volume_type,
            availability_zone=args.availability_zone,
        )
    except CinderException as error:
        print(
            json.dumps({type(error).__name__: {"code": error.code, "message": error.msg}}, indent=2)
        )
        return 1
    print(json.dumps({"volume": volume}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
