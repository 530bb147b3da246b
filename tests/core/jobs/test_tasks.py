"""The task lifecycle is an explicit transition table: every change goes through TaskEntry.move, an illegal one
raises LocalProtocolError, and the final states never change."""

from __future__ import annotations

import pytest

from pangea_p2p.core.jobs.model import TaskState
from pangea_p2p.core.jobs.tasks import TRANSITIONS, TaskEntry
from pangea_p2p.errors import LocalProtocolError
from tests.core.jobs.coord_driver import Driver, FakeWorker, chunks_for
from tests.core.jobs.helpers import task


def entry(state: TaskState) -> TaskEntry:
    t = task()
    e = TaskEntry(t, t.limits)
    e.state = state  # set up directly: the test is about what move() allows from here
    return e


@pytest.mark.parametrize("start", list(TaskState))
@pytest.mark.parametrize("to", list(TaskState))
def test_move_follows_the_table(start: TaskState, to: TaskState) -> None:
    e = entry(start)
    if to in TRANSITIONS[start]:
        e.move(to)
        assert e.state is to
    else:
        with pytest.raises(LocalProtocolError, match=f"{start.value} -> {to.value}"):
            e.move(to)
        assert e.state is start


def test_final_states_are_terminal_and_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(TaskState)
    for state in TaskState:
        assert (TRANSITIONS[state] == frozenset()) is state.final
    assert TaskState.DONE not in TRANSITIONS[TaskState.DONE]  # a task is accepted once


def test_an_accepted_task_is_never_accepted_again() -> None:
    d = Driver([FakeWorker("a")], chunks_for(1), auto=False)
    d.start()
    d.deliver(0)  # accepted
    result = d.take("result", "a")
    d.send(result)
    assert d.task("job/t0").state is TaskState.DONE
    assert d.send(result) == []  # the same answer again: nothing changes, nothing is accepted twice
    assert len(d.updates("job/t0", TaskState.DONE)) == 1
