"""What the run store costs training: steps per second of the same seeded fit with and without it.

::

    python benchmarks/store.py                  # writes benchmarks/results/store.json
    python benchmarks/store.py --groups 200 --steps 2400 --repeats 9   # the same, spelt out

Both loops are ``pavi-viz fit``'s: a :class:`~pavi_viz.inference.trainer.Trainer` made
afresh with the same seed, stepped one step at a time; with the store, each step is
followed by :meth:`~pavi_viz.runner.FitLog.step` (it queues the step's point; the
writer's thread commits them every half second, beside training; and every 10 s at
least it copies the family for a posterior summary that a thread of its own computes,
for whoever watches the run: fits of 2400 steps, 15 to 25 s here, pay for one or two). Only the steps are
timed: opening the run before them and ending it after (a posterior summary, the last
commit) are reported apart, as ``end_seconds``. The two conditions alternate in one
process (without then with, then with then without...), after one untimed warm-up of
each, for ``--repeats`` repeats: many short pairs rather than a few long ones, so that
the two fits of a pair run under the same load. Reported: each repeat's ratio of steps per second
(with / without, its two fits side by side: a load that drifts over the minutes touches
both alike), their median (1 is free; the target is at least 0.95, a cost of at most
5 %), and the ratio of the conditions' medians. On a shared machine the wall clock
drifts with other processes' load; the CPU time this process spends per step does not,
so the same ratios are reported of it too (``cpu_ratio``: without / with, CPU seconds
per step, the writer thread's included), with the seconds per step the training thread
spent in ``FitLog.step``.

The model is the command line's tests' (``example:gre --option G=200``: small steps,
where a per-step cost shows most), on one torch thread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine_info, write_report  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "store.json"
#: The target: the store's run at least this share of the steps per second without it.
TARGET_RATIO = 0.95


def measure(model: Any, steps: int, store: Any | None) -> dict[str, float]:
    """One fit of ``steps`` steps, as ``pavi-viz fit`` trains it: its steps per second
    (wall clock), this process's CPU seconds per step (all its threads, the writer's
    too: what other processes on the machine barely change), and the seconds per step
    the training thread spent handing steps to the store."""
    from pavi_viz.inference.config import FitConfig
    from pavi_viz.inference.threads import use_threads
    from pavi_viz.inference.trainer import Trainer

    trainer = Trainer.create(model, FitConfig(steps=steps, seed=0, schedule="cosine", threads=1))
    state = trainer.state
    log = None if store is None else store.open_fit(model, state, name="benchmark")
    handing = 0.0
    with use_threads(trainer.threads):
        started, cpu_started = time.perf_counter(), time.process_time()
        while not trainer.done:
            trainer.step()
            if log is not None:
                handed = time.perf_counter()
                log.step(state)
                handing += time.perf_counter() - handed
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    ended = time.perf_counter()
    if log is not None:
        log.end(state, trainer.stop_reason)
    return {"steps_per_second": steps / seconds, "cpu_seconds_per_step": cpu_seconds / steps,
            "handing_seconds_per_step": handing / steps, "end_seconds": time.perf_counter() - ended}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--groups", type=int, default=200, help="G of the GRE example (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=2400, help="steps of each fit (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=9, help="fits of each condition (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON report (default: %(default)s)")
    args = parser.parse_args(argv)
    began = time.perf_counter()

    from pavi_viz.examples import gre
    from pavi_viz.runner import RunStore

    model = gre.build(G=args.groups)
    with tempfile.TemporaryDirectory() as folder:
        store = RunStore(Path(folder) / "runs.db")
        conditions = {"without": None, "with": store}
        for condition in conditions.values():  # warm-up: torch's first steps, the file's first pages
            measure(model, min(args.steps, 300), condition)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in conditions}
        for repeat in range(args.repeats):
            order = list(conditions) if repeat % 2 == 0 else list(reversed(conditions))
            for name in order:
                runs[name].append(measure(model, args.steps, conditions[name]))
                print(f"repeat {repeat + 1}/{args.repeats} {name:>7} the store: "
                      f"{runs[name][-1]['steps_per_second']:.1f} steps/s", flush=True)
        points_kept = len(store.points(store.runs()[0].id))
    medians = {name: statistics.median(r["steps_per_second"] for r in measured) for name, measured in runs.items()}
    paired = [w["steps_per_second"] / wo["steps_per_second"] for w, wo in zip(runs["with"], runs["without"])]
    ratio = statistics.median(paired)
    cpu_paired = [wo["cpu_seconds_per_step"] / w["cpu_seconds_per_step"] for w, wo in zip(runs["with"], runs["without"])]
    handing = statistics.median(r["handing_seconds_per_step"] for r in runs["with"])
    report = {
        "command": " ".join(["python", "benchmarks/store.py", *(argv if argv is not None else sys.argv[1:])]),
        "model": f"gre G={args.groups} N=10 D=2, pavi-e, seed 0, cosine schedule, 1 thread",
        "steps": args.steps,
        "repeats": args.repeats,
        "runs": runs,
        "median_steps_per_second": medians,
        "ratio_of_medians": medians["with"] / medians["without"],
        "ratios_per_repeat": paired,
        "ratio_with_to_without": ratio,
        "cpu_ratios_per_repeat": cpu_paired,
        "cpu_ratio": statistics.median(cpu_paired),
        "handing_seconds_per_step": handing,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "points_kept_per_run": points_kept,
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(report, args.out, began)
    print(f"median steps/s without the store {medians['without']:.1f}, with it {medians['with']:.1f}; "
          f"median ratio of a repeat's two fits {ratio:.3f} (target >= {TARGET_RATIO}), of their CPU seconds per step "
          f"{report['cpu_ratio']:.3f}; {handing * 1e6:.1f} us a step handed to the store; wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
