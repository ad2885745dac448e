"""Does ``torch.compile`` make a PAVI-E step cheaper on the CPU? Eager against compiled,
side by side in one process, on one thread.

Two measurements, each eager first, then compiled (inductor, from an empty cache: the
first compilation's time is what a user's first fit pays):

* **one flow**: the forward and backward pass of one conditional MAF (PAVI-E's default:
  3 transforms, 64-wide conditioners) over ``--rows`` rows, GRE's group block at
  G = 10^3 (2 features, 18 context numbers);
* **the ELBO of a step**: :func:`pavi_viz.inference.objective.elbo` compiled inside
  :meth:`~pavi_viz.inference.trainer.Trainer.step` on GRE at ``--groups`` groups, taken
  whole (``fit``'s defaults), with the graph breaks torch reports.

Writes ``OUT/step_compile.json``::

    python benchmarks/step_compile.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

# A fresh compilation cache: inductor keeps its kernels on disk, and a second process
# would compile from them in seconds. Set before torch reads it.
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")

import torch  # noqa: E402

from pavi_viz.examples import gre  # noqa: E402
from pavi_viz.inference import objective, trainer  # noqa: E402
from pavi_viz.inference.config import FitConfig  # noqa: E402
from pavi_viz.inference.flows import make_flow  # noqa: E402


def per_call_ms(call: Any, repeats: int) -> float:
    """Milliseconds a call of ``call()`` takes, on average over ``repeats`` after three."""
    for _ in range(3):
        call()
    began = time.perf_counter()
    for _ in range(repeats):
        call()
    return 1000 * (time.perf_counter() - began) / repeats


def flow_pass(rows: int, repeats: int) -> dict[str, Any]:
    """One flow's forward and backward pass, eager and compiled."""
    flow = make_flow("maf", features=2, context=18)
    context, noise = torch.randn(rows, 18), torch.randn(rows, 2)

    def draw(context: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, ladj = flow(context).transform.inv.call_and_ladj(noise)
        return x, ladj

    def step(function: Any) -> None:
        x, ladj = function(context, noise)
        (x.sum() + ladj.sum()).backward()

    eager = per_call_ms(lambda: step(draw), repeats)
    compiled = torch.compile(draw, dynamic=False)
    began = time.perf_counter()
    step(compiled)
    compile_seconds = time.perf_counter() - began
    return {"rows": rows, "eager_ms": eager, "compiled_ms": per_call_ms(lambda: step(compiled), repeats),
            "compile_seconds": compile_seconds}


def elbo_step(groups: int, repeats: int) -> dict[str, Any]:
    """A training step with its ELBO eager, then compiled, on fresh trainers of one seed."""
    model = gre.build(G=groups, N=10, D=2)
    eager_trainer = trainer.Trainer.create(model, FitConfig(seed=0, threads=1))
    eager = per_call_ms(eager_trainer.step, repeats)
    breaks: list[str] = []
    torch._dynamo.reset()
    compiled_trainer = trainer.Trainer.create(model, FitConfig(seed=0, threads=1))
    original = trainer.elbo
    trainer.elbo = torch.compile(objective.elbo, dynamic=False)
    try:
        began = time.perf_counter()
        compiled_trainer.step()
        compile_seconds = time.perf_counter() - began
        compiled = per_call_ms(compiled_trainer.step, repeats)
        explained = torch._dynamo.explain(objective.elbo)(
            compiled_trainer.state.model, compiled_trainer.state.family, compiled_trainer.state.model.frame(),
            compiled_trainer.particles, torch.Generator().manual_seed(0))
        breaks = sorted({str(reason.reason).splitlines()[0] for reason in explained.break_reasons})
        graphs = explained.graph_count
    finally:
        trainer.elbo = original
    return {"groups": groups, "eager_ms": eager, "compiled_ms": compiled, "compile_seconds": compile_seconds,
            "graphs": graphs, "graph_breaks": breaks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows of the flow's pass (default 1000)")
    parser.add_argument("--groups", type=int, default=1000, help="GRE's groups for the step (default 1000)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = {"torch": torch.__version__, "threads": 1, "flow": flow_pass(args.rows, args.repeats),
              "step": elbo_step(args.groups, args.repeats)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_compile.json").write_text(json.dumps(report, indent=1))
    for part in ("flow", "step"):
        r = report[part]
        print(f"{part}: eager {r['eager_ms']:.2f} ms, compiled {r['compiled_ms']:.2f} ms "
              f"(ratio {r['compiled_ms'] / r['eager_ms']:.2f}), compiling took {r['compile_seconds']:.1f} s")
    print(f"step graph breaks: {report['step']['graph_breaks']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
