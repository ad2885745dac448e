"""How long the detail view takes to redraw after a selection change.

A GRE model with ``G`` groups is fitted briefly (mean-field), its state polled, and a
:class:`~pavi_viz.ui.views.marginals.DetailView` (and optionally a forest of the same
plate) rendered into a Bokeh document, as a served page would be. Each timing runs
from setting ``state.selection`` to the return of the change: by then the view has
computed the densities and written the new data into the document's
``ColumnDataSource`` (what a server then sends to the browser). No browser involved.

Run ``python benchmarks/detail_redraw.py [--groups 1000] [--obs 10] [--repeats 30] [--forest]``;
prints the median, 90th percentile and maximum in milliseconds, and the numbers as
JSON with ``--json PATH``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from bokeh.document import Document

from pavi_viz import examples
from pavi_viz.runner import RunConfig
from pavi_viz.ui.state import DashboardState
from pavi_viz.ui.views.marginals import DENSITY_NAME, DetailView, ForestView


def measure(groups: int, obs: int, repeats: int, forest: bool) -> dict[str, float]:
    config = RunConfig(family="mean-field", steps=100, threads=1, summary_every=50, seed=0)
    state = DashboardState(examples.load("gre", G=groups, N=obs), config=config)
    state.start().wait()
    state.poll()
    state.variable = "mu_g"
    doc = Document()
    views = [DetailView(state)] + ([ForestView(state, variable="mu_g")] if forest else [])
    for view in views:
        doc.add_root(view.__panel__().get_root(doc))
    (source,) = doc.select({"name": DENSITY_NAME})
    rng = np.random.default_rng(0)
    times = []
    for i in range(repeats + 3):
        element = int(rng.integers(groups))
        started = time.perf_counter()
        state.selection = {"group": element}
        elapsed = time.perf_counter() - started
        assert views[0].title == f"mu_g · group {element}" and len(source.data["x"])
        if i >= 3:  # the first redraws warm caches up
            times.append(elapsed * 1000)
    return {"groups": groups, "obs": obs, "forest": forest, "draws": state.draws is not None, "repeats": repeats,
            "median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "max_ms": float(max(times))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--obs", type=int, default=10,
                        help="points per group (G=1000: N=10 is over the runner's limit for draws, so the view "
                             "draws the Normal approximation; N=5 publishes draws, so kernel densities)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--forest", action="store_true", help="also render a forest of the plate (its highlight follows)")
    parser.add_argument("--json", help="write the numbers to this file")
    args = parser.parse_args()
    result = measure(args.groups, args.obs, args.repeats, args.forest)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
