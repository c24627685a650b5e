"""TaskFlow twin of the graph flow in tests/all/conditions.rs: `skipped` runs only when the
seed is above 5 — in TaskFlow a decider on the link from `gate`, in flowhost
`when = "seed > 5"` — and `needs` requires its result. Prints every task transition in
order. Run it with the bench's virtualenv (see run.sh):

    target/taskflow-venv/bin/python benches/taskflow/conditional.py

TaskFlow 6.5.0 prints, from the seed 1:

    gate RUNNING / gate SUCCESS / skipped IGNORE / needs IGNORE / taken RUNNING /
    taken SUCCESS / flow SUCCESS

— the transitions flowhost makes for the same flow (it also logs each PENDING it leaves).
"""

from taskflow import engines, task
from taskflow.patterns import graph_flow as gf


class Echo(task.Task):
    def execute(self, value):
        return value


class Taken(task.Task):
    def execute(self, seed, gate_out):
        return seed


flow = gf.Flow("branching")
gate = Echo("gate", provides="gate_out", rebind={"value": "seed"})
skipped = Echo("skipped", provides="skipped_out", rebind={"value": "seed"})
needs = Echo("needs", provides="needs_out", rebind={"value": "skipped_out"})
taken = Taken("taken", provides="taken_out")
flow.add(gate, skipped, needs, taken)
flow.link(gate, skipped, decider=lambda history: history["gate"] > 5)
engine = engines.load(flow, store={"seed": 1}, engine="serial")
moves = []
engine.atom_notifier.register("*", lambda state, details: moves.append((details["task_name"], state)))
engine.run()
for name, state in moves:
    print(name, state)
print("flow", engine.storage.get_flow_state())
