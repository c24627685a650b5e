"""TaskFlow twins of the flowhost benchmark's shapes, measured the same way.

- per-task cost of linear flows of 10, 100 and 1000 trivial tasks (each returns its
  argument, as the `probe` echo does), one run at a time, engine built and run per flow run
  (as flowhost validates per run): medians in microseconds per task;
- the five-task volume-create example as a whole process (interpreter start, imports, the
  flow with file side effects in a state folder), wall time in milliseconds.

Prints one JSON object: {"per_task_us": {"10": .., "100": .., "1000": ..}, "example_ms": ..}.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from taskflow import engines, task
from taskflow.patterns import linear_flow


class Echo(task.Task):
    def execute(self, value):
        return value


def chain(n):
    flow = linear_flow.Flow("chain%d" % n)
    for i in range(n):
        # Each task reads the initial `value` and provides its own name, like the bench's chain.
        flow.add(Echo("t%d" % i, provides="o%d" % i))
    return flow


def per_task_us(n, reps):
    """Median µs/task of `reps` runs after one warm-up run (skipped for long flows: a
    1000-task TaskFlow run takes tens of seconds, far past any warm-up effect)."""
    warmup = 1 if n <= 100 else 0
    samples = []
    for _ in range(reps + warmup):
        started = time.perf_counter()
        engine = engines.load(chain(n), store={"value": 1}, engine="serial")
        engine.run()
        samples.append((time.perf_counter() - started) * 1e6 / n)
    return statistics.median(samples[warmup:])


EXAMPLE = r'''
import json, os, sys, uuid
from taskflow import engines, task
from taskflow.patterns import linear_flow

STATE = sys.argv[1]

def load(name, default):
    try:
        with open(os.path.join(STATE, name)) as f:
            return json.load(f)
    except FileNotFoundError:
        return default

def save(name, value):
    path = os.path.join(STATE, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)

class ExtractVolumeRequest(task.Task):
    default_provides = ("size", "availability_zone", "volume_type")
    def execute(self, raw_size, raw_availability_zone, raw_volume_type):
        if raw_availability_zone not in ("nova", "az-down"):
            raise ValueError("unknown zone")
        return int(raw_size), raw_availability_zone, raw_volume_type

class QuotaReserve(task.Task):
    default_provides = "reservations"
    def execute(self, size, volume_type):
        ledger = load("quota.json", {"limits": {"gigabytes": 1000, "volumes": 10}, "reserved": {}, "used": {"gigabytes": 0, "volumes": 0}})
        rid = uuid.uuid4().hex[:16]
        ledger["reserved"][rid] = {"gigabytes": size, "volumes": 1}
        save("quota.json", ledger)
        return {"id": rid, "gigabytes": size, "volumes": 1}
    def revert(self, result, **kwargs):
        if isinstance(result, dict):
            ledger = load("quota.json", None)
            if ledger:
                ledger["reserved"].pop(result["id"], None)
                save("quota.json", ledger)

class EntryCreate(task.Task):
    default_provides = "volume"
    def execute(self, size, availability_zone, volume_type, display_name, description):
        volume = {"id": uuid.uuid4().hex[:16], "size": size, "availability_zone": availability_zone,
                  "volume_type": volume_type, "display_name": display_name,
                  "description": description, "status": "creating"}
        save(os.path.join("volumes", volume["id"] + ".json"), volume)
        return volume

class QuotaCommit(task.Task):
    def execute(self, reservations):
        ledger = load("quota.json", None)
        r = ledger["reserved"].pop(reservations["id"])
        ledger["used"]["gigabytes"] += r["gigabytes"]
        ledger["used"]["volumes"] += r["volumes"]
        save("quota.json", ledger)

class VolumeCast(task.Task):
    def execute(self, volume):
        save(os.path.join("scheduler", volume["id"] + ".json"), {"volume_id": volume["id"]})

flow = linear_flow.Flow("volume_create_api").add(
    ExtractVolumeRequest(), QuotaReserve(), EntryCreate(), QuotaCommit(), VolumeCast())
store = {"raw_size": 10, "raw_availability_zone": "nova", "raw_volume_type": "standard",
         "display_name": "db-data", "description": "volume for the orders database"}
engine = engines.load(flow, store=store, engine="serial")
engine.run()
print(json.dumps(engine.storage.fetch("volume")))
'''


def example_ms(reps):
    with tempfile.TemporaryDirectory() as scratch:
        script = os.path.join(scratch, "example.py")
        with open(script, "w") as f:
            f.write(EXAMPLE)
        samples = []
        for _ in range(reps + 1):
            state = tempfile.mkdtemp(dir=scratch)
            started = time.perf_counter()
            subprocess.run([sys.executable, script, state], check=True, stdout=subprocess.DEVNULL)
            samples.append((time.perf_counter() - started) * 1e3)
        return statistics.median(samples[1:])


def main():
    result = {
        "per_task_us": {str(n): per_task_us(n, reps) for n, reps in ((10, 60), (100, 10), (1000, 1))},
        "example_ms": example_ms(7),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
