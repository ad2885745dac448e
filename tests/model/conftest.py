"""Small model builders shared by the model-layer tests.

Each builder returns a fresh, valid :class:`PlateModel` with data attached, so
that a test may break one part of it and check the error that follows. Tests get
them through the ``build`` fixture: ``build("radon")``.
"""

from __future__ import annotations

import pytest
import torch

from pavi_viz.model import Covariate, Plate, PlateModel, Variable

#: The house -> county membership of :func:`radon_model`: 4 counties holding
#: 3, 1, 4 and 2 houses, listed out of county order on purpose.
HOUSE_COUNTY = [2, 0, 1, 2, 0, 3, 2, 3, 0, 2]
#: The house -> county membership of :func:`full_model`: 40 houses in 8 counties of
#: uneven sizes, county 5 holding none.
MANY_HOUSE_COUNTY = [(7 * i + i * i // 3) % 8 for i in range(40)]
MANY_HOUSE_COUNTY = [4 if c == 5 else c for c in MANY_HOUSE_COUNTY]
#: The neuron -> animal membership of :func:`full_model`: 5 neurons in 2 animals.
NEURON_ANIMAL = [1, 0, 1, 1, 0]


def simple_model() -> PlateModel:
    """Eight-schools shape: one top-level plate, global hyperpriors."""
    model = PlateModel(
        [Plate("school", 5)],
        [
            Variable("mu", "Normal", loc=0.0, scale=5.0),
            Variable("tau", "HalfNormal", scale=3.0),
            Variable("theta", "Normal", plates=["school"], loc="mu", scale="tau"),
            Variable("y", "Normal", plates=["school"], observed=True, loc="theta[school]", scale="sigma"),
        ],
        [Covariate("sigma", plates=["school"])],
        name="schools",
        description="a top-level plate",
    )
    model.data = {"sigma": torch.linspace(1.0, 2.0, 5), "y": torch.tensor([1.0, -0.5, 2.0, 0.3, 0.0])}
    return model


def nested_model() -> PlateModel:
    """A top-level plate ``group`` with a regularly nested plate ``obs`` (3 x 4)."""
    model = PlateModel(
        [Plate("group", 3), Plate("obs", 4, nested_in="group")],
        [
            Variable("mu", "Normal", loc=0.0, scale=1.0),
            Variable("theta", "Normal", plates=["group"], loc="mu", scale=1.0),
            Variable("x", "Normal", plates=["group", "obs"], observed=True, loc="theta[group]", scale=0.5),
        ],
        name="nested",
    )
    model.data = {"x": torch.arange(12.0).reshape(3, 4) / 6 - 1}
    return model


def radon_model() -> PlateModel:
    """A ragged plate: 10 houses in 4 counties, with a house-level covariate."""
    model = PlateModel(
        [Plate("county", 4), Plate("house", nested_in="county", membership=HOUSE_COUNTY)],
        [
            Variable("mu", "Normal", loc=0.0, scale=2.0),
            Variable("sigma_a", "HalfNormal", scale=1.0),
            Variable("a", "Normal", plates=["county"], loc="mu", scale="sigma_a"),
            Variable("b", "Normal", loc=0.0, scale=1.0),
            Variable("sigma_y", "HalfNormal", scale=1.0),
            Variable("y", "Normal", plates=["house"], observed=True,
                     loc="a[county] + b * floor", scale="sigma_y"),
        ],
        [Covariate("floor", plates=["house"])],
        name="radon",
    )
    model.data = {
        "floor": torch.tensor([0.0, 1, 0, 0, 1, 1, 0, 0, 1, 0]),
        "y": torch.linspace(-1.0, 1.5, 10),
    }
    return model


def full_model() -> PlateModel:
    """Every kind of plate at once, kept small: a top-level plate ``county`` with a
    ragged plate ``house`` (40 houses in 8 counties), a top-level plate ``group`` with a regularly
    nested ``obs`` (3 x 4), and ``animal`` > ragged ``neuron`` > regular ``trial``."""
    model = PlateModel(
        [
            Plate("county", 8),
            Plate("house", nested_in="county", membership=MANY_HOUSE_COUNTY),
            Plate("group", 3),
            Plate("obs", 4, nested_in="group"),
            Plate("animal", 2),
            Plate("neuron", nested_in="animal", membership=NEURON_ANIMAL),
            Plate("trial", 3, nested_in="neuron"),
        ],
        [
            Variable("mu", "Normal", loc=0.0, scale=1.0),
            Variable("a", "Normal", plates=["county"], loc="mu", scale=1.0),
            Variable("y", "Normal", plates=["house"], observed=True, loc="a[county] + floor", scale=0.7),
            Variable("theta", "Normal", plates=["group"], loc="mu", scale=1.0),
            Variable("eta", "Normal", plates=["group", "obs"], loc="theta[group]", scale=0.5),
            Variable("x", "Normal", plates=["group", "obs"], observed=True, loc="eta", scale=0.3),
            Variable("gain", "Normal", plates=["animal"], loc="mu", scale=1.0),
            Variable("rate", "Normal", plates=["neuron"], loc="gain[animal]", scale=0.5),
            Variable("spikes", "Normal", plates=["neuron", "trial"], observed=True,
                     loc="rate[neuron] + gain[animal]", scale=0.4),
        ],
        [Covariate("floor", plates=["house"])],
        name="full",
    )
    model.data = {
        "floor": torch.arange(40.0) % 2,
        "y": torch.linspace(-1.0, 1.5, 40),
        "x": torch.linspace(-2.0, 2.0, 12).reshape(3, 4),
        "spikes": torch.linspace(-1.0, 1.0, 15).reshape(5, 3),
    }
    return model


#: The builders by name, for ``build(name)`` and for parametrizing over models.
BUILDERS = {"simple": simple_model, "nested": nested_model, "radon": radon_model, "full": full_model}


@pytest.fixture
def build():
    """``build(name)``: a fresh model from :data:`BUILDERS` (test modules cannot
    import this conftest by name, so the builders travel as a fixture)."""
    return lambda name: BUILDERS[name]()
