"""Turns to train: at most so many runs train at once, the others wait in state queued."""

from __future__ import annotations

import threading
import time

import pytest

import pavi_viz
from pavi_viz.runner import RunSlots, RunState, StateChange, TrainingRun


def wait_for(condition, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.005)


class Taker:
    """A thread that takes a slot, recording what it was told while waiting."""

    def __init__(self, slots: RunSlots) -> None:
        self.slots, self.cancelled, self.ahead, self.got = slots, False, [], None
        self.thread = threading.Thread(target=self._take)
        self.thread.start()

    def _take(self) -> None:
        self.got = self.slots.take(cancelled=lambda: self.cancelled, on_wait=self.ahead.append)


def test_slots_go_first_come_first_served_and_a_cancelled_waiter_leaves_the_line() -> None:
    slots = RunSlots(1)
    assert slots.take(cancelled=lambda: False, on_wait=pytest.fail)  # free: no waiting
    first = Taker(slots)
    wait_for(lambda: slots.waiting == 1)
    second, third = Taker(slots), None
    wait_for(lambda: slots.waiting == 2)
    third = Taker(slots)
    wait_for(lambda: slots.waiting == 3)
    assert (first.ahead, second.ahead, third.ahead) == ([0], [1], [2])
    second.cancelled = True
    slots.wake()
    second.thread.join(10)
    assert second.got is False and slots.waiting == 2
    slots.give_back()
    first.thread.join(10)
    assert first.got is True and third.got is None and slots.held == 1
    slots.give_back()
    third.thread.join(10)
    assert third.got is True and slots.held == 1 and slots.waiting == 0
    slots.give_back()
    with pytest.raises(RuntimeError, match="without a slot held"):
        slots.give_back()
    with pytest.raises(ValueError, match="at least 1"):
        RunSlots(0)


@pytest.fixture(scope="module")
def gre():
    return pavi_viz.examples.load("gre", G=20, N=10)


def test_a_run_waits_queued_for_a_slot_and_trains_once_one_is_free(gre) -> None:
    slots = RunSlots(1)
    settings = {"family": "mean-field", "threads": 1, "summary_every": 10_000}
    first = TrainingRun(gre, steps=1_000_000, slots=slots, **settings).start()
    wait_for(lambda: first.progress.step > 0)
    second = TrainingRun(gre, steps=30, slots=slots, **settings).start()
    wait_for(lambda: second.state is RunState.QUEUED)
    changes = [r for r in second.hub.since(0).records if isinstance(r, StateChange)]
    assert "1 run(s) train at once here, 0 more waiting" in changes[-1].message
    assert second.progress.step == 0 and second.alive

    third = TrainingRun(gre, steps=30, slots=slots, **settings).start()
    wait_for(lambda: third.state is RunState.QUEUED)
    third.stop(wait=True, timeout=30)  # leaves the line without training
    assert third.state is RunState.STOPPED and third.progress.step == 0 and not third.alive
    assert "while waiting for a training slot" in third.hub.since(0).records[-1].message

    first.stop(wait=True, timeout=30)  # frees the slot: the second trains, to the end
    assert second.wait(60) is RunState.FINISHED and second.progress.step == 30
    states = [RunState(r.state) for r in second.hub.since(0).records if isinstance(r, StateChange)]
    assert states == [RunState.RUNNING, RunState.QUEUED, RunState.RUNNING, RunState.FINISHED]
    assert slots.held == 0 and slots.waiting == 0
    for run in (first, second, third):
        run.discard()


def test_a_paused_run_gives_its_slot_to_the_next_and_queues_again_on_resume(gre) -> None:
    slots = RunSlots(1)
    settings = {"family": "mean-field", "steps": 1_000_000, "threads": 1, "summary_every": 10_000, "slots": slots}
    first = TrainingRun(gre, **settings).start()
    wait_for(lambda: first.progress.step > 0)
    second = TrainingRun(gre, **settings).start()
    wait_for(lambda: second.state is RunState.QUEUED)
    first.pause()  # a paused run holds up no one
    wait_for(lambda: first.state is RunState.PAUSED and second.state is RunState.RUNNING)
    wait_for(lambda: second.progress.step > 0)
    first.resume()  # and waits its turn again
    wait_for(lambda: first.state is RunState.QUEUED)
    paused_at = first.progress.step
    second.stop(wait=True, timeout=30)
    wait_for(lambda: first.state is RunState.RUNNING and first.progress.step > paused_at)
    first.pause()
    wait_for(lambda: first.state is RunState.PAUSED)
    first.stop(wait=True, timeout=30)  # stopped while paused: no slot to give back twice
    assert first.state is RunState.STOPPED and slots.held == 0 and slots.waiting == 0
    for run in (first, second):
        run.discard()
