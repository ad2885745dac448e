"""The pavi_viz dashboard (placeholder until the live training dashboard lands).

Serve it with ``make app``, or directly::

    panel serve apps/dashboard.py --port 5006    # http://localhost:5006/dashboard

It summarises the embedded default model (``pavi_viz.examples.load("gre")``):
its plates, its variables, and the other example models available.
"""

from __future__ import annotations

import pandas as pd
import panel as pn

from pavi_viz import __version__, examples

DEFAULT_MODEL = "gre"

pn.extension(sizing_mode="stretch_width")


def plates_frame(model) -> pd.DataFrame:
    """One row per plate: its name and size."""
    return pd.DataFrame(
        [{"plate": plate.name, "size": plate.size} for plate in model.plates],
        columns=["plate", "size"],
    )


def variables_frame(model) -> pd.DataFrame:
    """One row per variable: name, distribution, plates, observed or latent."""
    return pd.DataFrame(
        [
            {
                "variable": variable.name,
                "distribution": str(variable.distribution),
                "plates": ", ".join(variable.plates) or "(none)",
                "observed": "observed" if variable.observed else "latent",
            }
            for variable in model.variables
        ],
        columns=["variable", "distribution", "plates", "observed"],
    )


def build(model_name: str = DEFAULT_MODEL) -> pn.template.FastListTemplate:
    """The page: an intro, the default model's tables and the example list."""
    model = examples.load(model_name)
    names = list(examples.list())

    intro = pn.pane.Markdown(
        "The live training dashboard is coming soon: it will show the plate "
        "graph, the ELBO and posterior summaries while PAVI trains.\n\n"
        f"Meanwhile, here is the embedded default model, **{model_name}**."
    )
    tables = pn.Row(
        pn.Column(
            pn.pane.Markdown("### Plates"),
            pn.pane.DataFrame(plates_frame(model), index=False),
        ),
        pn.Column(
            pn.pane.Markdown("### Variables"),
            pn.pane.DataFrame(variables_frame(model), index=False),
        ),
    )
    others = pn.pane.Markdown(
        "### Example models\n\n" + "\n".join(f"- `{name}`" for name in names)
    )
    return pn.template.FastListTemplate(
        title="pavi_viz",
        sidebar=[pn.pane.Markdown(f"pavi_viz {__version__}"), others],
        main=[intro, tables],
    )


if __name__.startswith("bokeh"):  # run by `panel serve`
    build().servable()
elif __name__ == "__main__":  # `python apps/dashboard.py`
    pn.serve({"dashboard": build}, port=5006, show=False)
