"""Scaling benchmark: PAVI-E, PAVI-F, our mean-field and Pyro's AutoNormal on GRE.

Every method fits the Gaussian random effects model (``pavi_viz.examples.gre``) with
plate subsampling (the same number ``B`` of groups per step, the observations of a
drawn group taken whole), one particle, Adam, fixed seeds, and is timed until its
posterior means are accurate: for every latent (``mu`` and ``mu_g``), the average over
the latent's elements of ``|posterior mean error| / true posterior sd`` falls below
the target (0.1), the truth coming from ``gre.analytic_posterior``. Evaluation is
excluded from the clock.

Run ``python benchmarks/scaling.py --help``; ``benchmarks/README.md`` says what is
measured and how to read the output. Needs the ``bench`` extra (pyro-ppl, matplotlib).

Each (method, G, learning rate) run happens in a fresh subprocess (this script with
``--single SPEC``), so that its peak memory is its own and one run's allocations do
not slow the next.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

METHODS = ("pavi-e", "pavi-f", "mean-field", "pyro-autonormal")
OURS = ("pavi-e", "pavi-f", "mean-field")
TARGET = 0.1
#: Looser accuracy levels, for comparisons where the target itself is not reached.
LADDER = (0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
RESULT_MARK = "@@SCALING-RESULT@@ "
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# -- memory ---------------------------------------------------------------------
def _rss_bytes() -> int:
    """The resident set size of this process, from /proc/self/statm (0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _malloc_trim() -> None:
    """Hand the C heap's free memory back to the system (glibc), so that memory freed
    after an evaluation does not count as training's. A no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MemoryMonitor:
    """The peak memory of training, evaluation excluded.

    On the CPU a thread samples the process's RSS every ``interval`` seconds while
    training runs (not while evaluating; the C heap is trimmed after each evaluation);
    the peak is reported above the RSS measured just before the run (after imports,
    data, the analytic posterior and the warm-up). On CUDA the
    peak of ``torch.cuda.max_memory_allocated`` over the training segments, above the
    memory allocated before the run.
    """

    def __init__(self, device, interval: float = 0.01) -> None:
        import torch

        self.torch = torch
        self.cuda = device.type == "cuda"
        self.device = device
        self.interval = interval
        self.paused = False
        _malloc_trim()
        self.baseline = _rss_bytes()
        self.peak = self.baseline
        self.cuda_baseline = self.cuda_peak = 0
        if self.cuda:
            torch.cuda.synchronize(device)
            self.cuda_baseline = self.cuda_peak = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.paused:
                self.peak = max(self.peak, _rss_bytes())

    def pause(self) -> None:
        if not self.paused:
            self.peak = max(self.peak, _rss_bytes())
            if self.cuda:
                self.cuda_peak = max(self.cuda_peak, self.torch.cuda.max_memory_allocated(self.device))
        self.paused = True

    def resume(self) -> None:
        _malloc_trim()
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)
        self.paused = False

    def stop(self) -> dict[str, float]:
        self.pause()
        self._stop.set()
        self._thread.join()
        out = {
            "rss_baseline_mb": self.baseline / 2**20,
            "rss_peak_mb": self.peak / 2**20,
            "peak_mb": (self.peak - self.baseline) / 2**20,
            "memory_measure": "cpu: peak RSS sampled every 10 ms during training minus RSS before the run",
        }
        if self.cuda:
            out["cuda_peak_mb"] = (self.cuda_peak - self.cuda_baseline) / 2**20
            out["peak_mb"] = out["cuda_peak_mb"]
            out["memory_measure"] = "cuda: max_memory_allocated during training minus memory allocated before the run"
        return out


# -- accuracy -------------------------------------------------------------------
def accuracy(means: dict, sds: dict, truth: dict, subset=None) -> dict[str, dict[str, float]]:
    """Per latent: the mean over elements of |mean error| / true sd, and of sd / true sd.

    ``means``/``sds`` hold each latent's estimate, ``mu_g``'s restricted to the groups
    ``subset`` when it is given (then the truth is restricted the same way).
    """
    out = {}
    for name, dist in truth.items():
        true_mean, true_sd = dist.mean, dist.stddev
        if subset is not None and name == "mu_g":
            true_mean, true_sd = true_mean[subset], true_sd[subset]
        m = means[name].detach().to("cpu", true_mean.dtype)
        s = sds[name].detach().to("cpu", true_sd.dtype)
        out[name] = {
            "mean_error": float(((m - true_mean).abs() / true_sd).mean()),
            "sd_ratio": float((s / true_sd).mean()),
        }
    return out


def worst(errors: dict[str, dict[str, float]]) -> float:
    """The accuracy error of a run: the worst latent's average relative mean error."""
    return max(e["mean_error"] for e in errors.values())


class Tracker:
    """The training clock (evaluation excluded), the evaluation schedule and the stop rule.

    Training time accumulates between evaluations. An evaluation is due when training
    time since the last one reaches ``max(min_interval, rel_interval * training time)``
    (log-spaced, so a time-to-target is known to about ``rel_interval`` relative
    precision), and at the end of the run. A run stops when the target is met, or when
    the time or step budget is spent.
    """

    def __init__(
        self,
        evaluate: Callable[[], dict],
        memory: MemoryMonitor,
        budget_seconds: float,
        budget_steps: int,
        target: float,
        min_interval: float,
        rel_interval: float,
        sync: Callable[[], None],
    ) -> None:
        self.evaluate, self.memory, self.sync = evaluate, memory, sync
        self.budget_seconds, self.budget_steps = budget_seconds, budget_steps
        self.target, self.min_interval, self.rel_interval = target, min_interval, rel_interval
        self.curve: list[dict[str, Any]] = []
        self.train_time = 0.0
        self.eval_time = 0.0
        self.steps = 0
        self.last_eval_time = 0.0
        self.time_to_target: float | None = None
        self.steps_to_target: int | None = None
        self.done = False
        self.stop_reason = ""
        self._segment: float | None = None

    def start(self) -> None:
        self._segment = time.perf_counter()

    def elapsed(self) -> float:
        return self.train_time + (time.perf_counter() - self._segment if self._segment is not None else 0.0)

    def after_step(self, step: int, final: bool = False) -> bool:
        """Called after training step ``step`` (counted from 1); whether to stop."""
        if self.done:
            return True
        self.steps = step
        elapsed = self.elapsed()
        out_of_budget = elapsed >= self.budget_seconds or step >= self.budget_steps
        due = elapsed - self.last_eval_time >= max(self.min_interval, self.rel_interval * elapsed)
        if not (due or out_of_budget or final):
            return False
        # Pause the clock (after the device is done with the step's work).
        self.sync()
        now = time.perf_counter()
        self.train_time += now - self._segment
        self._segment = None
        self.memory.pause()
        errors = self.evaluate()
        error = worst(errors)
        self.curve.append({"step": step, "time": self.train_time, "error": error, "latents": errors})
        self.last_eval_time = self.train_time
        reached = error < self.target
        if reached and self.time_to_target is None:
            self.time_to_target, self.steps_to_target = self.train_time, step
        self.memory.resume()
        self.eval_time += time.perf_counter() - now
        self._segment = time.perf_counter()
        if reached or out_of_budget or final or not math.isfinite(error):
            self.done = True
            self.stop_reason = (
                "target" if reached else "not finite" if not math.isfinite(error)
                else "time budget" if elapsed >= self.budget_seconds else "step budget"
            )
            self.train_time += time.perf_counter() - self._segment
            self._segment = None
        return self.done


# -- one run ----------------------------------------------------------------------
def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_single(spec: dict[str, Any]) -> dict[str, Any]:
    """One (method, G, lr) run; the result as a JSON-able dict."""
    import torch

    import pavi_viz
    from pavi_viz.examples import gre

    torch.set_num_threads(spec["threads"])
    device = _device(spec["device"])
    G, N, D = spec["G"], spec["N"], spec["D"]
    model = pavi_viz.examples.load("gre", G=G, N=N, D=D, seed=spec["data_seed"])
    truth = gre.analytic_posterior(model)  # on the CPU, float32 like the data
    eval_groups = spec["eval_groups"]
    subset = None
    if G > eval_groups:
        generator = torch.Generator().manual_seed(12345)
        subset = torch.randperm(G, generator=generator)[:eval_groups].sort().values
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    method = spec["method"]
    _warm_up(method, device, D)
    memory = MemoryMonitor(device)
    result = {k: spec[k] for k in ("method", "G", "N", "D", "batch", "lr", "schedule", "seed", "threads")}
    result["device"] = str(device)
    result["eval_groups"] = G if subset is None else eval_groups
    result["load_average_before"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    try:
        if method == "pyro-autonormal":
            out = _run_pyro(spec, model, truth, subset, device, memory, sync)
        else:
            out = _run_ours(spec, model, truth, subset, device, memory, sync)
    finally:
        mem = memory.stop()
    result.update(out)
    result.update(mem)
    return result


def _warm_up(method: str, device, D: int) -> None:
    """The first fit in a process pays one-off costs (lazy imports, torch's first
    backward pass): pay them on a tiny model, before the clock and the memory baseline."""
    import torch

    if method == "pyro-autonormal":
        import pyro
        import pyro.distributions as dist
        from pyro.infer import SVI, Trace_ELBO
        from pyro.infer.autoguide import AutoNormal
        from pyro.optim import Adam

        def tiny():
            m = pyro.sample("m", dist.Normal(torch.zeros((), device=device), 1.0).expand([D]).to_event(1))
            with pyro.plate("g", 4, subsample_size=2, dim=-1, device=device):
                pyro.sample("y", dist.Normal(m, 1.0).to_event(1), obs=torch.zeros(2, D, device=device))

        pyro.clear_param_store()
        svi = SVI(tiny, AutoNormal(tiny), Adam({"lr": 0.01}), Trace_ELBO())
        for _ in range(2):
            svi.step()
        pyro.clear_param_store()
    else:
        import pavi_viz
        from pavi_viz.inference import fit

        fit(pavi_viz.examples.load("gre", G=4, N=2, D=D, seed=0), method, steps=2, batch={"group": 2},
            device=device, progress=False)


def _tracker(spec, evaluate, memory, sync) -> Tracker:
    return Tracker(
        evaluate,
        memory,
        budget_seconds=spec["budget_seconds"],
        budget_steps=spec["budget_steps"],
        target=spec["target"],
        min_interval=spec["eval_min_interval"],
        rel_interval=spec["eval_rel_interval"],
        sync=sync,
    )


def _summary_of(tracker: Tracker, parameters: int, extra: dict) -> dict[str, Any]:
    steps = tracker.steps
    final = tracker.curve[-1] if tracker.curve else None
    return {
        "parameters": parameters,
        "steps": steps,
        "train_seconds": tracker.train_time,
        "eval_seconds": tracker.eval_time,
        "time_per_step_ms": 1000 * tracker.train_time / steps if steps else None,
        "reached": tracker.time_to_target is not None,
        "time_to_target": tracker.time_to_target,
        "steps_to_target": tracker.steps_to_target,
        "stop_reason": tracker.stop_reason,
        "final_error": final["error"] if final else None,
        "final_latents": final["latents"] if final else None,
        "curve": tracker.curve,
        **extra,
    }


def _run_ours(spec, model, truth, subset, device, memory, sync) -> dict[str, Any]:
    import torch

    from pavi_viz.inference import fit
    from pavi_viz.inference.posterior import Posterior
    from pavi_viz.inference import DivergenceError, StopTraining

    method = spec["method"]
    n_draws = spec["eval_draws"]
    holder: dict[str, Any] = {}

    def evaluate() -> dict:
        family, compiled = holder["family"], holder["model"]
        was_training = family.training
        family.eval()
        try:
            if method == "mean-field":
                # Exact: the Gaussian's own loc and scale (GRE's latents are unconstrained),
                # read as for Pyro's AutoNormal.
                with torch.no_grad():
                    means = {k: family.loc[k] for k in truth}
                    sds = {k: family.log_scale[k].exp() for k in truth}
                    if subset is not None:
                        means["mu_g"], sds["mu_g"] = means["mu_g"][subset.to(device)], sds["mu_g"][subset.to(device)]
                return accuracy(means, sds, truth, subset)
            if subset is None:
                summary = Posterior(compiled, family).summary(n=n_draws, quantiles=(), seed=spec["seed"] + 1)
                means = {k: torch.from_numpy(summary[k].sel(stat="mean").values) for k in truth}
                sds = {k: torch.from_numpy(summary[k].sel(stat="sd").values) for k in truth}
                return accuracy(means, sds, truth)
            return accuracy(*_subset_moments(compiled, family, subset, n_draws, spec["seed"] + 1), truth, subset)
        finally:
            family.train(was_training)

    tracker = _tracker(spec, evaluate, memory, sync)

    def callback(state) -> None:
        holder["family"], holder["model"] = state.family, state.model
        if tracker.after_step(state.step, final=state.finished):
            raise StopTraining

    tracker.start()
    diverged = None
    try:
        result = fit(
            model,
            method,
            steps=spec["budget_steps"],
            batch={"group": spec["batch"]},
            lr=spec["lr"],
            schedule=spec["schedule"],
            particles=1,
            seed=spec["seed"],
            device=device,
            callbacks=[callback],
            callback_every=1,
            clip=spec["clip"],
            threads=spec["threads"],
            progress=False,
        )
        family = result.family
    except DivergenceError as err:
        diverged = str(err).splitlines()[0]
        family = err.result.family if err.result is not None else holder.get("family")
        if not tracker.done:
            tracker.train_time = tracker.elapsed()
            tracker.done, tracker.stop_reason = True, "diverged"
    extra = {"diverged": diverged}
    if method != "mean-field":
        extra["eval_how"] = (
            f"Posterior.summary(n={n_draws}) over all groups" if subset is None
            else f"{n_draws} joint draws of family.sample on a fixed random subset of {len(subset)} groups"
        )
        extra["mc_noise_floor"] = math.sqrt(2 / (math.pi * n_draws))
    else:
        extra["eval_how"] = "exact loc / exp(log_scale) of the mean-field Gaussians"
    return _summary_of(tracker, family.parameter_count() if family is not None else None, extra)


def _subset_moments(compiled, family, subset, n_draws: int, seed: int, particles_per_chunk: int = 250):
    """Mean and sd of ``n_draws`` joint draws of the family, ``mu_g`` on the groups ``subset``.

    At large G, :meth:`Posterior.summary` over every group costs far more than training
    between two evaluations; the error averaged over a fixed random subset of groups is
    an unbiased estimate of the average over all of them. The frame's encodings are
    the full model's (PAVI-E encodes with the whole data's summaries outside training).
    """
    import torch

    frame = compiled.frame({"group": subset.to(compiled.device)})
    sums: dict[str, Any] = {}
    squares: dict[str, Any] = {}
    with torch.no_grad(), torch.random.fork_rng(devices=[compiled.device] if compiled.device.type == "cuda" else []):
        torch.manual_seed(seed)
        done = 0
        while done < n_draws:
            p = min(particles_per_chunk, n_draws - done)
            values = family.sample(frame, p).values
            for name in ("mu", "mu_g"):
                v = values[name].double()
                sums[name] = sums.get(name, 0) + v.sum(0)
                squares[name] = squares.get(name, 0) + (v * v).sum(0)
            done += p
    means = {k: sums[k] / n_draws for k in sums}
    sds = {k: ((squares[k] - n_draws * means[k] ** 2).clamp_min(0) / (n_draws - 1)).sqrt() for k in sums}
    return {k: v.float() for k, v in means.items()}, {k: v.float() for k, v in sds.items()}


def _run_pyro(spec, model, truth, subset, device, memory, sync) -> dict[str, Any]:
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal
    from pyro.optim import Adam

    from pavi_viz.inference.trainer import lr_factor

    def scale_of(variable: str) -> float:
        return float(model.variable(variable).params["scale"])

    mu_scale, group_scale, obs_scale = scale_of("mu"), scale_of("mu_g"), scale_of("x")
    x = model.data["x"].to(device)  # (G, N, D)
    G, N, D = x.shape
    B = min(spec["batch"], G)
    zero = torch.zeros((), device=device)

    def pyro_model():
        mu = pyro.sample("mu", dist.Normal(zero, mu_scale).expand([D]).to_event(1))  # (D,)
        with pyro.plate("group", G, subsample_size=B, dim=-1, device=device) as idx:
            mu_g = pyro.sample("mu_g", dist.Normal(mu, group_scale).to_event(1))  # (B, D)
            with pyro.plate("obs", N, dim=-2, device=device):
                pyro.sample("x", dist.Normal(mu_g, obs_scale).to_event(1), obs=x[idx].transpose(0, 1))  # (N, B, D)

    pyro.clear_param_store()
    pyro.set_rng_seed(spec["seed"])
    holder: dict[str, Any] = {}

    def evaluate() -> dict:
        guide = holder["guide"]
        with torch.no_grad():
            means = {"mu": guide.locs.mu, "mu_g": guide.locs.mu_g}
            sds = {"mu": guide.scales.mu, "mu_g": guide.scales.mu_g}
            if subset is not None:
                idx = subset.to(device)
                means["mu_g"], sds["mu_g"] = means["mu_g"][idx], sds["mu_g"][idx]
            return accuracy(means, sds, truth, subset)

    tracker = _tracker(spec, evaluate, memory, sync)
    tracker.start()
    guide = AutoNormal(pyro_model)
    holder["guide"] = guide
    optim = Adam({"lr": spec["lr"]})
    svi = SVI(pyro_model, guide, optim, Trace_ELBO(num_particles=1))
    step = 0
    diverged = None
    while True:
        # The learning rate our families get from fit(schedule=...) at this step. Pyro
        # makes one torch Adam per parameter on first sight: set theirs before the step.
        lr = spec["lr"] * lr_factor(spec["schedule"], step, spec["budget_steps"])
        for optimizer in optim.optim_objs.values():
            for group in optimizer.param_groups:
                group["lr"] = lr
        loss = svi.step()
        step += 1
        if not math.isfinite(loss):
            diverged = f"loss {loss} at step {step}"
            tracker.after_step(step, final=True)
            break
        if tracker.after_step(step):
            break
    params = sum(p.numel() for p in pyro.get_param_store().values())
    return _summary_of(
        tracker,
        params,
        {
            "diverged": diverged,
            "eval_how": "exact guide.locs / guide.scales (AutoNormal's Gaussians)",
            "pyro_version": pyro.__version__,
        },
    )


# -- the driver -------------------------------------------------------------------
def machine_info(device: str) -> dict[str, Any]:
    import torch

    info = {
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(_device(device)),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        import pyro

        info["pyro"] = pyro.__version__
    except ImportError:
        info["pyro"] = None
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu_model"] = names[0] if names else None
    except OSError:
        info["cpu_model"] = None
    return info


def launch(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one spec in a fresh subprocess; its result (or the failure)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--single", json.dumps(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
    wall = time.perf_counter()
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**spec, "failed": f"timed out after {timeout:.0f} s", "curve": []}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            out = json.loads(line[len(RESULT_MARK):])
            out["process_seconds"] = time.perf_counter() - wall
            return out
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    return {**spec, "failed": f"exit {proc.returncode}: " + "\n".join(tail), "curve": []}


def first_below(run: dict[str, Any], threshold: float, latent: str | None = None) -> tuple[float, int] | None:
    """(training time, step) of the run's first evaluation with error below ``threshold``:
    the worst latent's error, or ``latent``'s alone."""
    for point in run.get("curve", []):
        error = point["error"] if latent is None else point["latents"][latent]["mean_error"]
        if error < threshold:
            return point["time"], point["step"]
    return None


def add_ladder(run: dict[str, Any]) -> None:
    """Times to reach each level of :data:`LADDER` (all latents, and mu_g alone)."""
    for key, latent in (("time_to", None), ("time_to_mu_g", "mu_g")):
        run[key] = {}
        for level in LADDER:
            hit = first_below(run, level, latent)
            run[key][f"{level:g}"] = None if hit is None else {"time": hit[0], "step": hit[1]}


def _rank(run: dict[str, Any]) -> tuple:
    """Order of preference among a method's learning rates: the tightest accuracy level
    reached (the target first), then the sooner; then the lower final error."""
    if run.get("failed") or run.get("final_error") is None or not math.isfinite(run["final_error"]):
        return (math.inf, math.inf, math.inf)
    for level in sorted(LADDER):
        hit = first_below(run, level)
        if hit is not None:
            return (level, hit[0], run["final_error"])
    return (math.inf, math.inf, run["final_error"])


def _fmt_time(run: dict[str, Any] | None) -> str:
    if run is None:
        return "-"
    if run.get("failed"):
        return "failed"
    if run["reached"]:
        return f"{run['time_to_target']:.1f} s"
    return f">{run['train_seconds']:.0f} s ({run['final_error']:.2f})"


def ratio(slow: dict | None, fast: dict | None, level: float = TARGET) -> str:
    """Time to ``level`` of ``slow`` over ``fast``: a number, a bound (>, <) or '?' (neither reached it)."""
    if not slow or not fast or slow.get("failed") or fast.get("failed"):
        return "-"
    a, b = first_below(slow, level), first_below(fast, level)
    if a and b:
        return f"{a[0] / max(b[0], 1e-9):.2f}"
    if b:
        return f">{slow['train_seconds'] / max(b[0], 1e-9):.1f}"
    if a:
        return f"<{a[0] / max(fast['train_seconds'], 1e-9):.2f}"
    return "?"


def common_ratio(slow: dict | None, fast: dict | None, latent: str | None = None) -> str:
    """The ratio at the tightest level of :data:`LADDER` both runs reached, with the level
    (the worst latent's error, or ``latent``'s); when ``slow`` reached none that ``fast``
    did, a lower bound (its budget over ``fast``'s time) at ``fast``'s tightest level."""
    if not slow or not fast or slow.get("failed") or fast.get("failed"):
        return "-"
    for level in sorted(LADDER):
        a, b = first_below(slow, level, latent), first_below(fast, level, latent)
        if a and b:
            return f"{a[0] / max(b[0], 1e-9):.2f} @{level:g}"
    for level in sorted(LADDER):  # only ours got anywhere: a lower bound at its tightest level
        b = first_below(fast, level, latent)
        if b:
            return f">{slow['train_seconds'] / max(b[0], 1e-9):.1f} @{level:g}"
    return "?"


def table(best: dict[int, dict[str, dict]], sizes: list[int]) -> str:
    lines = []
    head = f"{'G':>8} {'method':<16} {'lr':>6} {'time to target':>20} {'steps':>8} {'ms/step':>8} {'params':>10} {'peak MB':>8} {'final err':>9} {'sd ratio mu/mu_g':>17}"
    lines.append(head)
    lines.append("-" * len(head))
    for G in sizes:
        for method in METHODS:
            run = best.get(G, {}).get(method)
            if run is None:
                continue
            if run.get("failed"):
                lines.append(f"{G:>8} {method:<16} {run['lr']:>6g} failed: {run['failed'].splitlines()[-1][:60]}")
                continue
            steps = run["steps_to_target"] if run["reached"] else run["steps"]
            lat = run["final_latents"] or {}
            sdr = "/".join(f"{lat[k]['sd_ratio']:.2f}" for k in ("mu", "mu_g") if k in lat)
            lines.append(
                f"{G:>8} {method:<16} {run['lr']:>6g} {_fmt_time(run):>20} {steps:>8} "
                f"{run['time_per_step_ms']:>8.2f} {run['parameters']:>10} {run['peak_mb']:>8.1f} "
                f"{run['final_error']:>9.3f} {sdr:>17}"
            )
    levels = sorted(LADDER)
    for latent, what in ((None, "the worst latent's error"), ("mu_g", "mu_g's error alone")):
        lines.append("")
        lines.append(f"Time to reach an accuracy level ({what}): the first evaluation below it")
        lines.append(f"{'G':>8} {'method':<16} " + " ".join(f"{'<' + format(t, 'g'):>8}" for t in levels))
        for G in sizes:
            for method in METHODS:
                run = best.get(G, {}).get(method)
                if run is None or run.get("failed"):
                    continue
                cells = []
                for t in levels:
                    hit = first_below(run, t, latent)
                    cells.append(f"{hit[0]:>7.1f}s" if hit else f"{'-':>8}")
                lines.append(f"{G:>8} {method:<16} " + " ".join(cells))
    lines.append("")
    lines.append(f"Time-to-target ratios, Pyro AutoNormal over ours, at the target {TARGET:g}"
                 " ('>x': a lower bound, Pyro never reached it; '?': neither did),")
    lines.append("and at the tightest level of the ladder both reached (ratio @level), for the worst latent and mu_g:")
    lines.append(f"{'':>8} {'at the target':^42}   {'tightest common level':^48}   {'tightest common level, mu_g':^48}")
    lines.append(f"{'G':>8} {'pyro/pavi-e':>12} {'pyro/pavi-f':>12} {'pyro/mean-field':>16}   "
                 f"{'pyro/pavi-e':>14} {'pyro/pavi-f':>14} {'pyro/mean-field':>16}   "
                 f"{'pyro/pavi-e':>14} {'pyro/pavi-f':>14} {'pyro/mean-field':>16}")
    for G in sizes:
        runs = best.get(G, {})
        pyro_run = runs.get("pyro-autonormal")
        if pyro_run is None:
            continue
        ours = [runs.get(m) for m in OURS]
        lines.append(
            f"{G:>8} " + " ".join(f"{ratio(pyro_run, r):>{w}}" for r, w in zip(ours, (12, 12, 16)))
            + "   " + " ".join(f"{common_ratio(pyro_run, r):>{w}}" for r, w in zip(ours, (14, 14, 16)))
            + "   " + " ".join(f"{common_ratio(pyro_run, r, 'mu_g'):>{w}}" for r, w in zip(ours, (14, 14, 16)))
        )
    return "\n".join(lines)


def plot(best: dict[int, dict[str, dict]], sizes: list[int], path: Path, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"pavi-e": "tab:blue", "pavi-f": "tab:orange", "mean-field": "tab:green", "pyro-autonormal": "tab:red"}
    styles = ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 1))]
    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(19, 5.5))
    for ax, latent in ((ax1, None), (ax3, "mu_g")):
        for i, G in enumerate(sizes):
            for method in METHODS:
                run = best.get(G, {}).get(method)
                if not run or not run.get("curve"):
                    continue
                t = [max(c["time"], 1e-3) for c in run["curve"]]
                e = [c["error"] if latent is None else c["latents"][latent]["mean_error"] for c in run["curve"]]
                ax.plot(t, e, color=colors[method], linestyle=styles[i % len(styles)], marker=".", markersize=3,
                        label=f"{method}, G={G:g}")
        ax.axhline(target, color="k", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training wall-clock (s, evaluation excluded)")
        ax.legend(fontsize=7, ncol=2)
    ax1.set_ylabel("mean |mean error| / true sd")
    ax1.set_title("Accuracy (worst latent) against time, best lr per method and G", fontsize=10)
    ax3.set_title("The same for mu_g alone", fontsize=10)
    for method in METHODS:
        pts = [(G, best[G][method]["time_per_step_ms"]) for G in sizes
               if method in best.get(G, {}) and best[G][method].get("time_per_step_ms")]
        if pts:
            ax2.plot(*zip(*pts), color=colors[method], marker="o", label=method)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("G (groups)")
    ax2.set_ylabel("time per step (ms)")
    ax2.set_title("Time per step against G")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replot(json_path: Path) -> int:
    """Redraw ``scaling.png`` and the table from an earlier ``scaling.json``."""
    report = json.loads(json_path.read_text())
    runs = [r for r in report["runs"] if not r.get("failed")]
    for run in runs:
        add_ladder(run)
    best: dict[int, dict[str, dict]] = {}
    for G, chosen in report["best"].items():
        for method, pick in chosen.items():
            matches = [r for r in runs if r["G"] == int(G) and r["method"] == method and r["lr"] == pick["lr"]]
            if matches:
                best.setdefault(int(G), {})[method] = matches[-1]
    sizes = sorted(best)
    plot(best, sizes, json_path.with_suffix(".png"), report["settings"].get("target", TARGET))
    report["table"] = table(best, sizes)
    json_path.write_text(json.dumps(report, indent=1))
    print(report["table"])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000],
                        help="G values for all four methods (default: 1000 10000 100000)")
    parser.add_argument("--ours-only-sizes", type=int, nargs="*", default=[],
                        help="G values for our three families only (e.g. 1000000)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.003, 0.01, 0.03],
                        help="Adam learning-rate grid (default: 0.003 0.01 0.03)")
    parser.add_argument("--schedule", choices=["none", "exponential", "cosine"], default="none",
                        help="learning-rate decay over --budget-steps, the same for every method, Pyro's "
                             "included (as fit(schedule=...): down to 1%% of lr); default none")
    parser.add_argument("--grid", choices=["smallest", "each"], default="smallest",
                        help="run the lr grid at the smallest G only and reuse each method's best lr (default), "
                             "or at every G")
    parser.add_argument("--budget-seconds", type=float, default=120.0, help="training time budget per run")
    parser.add_argument("--budget-steps", type=int, default=1_000_000, help="step budget per run")
    parser.add_argument("--batch", type=int, default=64, help="groups per step (B), the same for all methods")
    parser.add_argument("--N", type=int, default=10, help="observations per group")
    parser.add_argument("--D", type=int, default=2, help="dimensions")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the simulated data")
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument("--eval-draws", type=int, default=500,
                        help="draws per evaluation of the flow families (MC noise floor sqrt(2/(pi n)))")
    parser.add_argument("--eval-groups", type=int, default=500,
                        help="above this G, evaluate mu_g on a fixed random subset of this many groups")
    parser.add_argument("--eval-min-interval", type=float, default=0.25, help="seconds of training between evaluations, at least")
    parser.add_argument("--eval-rel-interval", type=float, default=0.15,
                        help="and at least this fraction of the training time so far")
    parser.add_argument("--clip", type=float, default=None,
                        help="gradient-norm clipping for our families (default none, as Pyro's Adam)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: G in {100, 1000}, lr grid {0.01, 0.03}, 3 s budget, 200 draws (unless given)")
    parser.add_argument("--replot", type=Path, metavar="JSON",
                        help="only redraw the PNG and reprint the table of an earlier scaling.json (next to it)")
    parser.add_argument("--single", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.replot:
        return replot(args.replot)

    if args.single:
        result = run_single(json.loads(args.single))
        print(RESULT_MARK + json.dumps(result), flush=True)
        return 0

    given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
    if args.schedule != "none" and "--budget-steps" not in given:
        parser.error("--schedule decays the learning rate over --budget-steps: give it")
    if args.quick:
        if "--sizes" not in given:
            args.sizes = [100, 1000]
        if "--lrs" not in given:
            args.lrs = [0.01, 0.03]
        if "--budget-seconds" not in given:
            args.budget_seconds = 3.0
        if "--eval-draws" not in given:
            args.eval_draws = 200
    try:
        import matplotlib  # noqa: F401
        if "pyro-autonormal" in args.methods:
            import pyro  # noqa: F401
    except ImportError as err:
        parser.error(f"{err}: install the bench extra: pip install -e '.[bench]' -c requirements/constraints.txt")

    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = sorted(set(args.sizes))
    ours_only = sorted(set(args.ours_only_sizes) - set(sizes))
    all_sizes = sorted(sizes + ours_only)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "single"}
    settings["command"] = " ".join([Path(sys.executable).name, *([sys.argv[0]] + sys.argv[1:] if argv is None else argv)])
    report: dict[str, Any] = {
        "machine": machine_info(args.device),
        "settings": settings,
        "runs": [],
        "best_lr": {},
    }
    json_path, png_path = args.out / "scaling.json", args.out / "scaling.png"
    best: dict[int, dict[str, dict]] = {}
    chosen_lr: dict[str, float] = {}
    per_run_timeout = args.budget_seconds * 6 + 300
    started = time.perf_counter()

    def save() -> None:
        report["best"] = {str(G): {m: {"lr": r["lr"]} for m, r in runs.items()} for G, runs in best.items()}
        report["table"] = table(best, all_sizes)
        report["total_seconds"] = time.perf_counter() - started
        report["machine"]["load_average_now"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        json_path.write_text(json.dumps(report, indent=1))

    for G in all_sizes:
        methods = [m for m in args.methods if G in sizes or m in OURS]
        for method in methods:
            tune = args.grid == "each" or method not in chosen_lr
            lrs = args.lrs if tune else [chosen_lr[method]]
            runs = []
            for lr in lrs:
                spec = {
                    "method": method, "G": G, "N": args.N, "D": args.D, "batch": args.batch, "lr": lr,
                    "schedule": None if args.schedule == "none" else args.schedule,
                    "seed": args.seed, "data_seed": args.data_seed, "threads": args.threads, "device": args.device,
                    "budget_seconds": args.budget_seconds, "budget_steps": args.budget_steps, "target": args.target,
                    "eval_draws": args.eval_draws, "eval_groups": args.eval_groups, "clip": args.clip,
                    "eval_min_interval": args.eval_min_interval, "eval_rel_interval": args.eval_rel_interval,
                }
                run = launch(spec, per_run_timeout)
                if not run.get("failed"):
                    add_ladder(run)
                run["tuning"] = tune and len(lrs) > 1
                runs.append(run)
                report["runs"].append(run)
                status = run.get("failed") or (
                    f"{_fmt_time(run)}, {run['steps']} steps, {run['time_per_step_ms']:.2f} ms/step, "
                    f"final error {run['final_error']:.3f}, peak {run['peak_mb']:.0f} MB"
                )
                print(f"[{time.perf_counter() - started:7.1f} s] G={G:<8} {method:<16} lr={lr:<6g} {status}", flush=True)
                save()
            pick = min(runs, key=_rank)
            best.setdefault(G, {})[method] = pick
            if tune and method not in chosen_lr and not pick.get("failed"):
                chosen_lr[method] = pick["lr"]
                report["best_lr"][method] = {"lr": pick["lr"], "tuned_at_G": G}
            save()
    plot(best, all_sizes, png_path, args.target)
    save()
    print()
    print(report["table"])
    print(f"\nwrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
