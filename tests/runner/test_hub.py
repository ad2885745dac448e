"""The metrics hub: cursors, concurrent readers, bounded memory."""

from __future__ import annotations

import threading

import pytest

from pavi_viz.runner.hub import INFO, POINT, STATE, SUMMARY, MetricsHub


def test_records_come_in_order_with_their_sequence_numbers():
    hub = MetricsHub()
    hub.publish(INFO, family="pavi-e")
    for step in range(1, 4):
        hub.publish(POINT, step=step, elbo=-float(step))
    update = hub.since(0)
    assert [r["kind"] for r in update.records] == [INFO, POINT, POINT, POINT]
    assert [r["seq"] for r in update.records] == [1, 2, 3, 4]
    assert update.cursor == 4
    assert [r["step"] for r in update.records[1:]] == [1, 2, 3]
    assert hub.since(update.cursor).records == []
    hub.publish(POINT, step=4, elbo=-4.0)
    assert [r["step"] for r in hub.since(update.cursor).records] == [4]


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown record kind 'bogus'"):
        MetricsHub().publish("bogus")


def test_readers_with_their_own_cursors_each_see_every_record_once():
    hub = MetricsHub()
    early, late = hub.reader(), None
    seen_early, seen_late, seen_fresh = [], [], []
    for step in range(1, 101):
        hub.publish(POINT, step=step)
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
    assert [r["step"] for r in seen_early] == list(range(1, 101))
    assert [r["step"] for r in seen_late] == list(range(1, 101))
    assert [r["step"] for r in seen_fresh] == list(range(41, 101))


def test_concurrent_readers_see_exactly_what_a_writer_thread_published():
    hub = MetricsHub()
    total = 20_000
    done = threading.Event()

    def write():
        for step in range(1, total + 1):
            hub.publish(POINT, step=step)
        done.set()

    def read(into: list):
        reader = hub.reader()
        while not done.is_set():
            into.extend(r["step"] for r in reader.read())
        into.extend(r["step"] for r in reader.read())

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
    hub.publish(INFO, family="mean-field")
    for step in range(1, 10_001):
        hub.publish(POINT, step=step)
    records = hub.since(0).records
    points = [r["step"] for r in records if r["kind"] == POINT]
    assert len(points) <= 100
    assert records[0]["kind"] == INFO  # other kinds are never dropped
    assert points == sorted(points) and points[0] < 300  # a history from the start, thinned
    assert points[-25:] == list(range(9976, 10_001))  # the newest quarter untouched
    gaps = {b - a for a, b in zip(points, points[1:]) if b < 9976 - 256}
    assert len(gaps) == 1  # the older points evenly spaced
    # A reader that has passed the old points is not affected.
    cursor = hub.cursor
    hub.publish(POINT, step=10_001)
    assert [r["step"] for r in hub.since(cursor).records] == [10_001]


def test_only_the_latest_summary_is_kept_and_read_in_its_place():
    hub = MetricsHub()
    hub.publish(POINT, step=1)
    hub.publish(SUMMARY, step=1, summary="first")
    cursor = hub.cursor
    hub.publish(POINT, step=2)
    hub.publish(SUMMARY, step=2, summary="second")
    hub.publish(STATE, state="stopped")
    assert [(r["kind"], r.get("step")) for r in hub.since(0).records] == [
        (POINT, 1), (POINT, 2), (SUMMARY, 2), (STATE, None)
    ]
    assert [r["kind"] for r in hub.since(cursor).records] == [POINT, SUMMARY, STATE]
    assert hub.since(hub.cursor).records == []
    assert hub.latest(SUMMARY)["summary"] == "second"
    assert hub.latest(STATE)["state"] == "stopped"
    assert hub.latest(INFO) is None
    assert len(hub) == 4
