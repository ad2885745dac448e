"""How close ``pavi_viz.fit`` gets to the reference posteriors of the bundled examples
and of the user models (``benchmarks/models.py``).

For each example with a reference (``pavi_viz.examples.reference_summary``: NUTS, see
``benchmarks/references.py``; the user models' in ``benchmarks/references/``) and each
family, fits with ``fit``'s defaults (or the settings given), then compares the
posterior's summary with the reference element by element: the error of the mean in
reference sds, and the ratio of the sds; and records the importance weights' Pareto k
(``Posterior.importance_check``), which says whether the summary's draws were resampled. The bar of the accuracy issue: a mean error
below 0.1 reference sd on average for every latent, and every element's sd ratio
within [0.8, 1.25].

::

    .venv/bin/python benchmarks/accuracy.py --out benchmarks/results        # defaults, seeds 0
    .venv/bin/python benchmarks/accuracy.py --families pavi-e pavi-f mean-field --seeds 0 1 2
    .venv/bin/python benchmarks/accuracy.py --models glmm funnel     # user models only
    .venv/bin/python benchmarks/accuracy.py --models all --examples radon   # all four, and radon

Writes ``accuracy.json`` (every fit: time, steps, stop reason or divergence, and per
latent the mean error and the sd ratios) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

try:  # the sibling scripts: benchmarks/ is on sys.path when this one runs
    from harness import fit_settings
    from references import REFERENCES
except ImportError:  # imported from the repository root
    from benchmarks.harness import fit_settings
    from benchmarks.references import REFERENCES

EXAMPLES = ("eight_schools", "radon", "radon_uranium", "spikes")
#: The user models of benchmarks/models.py, with their references in benchmarks/references/.
USER_MODELS = tuple(name for name, spec in REFERENCES.items() if spec.user)
#: The bar: mean |error| / reference sd per latent, and the range of sd ratios.
MEAN_ERROR_BAR = 0.1
SD_RATIO_RANGE = (0.8, 1.25)


def compare(summary: Any, reference: Any) -> dict[str, dict[str, float]]:
    """Per latent: the mean over its elements of |mean - reference mean| / reference sd,
    and the smallest and largest sd / reference sd."""
    out = {}
    for name in reference.data_vars:
        ref_sd = reference[name].sel(stat="sd").values
        error = np.abs(summary[name].sel(stat="mean").values - reference[name].sel(stat="mean").values) / ref_sd
        ratio = summary[name].sel(stat="sd").values / ref_sd
        out[name] = {"mean_error": float(np.mean(error)), "max_error": float(np.max(error)),
                     "sd_ratio_min": float(np.min(ratio)), "sd_ratio_max": float(np.max(ratio))}
    return out


def passes(latents: dict[str, dict[str, float]]) -> bool:
    low, high = SD_RATIO_RANGE
    return all(v["mean_error"] < MEAN_ERROR_BAR and low <= v["sd_ratio_min"] and v["sd_ratio_max"] <= high
               for v in latents.values())


def load(name: str) -> tuple[Any, Any]:
    """The model ``name`` (a bundled example or a user model) and its reference summary."""
    import pavi_viz

    if name in USER_MODELS:
        return REFERENCES[name].build(name), REFERENCES[name].summary(name)
    return pavi_viz.examples.load(name), pavi_viz.examples.reference_summary(name)


def run(example: str, family: str | None, seed: int, draws: int, settings: dict[str, Any]) -> dict[str, Any]:
    """One fit of ``example`` (``family`` None: ``fit``'s default) with ``settings`` and
    ``seed``, compared with the reference through a summary of ``draws`` draws (seeded
    as the fit): the record that ``accuracy.json`` keeps, and that the accuracy tests
    (tests/inference/test_accuracy*.py) judge."""
    import pavi_viz
    from pavi_viz.inference import DivergenceError

    model, reference = load(example)
    started = time.perf_counter()
    record: dict[str, Any] = {"example": example, "family": family, "seed": seed, "settings": settings}
    try:
        result = pavi_viz.fit(model, family, seed=seed, progress=False, **settings)
    except DivergenceError as err:
        record.update(seconds=time.perf_counter() - started, diverged=err.reason, steps=err.step)
        return record
    posterior = result.posterior
    summary = posterior.summary(n=draws, seed=seed)
    latents = compare(summary, reference)
    check = posterior.importance_check(n=draws, seed=seed)  # the one the summary made
    record.update(seconds=time.perf_counter() - started, steps=result.steps_done, stop_reason=result.stop_reason,
                  latents=latents, passes=passes(latents),
                  pareto_k=None if check is None else check.pareto_k,
                  reweighted=None if check is None else check.reweighted)
    return record


def row(record: dict[str, Any]) -> str:
    head = f"{record['example']:<16} {record['family']:<10} seed {record['seed']}  {record['seconds']:6.1f} s  "
    if "diverged" in record:
        return head + f"DIVERGED at step {record['steps']}"
    worst_error = max(v["mean_error"] for v in record["latents"].values())
    low = min(v["sd_ratio_min"] for v in record["latents"].values())
    high = max(v["sd_ratio_max"] for v in record["latents"].values())
    worst = max(record["latents"], key=lambda k: record["latents"][k]["mean_error"])
    verdict = "meets the bar" if record["passes"] else "misses the bar"
    importance = "" if record["pareto_k"] is None else (
        f", Pareto k {record['pareto_k']:.2f} ({'resampled' if record['reweighted'] else 'q as it is'})")
    return head + (f"worst mean error {worst_error:.2f} sd ({worst}), sd ratios {low:.2f}..{high:.2f}"
                   f"{importance}: {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", nargs="+", choices=EXAMPLES, default=None,
                        help="bundled examples (default: all of them, or none when --models is given)")
    parser.add_argument("--models", nargs="+", choices=[*USER_MODELS, "all"], default=[],
                        help="user models of benchmarks/models.py ('all': the four)")
    parser.add_argument("--families", nargs="+", default=["pavi-e"], help="default: pavi-e (fit's default)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--draws", type=int, default=4000, help="posterior draws of each summary")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=JSON",
                        help="a fit setting other than its default (repeatable), e.g. steps=4000")
    parser.add_argument("--out", type=Path, default=None, help="a folder for accuracy.json")
    args = parser.parse_args(argv)
    settings = fit_settings(args.setting)
    names = list(EXAMPLES) if args.examples is None and not args.models else list(args.examples or [])
    names += list(USER_MODELS) if "all" in args.models else args.models
    records = []
    for example in names:
        for family in args.families:
            for seed in args.seeds:
                records.append(run(example, family, seed, args.draws, settings))
                print(row(records[-1]), flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        command = " ".join(["benchmarks/accuracy.py", *(sys.argv[1:] if argv is None else argv)])
        report = {"command": command, "bar": {"mean_error": MEAN_ERROR_BAR, "sd_ratio": SD_RATIO_RANGE},
                  "runs": records}
        (args.out / "accuracy.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
