"""Torch's intra-op thread count against the size of a training step, alone and beside a busy process.

Fits a ladder of workloads, from eight schools (18 numbers a step) to a Gaussian random
effects model taken whole (2.2 million numbers a step), with each thread setting (1 and
2 by default, ``os.cpu_count()`` too where it is larger) and measures training steps per
second: alone, and beside a competing busy process (``python -c "while True: pass"``,
one core's worth). Every measurement is a fresh subprocess (this script with
``--single SPEC``) that calls ``torch.set_num_threads(n)`` before fitting, so that one
setting cannot leak into the next; the measurements of a workload run side by side
(settings and conditions interleaved, their order rotated between repeats) and medians
over ``--repeats`` are reported.

A step's *work* is the number of numbers in one step's batch (every latent and observed
variable, over the batch's plate elements, times its event size) times the particles:
the quantity a rule for ``fit(threads="auto")`` can read before training. The printed
crossover is the smallest work at which 2 threads beat 1 alone by more than 10 %, and
whether 2 threads ever beat 1 beside the busy process.

Every setting is passed as ``pavi_viz.fit(threads=...)``: a number, ``auto`` (the
library's rule, fit's default), or ``default``: torch's own count in a fresh process, as
every fit took before the setting existed.

Run ``python benchmarks/threads.py --help``; ``benchmarks/README.md`` says what is
measured and how to read the output. Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_model, write_report  # noqa: E402

RESULT_MARK = "@@THREADS-RESULT@@ "
CONDITIONS = ("alone", "busy")
#: A process that burns one core until it is killed: the competing work.
BUSY_CODE = "while True: pass"
#: Environment variables that would cap torch's threads in a child; removed, so that
#: the ``default`` and ``auto`` settings see the machine (each number is set explicitly).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: 2 threads "beat" 1 when their steps per second are this much higher (the crossover).
GAIN = 1.10
#: 2 threads "alone" that got less CPU per wall second than this did not have two cores.
SHORT_OF_CORES = 1.5

#: name -> (example, its load options, family, fit's batch). Ordered by work.
WORKLOADS: dict[str, tuple[str, dict[str, Any], str, dict[str, int | None] | None]] = {
    "eight_schools": ("eight_schools", {}, "pavi-e", None),
    "radon": ("radon", {}, "pavi-e", None),
    "gre100": ("gre", {"G": 100, "N": 10, "D": 2}, "pavi-e", None),  # the dashboard's default
    "gre1k-whole": ("gre", {"G": 1000, "N": 10, "D": 2}, "pavi-e", {"group": None}),
    "gre10k-whole-mf": ("gre", {"G": 10000, "N": 10, "D": 2}, "mean-field", {"group": None}),
    "gre10k-whole": ("gre", {"G": 10000, "N": 10, "D": 2}, "pavi-e", {"group": None}),
    "gre100k-whole-mf": ("gre", {"G": 100000, "N": 10, "D": 2}, "mean-field", {"group": None}),
}
#: --quick: the workloads whose steps take milliseconds (each still exercises both families).
QUICK_WORKLOADS = ("eight_schools", "radon", "gre100", "gre1k-whole", "gre10k-whole-mf")


# -- settings -------------------------------------------------------------------------
def parse_setting(text: str) -> int | str:
    """A thread setting: a positive number of threads, ``auto`` or ``default``."""
    text = text.strip()
    if text in ("auto", "default"):
        return text
    n = int(text)
    if n < 1:
        raise ValueError(f"a thread count must be at least 1, got {n}")
    return n


def default_settings() -> list[int | str]:
    cpus = os.cpu_count() or 1
    return [1, 2] + ([cpus] if cpus > 2 else []) + ["auto"]


def fit_threads(setting: int | str) -> int | str:
    """The ``threads`` setting of ``pavi_viz.fit`` a measurement uses: a number, ``"auto"``
    (fit's default), or for ``default`` torch's own count in a fresh process (what fits
    used before the setting existed)."""
    import torch

    return torch.get_num_threads() if setting == "default" else setting


# -- work ---------------------------------------------------------------------------
def load(workload: str):
    import pavi_viz

    example, options, _, _ = WORKLOADS[workload]
    return pavi_viz.examples.load(example, **options)


def step_work(model, batch, particles: int) -> dict[str, Any]:
    """The numbers in one training step's batch, times ``particles`` (what
    ``threads="auto"`` reads: ``pavi_viz.inference.resolve.data_numbers``)."""
    from pavi_viz.inference.resolve import batch_sizes, data_numbers

    compiled = model.compile(device="cpu")
    sizes = batch_sizes(compiled, batch)
    return {
        "work": particles * data_numbers(compiled, sizes),
        "batch_sizes": sizes,
        "plates": {p.name: p.size for p in compiled.plates},
    }


# -- one measurement (the child) --------------------------------------------------------
def run_single(spec: dict[str, Any]) -> dict[str, Any]:
    """One workload at one setting: steps per second over up to ``steps`` steps (or
    ``seconds`` of them) after ``warmup`` steps of the same fit."""
    import torch

    import pavi_viz
    from pavi_viz.inference import StopTraining

    setting = spec["setting"]
    default_threads = torch.get_num_threads()
    _, _, family, batch = WORKLOADS[spec["workload"]]
    model = load(spec["workload"])
    warmup, steps, seconds = spec["warmup"], spec["steps"], spec["seconds"]
    clock: dict[str, Any] = {}

    def callback(state) -> None:
        now = time.perf_counter()
        if state.step == warmup and "start" not in clock:
            clock.update(start=now, cpu=time.process_time(), threads=torch.get_num_threads())
        elif state.step > warmup and "start" in clock:
            clock.update(end=now, cpu_end=time.process_time(), step=state.step)
            if now - clock["start"] >= seconds:
                raise StopTraining

    began = time.perf_counter()
    result = pavi_viz.fit(model, family, steps=warmup + steps, batch=batch, particles=spec["particles"], seed=0,
                          device="cpu", progress=False, callbacks=[callback], callback_every=1,
                          threads=fit_threads(setting))
    fit_seconds = time.perf_counter() - began
    measured = clock.get("step", warmup) - warmup
    wall = clock["end"] - clock["start"] if measured else float("nan")
    return {
        **spec,
        "steps_per_second": measured / wall if measured else None,
        "measured_steps": measured,
        "measured_seconds": wall,
        "cpu_seconds": clock["cpu_end"] - clock["cpu"] if measured else None,
        "cpu_per_wall": (clock["cpu_end"] - clock["cpu"]) / wall if measured else None,
        "torch_threads": clock.get("threads"),
        "torch_default_threads": default_threads,
        "steps_done": result.steps_done,
        "fit_seconds": fit_seconds,
    }


# -- launching (the parent) -----------------------------------------------------------
def _cpu_seconds_of(pid: int) -> float | None:
    """User + system CPU time of a running process, from /proc (None where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def launch(spec: dict[str, Any], busy: int, timeout: float) -> dict[str, Any]:
    """Run one spec in a fresh subprocess, beside ``busy`` processes that each burn a core
    (started before it, killed after it); its result, or the failure."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--single", json.dumps(spec)]
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    burners = [subprocess.Popen([sys.executable, "-c", BUSY_CODE]) for _ in range(busy)]
    out: dict[str, Any] = {**spec, "busy_processes": busy,
                           "load_average_before": os.getloadavg() if hasattr(os, "getloadavg") else None}
    wall = time.perf_counter()
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        proc = None
    finally:
        busy_cpu = [_cpu_seconds_of(b.pid) for b in burners]
        for b in burners:
            b.kill()
            b.wait()
    out["process_seconds"] = time.perf_counter() - wall
    if burners:
        out["busy_cpu_per_wall"] = [None if c is None else c / out["process_seconds"] for c in busy_cpu]
    if proc is None:
        return {**out, "failed": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return {**out, **json.loads(line[len(RESULT_MARK):])}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    return {**out, "failed": f"exit {proc.returncode}: " + "\n".join(tail)}


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "torch_parallel_info": torch.__config__.parallel_info(),
        "thread_env": {k: os.environ.get(k) for k in THREAD_ENV},
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


# -- summaries ------------------------------------------------------------------------
def key(setting: int | str) -> str:
    return str(setting)


def cell_medians(report: dict[str, Any], field: str) -> dict[str, dict[str, dict[str, float | None]]]:
    """workload -> condition -> setting -> the median of ``field`` over the repeats."""
    medians: dict[str, dict[str, dict[str, float | None]]] = {}
    for workload in report["workloads"]:
        medians[workload] = {}
        for condition in report["settings"]["conditions"]:
            medians[workload][condition] = {}
            for setting in report["settings"]["settings"]:
                values = [r[field] for r in report["runs"]
                          if r["workload"] == workload and r["condition"] == condition and r["setting"] == setting
                          and not r.get("failed") and r.get(field)]
                medians[workload][condition][key(setting)] = statistics.median(values) if values else None
    return medians


def summarise(report: dict[str, Any]) -> None:
    """Fill ``medians``, ``ratios`` (each setting's median over 1 thread's),
    ``cpu_per_wall`` (medians) and ``crossover`` from ``runs``."""
    medians = cell_medians(report, "steps_per_second")
    ratios = {
        workload: {
            condition: {f"{s}/1": (m[s] / m["1"] if m.get(s) and m.get("1") else None) for s in m if s != "1"}
            for condition, m in by_condition.items()
        }
        for workload, by_condition in medians.items()
    }
    report["medians"], report["ratios"] = medians, ratios
    report["cpu_per_wall"] = cell_medians(report, "cpu_per_wall")
    report["crossover"] = crossover(report)


def crossover(report: dict[str, Any]) -> dict[str, Any]:
    """The smallest work at which 2 threads beat 1 alone by more than :data:`GAIN`, and
    the workloads where 2 threads beat 1 at all beside the busy process."""
    by_work = sorted(report["workloads"], key=lambda w: report["workloads"][w]["work"])

    def ratio(workload: str, condition: str) -> float | None:
        return report["ratios"].get(workload, {}).get(condition, {}).get("2/1")

    alone = [w for w in by_work if (ratio(w, "alone") or 0) > GAIN]
    first = alone[0] if alone else None
    above = by_work[by_work.index(first):] if first else []
    return {
        "gain": GAIN,
        "alone_first_workload": first,
        "alone_work": report["workloads"][first]["work"] if first else None,
        "alone_holds_above": all((ratio(w, "alone") or 0) > GAIN for w in above) if first else None,
        "alone_winning_workloads": alone,
        "busy_winning_workloads": [w for w in by_work if (ratio(w, "busy") or 0) > 1.0],
        "busy_gain_workloads": [w for w in by_work if (ratio(w, "busy") or 0) > GAIN],
        # Where 2 threads alone got less than 1.5 cores (median CPU per wall second):
        # other work on the machine, not this benchmark's, held a core.
        "alone_short_of_cores": [
            w for w in by_work
            if (report["cpu_per_wall"].get(w, {}).get("alone", {}).get("2") or 2.0) < SHORT_OF_CORES],
    }


def _cell(value: float | None, width: int, spec: str = ".1f") -> str:
    return f"{format(value, spec):>{width}}" if value is not None else f"{'-':>{width}}"


def table(report: dict[str, Any]) -> str:
    settings = [key(s) for s in report["settings"]["settings"]]
    conditions = report["settings"]["conditions"]
    heads = [f"{s}t {c}" if s not in ("auto", "default") else f"{s} {c}" for c in conditions for s in settings]
    ratio_heads = [f"{s}/1 {c}" for c in conditions for s in settings if s != "1"]
    by_work = sorted(report["workloads"], key=lambda w: report["workloads"][w]["work"])

    def row(workload: str, cells: list[str]) -> str:
        info = report["workloads"][workload]
        return f"{workload:<18} {info['family']:<10} {info['work']:>9} " + " ".join(cells)

    head = f"{'workload':<18} {'family':<10} {'work':>9} "
    lines = [
        f"Training steps per second (median of {report['settings']['repeats']}), by thread setting and condition; "
        "ratios over 1 thread:",
        head + " ".join(f"{h:>12}" for h in heads) + "  " + " ".join(f"{h:>12}" for h in ratio_heads),
    ]
    for w in by_work:
        med, rat = report["medians"][w], report["ratios"][w]
        lines.append(row(w, [_cell(med[c].get(s), 12) for c in conditions for s in settings]
                         + [" "] + [_cell(rat[c].get(f"{s}/1"), 12, ".2f")
                                    for c in conditions for s in settings if s != "1"]))
    lines += ["", "CPU seconds per wall second of the measured process (median; about the cores it got):",
              head + " ".join(f"{h:>12}" for h in heads)]
    for w in by_work:
        lines.append(row(w, [_cell(report["cpu_per_wall"][w][c].get(s), 12, ".2f") for c in conditions for s in settings]))
    lines.append("")
    lines.append(crossover_text(report))
    return "\n".join(lines)


def crossover_text(report: dict[str, Any]) -> str:
    c = report["crossover"]
    gain = f"{(c['gain'] - 1) * 100:.0f}%"
    if "2" not in [key(s) for s in report["settings"]["settings"]]:
        return "Crossover: not measured (needs settings 1 and 2)."
    parts = []
    if "alone" in report["settings"]["conditions"]:
        if c["alone_first_workload"]:
            holds = "and at every larger work measured" if c["alone_holds_above"] else \
                f"(not at every larger work: only {', '.join(c['alone_winning_workloads'])})"
            parts.append(f"Crossover alone: 2 threads beat 1 by >{gain} from work {c['alone_work']} "
                         f"({c['alone_first_workload']}) {holds}.")
        else:
            parts.append(f"Crossover alone: 2 threads never beat 1 by >{gain} at the work measured.")
    if "busy" in report["settings"]["conditions"]:
        if c["busy_winning_workloads"]:
            parts.append(f"Beside a busy process, 2 threads beat 1 on {', '.join(c['busy_winning_workloads'])}"
                         f" (by >{gain} on {', '.join(c['busy_gain_workloads']) or 'none'}).")
        else:
            parts.append("Beside a busy process, 2 threads never beat 1.")
    if c.get("alone_short_of_cores"):
        parts.append(f"Caution: alone, 2 threads got under {SHORT_OF_CORES:g} cores (median CPU per wall second) on "
                     f"{', '.join(c['alone_short_of_cores'])}: other work held a core, so 'alone' was not alone there.")
    return "\n".join(parts)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    settings = [key(s) for s in report["settings"]["settings"]]
    conditions = report["settings"]["conditions"]
    workloads = report["workloads"]
    colors = dict(zip(settings, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]))
    styles = {"alone": "-", "busy": "--"}
    markers = {"pavi-e": "o", "mean-field": "s"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5.5))
    for family, marker in markers.items():
        names = sorted((w for w in workloads if workloads[w]["family"] == family), key=lambda w: workloads[w]["work"])
        for condition in conditions:
            for s in settings:
                pts = [(workloads[w]["work"], report["medians"][w][condition][s]) for w in names
                       if report["medians"][w][condition].get(s)]
                if pts:
                    ax1.plot(*zip(*pts), color=colors[s], linestyle=styles[condition], marker=marker)
                ratio = [(workloads[w]["work"], report["ratios"][w][condition].get(f"{s}/1")) for w in names]
                ratio = [p for p in ratio if p[1]]
                if s != "1" and ratio:
                    ax2.plot(*zip(*ratio), color=colors[s], linestyle=styles[condition], marker=marker)
            runs = [(workloads[r["workload"]]["work"], r["steps_per_second"]) for r in report["runs"]
                    if r["workload"] in names and r["condition"] == condition and r.get("steps_per_second")]
            if runs:
                ax1.scatter(*zip(*runs), s=6, color="grey", alpha=0.4, zorder=0)
    at_work: dict[int, list[str]] = {}
    for w, info in workloads.items():
        at_work.setdefault(info["work"], []).append(w)
    for work, names in at_work.items():
        ax2.annotate(", ".join(names), (work, 0), xycoords=("data", "axes fraction"), xytext=(2, 4),
                     textcoords="offset points", rotation=90, fontsize=7, color="grey")
    ax2.axhline(1.0, color="k", linewidth=0.8)
    ax2.axhline(GAIN, color="k", linewidth=0.6, linestyle=":")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("work: numbers in a step's batch x particles")
    ax1.set_yscale("log")
    ax1.set_ylabel("training steps per second (median; grey: every run)")
    ax1.set_title("Throughput against a step's work")
    ax2.set_yscale("log")
    ax2.set_ylabel("steps/s over 1 thread's")
    ax2.set_title(f"Gain over 1 thread (dotted: {GAIN:g}, the crossover's threshold)")
    handles = [Line2D([], [], color=colors[s], label=f"{s} thread{'s' if s != '1' else ''}" if s.isdigit() else s)
               for s in settings]
    handles += [Line2D([], [], color="k", linestyle=styles[c], label=c + (" (beside a busy process)" if c == "busy" else ""))
                for c in conditions]
    handles += [Line2D([], [], color="k", marker=m, linestyle="", label=f) for f, m in markers.items()]
    ax1.legend(handles=handles, fontsize=8)
    load = report["machine"].get("load_average_at_start")
    fig.suptitle(f"{report['machine']['cpu_count']} CPUs, torch {report['machine']['torch']}, "
                 f"load average at start {load[0]:.2f}" if load else "", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replot(json_path: Path) -> int:
    """Redraw the PNG and reprint the table of an earlier JSON (next to it)."""
    report = json.loads(json_path.read_text())
    summarise(report)
    report["table"] = table(report)
    plot(report, json_path.with_suffix(".png"))
    json_path.write_text(json.dumps(report, indent=1))
    print(report["table"])
    return 0


# -- main -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=None,
                        help=f"default: all ({', '.join(WORKLOADS)}); --quick: {', '.join(QUICK_WORKLOADS)}")
    parser.add_argument("--settings", default=None,
                        help="comma-separated thread settings: numbers, 'auto' (fit's default rule), 'default' "
                             "(torch's own count); default 1,2,auto (and os.cpu_count() if larger)")
    parser.add_argument("--conditions", default=",".join(CONDITIONS),
                        help="comma-separated: alone, busy (beside --busy processes that each burn a core)")
    parser.add_argument("--busy", type=int, default=1, help="competing busy processes in the busy condition")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per workload, setting and condition")
    parser.add_argument("--warmup", type=int, default=5, help="steps before the clock starts")
    parser.add_argument("--steps", type=int, default=300, help="measured steps at most")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds at most (after the step that passes it)")
    parser.add_argument("--particles", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per measurement's subprocess")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: the small workloads, 1 repeat, 3 warm-up steps, 1 s (unless given)")
    parser.add_argument("--replot", type=Path, metavar="JSON", help="only redraw the PNG and reprint the table")
    parser.add_argument("--single", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.replot:
        return replot(args.replot)
    if args.single:
        print(RESULT_MARK + json.dumps(run_single(json.loads(args.single))), flush=True)
        return 0

    given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
    if args.quick:
        defaults = {"--workloads": ("workloads", list(QUICK_WORKLOADS)), "--repeats": ("repeats", 1),
                    "--warmup": ("warmup", 3), "--seconds": ("seconds", 1.0)}
        for flag, (name, value) in defaults.items():
            if flag not in given:
                setattr(args, name, value)
    workloads = args.workloads or list(WORKLOADS)
    try:
        settings = [parse_setting(s) for s in args.settings.split(",")] if args.settings else default_settings()
    except ValueError as err:
        parser.error(f"--settings: {err}")
    settings = list(dict.fromkeys(settings))
    conditions = [c.strip() for c in args.conditions.split(",")]
    if not set(conditions) <= set(CONDITIONS):
        parser.error(f"--conditions: choose among {', '.join(CONDITIONS)}")
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be at least 1")
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        parser.error(f"{err}: install the bench extra: pip install -e '.[bench]' -c requirements/constraints.txt")

    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / "threads.json", args.out / "threads.png"
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("single", "replot")}
    options.update(workloads=workloads, settings=settings, conditions=conditions)
    options["command"] = " ".join([Path(sys.executable).name,
                                   *([sys.argv[0]] + sys.argv[1:] if argv is None else [__file__, *argv])])
    report: dict[str, Any] = {"machine": machine_info(), "settings": options, "workloads": {}, "runs": []}
    started = time.perf_counter()

    def save() -> None:
        summarise(report)
        report["table"] = table(report)
        write_report(report, json_path, started)

    for workload in workloads:
        example, load_options, family, batch = WORKLOADS[workload]
        work = step_work(load(workload), batch, args.particles)
        report["workloads"][workload] = {"example": example, "options": load_options, "family": family,
                                         "batch": batch, "particles": args.particles, **work}
        print(f"{workload}: {example} {load_options} {family}, batch {batch}: work {work['work']}", flush=True)
        for repeat in range(args.repeats):
            # Rotate the order, so that a drift of the machine's speed weighs on every setting alike.
            order = settings[repeat % len(settings):] + settings[:repeat % len(settings)]
            for condition in (conditions if repeat % 2 == 0 else conditions[::-1]):
                for setting in order:
                    spec = {"workload": workload, "setting": setting, "condition": condition, "repeat": repeat,
                            "warmup": args.warmup, "steps": args.steps, "seconds": args.seconds,
                            "particles": args.particles}
                    run = launch(spec, args.busy if condition == "busy" else 0, args.timeout)
                    report["runs"].append(run)
                    status = run.get("failed") or (
                        f"{run['steps_per_second']:8.1f} steps/s ({run['measured_steps']} steps, "
                        f"{run['torch_threads']} torch threads, cpu/wall {run['cpu_per_wall']:.2f})")
                    print(f"[{time.perf_counter() - started:6.0f} s]   {condition:<5} threads={key(setting):<7} "
                          f"#{repeat}: {status}", flush=True)
                    save()
    plot(report, png_path)
    print(f"\n{report['table']}\n\nwrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
