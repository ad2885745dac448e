"""Can the fits be trusted? The Pareto k of every bundled example's fit, and of a GLMM's
before and after the structured families.

The Pareto k of the importance ratios ``log p - log q`` of whole draws of the fitted q
(Yao, Vehtari, Simpson & Gelman, 2018, "Yes, but did it work?"; PSIS:
``pavi_viz.inference.importance``) says how close q is to the posterior without a
reference: up to 0.7 it is close, and the posterior's draws are corrected by Pareto
smoothed importance resampling when there are enough of them; above 0.7 q may be far
off. The verdict is the one the dashboard's posterior stamp shows
(``pavi_viz.ui.convergence.Trust``).

Fits every bundled example (``pavi_viz.examples.list()``, default options) with
``pavi_viz.fit``'s defaults, and the logistic GLMM of ``benchmarks/models.py``
(correlated fixed effects) twice: with ``family="mean-field"`` (a factorised family,
the kind PAVI had before its structured families) and with ``fit``'s default family
(structured: it keeps the posterior's dependencies, such as the -0.76 correlation of
the GLMM's ``beta[0]`` and ``beta[1]``). Then ``Posterior.importance_check(n=1000,
seed=0)`` of each fit: Pareto k, effective sample size, draws weighed, resampled or not.

::

    .venv/bin/python benchmarks/pareto_k.py --out benchmarks/results        # 4 to 6 min on 2 cores
    .venv/bin/python benchmarks/pareto_k.py --examples eight_schools radon --glmm-families
    .venv/bin/python benchmarks/pareto_k.py --setting steps=20 --out /tmp/pareto_k   # a quick look

Writes ``pareto_k.json`` (every fit: family asked for and used, steps, stop reason or
divergence, fit and check seconds, the check's numbers and verdict) and prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import fit_settings, machine_info, write_report  # noqa: E402
from models import build_glmm  # noqa: E402

#: ``--glmm-families``: a family name, or this for ``fit``'s default.
DEFAULT_FAMILY = "default"
#: Short words for the table, per verdict of ``pavi_viz.ui.convergence.Trust``.
VERDICTS = {
    "corrected": "trustworthy (PSIS-corrected)",
    "close": "close, uncorrected",
    "far": "q may be far off",
    "unchecked": "not computed",
}


def run(name: str, model: Any, family: str | None, draws: int, seed: int,
        settings: dict[str, Any]) -> dict[str, Any]:
    """One fit of ``model`` (``family`` None: ``fit``'s default) and its importance
    check of ``draws`` draws: the record that ``pareto_k.json`` keeps."""
    import pavi_viz
    from pavi_viz.inference import DivergenceError
    from pavi_viz.ui.convergence import Trust

    record: dict[str, Any] = {"example": name, "family_asked": family, "seed": seed, "settings": settings}
    started = time.perf_counter()
    try:
        result = pavi_viz.fit(model, family, seed=seed, progress=False, **settings)
    except DivergenceError as err:
        record.update(family=family, fit_seconds=time.perf_counter() - started, diverged=err.reason, steps=err.step)
        return record
    record.update(family=result.config.family, fit_seconds=time.perf_counter() - started,
                  steps=result.steps_done, stop_reason=result.stop_reason)
    started = time.perf_counter()
    check = result.posterior.importance_check(n=draws, seed=seed)
    record["check_seconds"] = time.perf_counter() - started
    if check is None:  # the model too large to weigh whole draws of it
        record.update(pareto_k=None, ess=None, draws=None, reweighted=None, verdict=Trust(None).verdict)
        return record
    record.update(pareto_k=check.pareto_k, ess=check.ess, draws=check.draws, reweighted=check.reweighted,
                  verdict=Trust(check.pareto_k, check.draws, check.reweighted).verdict)
    return record


HEADER = ("| example | family | Pareto k | verdict | ESS / draws | steps | fit time |\n"
          "|---|---|--:|---|--:|--:|--:|")


def row(record: dict[str, Any]) -> str:
    """One fit's row of the Markdown table (:data:`HEADER`)."""
    default = " (fit's default)" if record["family_asked"] is None else ""
    head = f"| `{record['example']}` | {record['family']}{default} |"
    if "diverged" in record:
        return f"{head} | diverged at step {record['steps']} | | | {record['fit_seconds']:.1f} s |"
    k = record["pareto_k"]
    shown = "" if k is None else ("∞" if k == math.inf else f"{k:.2f}")
    ess = "" if record["ess"] is None else f"{record['ess']:,.0f} / {record['draws']:,}"
    return (f"{head} {shown} | {VERDICTS[record['verdict']]} | {ess} | {record['steps']:,} "
            f"| {record['fit_seconds']:.1f} s |")


def main(argv: list[str] | None = None) -> int:
    import pavi_viz

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", nargs="*", choices=pavi_viz.examples.list(), default=None,
                        help="bundled examples (default: all of them; none: just the GLMM)")
    parser.add_argument("--glmm-families", nargs="*", default=["mean-field", DEFAULT_FAMILY],
                        help=f"the GLMM's families ('{DEFAULT_FAMILY}': fit's; none: no GLMM)")
    parser.add_argument("--seed", type=int, default=0, help="of each fit and its check")
    parser.add_argument("--draws", type=int, default=1000, help="n of importance_check (the draws asked for)")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=JSON",
                        help="a fit setting other than its default (repeatable), e.g. steps=20")
    parser.add_argument("--out", type=Path, default=None, help="a folder for pareto_k.json")
    args = parser.parse_args(argv)
    settings = fit_settings(args.setting)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "command": " ".join(["benchmarks/pareto_k.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info(), "runs": [],
    }
    # One-off costs of the process (torch's first backward pass) are paid before the
    # clock, so that the first fit's time compares with the others'.
    pavi_viz.fit(build_glmm(), steps=2, progress=False)
    jobs = [(name, lambda name=name: pavi_viz.examples.load(name), None)
            for name in (pavi_viz.examples.list() if args.examples is None else args.examples)]
    jobs += [("glmm", build_glmm, None if family == DEFAULT_FAMILY else family) for family in args.glmm_families]
    for name, build, family in jobs:
        report["runs"].append(run(name, build(), family, args.draws, args.seed, settings))
        print(row(report["runs"][-1]), flush=True)
        if args.out is not None:  # after every fit: an interrupted run keeps what it did
            args.out.mkdir(parents=True, exist_ok=True)
            write_report(report, args.out / "pareto_k.json", started)
    report["table"] = "\n".join([HEADER, *map(row, report["runs"])])
    if args.out is not None:
        write_report(report, args.out / "pareto_k.json", started)
    print(f"\n{report['table']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
