"""The metrics hub: cursors, concurrent readers, bounded memory."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from pavi_viz.runner.hub import Info, MetricsHub, Point, StateChange, Summary


def point(step: int, elbo: float = 0.0) -> Point:
    return Point(step=step, elbo=elbo, smoothed_elbo=elbo, spike=False, steps_per_second=1.0, elapsed=0.1 * step, lr=0.01, time=0.0)


def info(family: str) -> Info:
    return Info(run="run", model="gre", family=family, parameter_count=10, total_steps=100, device="cpu",
                torch_threads=1, settings={}, truth=None, observed=None)


def state_change(state: str) -> StateChange:
    return StateChange(run="run", state=state, time=0.0, message="")


def test_records_come_in_order_with_their_sequence_numbers():
    hub = MetricsHub()
    hub.publish(info("pavi-e"))
    for step in range(1, 4):
        hub.publish(point(step, elbo=-float(step)))
    update = hub.since(0)
    assert [type(r) for r in update.records] == [Info, Point, Point, Point]
    assert [r.seq for r in update.records] == [1, 2, 3, 4]
    assert update.cursor == 4
    assert [r.step for r in update.records[1:]] == [1, 2, 3]
    assert hub.since(update.cursor).records == []
    hub.publish(point(4, elbo=-4.0))
    assert [r.step for r in hub.since(update.cursor).records] == [4]


@pytest.mark.parametrize(
    "record, name",
    [({"kind": "point", "step": 1, "elbo": -1.0}, "dict"), ("point", "str"), (None, "NoneType"), (Point, "type")],
)
def test_what_is_not_a_record_is_refused(record, name):
    hub = MetricsHub()
    with pytest.raises(TypeError, match=f"publishes Point, Summary, StateChange or Info, not {name}$"):
        hub.publish(record)
    assert hub.cursor == 0 and len(hub) == 0  # nothing published, no number used


def test_the_hub_numbers_the_records():
    hub = MetricsHub()
    given = dataclasses.replace(point(1), seq=99)
    assert hub.publish(given) == 1
    assert hub.publish(state_change("running")) == 2
    kept = hub.since(0).records[0]
    assert kept.seq == 1 and kept.step == 1  # the hub's number, not the one given
    assert given.seq == 99  # a copy is kept: the published record is unchanged
    assert dataclasses.replace(kept, seq=0) == point(1)


def test_records_are_frozen():
    hub = MetricsHub()
    hub.publish(point(1))
    for record in (point(1), hub.since(0).records[0]):
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.step = 2
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.seq = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        state_change("running").state = "stopped"
    assert hub.since(0).records[0].step == 1


def test_latest_is_the_newest_record_of_a_class():
    hub = MetricsHub()
    assert hub.latest(Point) is None
    hub.publish(info("pavi-f"))
    for step in range(1, 6):
        hub.publish(point(step))
    hub.publish(state_change("finished"))  # newer records of other classes are skipped
    newest = hub.latest(Point)
    assert isinstance(newest, Point) and newest.step == 5 and newest.seq == 6
    assert hub.latest(Info).family == "pavi-f"


def test_readers_with_their_own_cursors_each_see_every_record_once():
    hub = MetricsHub()
    early, late = hub.reader(), None
    seen_early, seen_late, seen_fresh = [], [], []
    for step in range(1, 101):
        hub.publish(point(step))
        if step % 7 == 0:
            seen_early += early.read()
        if step == 40:
            late = hub.reader()  # joins late: gets the history
            fresh = hub.reader(from_start=False)  # only what comes next
        if late is not None and step % 13 == 0:
            seen_late += late.read()
            seen_fresh += fresh.read()
    seen_early += early.read()
    seen_late += late.read()
    seen_fresh += fresh.read()
    assert [r.step for r in seen_early] == list(range(1, 101))
    assert [r.step for r in seen_late] == list(range(1, 101))
    assert [r.step for r in seen_fresh] == list(range(41, 101))


def test_concurrent_readers_see_exactly_what_a_writer_thread_published():
    hub = MetricsHub()
    total = 20_000
    done = threading.Event()

    def write():
        for step in range(1, total + 1):
            hub.publish(point(step))
        done.set()

    def read(into: list):
        reader = hub.reader()
        while not done.is_set():
            into.extend(r.step for r in reader.read())
        into.extend(r.step for r in reader.read())

    seen = [[] for _ in range(4)]
    threads = [threading.Thread(target=write)] + [threading.Thread(target=read, args=(s,)) for s in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for steps in seen:
        assert steps == list(range(1, total + 1))


def test_old_points_are_thinned_and_the_newest_kept():
    hub = MetricsHub(max_points=100)
    hub.publish(info("mean-field"))
    for step in range(1, 10_001):
        hub.publish(point(step))
    records = hub.since(0).records
    points = [r.step for r in records if isinstance(r, Point)]
    assert len(points) <= 100
    assert isinstance(records[0], Info)  # other records are never dropped
    assert points == sorted(points) and points[0] < 300  # a history from the start, thinned
    assert points[-25:] == list(range(9976, 10_001))  # the newest quarter untouched
    gaps = {b - a for a, b in zip(points, points[1:]) if b < 9976 - 256}
    assert len(gaps) == 1  # the older points evenly spaced
    # A reader that has passed the old points is not affected.
    cursor = hub.cursor
    hub.publish(point(10_001))
    assert [r.step for r in hub.since(cursor).records] == [10_001]


def test_only_the_latest_summary_is_kept_and_read_in_its_place():
    hub = MetricsHub()
    hub.publish(point(1))
    hub.publish(Summary(step=1, summary="first", draws=None))
    cursor = hub.cursor
    hub.publish(point(2))
    hub.publish(Summary(step=2, summary="second", draws=None))
    hub.publish(state_change("stopped"))
    assert [(type(r), getattr(r, "step", None)) for r in hub.since(0).records] == [
        (Point, 1), (Point, 2), (Summary, 2), (StateChange, None)
    ]
    assert [type(r) for r in hub.since(cursor).records] == [Point, Summary, StateChange]
    assert hub.since(hub.cursor).records == []
    assert hub.latest(Summary).summary == "second"
    assert hub.latest(StateChange).state == "stopped"
    assert hub.latest(Info) is None
    assert len(hub) == 4
