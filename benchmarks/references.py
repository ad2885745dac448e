"""NUTS reference posteriors, computed with NumPyro: of the bundled examples and of the
user models of ``benchmarks/models.py``.

An independent check of any fit: each model is written here again, by hand, in
NumPyro (not translated from our plate graph), its log joint density is checked
against :meth:`pavi_viz.model.CompiledModel.log_joint` at draws from our prior, and
NumPyro's NUTS (non-centred group effects, several chains) samples its posterior. The
summaries (mean, sd and quantiles per element, the layout of
:meth:`pavi_viz.inference.Posterior.summary`) are written as small JSON files that
``pavi_viz.examples.read_reference(path)`` reads: the bundled examples' into the
package's data (``pavi_viz.examples.reference_summary(name)``), the user models' into
``benchmarks/references/``. Eight schools' reference comes from the posterior database
(``examples.reference``).

::

    .venv/bin/python benchmarks/references.py                      # every reference below
    .venv/bin/python benchmarks/references.py --names glmm funnel --out /tmp/refs

Needs NumPyro (the ``bench`` extra). A run refuses to write a reference whose chains
disagree (split R-hat over :data:`MAX_RHAT`), that has too few effective draws (under
:data:`MIN_ESS`) or any divergent transition.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Convergence bars a reference must pass to be written.
MAX_RHAT = 1.01
MIN_ESS = 1000
#: The statistics of each element, as ``Posterior.summary`` computes them.
STATS = ("mean", "sd", "5%", "50%", "95%")
QUANTILES = (0.05, 0.5, 0.95)
ROOT = Path(__file__).resolve().parents[1]
#: Where the references go: the bundled examples' into the package, the user models' beside this script.
DATASETS = ROOT / "pavi_viz" / "datasets"
USER_REFERENCES = ROOT / "benchmarks" / "references"

#: A NumPyro model's maker: the arrays of :func:`_data` in, a model of no arguments out.
Maker = Callable[[dict[str, np.ndarray]], Callable[[], None]]


# -- the models, written again in NumPyro ------------------------------------------------
def _radon_model(data: dict[str, np.ndarray], uranium: bool) -> Callable[[], None]:
    import numpyro
    import numpyro.distributions as dist

    county, floor, y = data["county_of_house"], data["floor"], data["log_radon"]

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
        with numpyro.plate("county", int(data["n_county"])):
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

    animal, stimulus, spikes = data["animal_of_neuron"], data["stimulus"], data["spikes"]

    def model() -> None:
        mu_pop = numpyro.sample("mu_pop", dist.Normal(1.5, 1.0))
        sigma_animal = numpyro.sample("sigma_animal", dist.HalfNormal(0.5))
        sigma_neuron = numpyro.sample("sigma_neuron", dist.HalfNormal(0.5))
        gain = numpyro.sample("gain", dist.Normal(0.0, 1.0))
        with numpyro.plate("animal", int(data["n_animal"])):
            animal_rate = numpyro.sample("animal_rate", dist.Normal(mu_pop, sigma_animal))
        with numpyro.plate("neuron", len(animal)):
            neuron_rate = numpyro.sample("neuron_rate", dist.Normal(animal_rate[animal], sigma_neuron))
        with numpyro.plate("trial", stimulus.shape[1], dim=-1), numpyro.plate("neurons", len(animal), dim=-2):
            numpyro.sample("spikes", dist.Poisson(jnp.exp(neuron_rate[:, None] + gain * stimulus)), obs=spikes)

    return model


def _random_intercept(plate: str, scale: str, size: int) -> Any:
    """``scale ~ HalfNormal(1)`` and ``u ~ Normal(0, scale)`` in each of the ``size``
    elements of ``plate``: the random intercept of the GLMM and of the Poisson model."""
    import numpyro
    import numpyro.distributions as dist

    sigma = numpyro.sample(scale, dist.HalfNormal(1.0))
    with numpyro.plate(plate, size):
        return numpyro.sample("u", dist.Normal(0.0, sigma))


def _glmm_model(data: dict[str, np.ndarray]) -> Callable[[], None]:
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    clinic, outcome = data["clinic_of_patient"], data["outcome"]
    covariates = jnp.stack([data["age"], data["bmi"], data["treated"]], axis=-1)  # (patients, 3)

    def model() -> None:
        alpha = numpyro.sample("alpha", dist.Normal(0.0, 2.5))
        beta = numpyro.sample("beta", dist.Normal(0.0, 2.5).expand([3]).to_event(1))
        u = _random_intercept("clinic", "sigma_clinic", int(data["n_clinic"]))
        with numpyro.plate("patient", len(outcome)):
            numpyro.sample("outcome", dist.Bernoulli(logits=alpha + u[clinic] + covariates @ beta), obs=outcome)

    return model


def _poisson_exposure_model(data: dict[str, np.ndarray]) -> Callable[[], None]:
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    region, cases = data["region_of_site"], data["cases"]

    def model() -> None:
        alpha = numpyro.sample("alpha", dist.Normal(-5.0, 2.0))
        beta = numpyro.sample("beta", dist.Normal(0.0, 1.0))
        u = _random_intercept("region", "sigma_region", int(data["n_region"]))
        log_rate = alpha + beta * data["deprivation"] + u[region]
        with numpyro.plate("site", len(cases)):
            numpyro.sample("cases", dist.Poisson(data["person_years"] * jnp.exp(log_rate)), obs=cases)

    return model


def _nested_model(data: dict[str, np.ndarray]) -> Callable[[], None]:
    import numpyro
    import numpyro.distributions as dist

    school, klass, score = data["school_of_class"], data["class_of_student"], data["score"]

    def model() -> None:
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        sigma_school = numpyro.sample("sigma_school", dist.HalfNormal(1.0))
        sigma_class = numpyro.sample("sigma_class", dist.HalfNormal(1.0))
        sigma_y = numpyro.sample("sigma_y", dist.HalfNormal(1.0))
        with numpyro.plate("school", int(data["n_school"])):
            school_effect = numpyro.sample("school_effect", dist.Normal(mu, sigma_school))
        with numpyro.plate("class", len(school)):
            class_effect = numpyro.sample("class_effect", dist.Normal(school_effect[school], sigma_class))
        with numpyro.plate("student", len(klass)):
            numpyro.sample("score", dist.Normal(class_effect[klass], sigma_y), obs=score)

    return model


def _funnel_model(data: dict[str, np.ndarray]) -> Callable[[], None]:
    import numpyro
    import numpyro.distributions as dist

    def model() -> None:
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("group", len(data["y"])):
            theta = numpyro.sample("theta", dist.Normal(mu, tau))
            numpyro.sample("y", dist.Normal(theta, data["sigma"]), obs=data["y"])

    return model


def _data(model: Any) -> dict[str, np.ndarray]:
    """The arrays a NumPyro model reads: our model's data, ``n_PLATE`` the size of each
    plate and ``OUTER_of_PLATE`` the outer element of each member of a ragged plate
    (``county_of_house``)."""
    data = {k: np.asarray(v) for k, v in model.data.items()}
    for plate in model.plates:
        data[f"n_{plate.name}"] = np.asarray(plate.size)
        if plate.ragged:
            data[f"{plate.nested_in}_of_{plate.name}"] = np.asarray(plate.membership)
    return data


@dataclass(frozen=True)
class Reference:
    """How one reference is computed.

    Attributes:
        make: the NumPyro model's maker.
        noncentred: the group effects NUTS samples non-centred: the weakly informed ones,
            whose posterior is a funnel in their scale.
        user: a user model of ``benchmarks/models.py`` (its reference goes to
            :data:`USER_REFERENCES`) rather than a bundled example (:data:`DATASETS`).
    """

    make: Maker
    noncentred: tuple[str, ...]
    user: bool = False

    def build(self, name: str) -> Any:
        """Our model, with its default options and data."""
        import pavi_viz

        return _user_models()[name]() if self.user else pavi_viz.examples.load(name)

    def options(self, name: str) -> dict[str, Any]:
        """The builder's options (its defaults: the ones the reference is for)."""
        import pavi_viz

        if not self.user:
            return pavi_viz.examples.options(name)
        return {k: p.default for k, p in inspect.signature(_user_models()[name]).parameters.items()}

    @property
    def folder(self) -> Path:
        """Where its JSON file goes by default."""
        return USER_REFERENCES if self.user else DATASETS

    def summary(self, name: str) -> Any:
        """The reference written in :attr:`folder`, read by ``pavi_viz.examples.read_reference``."""
        import pavi_viz

        return pavi_viz.examples.read_reference(self.folder / f"{name}_reference.json")


def _user_models() -> dict[str, Callable[..., Any]]:
    """``benchmarks.models.MODELS``, importable when this file runs as a script too."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.models import MODELS

    return MODELS


REFERENCES: dict[str, Reference] = {
    "radon": Reference(lambda data: _radon_model(data, uranium=False), ("alpha", "beta")),
    "radon_uranium": Reference(lambda data: _radon_model(data, uranium=True), ("alpha",)),
    # The neurons are well informed (20 trials of some 90 spikes each): centred; 4 animals are not.
    "spikes": Reference(_spikes_model, ("animal_rate",)),
    # The user models (benchmarks/models.py).
    "glmm": Reference(_glmm_model, ("u",), user=True),
    # Regions (3 to 9 sites, some 90 cases a region) are well informed: centred (non-centred,
    # the intercept and the regions' effects mix slowly: R-hat 1.0045, 1,055 effective draws).
    "poisson_exposure": Reference(_poisson_exposure_model, (), user=True),
    "nested": Reference(_nested_model, ("school_effect", "class_effect"), user=True),
    "funnel": Reference(_funnel_model, ("theta",), user=True),
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


def run_nuts(numpyro_model: Callable[[], None], noncentred: tuple[str, ...], chains: int, warmup: int, samples: int,
             seed: int, target_accept: float) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """NUTS draws (chain, draw, ...) of every latent, and the diagnostics."""
    import jax
    import numpyro
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.reparam import LocScaleReparam

    reparam = numpyro.handlers.reparam(numpyro_model, config={n: LocScaleReparam(centered=0) for n in noncentred})
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


def strongest_correlation(draws: dict[str, np.ndarray], globals_: list[str]) -> tuple[float, str]:
    """The posterior correlation of the two most correlated elements of the global
    latents (those in no plate), and the pair's names (``beta[0] ~ beta[1]``); 0 and ""
    with fewer than two elements. Large ones are dependencies a mean-field fit misses."""
    columns, names = [], []
    for name in globals_:
        flat = draws[name].reshape(-1, int(np.prod(draws[name].shape[2:], dtype=int)))
        columns += list(flat.T)
        names += [name] if draws[name].ndim == 2 else [f"{name}[{i}]" for i in range(flat.shape[1])]
    if len(columns) < 2:
        return 0.0, ""
    corr = np.corrcoef(np.stack(columns))
    np.fill_diagonal(corr, 0.0)
    i, j = np.unravel_index(np.argmax(np.abs(corr)), corr.shape)
    return float(corr[i, j]), f"{names[min(i, j)]} ~ {names[max(i, j)]}"


def reference(name: str, chains: int, warmup: int, samples: int, seed: int, target_accept: float) -> dict[str, Any]:
    """NUTS's reference summary of ``name`` (the JSON layout ``examples.read_reference`` reads).

    Raises:
        AssertionError: the NumPyro model's log joint is not ours.
        RuntimeError: the chains miss a convergence bar (named in the message).
    """
    spec = REFERENCES[name]
    model = spec.build(name)
    numpyro_model = spec.make(_data(model))
    gap = check_log_density(name, model, numpyro_model)
    started = time.perf_counter()
    draws, diagnostics = run_nuts(numpyro_model, spec.noncentred, chains, warmup, samples, seed, target_accept)
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
    diagnostics["strongest_correlation"], diagnostics["strongest_correlation_of"] = strongest_correlation(
        draws, [n for n in compiled.latent_names if not compiled.plates_of(n)])
    variables = {}
    for latent in compiled.latent_names:
        dims = [*compiled.plates_of(latent), *(f"{latent}_dim_{i}" for i in range(len(compiled.variables[latent].event_shape)))]
        variables[latent] = {"dims": dims, "values": summarise(draws[latent]).tolist()}
    import numpyro

    return {
        "source": f"NumPyro {numpyro.__version__} NUTS on the model written again in NumPyro "
                  f"(benchmarks/references.py): {chains} chains x {samples} draws after {warmup} warm-up, "
                  f"seed {seed}, target acceptance {target_accept}, "
                  + (f"weakly informed group effects non-centred ({', '.join(spec.noncentred)})"
                     if spec.noncentred else "every group effect centred"),
        "example": name,
        "options": spec.options(name),
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
    parser.add_argument("--out", type=Path, default=None,
                        help="where the JSON files go (default: the package's data for the bundled examples, "
                             "benchmarks/references/ for the user models)")
    args = parser.parse_args(argv)
    import numpyro

    numpyro.enable_x64()  # the log density check compares float64 sums
    numpyro.set_host_device_count(1)
    for name in args.names:
        result = reference(name, args.chains, args.warmup, args.samples, args.seed, args.target_accept)
        folder = REFERENCES[name].folder if args.out is None else args.out
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}_reference.json"
        path.write_text(json.dumps(result, separators=(",", ":")))
        d = result["diagnostics"]
        print(f"{name}: R-hat {d['max_rhat']:.4f}, min ESS {d['min_ess']:.0f}, {d['divergences']} divergences, "
              f"{d['seconds']:.0f} s, log density gap {d['log_density_gap']:.2e}, strongest global correlation "
              f"{d['strongest_correlation']:+.2f} ({d['strongest_correlation_of']}) -> {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
