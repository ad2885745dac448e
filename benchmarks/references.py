"""NUTS reference posteriors of the bundled examples, computed with NumPyro.

An independent check of any fit: each model is written here again, by hand, in
NumPyro (not translated from our plate graph), its log joint density is checked
against :meth:`pavi_viz.model.CompiledModel.log_joint` at draws from our prior, and
NumPyro's NUTS (non-centred group effects, several chains) samples its posterior. The
summaries (mean, sd and quantiles per element, the layout of
:meth:`pavi_viz.inference.Posterior.summary`) are written as small JSON files that
``pavi_viz.examples.reference_summary(name)`` reads; eight schools' reference comes
from the posterior database (``examples.reference``).

::

    .venv/bin/python benchmarks/references.py                      # radon, radon_uranium, spikes
    .venv/bin/python benchmarks/references.py --names spikes --out /tmp/refs

Needs NumPyro (the ``bench`` extra). A run refuses to write a reference whose chains
disagree (split R-hat over :data:`MAX_RHAT`), that has too few effective draws (under
:data:`MIN_ESS`) or any divergent transition.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Convergence bars a reference must pass to be written.
MAX_RHAT = 1.01
MIN_ESS = 1000
#: The statistics of each element, as ``Posterior.summary`` computes them.
STATS = ("mean", "sd", "5%", "50%", "95%")
QUANTILES = (0.05, 0.5, 0.95)
DATASETS = Path(__file__).resolve().parents[1] / "pavi_viz" / "datasets"


# -- the models, written again in NumPyro ------------------------------------------------
def _radon_model(data: dict[str, np.ndarray], uranium: bool) -> Callable[[], None]:
    import numpyro
    import numpyro.distributions as dist

    county, floor, y = data["county"], data["floor"], data["log_radon"]
    counties = int(data["counties"])

    def model() -> None:
        mu_alpha = numpyro.sample("mu_alpha", dist.Normal(0.0, 10.0))
        if not uranium:
            mu_beta = numpyro.sample("mu_beta", dist.Normal(0.0, 10.0))
        sigma_alpha = numpyro.sample("sigma_alpha", dist.HalfNormal(1.0))
        if not uranium:
            sigma_beta = numpyro.sample("sigma_beta", dist.HalfNormal(1.0))
        sigma_y = numpyro.sample("sigma_y", dist.HalfNormal(1.0))
        if uranium:
            beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
        with numpyro.plate("county", counties):
            alpha = numpyro.sample("alpha", dist.Normal(mu_alpha, sigma_alpha))
            if not uranium:
                slope = numpyro.sample("beta", dist.Normal(mu_beta, sigma_beta))
        if uranium:
            loc = alpha[county] + beta[0] * data["log_uppm"] + beta[1] * floor
        else:
            loc = alpha[county] + slope[county] * floor
        with numpyro.plate("house", len(y)):
            numpyro.sample("log_radon", dist.Normal(loc, sigma_y), obs=y)

    return model


def _spikes_model(data: dict[str, np.ndarray]) -> Callable[[], None]:
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    animal, stimulus, spikes = data["animal"], data["stimulus"], data["spikes"]

    def model() -> None:
        mu_pop = numpyro.sample("mu_pop", dist.Normal(1.5, 1.0))
        sigma_animal = numpyro.sample("sigma_animal", dist.HalfNormal(0.5))
        sigma_neuron = numpyro.sample("sigma_neuron", dist.HalfNormal(0.5))
        gain = numpyro.sample("gain", dist.Normal(0.0, 1.0))
        with numpyro.plate("animal", int(data["animals"])):
            animal_rate = numpyro.sample("animal_rate", dist.Normal(mu_pop, sigma_animal))
        with numpyro.plate("neuron", len(animal)):
            neuron_rate = numpyro.sample("neuron_rate", dist.Normal(animal_rate[animal], sigma_neuron))
        with numpyro.plate("trial", stimulus.shape[1], dim=-1), numpyro.plate("neurons", len(animal), dim=-2):
            numpyro.sample("spikes", dist.Poisson(jnp.exp(neuron_rate[:, None] + gain * stimulus)), obs=spikes)

    return model


def _data(name: str, model: Any) -> dict[str, np.ndarray]:
    """The arrays a NumPyro model reads, from our model's data and plates."""
    data = {k: np.asarray(v) for k, v in model.data.items()}
    if name.startswith("radon"):
        data["county"] = np.asarray(model.plate("house").membership)
        data["counties"] = np.asarray(model.plate("county").size)
    else:
        data["animal"] = np.asarray(model.plate("neuron").membership)
        data["animals"] = np.asarray(model.plate("animal").size)
    return data


#: name -> (the NumPyro model's maker, the group effects NUTS samples non-centred: the weakly
#: informed ones, whose posterior is a funnel in their scale).
REFERENCES: dict[str, tuple[Callable[[dict[str, np.ndarray]], Callable[[], None]], tuple[str, ...]]] = {
    "radon": (lambda data: _radon_model(data, uranium=False), ("alpha", "beta")),
    "radon_uranium": (lambda data: _radon_model(data, uranium=True), ("alpha",)),
    # The neurons are well informed (20 trials of some 90 spikes each): centred; 4 animals are not.
    "spikes": (_spikes_model, ("animal_rate",)),
}


# -- checks ----------------------------------------------------------------------------
def check_log_density(name: str, model: Any, numpyro_model: Callable[[], None], draws: int = 5) -> float:
    """The largest gap between our log joint and NumPyro's at ``draws`` draws from our
    prior (constrained values, observed data fixed); raises when it passes 1e-4 relative."""
    import jax.numpy as jnp
    from numpyro.infer.util import log_density

    compiled = model.compile(device="cpu")
    prior = compiled.sample_prior((draws,), seed=0)
    ours = compiled.log_joint({n: prior[n] for n in compiled.latent_names})
    worst = 0.0
    for i in range(draws):
        params = {n: jnp.asarray(prior[n][i].double().numpy()) for n in compiled.latent_names}
        theirs, _ = log_density(numpyro_model, (), {}, params)
        gap = abs(float(theirs) - float(ours[i]))
        if gap > 1e-4 * max(1.0, abs(float(theirs))):  # float32 sums here, float64 there
            raise AssertionError(f"{name}: log joint {float(ours[i]):.6g} here, {float(theirs):.6g} in NumPyro")
        worst = max(worst, gap)
    return worst


def run_nuts(numpyro_model: Callable[[], None], centred: tuple[str, ...], chains: int, warmup: int, samples: int,
             seed: int, target_accept: float) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """NUTS draws (chain, draw, ...) of every latent, and the diagnostics."""
    import jax
    import numpyro
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.reparam import LocScaleReparam

    reparam = numpyro.handlers.reparam(numpyro_model, config={n: LocScaleReparam(centered=0) for n in centred})
    mcmc = MCMC(NUTS(reparam, target_accept_prob=target_accept), num_warmup=warmup, num_samples=samples, num_chains=chains,
                chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging",))
    draws = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()
             if not k.endswith("_decentered")}
    rhat = max(float(np.max(split_gelman_rubin(v))) for v in draws.values())
    ess = min(float(np.min(effective_sample_size(v))) for v in draws.values())
    divergences = int(np.sum(mcmc.get_extra_fields()["diverging"]))
    return draws, {"max_rhat": rhat, "min_ess": ess, "divergences": divergences}


def summarise(draws: np.ndarray) -> np.ndarray:
    """mean, sd, 5%, 50%, 95% over (chain, draw): shape (5, *element shape)."""
    flat = draws.reshape(-1, *draws.shape[2:])
    return np.stack([flat.mean(0), flat.std(0, ddof=1), *np.quantile(flat, QUANTILES, axis=0)])


def reference(name: str, chains: int, warmup: int, samples: int, seed: int, target_accept: float) -> dict[str, Any]:
    import pavi_viz

    model = pavi_viz.examples.load(name)
    make, centred = REFERENCES[name]
    numpyro_model = make(_data(name, model))
    gap = check_log_density(name, model, numpyro_model)
    started = time.perf_counter()
    draws, diagnostics = run_nuts(numpyro_model, centred, chains, warmup, samples, seed, target_accept)
    diagnostics["seconds"] = time.perf_counter() - started
    diagnostics["log_density_gap"] = gap
    problems = []
    if diagnostics["max_rhat"] > MAX_RHAT:
        problems.append(f"R-hat {diagnostics['max_rhat']:.3f} > {MAX_RHAT}")
    if diagnostics["min_ess"] < MIN_ESS:
        problems.append(f"effective draws {diagnostics['min_ess']:.0f} < {MIN_ESS}")
    if diagnostics["divergences"]:
        problems.append(f"{diagnostics['divergences']} divergent transitions")
    if problems:
        raise RuntimeError(f"{name}: the chains are no reference ({'; '.join(problems)})")
    compiled = model.compile(device="cpu")
    variables = {}
    for latent in compiled.latent_names:
        dims = [*compiled.plates_of(latent), *(f"{latent}_dim_{i}" for i in range(len(compiled.variables[latent].event_shape)))]
        variables[latent] = {"dims": dims, "values": summarise(draws[latent]).tolist()}
    import numpyro

    return {
        "source": f"NumPyro {numpyro.__version__} NUTS on the model written again in NumPyro "
                  f"(benchmarks/references.py): {chains} chains x {samples} draws after {warmup} warm-up, "
                  f"seed {seed}, target acceptance {target_accept}, weakly informed group effects non-centred",
        "example": name,
        "options": pavi_viz.examples.options(name),
        "stat": list(STATS),
        "diagnostics": diagnostics,
        "variables": variables,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", nargs="+", choices=list(REFERENCES), default=list(REFERENCES))
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-accept", type=float, default=0.99,
                        help="NUTS's target acceptance (smaller steps near the funnels' necks)")
    parser.add_argument("--out", type=Path, default=DATASETS, help="where the JSON files go (default: the package's data)")
    args = parser.parse_args(argv)
    import numpyro

    numpyro.enable_x64()  # the log density check compares float64 sums
    numpyro.set_host_device_count(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        result = reference(name, args.chains, args.warmup, args.samples, args.seed, args.target_accept)
        path = args.out / f"{name}_reference.json"
        path.write_text(json.dumps(result, separators=(",", ":")))
        d = result["diagnostics"]
        print(f"{name}: R-hat {d['max_rhat']:.4f}, min ESS {d['min_ess']:.0f}, {d['divergences']} divergences, "
              f"{d['seconds']:.0f} s, log density gap {d['log_density_gap']:.2e} -> {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
