"""Limits that whoever serves the app sets for every session, and turns to train."""

from __future__ import annotations

import json

import pytest

import pavi_viz
from pavi_viz.inference.config import MAX_STEPS
from pavi_viz.model import ModelError
from pavi_viz.runner import RunState
from pavi_viz.ui.app import App
from pavi_viz.ui.builder_state import BuilderState
from pavi_viz.ui.limits import ENVIRONMENT_VARIABLE, HOSTS_VARIABLE, ServeLimits, allowed_host, shared_slots
from pavi_viz.ui.state import DashboardState


def test_limits_are_checked_once_and_travel_through_the_environment() -> None:
    limits = ServeLimits(steps=500, particles=4, simulated=10_000, runs=2)
    assert ServeLimits.from_environment(limits.to_environment()) == limits
    assert ServeLimits.from_environment({}) == ServeLimits()
    for bad, words in [({"steps": 0}, "--max-steps must be a whole number of at least 1"),
                       ({"steps": MAX_STEPS + 1}, "--max-steps may be at most 10,000,000"),
                       ({"runs": True}, "--max-runs must be a whole number"),
                       ({"particles": 2.5}, "--max-particles must be a whole number")]:
        with pytest.raises(ValueError, match=words):
            ServeLimits(**bad)
    with pytest.raises(ValueError, match=ENVIRONMENT_VARIABLE):
        ServeLimits.from_environment({ENVIRONMENT_VARIABLE: "[1, 2]"})


def test_a_start_beyond_the_limits_is_refused_and_the_run_going_goes_on() -> None:
    state = DashboardState(pavi_viz.examples.load("gre", G=10, N=5), limits=ServeLimits(steps=1_000, particles=4))
    state.config.param.update(family="mean-field", steps=1_000, threads=1, summary_every=500)
    run = state.start()
    state.config.steps = 5_000
    with pytest.raises(ValueError, match="Steps: 5,000 is over this server's limit of 1,000 a run .*--max-steps"):
        state.start()
    state.config.param.update(steps=1_000, particles=8)
    with pytest.raises(ValueError, match="Particles: 8 is over this server's limit of 4"):
        state.start()
    assert state.run is run and run.state is not RunState.STOPPED  # the refused start stopped nothing
    run.wait(60)
    with pytest.raises(ValueError, match="Steps: 2,000 is over"):
        state.resume(2_000)  # resuming a finished run towards more steps counts too
    state.close()


def test_a_simulation_beyond_the_limit_is_refused_naming_the_plate() -> None:
    state = BuilderState(pavi_viz.examples.load("gre", G=10, N=5), limits=ServeLimits(simulated=1_000))
    with pytest.raises(ModelError, match="over the 1,000 allowed") as refused:
        state.simulate(sizes={"group": 200})
    assert refused.value.culprit == "group" and state.model.plate("group").size == 10  # rolled back
    state.simulate(sizes={"group": 20})
    assert state.model.plate("group").size == 20 and state.valid


def test_served_sessions_take_the_environments_limits_and_share_one_set_of_slots(monkeypatch) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, ServeLimits(steps=300, runs=3).to_environment()[ENVIRONMENT_VARIABLE])
    first, second = App.served(), App.served()
    for app in (first, second):
        assert app.dashboard.state.limits == ServeLimits(steps=300, runs=3)
    assert first.dashboard.state.slots is second.dashboard.state.slots is shared_slots(3)
    assert first.dashboard.state.slots.size == 3
    first.tabs.active = 1  # the builder, made as its tab opens, has the same limits
    assert first.builder.state.limits.steps == 300
    for app in (first, second):
        app.dashboard.close()


def test_pages_are_built_for_the_hosts_the_server_answers_to() -> None:
    served = {HOSTS_VARIABLE: json.dumps(["localhost:5006", "127.0.0.1:5006"])}
    assert allowed_host("localhost:5006", served) and allowed_host("LocalHost:5006", served)
    assert not allowed_host("rebound.example:5006", served)
    assert not allowed_host("localhost:5007", served) and not allowed_host(None, served)
    assert allowed_host("anything:1", {})  # panel serve run directly, or a notebook: no list
