"""Data-parallel training on this machine: GRE fitted by ``pavi_viz.fit`` on 1, 2... processes.

Each (G, R) of ``--sizes`` x ``--ranks`` is one ``torchrun`` launch (``python -m
torch.distributed.run --standalone --nnodes=1 --nproc-per-node=R``) of this script with
``--single SPEC``, one CPU thread a process. Every process builds the Gaussian random
effects model (``pavi_viz.examples.gre``, N = 10 points per group in D = 2 dimensions)
and calls ``pavi_viz.fit(model, seed=...)`` with no setting (fit joins the run itself:
each process trains on a shard of the groups, :mod:`pavi_viz.inference.distributed`).

* **Throughput and time to accuracy** (``--sizes``, ``--ranks``, ``--budget`` seconds
  of training): rank 0 alone evaluates the error (the worst latent's, ``mu`` or
  ``mu_g``, mean over elements of ``|posterior mean - exact mean| / exact sd``, as in
  ``peers.py``), on a clock that leaves evaluation out, and alone decides to stop (at the
  tightest of ``--levels``, at the budget, or when fit says it converged; fit makes
  every process stop after the same step). Recorded: steps, steps/s, elements (groups)
  per second over all processes, the time to each level, the final error and each
  process's peak RSS.
* **Memory per process** (``--memory-sizes``, ``--memory-steps``, ``--memory-sources``):
  every process gets the model, fits ``--memory-steps`` steps, and reports its RSS after
  getting the model and its peak RSS. Two sources of the data: ``example``, every
  process builds the whole model (as a script of ``pavi_viz.fit`` does), and rank 0
  trains on it, every other rank on its shard of it alone (what the family derives per
  group, and SAGA's tables, are the shard's); ``file``, the data are written once to a
  NetCDF file before the launch, and every process passes it to ``fit``
  (:class:`~pavi_viz.model.datafile.DataFile`): rank 0 reads it whole, every other rank
  its shard alone.
* **The posterior's file** (``--posterior-sizes``, ``--posterior-draws``): every process
  builds the model and fits ``--memory-steps`` steps; then the run's posterior is written
  to a NetCDF file as ``pavi-viz fit`` writes it, by all the processes together
  (:func:`pavi_viz.inference.parallel_posterior.result_to_netcdf`; one process:
  ``Posterior.to_netcdf``).
  Recorded: each process's seconds from the start of the write to its end (rank 0's: the
  whole write) and the file's size.

Commands::

    # the full benchmark (two throughput launches of up to 120 s, eight memory launches,
    # two posterior launches)
    python benchmarks/distributed.py --ranks 1 2 --sizes 10000 --budget 120
    # a smoke test (G = 2000, 5 s budgets, memory at G = 20000 for 3 steps)
    python benchmarks/distributed.py --quick --out /tmp/distributed
    # the table and the plot again, from an earlier JSON
    python benchmarks/distributed.py --replot benchmarks/results/distributed.json

Writes ``OUT/distributed.json`` and ``OUT/distributed.png``; prints a markdown table.
Needs matplotlib (the ``bench`` extra) for the plot.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    RESULT_MARK,
    MemoryMonitor,
    command_settings,
    emit,
    finish_report,
    load_average,
    machine_info,
    rss_bytes,
    run_report,
)
from peers import (  # noqa: E402
    LEVELS,
    Setting,
    add_gre_options,
    add_levels,
    child_env,
    errors,
    evaluation_groups,
    exact_posterior,
    first_below,
    pavi_moments,
    warm_up,
)

#: The plate GRE's processes share out (its only top-level plate).
PLATE = "group"
NOTE = ("Each process builds the whole model (every group's x). Rank 0 trains on it; every other rank "
        "trains on its shard of it alone, so what the family derives per group and SAGA's tables are "
        "the shard's there.")
#: How each memory launch's processes get the data (``--memory-sources``).
SOURCES = {
    "example": NOTE,
    "file": "the data in a NetCDF file, passed to fit: rank 0 reads it whole, every other rank its shard alone",
}
#: ``--quick``: the options a smoke test overrides.
QUICK = {"sizes": [2000], "budget": 5.0, "memory_sizes": [20000], "memory_steps": 3, "posterior_sizes": [20000],
         "posterior_draws": 50}


# -- one launch's processes -----------------------------------------------------------
def _rank_and_size() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _gather(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every process's ``record``, in rank order (on every process; a collective)."""
    import torch.distributed as dist

    rank, size = _rank_and_size()
    if size == 1 or not dist.is_initialized():
        return [record]
    records: list[Any] = [None] * size
    dist.all_gather_object(records, record)
    return records


def _leave() -> None:
    from pavi_viz.inference.distributed import Replicas

    Replicas.leave()


def _peak_rss_mb() -> float:
    """The process's peak RSS over its whole life (``ru_maxrss``, KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def groups_per_step(model: Any, config: Any, ranks: int) -> dict[str, Any]:
    """The groups one step draws, over all processes: a batched plate's batch split
    between them (each draws its ceiling share), a plate taken whole counted whole."""
    from pavi_viz.inference.resolve import batch_sizes

    sizes = batch_sizes(model, config.batch)
    G = model.plates[PLATE].size
    if PLATE in sizes:
        per_rank = -(-sizes[PLATE] // ranks)
        return {"batch_sizes": sizes, "batch": sizes[PLATE], "groups_per_step": per_rank * ranks,
                "groups_per_step_per_rank": per_rank}
    return {"batch_sizes": sizes, "batch": None, "groups_per_step": G, "groups_per_step_per_rank": G / ranks}


def run_throughput(spec: dict[str, Any]) -> dict[str, Any] | None:
    """One process of a throughput launch; rank 0's result (``None`` on the others)."""
    import torch

    import pavi_viz
    from pavi_viz.examples import gre
    from pavi_viz.inference import DivergenceError, StopTraining

    rank, size = _rank_and_size()
    torch.set_num_threads(1)
    model = gre.build(G=spec["G"], N=spec["N"], D=spec["D"], seed=spec["data_seed"])
    leader = rank == 0
    if leader:
        groups = evaluation_groups(spec["G"], spec["eval_groups"])
        truth = exact_posterior(model, groups)
    # A two-step fit on a tiny GRE, on every process: torch's one-off costs, and (with
    # several processes) joining the process group and the first collectives, before the
    # clock. It also lines the processes up: none starts its clock before all are here.
    warm_up("pavi_viz")
    result: dict[str, Any] = {**spec, "rank": rank, "load_average_before": load_average()}
    memory = MemoryMonitor()
    holder: dict[str, Any] = {}
    out: dict[str, Any] = {"diverged": None}

    if leader:
        setting = Setting(spec, model, groups, truth, memory)

        def evaluate() -> dict[str, Any]:
            return errors(pavi_moments(holder["state"], groups, spec["eval_draws"], spec["seed"] + 1), truth)

        tracker = setting.tracker(evaluate, setting.stop_below())

        def callback(state: Any) -> None:
            holder["state"] = state
            holder.setdefault("threads", torch.get_num_threads())
            if tracker.after_step(state.step, final=state.finished):
                raise StopTraining
    else:
        tracker = None

        def callback(state: Any) -> None:  # counts the steps; never evaluates, never stops
            holder["state"] = state
            holder.setdefault("threads", torch.get_num_threads())

    began_wall, began_cpu = time.perf_counter(), time.process_time()
    if tracker is not None:
        tracker.start()
    try:
        batch = {} if spec.get("batch") is None else {"batch": {PLATE: spec["batch"]}}
        fitted = pavi_viz.fit(model, seed=spec["seed"], callbacks=[callback], callback_every=1, **batch)
        config, out["fit_stop_reason"] = fitted.config, fitted.stop_reason
    except DivergenceError as err:  # every process raises it, after the same step
        out["diverged"] = str(err).splitlines()[0]
        if tracker is not None and not tracker.done:
            tracker.finish("diverged")
        config = err.result.config if err.result is not None else None
    wall, cpu = time.perf_counter() - began_wall, time.process_time() - began_cpu
    state = holder["state"]
    mine = {"rank": rank, "steps": state.step, "fit_wall_seconds": wall, "cpu_per_wall_fit": cpu / wall if wall else None,
            "torch_threads": holder.get("threads"), **memory.stop(), "ru_maxrss_mb": _peak_rss_mb()}
    per_rank = _gather(mine)
    _leave()
    if not leader:
        return None
    summary = tracker.summary()
    steps_per_second = summary["steps"] / summary["train_seconds"] if summary["train_seconds"] else None
    drawn = groups_per_step(state.model, config, size) if config is not None else {}
    from pavi_viz.inference.distributed import sharded_plate

    out.update(
        family=state.family_name,
        parameters=state.family.parameter_count(),
        lr_used=config.lr if config is not None else None,
        sharded_plate=sharded_plate(state.model, drawn["batch_sizes"]) if size > 1 and drawn else None,
        steps_per_second=steps_per_second,
        elements_per_second=(drawn["groups_per_step"] * steps_per_second
                             if drawn and steps_per_second is not None else None),
        per_rank=per_rank,
        peak_rss_mb_per_rank=[r["rss_peak_mb"] for r in per_rank],
        eval_how=f"{spec['eval_draws']} joint draws of the family on {len(groups)} evaluated groups (rank 0)",
        **drawn,
    )
    return {**result, **summary, **out}


def run_memory(spec: dict[str, Any]) -> dict[str, Any] | None:
    """One process of a memory launch; rank 0's result, every process's numbers in it."""
    import torch

    import pavi_viz
    from pavi_viz.examples import gre

    rank, size = _rank_and_size()
    torch.set_num_threads(1)
    started = rss_bytes()
    began = time.perf_counter()
    if spec.get("source") == "file":  # opened: its arrays are read by fit
        from pavi_viz.model.datafile import DataFile

        model = DataFile.open(gre.build(G=1, N=spec["N"], D=spec["D"]), spec["data_file"])
    else:
        model = gre.build(G=spec["G"], N=spec["N"], D=spec["D"], seed=spec["data_seed"])
    build_seconds = time.perf_counter() - began
    after_model = rss_bytes()
    memory = MemoryMonitor()  # its baseline: the RSS with the model built
    began = time.perf_counter()
    fitted = pavi_viz.fit(model, seed=spec["seed"], steps=spec["memory_steps"])
    fit_seconds = time.perf_counter() - began
    sampled = memory.stop()
    mine = {
        "rank": rank, "steps": fitted.steps_done, "stop_reason": fitted.stop_reason,
        "trained_on_its_shard_alone": fitted.model.part is not None,
        "build_seconds": build_seconds, "fit_seconds": fit_seconds,
        "rss_start_mb": started / 2**20, "rss_after_model_mb": after_model / 2**20,
        "data_mb": (after_model - started) / 2**20,
        "fit_rss_peak_mb": sampled["rss_peak_mb"], "fit_peak_above_model_mb": sampled["peak_mb"],
        "peak_rss_mb": _peak_rss_mb(),
    }
    per_rank = _gather(mine)
    _leave()
    if rank != 0:
        return None
    return {**spec, "note": SOURCES[spec.get("source", "example")], "per_rank": per_rank,
            "memory_measure": "rss_after_model - rss_start: the model and its data; fit_rss_peak: RSS sampled "
                              "every 10 ms during fit; peak_rss: ru_maxrss, the process's whole life"}


def run_posterior(spec: dict[str, Any]) -> dict[str, Any] | None:
    """One process of a posterior launch; rank 0's result, every process's seconds in it."""
    import torch

    import pavi_viz
    from pavi_viz.examples import gre
    from pavi_viz.inference import Posterior
    from pavi_viz.inference.parallel_posterior import result_to_netcdf

    rank, size = _rank_and_size()
    torch.set_num_threads(1)
    model = gre.build(G=spec["G"], N=spec["N"], D=spec["D"], seed=spec["data_seed"])
    fitted = pavi_viz.fit(model, seed=spec["seed"], steps=spec["memory_steps"])
    with tempfile.TemporaryDirectory(prefix="posterior-") as folder:
        path = Path(folder) / "posterior.nc"
        began = time.perf_counter()
        if size == 1:
            Posterior(fitted.model, fitted.family).to_netcdf(path, n=spec["draws"], seed=spec["seed"])
        else:
            result_to_netcdf(path, fitted, n=spec["draws"], seed=spec["seed"])
        seconds = time.perf_counter() - began
        file_mb = path.stat().st_size / 2**20 if rank == 0 else None
    per_rank = _gather({"rank": rank, "write_seconds": seconds, "held_a_part": fitted.model.part is not None})
    _leave()
    if rank != 0:
        return None
    return {**spec, "per_rank": per_rank, "write_seconds": seconds, "file_mb": file_mb}


def run_single(spec: dict[str, Any]) -> None:
    """One process of a launch: rank 0 prints the launch's result."""
    result = {"throughput": run_throughput, "memory": run_memory, "posterior": run_posterior}[spec["kind"]](spec)
    if result is not None:
        emit(result)


# -- the launches ------------------------------------------------------------------------
def launch_torchrun(spec: dict[str, Any], ranks: int, timeout: float) -> dict[str, Any]:
    """``torchrun --standalone --nproc-per-node=ranks`` of this script with ``--single
    SPEC``: rank 0's result, or ``spec`` with a ``failed`` message. The launch runs in a
    session of its own, so that a timeout ends its workers too."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
           f"--nproc-per-node={ranks}", str(Path(__file__).resolve()), "--single", json.dumps(spec)]
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **child_env()}, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.communicate(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        return {**spec, "failed": f"timed out after {timeout:.0f} s", "curve": []}
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return {**json.loads(line[len(RESULT_MARK):]), "process_seconds": time.perf_counter() - began,
                    "exit_code": proc.returncode}
    tail = (stderr or stdout).strip().splitlines()[-20:]
    return {**spec, "failed": f"exit {proc.returncode}: " + "\n".join(tail), "curve": []}


def spec_of(kind: str, G: int, ranks: int, args: argparse.Namespace) -> dict[str, Any]:
    """What a launch's processes need (JSON-able: it goes on the command line)."""
    spec = {"kind": kind, "G": G, "ranks": ranks, "N": args.N, "D": args.D, "seed": args.seed,
            "data_seed": args.data_seed}
    if kind == "memory":
        return {**spec, "N": args.memory_N, "D": args.memory_D, "memory_steps": args.memory_steps}
    if kind == "posterior":
        return {**spec, "N": args.memory_N, "D": args.memory_D, "memory_steps": args.memory_steps,
                "draws": args.posterior_draws}
    return {**spec, "batch": args.batch, "budget": args.budget, "levels": list(args.levels), "eval_groups": args.eval_groups,
            "eval_draws": args.eval_draws, "eval_every": args.eval_every, "eval_rel": args.eval_rel}


def describe(run: dict[str, Any], levels: Sequence[float]) -> str:
    """One line of progress about a finished launch."""
    if run.get("failed"):
        return "failed: " + run["failed"].splitlines()[-1]
    if run["kind"] == "posterior":
        return (f"{run['draws']} draws written in {run['write_seconds']:.1f} s ({run['file_mb']:.0f} MB); per rank "
                + " / ".join(f"{r['write_seconds']:.1f} s" for r in run["per_rank"]))
    if run["kind"] == "memory":
        return f"{_source(run)}: " + "; ".join(f"rank {r['rank']}: model {r['data_mb']:.0f} MB, peak {r['peak_rss_mb']:.0f} MB"
                         for r in run["per_rank"])
    hits = ", ".join(f"<{lv:g} {_seconds(first_below(run, lv))}" for lv in levels)
    return (f"{hits}; final error {_error(run)} after {run['train_seconds']:.1f} s, {run['steps']} steps "
            f"({run['stop_reason']}), {_num(run.get('steps_per_second'), 1)} steps/s, "
            f"{_num(run.get('elements_per_second'), 0)} groups/s, peak "
            + " / ".join(f"{mb:.0f}" for mb in run["peak_rss_mb_per_rank"]) + " MB")


def write_data_file(G: int, args: argparse.Namespace, folder: Path) -> Path:
    """The memory runs' GRE data at ``G`` groups, written to a NetCDF file in ``folder``."""
    from pavi_viz.examples import gre
    from pavi_viz.model.tables import NETCDF_ENGINE, model_to_dataset

    path = folder / f"gre-G{G}.nc"
    if not path.exists():
        model = gre.build(G=G, N=args.memory_N, D=args.memory_D, seed=args.data_seed)
        model_to_dataset(model).to_netcdf(path, engine=NETCDF_ENGINE)
    return path


def run_all(args: argparse.Namespace, report: dict[str, Any], save: Callable[[], None]) -> None:
    """The throughput launches, then the memory launches, one at a time."""
    started = time.perf_counter()
    plan = [("throughput", G, R, None) for G in sorted(set(args.sizes)) for R in args.ranks]
    plan += [("memory", G, R, source) for G in sorted(set(args.memory_sizes)) for source in args.memory_sources
             for R in args.ranks]
    plan += [("posterior", G, R, None) for G in sorted(set(args.posterior_sizes)) for R in args.ranks]
    with tempfile.TemporaryDirectory(prefix="distributed-data-") as folder:
        for kind, G, R, source in plan:
            spec = spec_of(kind, G, R, args)
            if source is not None:
                spec["source"] = source
                if source == "file":
                    spec["data_file"] = str(write_data_file(G, args, Path(folder)))
            run_launch(spec, args, report, started)
            save()


def run_launch(spec: dict[str, Any], args: argparse.Namespace, report: dict[str, Any], started: float) -> None:
    """One launch, its run added to the report and a line printed."""
    kind, G, R = spec["kind"], spec["G"], spec["ranks"]
    timeout = 4 * args.budget + 300 if kind == "throughput" else args.memory_timeout  # memory: posterior's too
    run = launch_torchrun(spec, R, timeout)
    if kind == "throughput" and not run.get("failed"):
        add_levels(run, args.levels)
    report["runs"].append(run)
    print(f"[{time.perf_counter() - started:7.1f} s] {kind:<10} G={G:<9} ranks={R}  {describe(run, args.levels)}",
          flush=True)


# -- the table and the plot ---------------------------------------------------------------
def _num(value: float | None, digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def _seconds(hit: dict[str, Any] | None) -> str:
    return "not reached" if hit is None else f"{hit['time']:.1f} s"


def _error(run: dict[str, Any]) -> str:
    return "none" if run.get("final_error") is None else f"{run['final_error']:.3f}"


def _source(run: dict[str, Any]) -> str:
    """How a memory launch's processes got the data (runs before sources were recorded: example)."""
    return run.get("source", "example")


def _ok(run: dict[str, Any], kind: str) -> bool:
    return run.get("kind") == kind and not run.get("failed")


def _fewest_ranks(runs: Sequence[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any]:
    """The run of ``runs`` with ``run``'s kind and G, on the fewest ranks, that did not fail."""
    return min((r for r in runs if _ok(r, run["kind"]) and r["G"] == run["G"]), key=lambda r: r["ranks"])


def _failed_row(leading: list[str], run: dict[str, Any], width: int) -> str:
    """A table row of ``width`` cells for a failed launch: its ``leading`` cells, then why."""
    why = "failed: " + run["failed"].splitlines()[-1][:80]
    return "| " + " | ".join([*leading, why]) + " |" + " |" * (width - len(leading) - 1)


def _ratio(mine: float | None, base: float | None) -> str:
    if mine is None or base is None or not base:
        return "-"
    return f"{mine / base:.2f}"


def table(report: dict[str, Any]) -> str:
    """Markdown: the throughput launches by (G, ranks), with ratios to the fewest ranks'
    run at the same G; then each memory launch's numbers per rank."""
    levels = report["args"]["levels"]
    runs = report["runs"]
    head = (["G", "ranks", "steps/s", "elements/s"] + [f"time to < {lv:g}" for lv in levels]
            + ["final error", "steps", "peak MB per rank", "elements/s vs fewest ranks",
               f"time to < {min(levels):g} vs fewest ranks"])
    lines = ["Times: rank 0's training seconds (evaluation excluded). Elements: groups drawn a step over all "
             "ranks x steps/s. Peak MB: each rank's peak RSS during training. Ratios: over the run with the "
             "fewest ranks at the same G.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    throughput = [r for r in runs if r.get("kind") == "throughput"]
    for run in sorted(throughput, key=lambda r: (r["G"], r["ranks"])):
        if run.get("failed"):
            lines.append(_failed_row([f"{run['G']:,}", str(run["ranks"])], run, len(head)))
            continue
        base = _fewest_ranks(throughput, run)
        tight = min(levels)
        mine_hit, base_hit = first_below(run, tight), first_below(base, tight)
        cells = [f"{run['G']:,}", str(run["ranks"]), _num(run.get("steps_per_second"), 1),
                 _num(run.get("elements_per_second"), 0)]
        cells += [_seconds(first_below(run, lv)) for lv in levels]
        cells += [_error(run), str(run["steps"]), " / ".join(f"{mb:.0f}" for mb in run["peak_rss_mb_per_rank"]),
                  _ratio(run.get("elements_per_second"), base.get("elements_per_second")),
                  _ratio(mine_hit and mine_hit["time"], base_hit and base_hit["time"])]
        lines.append("| " + " | ".join(cells) + " |")
    posterior = [r for r in runs if r.get("kind") == "posterior"]
    if posterior:
        phead = ["G", "ranks", "draws", "file MB", "rank 0's write, s", "each rank's share, s", "write vs fewest ranks"]
        lines += ["", "Writing the posterior's NetCDF file (all groups' draws, their log likelihood where it fits, "
                      "100 replicates) after training, as pavi-viz fit writes it.", "",
                  "| " + " | ".join(phead) + " |", "|" + "---|" * len(phead)]
        for run in sorted(posterior, key=lambda r: (r["G"], r["ranks"])):
            if run.get("failed"):
                lines.append(_failed_row([f"{run['G']:,}", str(run["ranks"])], run, len(phead)))
                continue
            base = _fewest_ranks(posterior, run)
            cells = [f"{run['G']:,}", str(run["ranks"]), str(run["draws"]), f"{run['file_mb']:.0f}",
                     f"{run['write_seconds']:.1f}", " / ".join(f"{r['write_seconds']:.1f}" for r in run["per_rank"]),
                     _ratio(run["write_seconds"], base["write_seconds"])]
            lines.append("| " + " | ".join(cells) + " |")
    memory = [r for r in runs if r.get("kind") == "memory"]
    if memory:
        mhead = ["G", "data", "ranks", "model + data MB per rank", "peak RSS MB per rank (fit)",
                 "peak RSS MB per rank (life)", "sum of peaks MB"]
        sources = " ".join(f"{name}: {what}" for name, what in SOURCES.items())
        lines += ["", f"Memory per rank ({report['args']['memory_steps']} steps of fit). Data: {sources}.", "",
                  "| " + " | ".join(mhead) + " |", "|" + "---|" * len(mhead)]
        for run in sorted(memory, key=lambda r: (r["G"], _source(r), r["ranks"])):
            if run.get("failed"):
                lines.append(_failed_row([f"{run['G']:,}", _source(run), str(run["ranks"])], run, len(mhead)))
                continue
            ranks = run["per_rank"]
            cells = [f"{run['G']:,}", _source(run), str(run["ranks"]),
                     " / ".join(f"{r['data_mb']:.0f}" for r in ranks),
                     " / ".join(f"{r['fit_rss_peak_mb']:.0f}" for r in ranks),
                     " / ".join(f"{r['peak_rss_mb']:.0f}" for r in ranks),
                     f"{sum(r['peak_rss_mb'] for r in ranks):.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Elements/s by ranks (a bar per G and R); time to the tightest level by ranks
    (hatched at the training time where not reached: a lower bound); each rank's peak
    RSS against G, one line per R and source (the highest rank's dashed); the seconds
    of writing the posterior's file by ranks (a bar per G and R)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["args"]["levels"]
    tight = min(levels)
    runs = report["runs"]
    throughput = [r for r in runs if _ok(r, "throughput")]
    memory = [r for r in runs if _ok(r, "memory")]
    sizes = sorted({r["G"] for r in throughput})
    all_ranks = sorted({r["ranks"] for r in runs if r.get("kind")})
    colors = dict(zip(all_ranks, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, axes = plt.subplots(1, 4, figsize=(22, 5))
    width = 0.8 / max(1, len(all_ranks))
    for j, R in enumerate(all_ranks):
        xs, rates, times, missed = [], [], [], []
        for i, G in enumerate(sizes):
            run = next((r for r in throughput if r["G"] == G and r["ranks"] == R), None)
            if run is None:
                continue
            x = i + (j - (len(all_ranks) - 1) / 2) * width
            xs.append(x)
            rates.append(run.get("elements_per_second") or 0.0)
            hit = first_below(run, tight)
            times.append(hit["time"] if hit else run["train_seconds"])
            missed.append(hit is None)
        if not xs:
            continue
        axes[0].bar(xs, rates, width, color=colors[R], label=f"{R} rank{'s' if R > 1 else ''}")
        bars = axes[1].bar(xs, times, width, color=colors[R], label=f"{R} rank{'s' if R > 1 else ''}")
        for bar, miss in zip(bars, missed):
            if miss:
                bar.set_hatch("//")
                bar.set_alpha(0.5)
    for ax in axes[:2]:
        ax.set_xticks(range(len(sizes)), [f"G = {G:,}" for G in sizes])
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("groups per second (all ranks)")
    axes[0].set_title("throughput: groups drawn a step x steps/s", fontsize=10)
    axes[1].set_ylabel("rank 0's training seconds (evaluation excluded)")
    axes[1].set_title(f"time until the error < {tight:g} exact sd (hatched: not reached)", fontsize=10)
    ax = axes[2]
    for source, marker in zip(SOURCES, "os"):
        for R in all_ranks:
            mine = sorted((r for r in memory if r["ranks"] == R and _source(r) == source), key=lambda r: r["G"])
            for rank in range(R):
                points = [(r["G"], r["per_rank"][rank]["peak_rss_mb"]) for r in mine if len(r["per_rank"]) > rank]
                if points:
                    ax.plot(*zip(*points), marker=marker, color=colors[R], linestyle="--" if rank else "-",
                            label=f"{source}, {R} rank{'s' if R > 1 else ''}: rank {rank}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("G (groups)")
    ax.set_ylabel("peak RSS per rank (MB, whole process life)")
    ax.set_title("memory per rank (rank 0 holds the whole data)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if memory:
        ax.legend(fontsize=8)
    ax = axes[3]
    written = [r for r in runs if _ok(r, "posterior")]
    posterior_sizes = sorted({r["G"] for r in written})
    for j, R in enumerate(all_ranks):
        bars = [(i + (j - (len(all_ranks) - 1) / 2) * width, run["write_seconds"])
                for i, G in enumerate(posterior_sizes) for run in written if run["G"] == G and run["ranks"] == R]
        if bars:
            ax.bar(*zip(*bars), width, color=colors[R], label=f"{R} rank{'s' if R > 1 else ''}")
    ax.set_xticks(range(len(posterior_sizes)), [f"G = {G:,}" for G in posterior_sizes])
    ax.set_ylabel("seconds (rank 0: the whole write)")
    ax.set_title("writing the posterior's file (all processes draw)", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    if written:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def finish(report: dict[str, Any], json_path: Path) -> None:
    """The report's table, JSON and plot (:func:`harness.finish_report`)."""
    finish_report(report, json_path, table, plot)


# -- the command line ---------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line's options (``--quick`` applied; the levels sorted loosest first)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="processes per launch (default 1 2)")
    p.add_argument("--sizes", type=int, nargs="*", default=[10000], help="G of the throughput runs (none: skip them)")
    p.add_argument("--budget", type=float, default=120.0, help="seconds of training per throughput run (default 120)")
    p.add_argument("--memory-sizes", type=int, nargs="*", default=[1000000, 10000000],
                   help="G of the memory runs (none: skip them)")
    p.add_argument("--memory-steps", type=int, default=20, help="steps of fit in a memory run (default 20)")
    p.add_argument("--memory-timeout", type=float, default=1800.0, help="seconds a memory launch may take")
    p.add_argument("--memory-sources", nargs="+", choices=list(SOURCES), default=list(SOURCES),
                   help="how the memory runs' processes get the data (default: both): example, every process "
                        "builds the whole model; file, from a NetCDF file that rank 0 reads whole and every "
                        "other rank reads its shard of")
    p.add_argument("--posterior-sizes", type=int, nargs="*", default=[100000],
                   help="G of the posterior launches (none: skip them; default 100000)")
    p.add_argument("--posterior-draws", type=int, default=300, help="draws of the posterior launches (default 300)")
    p.add_argument("--levels", type=float, nargs="+", default=list(LEVELS), help="the error levels (default 0.5 0.2 0.1)")
    add_gre_options(p, "fit's seed")
    p.add_argument("--batch", type=int, default=None,
                   help="groups a step of the throughput runs, over all processes (default: fit's own choice)")
    p.add_argument("--memory-N", type=int, default=2,
                   help="points per group of the memory runs (default 2: G = 10^7 fits the simulation's bound)")
    p.add_argument("--memory-D", type=int, default=1, help="dimensions of the memory runs (default 1)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke test: G = 2000, 5 s budgets, memory at G = 20000 for 3 steps")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--replot", type=Path, metavar="JSON", help="only redo the table and the plot of an earlier JSON")
    p.add_argument("--single", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    if any(r < 1 for r in args.ranks):
        p.error("--ranks must be at least 1")
    args.levels = sorted(args.levels, reverse=True)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one process of a launch (``--single``), redo a table and plot (``--replot``),
    or the whole benchmark."""
    args = parse(argv)
    if args.single:
        run_single(json.loads(args.single))
        return 0
    if args.replot:
        finish(json.loads(args.replot.read_text()), args.replot)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "distributed.json"
    settings = command_settings(args, argv, __file__)
    report: dict[str, Any] = {
        "machine": machine_info(("torch",)), "args": settings,
        "children_env": child_env(), "note": NOTE, "runs": [],
    }
    return run_report(args, report, json_path, run_all, finish)


if __name__ == "__main__":
    sys.exit(main())
