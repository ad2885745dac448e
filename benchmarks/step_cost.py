"""Where a training step's time goes on the CPU: GRE at G = 10^3 taken whole, one thread.

Side by side in one process, in ``--rounds`` rounds where they take turns, each the
median of ``--repeats`` steps after ``--warm-up`` (the least of the rounds' is reported):

* ``Trainer.step`` of PAVI-E with ``fit``'s defaults (three transforms, 64-wide
  conditioners), then with smaller flows (the arithmetic of the flows shrinks, the number
  of operations a step makes hardly does);
* ``Trainer.step`` of mean-field (no flows: the trainer's and the model's own cost);
* a hand-written step in plain eager PyTorch: Gaussian draws of ``mu`` and ``mu_g``, GRE's
  log joint, backward and Adam, no trainer and no flows: eager PyTorch's floor on this
  model;
* the peer: NumPyro's ``AutoNormal`` full-batch step at its best, ``svi.update`` in a
  ``lax.fori_loop`` under ``jax.jit`` (what ``SVI.run`` does), its time per step the
  loop's over ``--repeats`` steps. The target is a PAVI-E step within 3 times it; the
  plot draws it across.

JAX runs on one thread (``benchmarks/peers.py``'s environment, set before JAX loads).
Needs the ``bench`` extra (numpyro, matplotlib). Writes ``OUT/step_cost.json`` and
``OUT/step_cost.png``; prints a markdown table::

    python benchmarks/step_cost.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import machine_info  # noqa: E402
from peers import CHILD_ENV, gre_constants, numpyro_gre  # noqa: E402

from pavi_viz.examples import gre  # noqa: E402
from pavi_viz.inference import trainer  # noqa: E402
from pavi_viz.inference.config import FitConfig  # noqa: E402

#: The peer's row, and the target: a PAVI-E step within this many times the peer's.
PEER = "NumPyro AutoNormal, full batch, jitted loop"
TARGET_RATIO = 3.0
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


def products_of_a_step(stepper: trainer.Trainer) -> list[tuple[int, int, int]]:
    """The matrix products of one training step: ``(rows, inputs, outputs)`` of every
    call of a linear layer of the family (flows' conditioners, encoder), read by hooks
    during one step."""
    shapes: list[tuple[int, int, int]] = []

    def record(layer: torch.nn.Linear, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        shapes.append((inputs[0].numel() // layer.in_features, layer.in_features, layer.out_features))

    hooks = [m.register_forward_hook(record) for m in stepper.state.family.modules() if isinstance(m, torch.nn.Linear)]
    try:
        stepper.step()
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def products_alone(shapes: list[tuple[int, int, int]]) -> Callable[[], None]:
    """The step's matrix products and nothing else: for each layer call, the forward
    product and the backward pass's two (the gradients of its input and of its weight),
    on random operands of the same shapes. No implementation of the same family can
    take less than these on this machine's matrix library: a floor under the step."""
    operands = [(torch.randn(rows, inputs), torch.randn(outputs, inputs), torch.randn(rows, outputs))
                for rows, inputs, outputs in shapes]

    def products() -> None:
        for x, weight, gradient in operands:
            torch.mm(x, weight.t())
            torch.mm(gradient, weight)
            torch.mm(gradient.t(), x)

    return products


def numpyro_step(groups: int, points: int, dims: int, seed: int, repeats: int) -> Callable[[], float]:
    """NumPyro's AutoNormal step on GRE, full batch and jitted: a call runs ``repeats``
    steps in one ``lax.fori_loop`` and gives the milliseconds a step took."""
    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    model = gre.build(G=groups, N=points, D=dims, seed=seed)
    xt = jnp.asarray(model.data["x"].numpy().transpose(1, 0, 2))  # (N, G, D), as peers.py has it
    numpyro_model = numpyro_gre(gre_constants(model), centred=True)
    svi = SVI(numpyro_model, AutoNormal(numpyro_model), numpyro.optim.Adam(0.05), Trace_ELBO())
    held = {"state": svi.init(jax.random.PRNGKey(seed), xt)}

    # The data an argument, not a constant of the closure: XLA's step is then faster
    # (0.31 against 0.47 ms here), and peers.py passes it so too.
    @jax.jit
    def loop(state: Any, xt: Any) -> tuple[Any, Any]:
        return jax.lax.fori_loop(0, repeats, lambda i, c: svi.update(c[0], xt), (state, jnp.zeros(())))

    jax.block_until_ready(loop(held["state"], xt))  # compiled here, not on the clock

    def timed() -> float:
        began = time.perf_counter()
        held["state"], _ = jax.block_until_ready(loop(held["state"], xt))
        return 1000 * (time.perf_counter() - began) / repeats

    return timed


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
    rows.append({"label": PEER, "family": None, "options": {}, "parameters": 2 * args.dims * (args.groups + 1)})
    peer = numpyro_step(args.groups, args.points, args.dims, args.seed, args.repeats)
    for round_ in range(args.rounds):
        for row, (label, family, options) in zip(rows, FAMILIES):
            stepper = trainer.Trainer.create(model, FitConfig(seed=args.seed, threads=1, family=family,
                                                              family_options=options))
            if stepper.batch_sizes:
                raise SystemExit(f"fit batches GRE at G = {args.groups} ({stepper.batch_sizes}): this benchmark "
                                 "times steps on the plate taken whole")
            row["parameters"] = stepper.state.family.parameter_count()
            row.setdefault("ms_per_step_rounds", []).append(per_step_ms(stepper.step, args.warm_up, args.repeats))
            shapes = products_of_a_step(stepper)
            if not shapes:  # no layers: mean-field
                continue
            if round_ == 0:
                row["products"] = len(shapes)
                row["product_multiply_adds"] = 3 * sum(r * i * o for r, i, o in shapes)
            row.setdefault("products_ms_rounds", []).append(
                per_step_ms(products_alone(shapes), args.warm_up, args.repeats))
        hand = hand_written_step(args.groups, args.points, args.dims, args.seed)
        rows[-2].setdefault("ms_per_step_rounds", []).append(per_step_ms(hand, args.warm_up, args.repeats))
        rows[-1].setdefault("ms_per_step_rounds", []).append(peer())
    for row in rows:
        row["ms_per_step"] = min(row["ms_per_step_rounds"])
        if "products_ms_rounds" in row:
            row["products_ms"] = min(row["products_ms_rounds"])
        print(f"{row['label']}: {row['ms_per_step']:.2f} ms (rounds: "
              + ", ".join(f"{ms:.2f}" for ms in row["ms_per_step_rounds"]) + ")", flush=True)
    return rows


def table(report: dict[str, Any]) -> str:
    """Markdown: each step's time, and its ratio to NumPyro's."""
    peer = report["peer_ms"]
    lines = ["| step | parameters | ms per step (least of the rounds) | the rounds' | vs NumPyro's "
             "| its matrix products alone, ms | vs NumPyro's |",
             "|---|--:|--:|---|--:|--:|--:|"]
    for row in report["rows"]:
        rounds = " / ".join(f"{ms:.2f}" for ms in row["ms_per_step_rounds"])
        products = (f"{row['products_ms']:.2f} | {row['products_ms'] / peer:.1f}" if "products_ms" in row
                    else "none | ")
        lines.append(f"| {row['label']} | {row['parameters']:,} | {row['ms_per_step']:.2f} | {rounds} | "
                     f"{row['ms_per_step'] / peer:.1f} | {products} |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """One bar per step, its matrix products' floor over it, the target (3 times
    NumPyro's jitted step) drawn across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    labels = [row["label"] for row in rows][::-1]
    ax.barh(labels, [row["ms_per_step"] for row in rows][::-1], color="tab:blue", label="the step")
    ax.barh(labels, [row.get("products_ms", 0.0) for row in rows][::-1], color="tab:orange",
            label="its matrix products alone: a floor for that family")
    ax.axvline(report["target_ms"], color="tab:red", linestyle="--",
               label=f"target: {TARGET_RATIO:g} x NumPyro's jitted full-batch step = {report['target_ms']:.2f} ms")
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
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    os.environ.update(CHILD_ENV)  # JAX on one thread, as torch: read when JAX loads
    torch.set_num_threads(1)
    report = {"machine": machine_info(("torch", "jax", "numpyro")),
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "command": "python benchmarks/step_cost.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "rows": measure(args)}
    report["peer_ms"] = report["rows"][-1]["ms_per_step"]
    report["target_ms"] = TARGET_RATIO * report["peer_ms"]
    report["table"] = table(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_cost.json").write_text(json.dumps(report, indent=1))
    plot(report, args.out / "step_cost.png")
    print(report["table"])
    print(f"wrote {args.out / 'step_cost.json'} and {args.out / 'step_cost.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
