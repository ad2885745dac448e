"""Where a training step's time goes on the CPU: GRE at G = 10^3 taken whole, one thread.

Side by side in one process, in ``--rounds`` rounds where they take turns, each the
median of ``--repeats`` steps after ``--warm-up`` (the least of the rounds' is reported):

* ``Trainer.step`` of PAVI-E with ``fit``'s defaults (three transforms, 64-wide
  conditioners), then with smaller flows (the arithmetic of the flows shrinks, the number
  of operations a step makes hardly does);
* ``Trainer.step`` of mean-field (no flows: the trainer's and the model's own cost);
* a hand-written step in plain eager PyTorch: Gaussian draws of ``mu`` and ``mu_g``, GRE's
  log joint, backward and Adam, no trainer and no flows: eager PyTorch's floor on this
  model, what NumPyro's jitted full-batch step (``--numpyro-ms``: 0.55 ms on this machine)
  compares with. The plot draws the target across: a step within 3 times NumPyro's.

Writes ``OUT/step_cost.json`` and ``OUT/step_cost.png``; prints a markdown table::

    python benchmarks/step_cost.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine_info  # noqa: E402

from pavi_viz.examples import gre  # noqa: E402
from pavi_viz.inference import trainer  # noqa: E402
from pavi_viz.inference.config import FitConfig  # noqa: E402

#: The families timed through ``Trainer.step``: a label, the family, its options.
FAMILIES: list[tuple[str, str, dict[str, Any]]] = [
    ("pavi-e, fit's defaults", "pavi-e", {}),
    ("pavi-e, conditioners (32, 32)", "pavi-e", {"hidden": (32, 32)}),
    ("pavi-e, conditioners (32, 32), 2 transforms", "pavi-e", {"hidden": (32, 32), "transforms": 2}),
    ("pavi-e, 1 transform, conditioner (32,)", "pavi-e", {"hidden": (32,), "transforms": 1}),
    ("mean-field", "mean-field", {}),
]


def per_step_ms(step: Callable[[], Any], warm_up: int, repeats: int) -> float:
    """Milliseconds a call of ``step()`` takes: the median of ``repeats`` calls after
    ``warm_up`` (a median, so that a step that also does a stage's one-off work, the
    schedule's switch to standardised globals, does not count)."""
    for _ in range(warm_up):
        step()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def hand_written_step(groups: int, points: int, dims: int, seed: int) -> Callable[[], None]:
    """One step of a Gaussian family of GRE written out in eager PyTorch (GRE's prior:
    ``mu ~ N(0, 1)``, ``mu_g ~ N(mu, 1)``, ``x ~ N(mu_g, 1)``; constants left out)."""
    x = gre.build(G=groups, N=points, D=dims, seed=seed).data["x"]
    loc_g, log_scale_g = torch.zeros(groups, dims, requires_grad=True), torch.zeros(groups, dims, requires_grad=True)
    loc, log_scale = torch.zeros(dims, requires_grad=True), torch.zeros(dims, requires_grad=True)
    optimizer = torch.optim.Adam([loc_g, log_scale_g, loc, log_scale], lr=0.05)
    generator = torch.Generator().manual_seed(seed)

    def step() -> None:
        optimizer.zero_grad()
        mu = loc + log_scale.exp() * torch.randn(dims, generator=generator)
        mu_g = loc_g + log_scale_g.exp() * torch.randn(groups, dims, generator=generator)
        log_p = -0.5 * ((mu**2).sum() + ((mu_g - mu) ** 2).sum() + ((x - mu_g[:, None]) ** 2).sum())
        log_q_entropy = log_scale.sum() + log_scale_g.sum()
        (-(log_p + log_q_entropy)).backward()
        optimizer.step()

    return step


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each step's time in ``--rounds`` rounds, the steps taking turns within a round (a
    shared machine's slow spells fall on all of them): per step, the rounds' medians and
    the least of them, the cost of the step with the least disturbance."""
    model = gre.build(G=args.groups, N=args.points, D=args.dims, seed=args.seed)
    rows: list[dict[str, Any]] = []
    for label, family, options in FAMILIES:
        rows.append({"label": label, "family": family,
                     "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}})
    rows.append({"label": "hand-written Gaussian step, eager PyTorch", "family": None, "options": {},
                 "parameters": 2 * args.dims * (args.groups + 1)})
    for _ in range(args.rounds):
        for row, (label, family, options) in zip(rows, FAMILIES):
            stepper = trainer.Trainer.create(model, FitConfig(seed=args.seed, threads=1, family=family,
                                                              family_options=options))
            if stepper.batch_sizes:
                raise SystemExit(f"fit batches GRE at G = {args.groups} ({stepper.batch_sizes}): this benchmark "
                                 "times steps on the plate taken whole")
            row["parameters"] = stepper.state.family.parameter_count()
            row.setdefault("ms_per_step_rounds", []).append(per_step_ms(stepper.step, args.warm_up, args.repeats))
        hand = hand_written_step(args.groups, args.points, args.dims, args.seed)
        rows[-1].setdefault("ms_per_step_rounds", []).append(per_step_ms(hand, args.warm_up, args.repeats))
    for row in rows:
        row["ms_per_step"] = min(row["ms_per_step_rounds"])
        print(f"{row['label']}: {row['ms_per_step']:.2f} ms (rounds: "
              + ", ".join(f"{ms:.2f}" for ms in row["ms_per_step_rounds"]) + ")", flush=True)
    return rows


def table(report: dict[str, Any]) -> str:
    """Markdown: each step's time, and its ratio to the hand-written one's."""
    floor = report["rows"][-1]["ms_per_step"]
    lines = ["| step | parameters | ms per step (least of the rounds) | the rounds' medians | vs hand-written |",
             "|---|--:|--:|---|--:|"]
    for row in report["rows"]:
        rounds = " / ".join(f"{ms:.2f}" for ms in row["ms_per_step_rounds"])
        lines.append(f"| {row['label']} | {row['parameters']:,} | {row['ms_per_step']:.2f} | {rounds} | "
                     f"{row['ms_per_step'] / floor:.1f} |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """One bar per step, the target (3 times NumPyro's jitted step) drawn across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.barh([row["label"] for row in rows][::-1], [row["ms_per_step"] for row in rows][::-1], color="tab:blue")
    ax.axvline(report["target_ms"], color="tab:red", linestyle="--",
               label=f"target: 3 x NumPyro's jitted full-batch step = {report['target_ms']:.2f} ms")
    ax.set_xlabel("ms per step (one thread)")
    ax.set_title(f"GRE, G = {report['args']['groups']:,} taken whole: where a step's time goes", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=1000, help="GRE's groups (default 1000)")
    parser.add_argument("--points", type=int, default=10, help="points per group (default 10)")
    parser.add_argument("--dims", type=int, default=2, help="dimensions (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm-up", type=int, default=20, help="steps before the clock starts (default 20)")
    parser.add_argument("--repeats", type=int, default=200, help="steps timed in a round (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the steps taking turns (default 3)")
    parser.add_argument("--numpyro-ms", type=float, default=0.55,
                        help="NumPyro's jitted full-batch step on this machine, ms (default 0.55)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = {"machine": machine_info(("torch",)), "args": {k: str(v) if isinstance(v, Path) else v
                                                            for k, v in vars(args).items()},
              "command": "python benchmarks/step_cost.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "target_ms": 3 * args.numpyro_ms, "rows": measure(args)}
    report["table"] = table(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_cost.json").write_text(json.dumps(report, indent=1))
    plot(report, args.out / "step_cost.png")
    print(report["table"])
    print(f"wrote {args.out / 'step_cost.json'} and {args.out / 'step_cost.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
