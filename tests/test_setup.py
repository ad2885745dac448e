"""The project set-up: headless imports, set-up files in sync, and the
dashboard actually served by ``panel serve`` (what ``pavi-viz serve`` and ``make app`` run)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_LIBS = ("panel", "holoviews", "bokeh")


def _loaded_modules(code: str) -> set[str]:
    """Run ``code`` in a fresh interpreter; return the top-level modules loaded."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


# --- the package is importable headless ------------------------------------------


def test_import_is_headless_and_lazy():
    loaded = _loaded_modules("import pavi_viz; assert pavi_viz.__version__")
    assert "pavi_viz" in loaded
    for lib in DASHBOARD_LIBS:
        assert lib not in loaded, f"`import pavi_viz` imported {lib}"
    assert "torch" not in loaded, "`import pavi_viz` should load the model layer lazily"


def test_model_layer_is_headless():
    loaded = _loaded_modules(
        "import pavi_viz\n"
        "pavi_viz.PlateModel, pavi_viz.Plate, pavi_viz.Variable, pavi_viz.Covariate, pavi_viz.ModelError\n"
        "pavi_viz.examples.list()\n"
    )
    for lib in DASHBOARD_LIBS:
        assert lib not in loaded, f"the model layer or the examples imported {lib}"


def test_lazy_names_resolve():
    import pavi_viz
    import pavi_viz.examples
    import pavi_viz.model

    for name in ("Plate", "Variable", "Covariate", "PlateModel", "ModelError"):
        assert getattr(pavi_viz, name) is getattr(pavi_viz.model, name)
        assert name in dir(pavi_viz)
    assert pavi_viz.examples is sys.modules["pavi_viz.examples"]
    with pytest.raises(AttributeError, match="no_such_name"):
        pavi_viz.no_such_name  # noqa: B018


def test_installed_version_matches_package():
    import pavi_viz

    try:
        installed = metadata.version("pavi-viz")
    except metadata.PackageNotFoundError:
        pytest.skip("pavi-viz is not installed (run `make install`)")
    assert installed == pavi_viz.__version__


# --- the set-up files agree ------------------------------------------------------


#: The Python of environment.yml: the floor.
FLOOR = "3.11"


def _constraints(python: str) -> dict[str, str]:
    """The pins of requirements/constraints.txt that apply on ``python`` ("3.11"):
    some hold only on some versions (``name==version; python_version < "3.12"``)."""
    from packaging.requirements import Requirement

    pins = {}
    for line in (REPO_ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"python_version": python}):
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{line}: constraints pin exact releases"
            name = _normalise(requirement.name)
            assert name not in pins, f"{name} is pinned twice for Python {python}"
            pins[name] = specifier.version
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("python", [FLOOR, "3.12"])
def test_constraints_pin_one_release_per_python(python):
    pins = _constraints(python)
    assert pins["torch"] == "2.13.0", "torch must stay pinned (an unpinned torch pulls CUDA)"
    # arviz-base and arviz-stats 1.x need Python 3.12; 3.11 gets their last 0.x.
    assert pins["arviz-stats"].startswith("0." if python == FLOOR else "1.")
    assert pins["arviz-base"].startswith("0." if python == FLOOR else "1.")


def test_python_floor_is_stated_once_everywhere():
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert f'requires-python = ">={FLOOR}"' in pyproject
    assert f"sys.version_info < ({FLOOR.replace('.', ', ')})" in (REPO_ROOT / "Makefile").read_text()
    assert re.search(rf"^\s*- python={re.escape(FLOOR)}\s*$", (REPO_ROOT / "environment.yml").read_text(), re.M)


def test_environment_yml_matches_constraints():
    pins = _constraints(FLOOR)
    # conda-forge's names of PyPI's packages
    conda_names = {"pytorch": "torch", "playwright-python": "playwright", "python-build": "build"}
    checked = []
    for line in (REPO_ROOT / "environment.yml").read_text().splitlines():
        match = re.fullmatch(r"\s*-\s*([A-Za-z0-9_.-]+)\s*=\s*([0-9][^\s#]*)\s*(#.*)?", line)
        if match and match.group(1) != "python":
            name = conda_names.get(match.group(1), _normalise(match.group(1)))
            assert pins.get(name) == match.group(2), f"{name}: environment.yml and constraints.txt differ"
            checked.append(name)
    assert {"torch", "panel", "arviz-stats", "playwright", "build", "pdoc"} <= set(checked)


def test_every_extra_is_pinned():
    """Every package an extra names has a release pinned for the floor, so that
    make install takes what the tests ran against."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = _constraints(FLOOR)
    named = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    for text in named:
        name = _normalise(Requirement(text).name)
        assert name == "pavi-viz" or name in pins, f"{name} (pyproject.toml) is not pinned in constraints.txt"


# --- the dashboard is served ------------------------------------------------------


@pytest.mark.ui
@pytest.mark.timeout(180)
def test_dashboard_is_served(serve_http):
    served = serve_http(
        lambda port: [sys.executable, "-m", "panel", "serve", "apps/dashboard.py", "--port", str(port)],
        log_name="panel-serve.log",
    )
    assert served.status == 200, f"GET {served.url} -> {served.status}\n{served.log()}"
    # The title is the template's: a script that fails still gets a 200
    # page, but titled "Bokeh Application", with the traceback in the log.
    assert "<title>pavi_viz</title>" in served.html, served.log()
    assert "Traceback" not in served.log()
