"""``python -m pavi_viz``: the ``pavi-viz`` command line (see :mod:`pavi_viz.cli`)."""

import sys

from pavi_viz.cli import main

if __name__ == "__main__":
    sys.exit(main())
