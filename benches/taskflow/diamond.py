"""TaskFlow twin of the failing diamond in tests/all/patterns.rs (a -> (b, c) -> d, d fails):
prints every task transition in order, as flowhost logs them (`task `b` PENDING -> RUNNING`),
for the serial and the parallel engine, so the two engines' orders can be read side by side
with flowhost's. Run it with the bench's virtualenv (see run.sh):

    target/taskflow-venv/bin/python benches/taskflow/diamond.py parallel

TaskFlow 6.5.0 prints: a runs; b and c both start before either ends; d fails and is
reverted; b and c both start reverting before either is reverted; a is reverted last —
the order tests/all/patterns.rs asserts of flowhost's graph flows.
"""

import sys

from taskflow import engines, task
from taskflow.patterns import graph_flow


class Echo(task.Task):
    def execute(self, value, extra=None):
        return value

    def revert(self, value, extra=None, **kwargs):
        pass


class Broken(Echo):
    def execute(self, value, extra=None):
        raise RuntimeError("broken")


def main(mode):
    flow = graph_flow.Flow("diamond")
    flow.add(
        Echo("a", provides="a_out", rebind={"value": "seed"}),
        Echo("b", provides="b_out", rebind={"value": "a_out"}),
        Echo("c", provides="c_out", rebind={"value": "a_out"}),
        Broken("d", provides="d_out", rebind={"value": "b_out", "extra": "c_out"}),
    )
    engine = engines.load(flow, store={"seed": 1}, engine=mode)
    states = {}

    def on_task(state, details):
        name = details["task_name"]
        print("task `%s` %s -> %s" % (name, states.get(name, "PENDING"), state))
        states[name] = state

    engine.atom_notifier.register("*", on_task)
    try:
        engine.run()
    except RuntimeError:
        print("flow REVERTED")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "serial")
