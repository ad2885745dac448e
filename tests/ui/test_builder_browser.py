"""The visual builder in a real headless browser, against the served app: a model built by
clicks from an empty page, simulated and fitted; problems shown next to the variable at
fault; model and data files uploaded, malformed ones refused.

Everything is read from the page: the widgets' values and texts, the diagram's nodes (the
Bokeh data source the page shows), the model file the page downloads. Screenshots of
each step go to ``tests/artifacts/ui/``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from pavi_viz import examples
from pavi_viz.model.tables import model_to_table, write_table

pytestmark = [pytest.mark.ui, pytest.mark.timeout(300)]

NODES = "pavi-diagram-nodes"
ELBO = "pavi-elbo-source"
#: Milliseconds to wait for the server's answer to an action.
ANSWER_MS = 20_000


class Builder:
    """The *Build* tab of one page, driven as a user does."""

    def __init__(self, page) -> None:
        self.page = page
        self.p = page.page

    def open(self) -> Builder:
        self.p.locator(".bk-tab", has_text="Build").click()
        expect(self.p.locator(".pavi-builder-fit button")).to_be_visible(timeout=ANSWER_MS)
        return self

    def find(self, css: str, element: str = "", nth: int = 0):
        return self.p.locator(f".{css} {element}".strip()).nth(nth)

    def click(self, css: str, nth: int = 0) -> None:
        self.find(css, "button", nth).click()

    def type(self, css: str, text: str, nth: int = 0) -> None:
        """Type ``text`` in a text input and press Enter (the value goes to the server)."""
        field = self.find(css, "input", nth)
        field.fill(text)
        field.press("Enter")

    def choose(self, css: str, label: str, nth: int = 0) -> None:
        self.find(css, "select", nth).select_option(label=label)

    def pick_plates(self, *plates: str) -> None:
        """Add plates to the selected variable's (a MultiChoice: click it, click each choice)."""
        self.find("pavi-variable-plates", ".choices").click()
        for plate in plates:
            self.p.locator(".pavi-variable-plates .choices__item--choice", has_text=plate).first.click()
        self.p.keyboard.press("Escape")

    def upload(self, css: str, path: Path) -> None:
        self.find(css, "input[type=file]").set_input_files(str(path))

    def nodes(self, column: str = "name") -> list | None:
        return self.page.shown_column(NODES, column)

    def wait_nodes(self, names: list[str], observed: list[bool] | None = None) -> None:
        """Wait until the diagram draws the variables ``names`` (``observed`` or not)."""
        end = time.monotonic() + ANSWER_MS / 1000
        while self.nodes() != names or (observed is not None and list(map(bool, self.nodes("observed"))) != observed):
            assert time.monotonic() < end, f"the diagram shows {self.nodes()} ({self.nodes('observed')})"
            time.sleep(0.1)

    def add_variable(self, name: str) -> None:
        """Add a variable (it is selected) and rename it ``name``."""
        options = self.p.locator(".pavi-variable-select option")
        count = options.count()
        self.click("pavi-builder-add-variable")
        expect(options).to_have_count(count + 1, timeout=ANSWER_MS)
        expect(self.find("pavi-variable-name", "input")).to_have_value(options.last.inner_text())
        self.type("pavi-variable-name", name)
        expect(self.find("pavi-variable-select", "select")).to_have_value(name, timeout=ANSWER_MS)

    def saved_model(self) -> dict:
        """The model file the page downloads."""
        with self.p.expect_download(timeout=ANSWER_MS) as download:
            self.click("pavi-builder-json-download")
        return json.loads(Path(download.value.path()).read_text())

    def fit_button(self):
        return self.find("pavi-builder-fit", "button")


def test_build_gre_by_clicks_simulate_and_fit(dashboard_server, open_page):
    page = open_page(dashboard_server.url)
    build = Builder(page).open()
    build.click("pavi-builder-new")
    build.wait_nodes([])
    expect(build.p.locator(".pavi-plate-name")).to_have_count(0)
    page.shot("empty")

    for count in (1, 2):
        build.click("pavi-builder-add-plate")
        expect(build.p.locator(".pavi-plate-name")).to_have_count(count, timeout=ANSWER_MS)
    build.type("pavi-plate-name", "group", nth=0)
    build.type("pavi-plate-name", "obs", nth=1)
    expect(build.find("pavi-plate-nested-in", "option", nth=3)).to_have_text("group", timeout=ANSWER_MS)
    build.choose("pavi-plate-nested-in", "group", nth=1)

    build.add_variable("mu")
    build.add_variable("mu_g")
    build.choose("pavi-variable-parent", "mu", nth=0)  # loc: the parent mu
    build.pick_plates("group")
    build.add_variable("x")
    build.click("pavi-variable-kind", nth=1)  # observed
    build.choose("pavi-variable-parent", "mu_g", nth=0)
    build.pick_plates("group", "obs")
    build.wait_nodes(["mu", "mu_g", "x"], observed=[False, False, True])
    expect(build.find("pavi-variable-param", "input", nth=0)).to_have_value("mu_g", timeout=ANSWER_MS)
    page.shot("built")

    saved = build.saved_model()
    assert [(p["name"], p.get("nested_in")) for p in saved["plates"]] == [("group", None), ("obs", "group")]
    variables = {v["name"]: v for v in saved["variables"]}
    assert variables["mu_g"]["params"]["loc"] == "mu" and variables["x"]["params"]["loc"] == "mu_g"
    assert variables["mu_g"]["plates"] == ["group"] and variables["x"]["plates"] == ["group", "obs"]
    assert variables["x"]["observed"] and not variables["mu"].get("observed", False)
    assert build.fit_button().is_disabled()  # valid, but no data yet
    expect(build.find("pavi-builder-status")).to_contain_text("No data yet")

    build.click("pavi-builder-simulate")
    expect(build.fit_button()).to_be_enabled(timeout=ANSWER_MS)
    expect(build.find("pavi-builder-data-info")).to_contain_text("x (10 × 10)")
    page.shot("simulated")

    build.fit_button().click()  # the Fit tab opens on the built model
    expect(page.page.get_by_role("combobox", name="Model")).to_have_value("model (your model)", timeout=ANSWER_MS)
    expect(page.page.get_by_text("plates group (10), obs (10)")).to_be_visible()  # not gre's 100 groups
    page.press("Start")
    page.wait_rows(ELBO, 5)
    page.shot("fitting")
    page.press("Stop")
    expect(page.page.get_by_text("Run:").first).to_contain_text("stopped", timeout=ANSWER_MS)
    assert page.errors == [], "\n".join(page.errors)


def test_problems_show_next_to_the_variable_at_fault_and_fit_waits(dashboard_server, open_page):
    page = open_page(dashboard_server.url)
    build = Builder(page).open()
    problems = build.find("pavi-variable-problems")
    expect(build.fit_button()).to_be_enabled()
    expect(problems).to_be_hidden()

    build.type("pavi-variable-param", "mu_g", nth=0)  # mu's loc from its own child: a cycle
    expect(problems).to_contain_text("cycle", timeout=ANSWER_MS)
    expect(build.fit_button()).to_be_disabled()
    expect(build.find("pavi-builder-problems")).to_contain_text("mu -> mu_g -> mu")
    page.shot("cycle")
    build.click("pavi-builder-undo")
    expect(problems).to_be_hidden(timeout=ANSWER_MS)
    expect(build.find("pavi-variable-param", "input", nth=0)).to_have_value("0.0")
    expect(build.fit_button()).to_be_enabled()

    x, y = page.point_at(NODES, 1)  # a click on mu_g opens it
    page.page.mouse.click(x, y)
    expect(build.find("pavi-variable-name", "input")).to_have_value("mu_g", timeout=ANSWER_MS)
    build.type("pavi-variable-param", "-1", nth=1)  # a negative scale
    expect(problems).to_contain_text("'scale' of 'mu_g' must be positive", timeout=ANSWER_MS)
    expect(build.fit_button()).to_be_disabled()
    page.shot("negative-scale")
    build.type("pavi-variable-param", "0.5", nth=1)
    expect(problems).to_be_hidden(timeout=ANSWER_MS)
    expect(build.fit_button()).to_be_enabled()
    assert page.errors == [], "\n".join(page.errors)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Files to upload: a model (radon), data for GRE (small and large), malformed ones, one
    with 40,000 columns and one too large to send."""
    folder = tmp_path_factory.mktemp("uploads")
    files = {
        "radon.json": examples.load("radon").to_json().encode(),
        "gre.csv": write_table(model_to_table(examples.load("gre", G=7, N=3, D=2))),
        "broken.json": b'{"plates": [{"name": "group", "size": 3}',
        "broken.csv": b"county,house,log_radon\n0,0,1.5\n1,1,2.0,9,9\n",  # a row longer than the header
        "huge.csv": b"county,house,log_radon\n" + b"0,0,1.5\n" * (15 * 2**20 // 8 - 3),
        "wide.csv": (",".join(f"c{i}" for i in range(40_000)) + "\n" + ",".join(["1"] * 40_000) + "\n").encode(),
        # About 9 MB: GRE's data at G = 20,000 (a second to read and attach on this machine).
        "large.csv": write_table(model_to_table(examples.load("gre", G=20_000, N=10, D=2))),
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return {name: folder / name for name in files}


def test_uploads_change_the_model_and_malformed_files_change_nothing(dashboard_server, open_page, files):
    page = open_page(dashboard_server.url)
    build = Builder(page).open()
    message = build.find("pavi-builder-message")

    build.upload("pavi-builder-data-upload", files["gre.csv"])  # data for the model shown (GRE)
    expect(build.find("pavi-builder-data-info")).to_contain_text("x (7 × 3 × 2)", timeout=ANSWER_MS)
    expect(build.find("pavi-plate-size", "input", nth=0)).to_have_value("7")
    expect(build.fit_button()).to_be_enabled()
    page.shot("csv")

    build.upload("pavi-builder-json-upload", files["radon.json"])
    radon = [v.name for v in examples.load("radon").variables]
    build.wait_nodes(radon)
    expect(build.find("pavi-plate-name", "input", nth=1)).to_have_value("house")
    page.shot("json")

    build.upload("pavi-builder-json-upload", files["broken.json"])
    expect(message).to_contain_text("JSON", timeout=ANSWER_MS)
    build.upload("pavi-builder-data-upload", files["broken.csv"])
    expect(message).to_contain_text("broken.csv is not a well-formed CSV file", timeout=ANSWER_MS)
    build.upload("pavi-builder-data-upload", files["huge.csv"])  # never sent: it would close the session
    expect(message).to_contain_text("huge.csv is 15.0 MB; files up to 14 MB", timeout=ANSWER_MS)
    page.shot("malformed")
    assert build.nodes() == radon  # the model stayed
    expect(build.find("pavi-plate-name", "input", nth=1)).to_have_value("house")
    expect(build.fit_button()).to_be_enabled()
    assert page.errors == [], "\n".join(page.errors)


def test_an_upload_never_holds_up_another_session(dashboard_server, open_page, poll_server, files):
    """Uploads are parsed on a worker thread (a 40,000-column file took 30 s on the
    event loop before the column cap): while one session uploads it, the server keeps
    answering everyone else, and the uploader hears why it was refused."""
    other = open_page(dashboard_server.url, "other")  # a second session, polling its run's hub
    page = open_page(dashboard_server.url)
    build = Builder(page).open()
    message = build.find("pavi-builder-message")
    static = f"http://localhost:{dashboard_server.port}/static/js/bokeh.min.js"
    with poll_server(static) as poller:
        start = time.monotonic()
        build.upload("pavi-builder-data-upload", files["wide.csv"])
        expect(message).to_contain_text("wide.csv has 40,000 columns", timeout=ANSWER_MS)
        refused_after = time.monotonic() - start
        poller.wait_requests(10)
    assert poller.failures == [], poller.failures
    # The bounds tell a free event loop (answers in milliseconds, the refusal in about a
    # second) from one held by the parse (30 s) with room for a loaded CI machine: a
    # refusal took 2.2 s under a second test run.
    assert poller.slowest() < 2.0 and refused_after < 10.0, (sorted(poller.seconds)[-3:], refused_after)
    build.upload("pavi-builder-data-upload", files["large.csv"])  # read on the worker thread too
    expect(build.find("pavi-builder-data-info")).to_contain_text("x (20000 × 10 × 2)", timeout=ANSWER_MS)
    expect(build.fit_button()).to_be_enabled()
    page.shot("large")
    assert other.rows(ELBO) == 0 and other.errors == [] and page.errors == [], other.errors + page.errors


#: A script that would run if a user string became markup.
PAYLOAD = "<img src=x onerror=alert(1)>"


def test_script_in_a_models_strings_shows_as_text_and_never_runs(dashboard_server, open_page, tmp_path):
    page = open_page(dashboard_server.url)
    dialogs: list[str] = []
    page.page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    build = Builder(page).open()
    body = page.page.locator("body")

    # A valid model whose name and description carry markup: built, fitted, shown as text.
    model = examples.load("gre", G=4, N=3, D=1)
    model.name, model.description = f"gre{PAYLOAD}", "<script>alert(2)</script>"
    named = tmp_path / "named.json"
    named.write_text(model.to_json())
    build.upload("pavi-builder-json-upload", named)
    # Read on a worker thread: the model is there once its plate sizes show.
    expect(build.find("pavi-plate-size", "input", nth=0)).to_have_value("4", timeout=ANSWER_MS)
    build.wait_nodes([v.name for v in model.variables])
    build.fit_button().click()
    expect(body).to_contain_text(f"gre{PAYLOAD}", timeout=ANSWER_MS)  # the Fit tab's model line
    page.shot("named")

    # A plate named with markup: the builder lists the problem with its name, as text,
    # and offers the plate under that name in the variables' plate choices.
    Builder(page).open()
    hostile = json.loads(examples.load("gre", G=4, N=3, D=1).to_json())
    text = json.dumps(hostile).replace('"group"', json.dumps(f"group{PAYLOAD}"))
    plated = tmp_path / "plated.json"
    plated.write_text(text)
    build.upload("pavi-builder-json-upload", plated)
    expect(body).to_contain_text(f"group{PAYLOAD}", timeout=ANSWER_MS)
    page.shot("plated")
    assert page.page.locator("img[src='x']").count() == 0 and page.page.locator("script", has_text="alert").count() == 0
    assert dialogs == [], dialogs

