"""Hierarchical Poisson spike counts: neurons recorded in several animals, over trials.

Plates: ``animal`` (A), ``neuron`` ragged in ``animal`` (a different number of
neurons per animal), ``trial`` regularly nested in ``neuron`` (T trials each)::

    mu_pop ~ Normal(1.5, 1)                           population log firing rate
    sigma_animal, sigma_neuron ~ HalfNormal(0.5)
    animal_rate[a] ~ Normal(mu_pop, sigma_animal)     log-rate of animal a
    neuron_rate[i] ~ Normal(animal_rate[animal_i], sigma_neuron)
    gain ~ Normal(0, 1)                               stimulus effect on the log-rate
    spikes[i, t] ~ Poisson(exp(neuron_rate[i] + gain * stimulus[i, t]))   observed
"""

from __future__ import annotations

import numpy as np

from pavi_viz.model import Covariate, Plate, PlateModel, Variable

DESCRIPTION = (
    "Spike counts of neurons in several animals over stimulus and control trials: "
    "Poisson rates pooled by animal (simulated)."
)


def build(A: int = 4, min_neurons: int = 5, max_neurons: int = 15, T: int = 20, seed: int = 0) -> PlateModel:
    """The spike-count model with data simulated from its prior.

    The design is drawn from ``seed`` too: each animal's number of neurons, uniform in
    ``min_neurons..max_neurons``, and the stimulus (0 or 1) of each neuron's trials.
    With ``M`` neurons in all, ``spikes`` and ``stimulus`` have shape (M, T); ``truth``
    holds ``animal_rate`` (A,), ``neuron_rate`` (M,) and the global scalars.
    """
    if not 1 <= min_neurons <= max_neurons:
        raise ValueError(f"need 1 <= min_neurons <= max_neurons, got {min_neurons} and {max_neurons}")
    rng = np.random.default_rng(seed)
    counts = rng.integers(min_neurons, max_neurons + 1, size=A)
    animal_of_neuron = np.repeat(np.arange(A), counts)  # (M,), 0-based
    stimulus = rng.integers(0, 2, size=(len(animal_of_neuron), T))  # (M, T)
    model = PlateModel(
        [
            Plate("animal", A),
            Plate("neuron", nested_in="animal", membership=animal_of_neuron),
            Plate("trial", T, nested_in="neuron"),
        ],
        [
            Variable("mu_pop", "Normal", loc=1.5, scale=1.0),
            Variable("sigma_animal", "HalfNormal", scale=0.5),
            Variable("sigma_neuron", "HalfNormal", scale=0.5),
            Variable("gain", "Normal", loc=0.0, scale=1.0),
            Variable("animal_rate", "Normal", loc="mu_pop", scale="sigma_animal", plates=["animal"]),
            Variable("neuron_rate", "Normal", loc="animal_rate", scale="sigma_neuron", plates=["neuron"]),
            Variable("spikes", "Poisson", rate="exp(neuron_rate + gain * stimulus)",
                     plates=["neuron", "trial"], observed=True),
        ],
        [Covariate("stimulus", ["neuron", "trial"])],
        data={"stimulus": stimulus},
        name="spikes",
        description=DESCRIPTION,
    )
    return model.simulate(seed)
