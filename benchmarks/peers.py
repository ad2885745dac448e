"""pavi_viz against the peers a user would pick, side by side on the GRE model.

Every method fits the Gaussian random effects model (``pavi_viz.examples.gre``, N = 10
points per group in D = 2 dimensions) at each G of ``--sizes``, each run in a fresh
subprocess, one CPU thread, within ``--budget`` seconds of training:

* ``pavi_viz``: ``pavi_viz.fit(model, seed=...)``, no setting at all (what a user gets);
* ``pavi-e``, ``pavi-f``: ``fit(model, family, lr=...)``, the best lr of ``--pavi-lrs``;
* ``nuts``: NumPyro's NUTS, 1 chain, ``--nuts-warmup`` + ``--nuts-draws``, ``mu_g``
  non-centred; run only while its estimated time fits the budget;
* ``numpyro-svi``: NumPyro's ``AutoNormal``, full batch, jitted chunks of ``svi.update``;
* ``pyro-svi``: Pyro's ``AutoNormal``, full batch;
* ``pyro-svi-sub``: Pyro's ``AutoNormal`` with ``pyro.plate(subsample_size=64)`` (scaled);
  the three SVI peers at the best lr of ``--svi-lrs``.

A run's *error* is the worst latent's (``mu``, ``mu_g``) mean over its elements of
``|posterior mean - exact mean| / exact sd`` (``gre.analytic_posterior``); recorded:
the training time (evaluation excluded) at which it first falls below each of
``--levels`` (0.5, 0.2, 0.1), the sd ratios (fitted / exact, min and max over elements)
there, the final error, steps and peak memory. ``benchmarks/README.md`` says more.

Commands::

    # the full benchmark (7 methods, lr grids of 3: 17 runs per G)
    python benchmarks/peers.py --sizes 1000 10000 100000 1000000 --budget 120
    # a quick look
    python benchmarks/peers.py --sizes 1000 --budget 20 --out /tmp/peers
    # the table and the plot again, from an earlier JSON
    python benchmarks/peers.py --replot benchmarks/results/peers.json

Needs the ``bench`` extra (pyro-ppl, numpyro, matplotlib).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    MemoryMonitor,
    Tracker,
    command_settings,
    emit,
    finish_report,
    launch,
    load_average,
    machine_info,
    run_report,
)

ROOT = Path(__file__).resolve().parents[1]
#: Every method, in the order of the table; labels for the table and the plot.
METHODS: dict[str, str] = {
    "pavi_viz": "pavi_viz (fit defaults)",
    "pavi-e": "pavi-e (best lr)",
    "pavi-f": "pavi-f (best lr)",
    "nuts": "NumPyro NUTS",
    "numpyro-svi": "NumPyro AutoNormal, full batch",
    "pyro-svi": "Pyro AutoNormal, full batch",
    "pyro-svi-sub": "Pyro AutoNormal, 64 groups a step",
}
PAVI_FAMILIES = ("pavi-e", "pavi-f")
SVI_PEERS = ("numpyro-svi", "pyro-svi", "pyro-svi-sub")
LEVELS = (0.5, 0.2, 0.1)
LATENTS = ("mu", "mu_g")
#: One CPU thread in every child: torch, OpenMP, BLAS and XLA (one host device).
CHILD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1 "
                 "--xla_force_host_platform_device_count=1",
}
#: NUTS's seconds per group per iteration (warm-up or draw), for the first size's
#: estimate; later sizes scale the time of the last run. Measured on 2 shared cores at
#: G = 1000 (11 to 18 s for 1000 iterations, the compilation included).
NUTS_SECONDS_PER_GROUP_ITERATION = 1.5e-5
#: NUTS's error is measured after these shares of its draws (and on the tracker's schedule).
NUTS_CHECKPOINTS = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
#: Steps of the pavi-e and pavi-f runs: the budget ends them first.
MANY_STEPS = 10**8
#: A chunk of jitted steps aims at this many seconds (their count adapts).
CHUNK_SECONDS = 0.1


# -- accuracy -------------------------------------------------------------------------
Moments = dict[str, tuple[np.ndarray, np.ndarray]]  # latent -> (means, sds)


def errors(estimate: Moments, truth: Moments) -> dict[str, Any]:
    """A fit's accuracy against the exact posterior.

    Per latent: ``mean_error``, the mean over elements of |mean - exact mean| / exact sd,
    and the min and max over elements of sd / exact sd. ``error``: the worst latent's
    ``mean_error``. ``estimate`` and ``truth`` hold the same elements (``mu_g`` on the
    groups evaluated).
    """
    latents = {}
    for name, (true_mean, true_sd) in truth.items():
        mean, sd = (np.asarray(a, dtype=np.float64) for a in estimate[name])
        ratio = sd / true_sd
        latents[name] = {
            "mean_error": float(np.mean(np.abs(mean - true_mean) / true_sd)),
            "sd_ratio_min": float(ratio.min()),
            "sd_ratio_max": float(ratio.max()),
        }
    return {"error": max(v["mean_error"] for v in latents.values()), "latents": latents}


def moments(draws: dict[str, np.ndarray]) -> Moments:
    """Means and sds (over the first axis) of each latent's draws."""
    out = {}
    for name, values in draws.items():
        values = np.asarray(values, dtype=np.float64)
        out[name] = (values.mean(0), values.std(0, ddof=1) if len(values) > 1 else np.full(values.shape[1:], np.nan))
    return out


def evaluation_groups(G: int, most: int) -> np.ndarray:
    """The groups whose ``mu_g`` is evaluated: all, or a fixed random ``most`` of them
    (the error over them estimates the mean over all without bias, at a cost that does
    not grow with G)."""
    if G <= most:
        return np.arange(G)
    return np.sort(np.random.default_rng(12345).choice(G, size=most, replace=False))


def exact_posterior(model: Any, groups: np.ndarray) -> Moments:
    """The exact marginal means and sds of ``mu`` and of ``mu_g`` on ``groups``."""
    from pavi_viz.examples import gre

    exact = gre.analytic_posterior(model)
    out = {}
    for name in LATENTS:
        mean, sd = (t.double().numpy() for t in (exact[name].mean, exact[name].stddev))
        out[name] = (mean, sd) if name == "mu" else (mean[groups], sd[groups])
    return out


def first_below(run: dict[str, Any], level: float) -> dict[str, Any] | None:
    """The run's first evaluation with error below ``level``, with the sd ratios (min and
    max over every latent's elements) there; ``None`` where it never got there."""
    for point in run.get("curve", []):
        if point["error"] < level:
            lat = point["latents"].values()
            hit = {k: point[k] for k in ("time", "step", "error") if k in point}
            if "draws" in point:
                hit["draws"] = point["draws"]
            hit["sd_ratio_min"] = min(v["sd_ratio_min"] for v in lat)
            hit["sd_ratio_max"] = max(v["sd_ratio_max"] for v in lat)
            return hit
    return None


def add_levels(run: dict[str, Any], levels: Sequence[float]) -> None:
    """``run["levels"]``: the first evaluation below each level (or ``None``)."""
    run["levels"] = {f"{level:g}": first_below(run, level) for level in levels}


# -- the model, as each library writes it --------------------------------------------
def gre_constants(model: Any) -> dict[str, float]:
    """The prior mean of ``mu`` and the three scales, read back from the model."""
    params = {name: model.variable(name).params for name in ("mu", "mu_g", "x")}
    return {"loc": float(params["mu"]["loc"]), "mu": float(params["mu"]["scale"]),
            "mu_g": float(params["mu_g"]["scale"]), "x": float(params["x"]["scale"])}


def pyro_gre(xt: Any, c: dict[str, float], batch: int | None) -> Callable[[], None]:
    """GRE in Pyro, ``mu_g`` centred; ``xt`` is the data as (N, G, D); ``batch`` groups a
    step (``pyro.plate`` scales their terms by G / batch), or all of them."""
    import pyro
    import pyro.distributions as dist
    import torch

    N, G, D = xt.shape
    loc = torch.full((D,), c["loc"])

    def model() -> None:
        mu = pyro.sample("mu", dist.Normal(loc, c["mu"]).to_event(1))
        with pyro.plate("group", G, subsample_size=batch, dim=-1) as idx:
            mu_g = pyro.sample("mu_g", dist.Normal(mu, c["mu_g"]).to_event(1))
            with pyro.plate("obs", N, dim=-2):
                pyro.sample("x", dist.Normal(mu_g, c["x"]).to_event(1), obs=xt if batch is None else xt[:, idx])

    return model


def numpyro_gre(c: dict[str, float], centred: bool) -> Callable[[Any], None]:
    """GRE in NumPyro, a function of the data as (N, G, D); non-centred: ``mu_g = mu +
    scale * z`` with ``z`` a standard normal site (NUTS's usual choice)."""
    import numpyro
    import numpyro.distributions as dist

    def model(xt: Any) -> None:
        N, G, D = xt.shape
        mu = numpyro.sample("mu", dist.Normal(c["loc"], c["mu"]).expand([D]).to_event(1))
        with numpyro.plate("group", G, dim=-1):
            if centred:
                mu_g = numpyro.sample("mu_g", dist.Normal(mu, c["mu_g"]).to_event(1))
            else:
                mu_g = mu + c["mu_g"] * numpyro.sample("z", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
            with numpyro.plate("obs", N, dim=-2):
                numpyro.sample("x", dist.Normal(mu_g, c["x"]).to_event(1), obs=xt)

    return model


# -- one run ----------------------------------------------------------------------------
class Setting:
    """What a child's runner gets: the spec, the data (``x`` as numpy, the model's
    constants), the evaluated groups and the exact posterior on them, and its tracker."""

    def __init__(self, spec: dict[str, Any], model: Any, groups: np.ndarray, truth: Moments,
                 memory: MemoryMonitor) -> None:
        self.spec, self.model, self.groups, self.truth, self.memory = spec, model, groups, truth, memory
        self.x = model.data["x"].numpy()  # (G, N, D), float32
        self.constants = gre_constants(model)

    def tracker(self, evaluate: Callable[[], dict[str, Any] | None], stop_below: float | None,
                max_steps: int | None = None) -> Tracker:
        s = self.spec
        return Tracker(evaluate, self.memory, s["budget"], stop_below, s["eval_every"], s["eval_rel"], max_steps)

    def stop_below(self) -> float:
        """The optimisers (pavi_viz's and the SVI peers) stop at the tightest level:
        nothing more is measured after it."""
        return min(self.spec["levels"])


def run_pavi(setting: Setting) -> dict[str, Any]:
    """``pavi_viz.fit``: with no setting (``pavi_viz``), or a family at an lr, one thread."""
    import torch

    import pavi_viz
    from pavi_viz.inference import DivergenceError, StopTraining
    from pavi_viz.inference.resolve import batch_sizes

    spec = setting.spec
    defaults = spec["method"] == "pavi_viz"
    options = {} if defaults else {"family": spec["method"], "lr": spec["lr"], "steps": MANY_STEPS, "threads": 1}
    holder: dict[str, Any] = {}

    def evaluate() -> dict[str, Any]:
        return errors(pavi_moments(holder["state"], setting.groups, spec["eval_draws"], spec["seed"] + 1),
                      setting.truth)

    tracker = setting.tracker(evaluate, setting.stop_below())

    def callback(state: Any) -> None:
        holder["state"] = state
        holder.setdefault("threads", torch.get_num_threads())
        if tracker.after_step(state.step, final=state.finished):
            raise StopTraining

    tracker.start()
    out: dict[str, Any] = {"diverged": None}
    try:
        result = pavi_viz.fit(setting.model, seed=spec["seed"], callbacks=[callback], callback_every=1, **options)
        config = result.config
    except DivergenceError as err:
        out["diverged"] = str(err).splitlines()[0]
        if not tracker.done:
            tracker.finish("diverged")
        config = err.result.config if err.result is not None else None
    state = holder["state"]
    out.update(
        family=state.family_name,
        parameters=state.family.parameter_count(),
        fit_settings=options,
        batch_sizes=batch_sizes(state.model, config.batch) if config is not None else None,
        lr_used=config.lr if config is not None else spec["lr"],
        torch_threads=holder.get("threads"),
        eval_how=f"{spec['eval_draws']} joint draws of the family on the evaluated groups",
    )
    return {**tracker.summary(), **out}


def pavi_moments(state: Any, groups: np.ndarray, n: int, seed: int, per_chunk: int = 250) -> Moments:
    """Means and sds of ``n`` joint draws of the family, ``mu_g`` on ``groups`` only
    (the frame of those groups; PAVI-E encodes them with the whole data's summaries)."""
    import torch

    family, compiled = state.family, state.model
    frame = compiled.frame({"group": torch.as_tensor(groups, device=compiled.device)})
    generator = torch.Generator(compiled.device).manual_seed(seed)
    draws: dict[str, list[np.ndarray]] = {name: [] for name in LATENTS}
    was_training = family.training
    family.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, per_chunk):
                values = family.sample(frame, min(per_chunk, n - start), generator=generator).values
                for name in LATENTS:
                    draws[name].append(values[name].double().cpu().numpy())
    finally:
        family.train(was_training)
    return moments({name: np.concatenate(parts) for name, parts in draws.items()})


def run_pyro(setting: Setting) -> dict[str, Any]:
    """Pyro's AutoNormal with ``SVI(Trace_ELBO)`` and Adam: full batch, or
    ``spec["batch"]`` groups a step (``pyro-svi-sub``)."""
    import pyro
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal
    from pyro.optim import Adam

    spec = setting.spec
    batch = spec["batch"] if spec["method"] == "pyro-svi-sub" else None
    model = pyro_gre(torch.from_numpy(setting.x).transpose(0, 1), setting.constants, batch)
    pyro.clear_param_store()
    pyro.set_rng_seed(spec["seed"])
    holder: dict[str, Any] = {}
    idx = torch.as_tensor(setting.groups)

    def evaluate() -> dict[str, Any]:
        guide = holder["guide"]
        with torch.no_grad():
            est = {"mu": (guide.locs.mu, guide.scales.mu), "mu_g": (guide.locs.mu_g[idx], guide.scales.mu_g[idx])}
            return errors({k: (m.numpy(), s.numpy()) for k, (m, s) in est.items()}, setting.truth)

    tracker = setting.tracker(evaluate, setting.stop_below())
    tracker.start()
    holder["guide"] = guide = AutoNormal(model)
    svi = SVI(model, guide, Adam({"lr": spec["lr"]}), Trace_ELBO())
    step, diverged = 0, None
    while True:
        loss = svi.step()
        step += 1
        if not math.isfinite(loss):
            diverged = f"loss {loss} at step {step}"
            tracker.after_step(step, final=True)
            break
        if tracker.after_step(step):
            break
    return {**tracker.summary(), "diverged": diverged, "batch": batch,
            "parameters": sum(p.numel() for p in pyro.get_param_store().values()),
            "eval_how": "exact guide.locs / guide.scales"}


def run_chunks(tracker: Tracker, advance: Callable[[int], bool], limit: int | None = None,
               checkpoints: Sequence[int] = ()) -> dict[str, float]:
    """Drive jitted code by chunks of steps: ``advance(k)`` runs ``k`` more steps (and
    waits for them), whether all is still finite. The first call, ``advance(0)``,
    compiles (on the clock: a user waits for it too); then the chunks grow or shrink to
    about :data:`CHUNK_SECONDS` each, end at each of ``checkpoints`` (step counts where
    an evaluation is due) and at ``limit``, or when the tracker stops."""
    began = time.perf_counter()
    advance(0)
    compile_seconds = time.perf_counter() - began
    steps, k = 0, 1
    marks = sorted(set(checkpoints) | ({limit} if limit is not None else set()))
    while True:
        upcoming = [m for m in marks if m > steps]
        k = min([k, *(m - steps for m in upcoming[:1])])
        began = time.perf_counter()
        finite = advance(k)
        seconds = time.perf_counter() - began
        steps += k
        if not finite:
            tracker.after_step(steps, final=True)
            tracker.stop_reason = "not finite"
            break
        if tracker.after_step(steps, final=steps == limit, force=steps in marks):
            break
        k = max(1, min(4 * k, int(k * CHUNK_SECONDS / max(seconds, 1e-6))))
    return {"compile_seconds": compile_seconds}


def run_numpyro_svi(setting: Setting) -> dict[str, Any]:
    """NumPyro's AutoNormal with ``SVI(Trace_ELBO)`` and Adam, full batch: ``svi.update``
    in a ``lax.fori_loop`` of ``k`` steps under ``jax.jit`` (one compilation; what
    ``SVI.run`` does, cut into chunks so that the clock can be read)."""
    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    spec = setting.spec
    model = numpyro_gre(setting.constants, centred=True)
    xt = jnp.asarray(setting.x.transpose(1, 0, 2))
    guide = AutoNormal(model)
    svi = SVI(model, guide, numpyro.optim.Adam(spec["lr"]), Trace_ELBO())
    holder: dict[str, Any] = {}

    def evaluate() -> dict[str, Any]:
        p = {k: np.asarray(v) for k, v in svi.get_params(holder["state"]).items()}
        est = {"mu": (p["mu_auto_loc"], p["mu_auto_scale"]),
               "mu_g": (p["mu_g_auto_loc"][setting.groups], p["mu_g_auto_scale"][setting.groups])}
        return errors(est, setting.truth)

    @jax.jit
    def chunk(state: Any, xt: Any, k: Any) -> tuple[Any, Any]:
        return jax.lax.fori_loop(0, k, lambda i, c: svi.update(c[0], xt), (state, jnp.zeros(())))

    def advance(k: int) -> bool:
        holder["state"], loss = chunk(holder["state"], xt, jnp.int32(k))
        return bool(jnp.isfinite(loss.block_until_ready()))

    tracker = setting.tracker(evaluate, setting.stop_below())
    tracker.start()
    holder["state"] = svi.init(jax.random.PRNGKey(spec["seed"]), xt)
    extra = run_chunks(tracker, advance)
    params = sum(int(np.size(v)) for v in svi.get_params(holder["state"]).values())
    return {**tracker.summary(), **extra, "parameters": params,
            "eval_how": "exact AutoNormal locs / scales (svi.get_params)"}


def run_nuts(setting: Setting) -> dict[str, Any]:
    """NumPyro's NUTS, one chain, ``mu_g`` non-centred, ``kernel.sample`` in a jitted
    ``lax.fori_loop`` by chunks (as ``MCMC.run`` does, cut so that the clock can be read).
    Warm-up and draws count; the error is measured from the draws so far (at about the
    tracker's schedule, and at the end); ``mu`` and ``mu_g`` on the evaluated groups are
    kept, every iteration, in a buffer on the device."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import NUTS

    spec = setting.spec
    warmup, n_draws = spec["nuts_warmup"], spec["nuts_draws"]
    total = warmup + n_draws
    scale = setting.constants["mu_g"]
    groups = jnp.asarray(setting.groups)
    xt = jnp.asarray(setting.x.transpose(1, 0, 2))
    D = xt.shape[2]
    kernel = NUTS(numpyro_gre(setting.constants, centred=False))
    holder: dict[str, Any] = {"done": 0}

    def evaluate() -> dict[str, Any] | None:
        got = holder["done"] - warmup
        if got < 2:
            return None  # still warming up
        mu, mu_g, _ = (np.asarray(b) for b in holder["carry"][1])
        point = errors(moments({"mu": mu[warmup:warmup + got], "mu_g": mu_g[warmup:warmup + got]}), setting.truth)
        return {**point, "draws": got}

    def body(start: Any, xt: Any) -> Callable:
        def step(i: Any, carry: Any) -> Any:
            state, (mu, mu_g, stats) = carry
            state = kernel.sample(state, (xt,), {})
            z = state.z
            mu = mu.at[start + i].set(z["mu"])
            mu_g = mu_g.at[start + i].set(z["mu"] + scale * z["z"][groups])
            drawn = (start + i >= warmup).astype(jnp.float32)  # divergences of the draws, not of the warm-up
            stats = stats + jnp.stack([drawn * state.diverging, state.num_steps.astype(jnp.float32)])
            return state, (mu, mu_g, stats)
        return step

    @jax.jit
    def chunk(carry: Any, xt: Any, start: Any, k: Any) -> Any:
        return jax.lax.fori_loop(0, k, body(start, xt), carry)

    def advance(k: int) -> bool:
        holder["carry"] = chunk(holder["carry"], xt, jnp.int32(holder["done"]), jnp.int32(k))
        jax.block_until_ready(holder["carry"])
        holder["done"] += k
        return True

    tracker = setting.tracker(evaluate, None, max_steps=total)
    tracker.start()
    state = kernel.init(jax.random.PRNGKey(spec["seed"]), warmup, model_args=(xt,))
    buffers = (jnp.zeros((total, D)), jnp.zeros((total, len(setting.groups), D)), jnp.zeros(2))
    holder["carry"] = (state, buffers)
    checkpoints = [warmup + max(2, round(n_draws * f)) for f in NUTS_CHECKPOINTS]
    extra = run_chunks(tracker, advance, limit=total, checkpoints=checkpoints)
    divergences, leapfrogs = (float(v) for v in np.asarray(holder["carry"][1][2]))
    done = holder["done"]
    return {**tracker.summary(), **extra, "warmup": warmup, "draws_wanted": n_draws,
            "draws": max(0, done - warmup), "finished": done >= total,  # "steps": iterations
            "divergences": divergences, "mean_leapfrog_steps": leapfrogs / max(done, 1),
            "step_size": float(holder["carry"][0].adapt_state.step_size),
            "parameters": 0, "eval_how": "moments of the draws so far (warm-up excluded)"}


RUNNERS: dict[str, Callable[[Setting], dict[str, Any]]] = {
    "pavi_viz": run_pavi, "pavi-e": run_pavi, "pavi-f": run_pavi, "nuts": run_nuts,
    "numpyro-svi": run_numpyro_svi, "pyro-svi": run_pyro, "pyro-svi-sub": run_pyro,
}


def warm_up(method: str) -> None:
    """Pay the one-off costs of a library (lazy imports, torch's first backward pass,
    JAX's backend) on a tiny problem, before the clock and the memory baseline; the
    compilation at the real size stays on the clock."""
    if method in ("nuts", "numpyro-svi"):
        import jax
        import jax.numpy as jnp
        import numpyro  # noqa: F401

        jax.jit(lambda a: jnp.sin(a).sum())(jnp.ones(3)).block_until_ready()
    elif method.startswith("pyro"):
        import pyro
        import torch
        from pyro.infer import SVI, Trace_ELBO
        from pyro.infer.autoguide import AutoNormal
        from pyro.optim import Adam

        tiny = pyro_gre(torch.zeros(2, 4, 2), {"loc": 0.0, "mu": 1.0, "mu_g": 1.0, "x": 1.0}, 2)
        pyro.clear_param_store()
        svi = SVI(tiny, AutoNormal(tiny), Adam({"lr": 0.01}), Trace_ELBO())
        for _ in range(2):
            svi.step()
        pyro.clear_param_store()
    else:
        import pavi_viz
        from pavi_viz.examples import gre

        pavi_viz.fit(gre.build(G=4, N=2, D=2), "pavi-e", steps=2, progress=False)


def run_single(spec: dict[str, Any]) -> dict[str, Any]:
    """One (method, G, lr) run, in this process; the result as a JSON-able dict."""
    import torch

    from pavi_viz.examples import gre

    torch.set_num_threads(1)
    model = gre.build(G=spec["G"], N=spec["N"], D=spec["D"], seed=spec["data_seed"])
    groups = evaluation_groups(spec["G"], spec["eval_groups"])
    truth = exact_posterior(model, groups)
    warm_up(spec["method"])
    result = {**spec, "eval_groups": len(groups), "load_average_before": load_average()}
    memory = MemoryMonitor()
    try:
        result.update(RUNNERS[spec["method"]](Setting(spec, model, groups, truth, memory)))
    finally:
        result.update(memory.stop())
    return result


# -- the driver -------------------------------------------------------------------------
def lr_grid(method: str, args: argparse.Namespace) -> list[float | None]:
    """The learning rates a method is tried at (``None``: the method has none to tune)."""
    if method in PAVI_FAMILIES:
        return list(args.pavi_lrs)
    if method in SVI_PEERS:
        return list(args.svi_lrs)
    return [None]


def rank(run: dict[str, Any], levels: Sequence[float]) -> tuple[float, float, float]:
    """Order of preference among a method's grid: the tightest level reached, then the
    sooner; then the lower final error; failed, skipped and non-finite runs last."""
    final = run.get("final_error")
    if run.get("failed") or run.get("skipped") or final is None or not math.isfinite(final):
        return (math.inf, math.inf, math.inf)
    for level in sorted(levels):
        hit = first_below(run, level)
        if hit is not None:
            return (level, hit["time"], final)
    return (math.inf, math.inf, final)


def nuts_skip_reason(G: int, runs: list[dict[str, Any]], args: argparse.Namespace) -> str | None:
    """Why NUTS is not run at ``G`` (``None``: it is): its time estimated from the last
    NUTS run at a smaller G (linear in G), or from :data:`NUTS_SECONDS_PER_GROUP_ITERATION`
    for the first, exceeds the budget; or the last run did not finish its draws."""
    before = [r for r in runs if r["method"] == "nuts" and r["G"] < G and not r.get("failed") and not r.get("skipped")]
    if before:
        last = max(before, key=lambda r: r["G"])
        if not last.get("finished"):
            return f"did not finish its draws within the {args.budget:g} s budget at G = {last['G']}"
        estimate, basis = last["train_seconds"] * G / last["G"], f"its {last['train_seconds']:.1f} s at G = {last['G']}"
    else:
        iterations = args.nuts_warmup + args.nuts_draws
        estimate = NUTS_SECONDS_PER_GROUP_ITERATION * G * iterations
        basis = f"{NUTS_SECONDS_PER_GROUP_ITERATION:g} s per group and iteration"
    if estimate > args.budget:
        return f"estimated {estimate:.0f} s > the {args.budget:g} s budget (from {basis})"
    return None


def spec_of(method: str, G: int, lr: float | None, args: argparse.Namespace) -> dict[str, Any]:
    """What a child needs to make one run (JSON-able: it goes on the command line)."""
    return {
        "method": method, "G": G, "N": args.N, "D": args.D, "lr": lr, "seed": args.seed, "data_seed": args.data_seed,
        "budget": args.budget, "levels": list(args.levels), "eval_groups": args.eval_groups,
        "eval_draws": args.eval_draws, "eval_every": args.eval_every, "eval_rel": args.eval_rel,
        "batch": args.batch, "nuts_warmup": args.nuts_warmup, "nuts_draws": args.nuts_draws,
    }


def child_env() -> dict[str, str]:
    """The children's environment: one thread everywhere, this checkout's pavi_viz first."""
    import os

    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**CHILD_ENV, "PYTHONPATH": path}


def describe(run: dict[str, Any], levels: Sequence[float]) -> str:
    """One line of progress about a finished run."""
    if run.get("skipped") or run.get("failed"):
        return "skipped: " + run["skipped"] if run.get("skipped") else "failed: " + run["failed"].splitlines()[-1]
    hits = [f"<{lv:g} {_seconds(first_below(run, lv))}" for lv in levels]
    return (f"{', '.join(hits)}; final error {_error(run)} after {run['train_seconds']:.1f} s, "
            f"{run['steps']} steps ({run['stop_reason']}), peak {run['peak_mb']:.0f} MB, "
            f"{run['cpu_per_wall'] or 0:.2f} CPU s per s")


def run_all(args: argparse.Namespace, report: dict[str, Any], save: Callable[[], None]) -> None:
    """Every method at every G, the grids included, one subprocess a run, in order of G."""
    sizes, levels = sorted(set(args.sizes)), args.levels
    timeout = 4 * args.budget + 300
    chosen_lr: dict[str, float | None] = {}
    started = time.perf_counter()
    for G in sizes:
        for method in args.methods:
            reuse = args.grid == "smallest" and method in chosen_lr
            runs = []
            for lr in [chosen_lr[method]] if reuse else lr_grid(method, args):
                spec = spec_of(method, G, lr, args)
                skip = nuts_skip_reason(G, report["runs"], args) if method == "nuts" else None
                run = {**spec, "skipped": skip, "curve": []} if skip else launch(__file__, spec, timeout, child_env())
                if not run.get("failed") and not skip:
                    add_levels(run, levels)
                runs.append(run)
                report["runs"].append(run)
                print(f"[{time.perf_counter() - started:7.1f} s] G={G:<8} {method:<13} lr={lr}  "
                      f"{describe(run, levels)}", flush=True)
                save()
            best = min(runs, key=lambda r: rank(r, levels))
            chosen_lr.setdefault(method, best["lr"])
            report["best"].setdefault(str(G), {})[method] = {"lr": best["lr"], "run": report["runs"].index(best)}
            save()


def best_runs(report: dict[str, Any]) -> dict[int, dict[str, dict[str, Any]]]:
    """G -> method -> the run picked from its grid."""
    return {int(G): {m: report["runs"][pick["run"]] for m, pick in chosen.items()}
            for G, chosen in report["best"].items()}


# -- the table and the plot ------------------------------------------------------------
def _seconds(hit: dict[str, Any] | None) -> str:
    """A time to a level, for the progress lines."""
    return "not reached" if hit is None else f"{hit['time']:.1f} s"


def _error(run: dict[str, Any]) -> str:
    """The final error, or why there is none (NUTS stopped during its warm-up)."""
    return "none (no draws)" if run.get("final_error") is None else f"{run['final_error']:.3f}"


def _time_cell(run: dict[str, Any], level: float) -> str:
    """The time to a level with the sd ratios (min-max) there, or "not reached"."""
    hit = first_below(run, level)
    if hit is None:
        return "not reached"
    return f"{hit['time']:.1f} s (sd {hit['sd_ratio_min']:.2f}–{hit['sd_ratio_max']:.2f})"


def _ratio_cell(run: dict[str, Any], ours: dict[str, Any] | None, level: float) -> str:
    """The run's time to ``level`` over pavi_viz defaults' ("not reached" where the run
    did not get there; "defaults not reached" where only ours did not)."""
    mine = first_below(run, level)
    if mine is None:
        return "not reached"
    theirs = first_below(ours, level) if ours and not ours.get("failed") else None
    if theirs is None:
        return "defaults not reached"
    return f"{mine['time'] / max(theirs['time'], 1e-9):.2f}"


def _lr_cell(run: dict[str, Any]) -> str:
    """The learning rate picked, the default one for pavi_viz, "-" where none is tuned."""
    if run["method"] == "pavi_viz":
        return f"default ({run['lr_used']:g})" if run.get("lr_used") is not None else "default"
    return "-" if run["lr"] is None else f"{run['lr']:g}"


def table(report: dict[str, Any]) -> str:
    """Markdown: per G, each method's time to each level (with the sd ratios there),
    its ratio to pavi_viz defaults' time, and its final error, steps and memory."""
    levels = report["settings"]["levels"]
    head = (["method", "lr"] + [f"time to < {lv:g}" for lv in levels] + [f"ratio < {lv:g}" for lv in levels]
            + ["final error", "steps", "train s", "peak MB"])
    lines = ["Times: training only (evaluation excluded), sd: fitted / exact sd, min–max over elements, "
             "at that moment. Ratio: the method's time / pavi_viz defaults' time."]
    for G, runs in sorted(best_runs(report).items()):
        lines += ["", f"G = {G:,}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        ours = runs.get("pavi_viz")
        for method, run in runs.items():
            label = METHODS[method]
            if run.get("skipped") or run.get("failed"):
                why = run.get("skipped") or "failed: " + run["failed"].splitlines()[-1][:80]
                lines.append(f"| {label} | {_lr_cell(run)} | {why} |" + " |" * (len(head) - 3))
                continue
            cells = [label, _lr_cell(run)] + [_time_cell(run, lv) for lv in levels]
            cells += [_ratio_cell(run, ours, lv) for lv in levels]
            cells += [_error(run), str(run["steps"]), f"{run['train_seconds']:.1f}",
                      f"{run['peak_mb']:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Time to each level against G per method (log-log); an open triangle at a run's
    training time where it did not reach the level (a lower bound)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["settings"]["levels"]
    best = best_runs(report)
    colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, axes = plt.subplots(1, len(levels), figsize=(6 * len(levels), 5), sharey=True, squeeze=False)
    for ax, level in zip(axes[0], levels):
        for i, (method, label) in enumerate(METHODS.items()):
            dodge = 1.05 ** (i - len(METHODS) // 2)  # side by side, not on top of each other
            runs = [(G * dodge, best[G][method]) for G in sorted(best) if method in best[G]]
            runs = [(G, r) for G, r in runs if not r.get("skipped") and not r.get("failed")]
            reached = [(G, first_below(r, level)["time"]) for G, r in runs if first_below(r, level)]
            missed = [(G, r["train_seconds"]) for G, r in runs if not first_below(r, level)]
            if reached:
                ax.plot(*zip(*reached), marker="o", color=colors[method], label=label)
            if missed:
                ax.plot(*zip(*missed), linestyle="none", marker="^", markerfacecolor="none", color=colors[method])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("G (groups; the methods drawn side by side)")
        ax.set_title(f"time until the error < {level:g} exact sd", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("training seconds (evaluation excluded)")
    axes[0][0].legend(fontsize=8, title="open triangle: not reached\n(its training time)", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the command line ----------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line's options (the levels sorted loosest first)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000], help="the G values")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--budget", type=float, default=120.0, help="seconds of training per run (default 120)")
    p.add_argument("--pavi-lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2], help="the lr grid of pavi-e, pavi-f")
    p.add_argument("--svi-lrs", type=float, nargs="+", default=[0.01, 0.05, 0.1], help="the lr grid of the SVI peers")
    p.add_argument("--grid", choices=["each", "smallest"], default="each",
                   help="run the lr grids at every G (default), or at the smallest only and reuse the best lr")
    p.add_argument("--levels", type=float, nargs="+", default=list(LEVELS), help="the error levels (default 0.5 0.2 0.1)")
    p.add_argument("--batch", type=int, default=64, help="groups a step of pyro-svi-sub")
    p.add_argument("--nuts-warmup", type=int, default=500)
    p.add_argument("--nuts-draws", type=int, default=500)
    add_gre_options(p, "the methods' seed")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--replot", type=Path, metavar="JSON", help="only redo the table and the plot of an earlier peers.json")
    p.add_argument("--single", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.levels = sorted(args.levels, reverse=True)
    return args


def add_gre_options(p: argparse.ArgumentParser, seed_help: str) -> None:
    """The options of GRE's data and of the error's evaluation, shared with distributed.py."""
    p.add_argument("--N", type=int, default=10, help="points per group")
    p.add_argument("--D", type=int, default=2, help="dimensions")
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--data-seed", type=int, default=0, help="the seed of the simulated data")
    p.add_argument("--eval-groups", type=int, default=500,
                   help="above this G, mu_g is evaluated on a fixed random subset of this many groups")
    p.add_argument("--eval-draws", type=int, default=500, help="draws per evaluation of the pavi families")
    p.add_argument("--eval-every", type=float, default=0.5, help="seconds of training between evaluations, at least")
    p.add_argument("--eval-rel", type=float, default=0.1, help="and at least this share of the training time so far")


def finish(report: dict[str, Any], json_path: Path) -> None:
    """The report's table, JSON and plot (:func:`harness.finish_report`)."""
    finish_report(report, json_path, table, plot)


def main(argv: list[str] | None = None) -> int:
    """Run a child's spec (``--single``), redo a table and plot (``--replot``), or the
    whole benchmark."""
    args = parse(argv)
    if args.single:
        emit(run_single(json.loads(args.single)))
        return 0
    if args.replot:
        finish(json.loads(args.replot.read_text()), args.replot)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "peers.json"
    settings = command_settings(args, argv, __file__)
    report: dict[str, Any] = {
        "machine": machine_info(("torch", "pyro-ppl", "numpyro", "jax", "jaxlib")),
        "settings": settings, "children_env": CHILD_ENV, "runs": [], "best": {},
    }
    return run_report(args, report, json_path, run_all, finish)


if __name__ == "__main__":
    sys.exit(main())
