"""TaskFlow twin of tests/all/suspend.rs's first test: a linear flow a, b, c; a suspend is asked
while b executes (in TaskFlow `engine.suspend()`, in flowhost `flowhost runs suspend ID`); b
finishes, c does not start; running the engine again (`flowhost runs resume ID`) goes on with
nothing executed twice. Prints every transition in order. Run it with the bench's virtualenv
(see run.sh):

    target/taskflow-venv/bin/python benches/taskflow/suspend.py

TaskFlow 6.5.0 prints:

    suspended: SUSPENDED / flow RUNNING / a RUNNING / a SUCCESS / b RUNNING /
      flow SUSPENDING / b SUCCESS / flow SUSPENDED / executed: execute a, execute b
    resumed: SUCCESS / flow RUNNING / c RUNNING / c SUCCESS / flow SUCCESS /
      executed: execute a, execute b, execute c

— the transitions flowhost makes for the same flow (it also logs each PENDING it leaves, and
records SUSPENDED -> RUNNING on resume).
"""

import taskflow.engines
from taskflow import task
from taskflow.patterns import linear_flow as lf
from taskflow.persistence import backends
from taskflow.types import notifier
from taskflow.utils import persistence_utils as pu

executed = []
asked = [False]
engine = None


class Probe(task.Task):
    def execute(self):
        executed.append("execute " + self.name)
        if self.name == "b" and not asked[0]:
            asked[0] = True
            engine.suspend()
        return self.name

    def revert(self, **kwargs):
        executed.append("revert " + self.name)


def load(flow, detail, book, backend, moves):
    loaded = taskflow.engines.load(flow, flow_detail=detail, book=book, backend=backend)
    loaded.notifier.register(notifier.Notifier.ANY, lambda state, details: moves.append("flow " + state))
    loaded.atom_notifier.register(
        notifier.Notifier.ANY, lambda state, details: moves.append("%s %s" % (details["task_name"], state))
    )
    return loaded


flow = lf.Flow("suspended").add(
    Probe("a", provides="a_out"), Probe("b", provides="b_out"), Probe("c", provides="c_out")
)
backend = backends.fetch({"connection": "memory://"})
book, detail = pu.temporary_flow_detail(backend)
for phase in ("suspended", "resumed"):
    moves = []
    engine = load(flow, detail, book, backend, moves)
    engine.run()
    print(
        "%s: %s / %s / executed: %s"
        % (phase, engine.storage.get_flow_state(), " / ".join(moves), ", ".join(executed))
    )
