"""The ``pavi-viz`` command line: fit models headless, list and export the bundled
examples, and serve the dashboard.

::

    pavi-viz examples                                   # the bundled examples
    pavi-viz examples gre --option G=200 --out gre.json # one of them as a model file
    pavi-viz fit gre.json --family pavi-e --steps 2000 --out posterior.nc
    pavi-viz fit example:radon --steps 3000 --summary
    pavi-viz runs                                       # the runs recorded in .pavi_viz/runs.db
    pavi-viz serve --port 5006                          # the dashboard (needs pavi-viz[app])

``python -m pavi_viz`` is the same command. Importing this module is cheap: torch and
panel are imported by the commands that need them, so ``--help`` answers at once.

Exit statuses: 0 success; 1 the run failed (training diverged, a file could not be
written, an unexpected error); 2 a usage error (bad options, a missing or malformed
model file, an unknown family, plate or example, a checkpoint for another model);
130 interrupted (Ctrl-C). Errors are one line on stderr naming the culprit; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pavi_viz.inference.importance import ImportanceCheck

PROG = "pavi-viz"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: ``fit MODEL`` names a bundled example with this prefix: ``example:gre``.
EXAMPLE_PREFIX = "example:"
#: Rows of the ``--summary`` table per variable (its first elements).
SUMMARY_ROWS = 10
_FORMATTER = argparse.RawDescriptionHelpFormatter


class CliError(Exception):
    """A failure reported as one line on stderr, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message, self.status = message, status


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line: ``pavi-viz fit: error: ... (see 'pavi-viz fit --help')``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# -- argument types ------------------------------------------------------------------
def _key_value(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return key.strip(), value.strip()


def _batch_entry(text: str) -> tuple[str, int | None]:
    """``PLATE=SIZE`` (``PLATE=all`` takes the plate whole)."""
    plate, size = _key_value(text, "PLATE=SIZE (e.g. --batch group=64)")
    if size.lower() in ("all", "whole"):
        return plate, None
    try:
        number = int(size)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the batch size of plate {plate!r} must be a whole number or 'all', not {size!r}"
        ) from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the batch size of plate {plate!r} must be at least 1")
    return plate, number


def _option_entry(text: str) -> tuple[str, str]:
    return _key_value(text, "KEY=VALUE (e.g. --option G=200)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _family_option_entry(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``, the value read as a JSON literal when it is one (``hidden=[32,32]``)."""
    key, value = _option_entry(text)
    return key, _literal(value)


def _setting_type(setting: Any) -> Callable[[str], Any]:
    """The converter of a fit setting's text, by the kind of its parameter (``none`` for
    a setting that may be None, ``auto`` for an :class:`~pavi_viz.inference.config.AutoInteger`);
    the value's range is checked by :class:`~pavi_viz.inference.config.FitConfig` itself."""
    import param

    from pavi_viz.inference.config import AutoInteger

    if isinstance(setting, param.Integer | AutoInteger):
        number, kind = int, "a whole number"
    elif isinstance(setting, param.Number):
        number, kind = float, "a number"
    else:
        number, kind = str, "a word"
    words = (["none"] if setting.allow_None else []) + (["auto"] if isinstance(setting, AutoInteger) else [])

    def convert(text: str) -> Any:
        if text.lower() in words:
            return None if text.lower() == "none" else text.lower()
        try:
            return number(text)
        except ValueError:
            alternatives = "".join(f" or '{word}'" for word in words)
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}{alternatives}") from None

    return convert


def _literal(text: str) -> Any:
    """A JSON literal (number, true/false, null, list) when the text is one, else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _convert_option(example: str, key: str, text: str, default: Any) -> Any:
    """``text`` as the type of the example option's default value."""
    try:
        if isinstance(default, bool):
            if text.lower() in ("true", "yes", "1"):
                return True
            if text.lower() in ("false", "no", "0"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kinds = {bool: "true or false", int: "a whole number", float: "a number"}
        kind = kinds.get(type(default), "a number")
        raise CliError(f"option {key}={text!r} of example {example!r} must be {kind}") from None
    return text if isinstance(default, str) else _literal(text)


# -- the parser ----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from pavi_viz import __version__

    parser = _Parser(
        prog=PROG,
        formatter_class=_FORMATTER,
        description="Fit hierarchical plate models with PAVI, headless, and serve the pavi_viz dashboard.",
        epilog=(
            "examples:\n"
            "  pavi-viz examples\n"
            "  pavi-viz examples gre --option G=200 --out gre.json\n"
            "  pavi-viz fit gre.json --family pavi-e --steps 2000 --out posterior.nc\n"
            "  pavi-viz runs\n"
            "  pavi-viz serve --port 5006\n\n"
            "'pavi-viz COMMAND --help' describes each command. Exit status: 0 done, 1 the run\n"
            "failed, 2 usage error (options, model file, family...), 130 interrupted."
        ),
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    _add_fit(commands, common)
    _add_examples(commands, common)
    _add_runs(commands, common)
    _add_serve(commands, common)
    return parser


def _add_fit(commands: Any, common: argparse.ArgumentParser) -> None:
    fit = commands.add_parser(
        "fit",
        parents=[common],
        formatter_class=_FORMATTER,
        help="fit a model with PAVI and write the posterior to NetCDF (ArviZ groups)",
        description=(
            "Fit MODEL (a model JSON file, or example:NAME for a bundled example) with\n"
            "pavi_viz.fit, then write the posterior to a NetCDF file of ArviZ groups (posterior,\n"
            "log_likelihood, sample_stats, posterior_predictive, observed_data, constant_data)\n"
            "that xarray.open_datatree (or pavi_viz.inference.load_netcdf) reads back and\n"
            "arviz_stats.loo takes.\n"
            "Ctrl-C stops after the current step and saves the checkpoint when one is asked for."
        ),
        epilog=(
            "examples:\n"
            "  pavi-viz fit model.json --steps 2000 --out posterior.nc\n"
            "  pavi-viz fit model.json --data study.nc --out posterior.nc\n"
            "  pavi-viz fit example:gre --option G=1000 --batch group=64 --steps 3000 --summary\n"
            "  pavi-viz fit example:radon --family mean-field --lr 0.003 --schedule cosine\n"
            "  pavi-viz fit model.json --steps 5000 --checkpoint run.pt --checkpoint-every 500\n"
            "  pavi-viz fit model.json --steps 8000 --resume run.pt --checkpoint run.pt\n"
            "  pavi-viz fit example:gre --option G=100000 --nproc 2 --checkpoint run.pt\n"
            "  torchrun --nnodes 2 --nproc-per-node 4 ... -m pavi_viz fit model.json --checkpoint run.pt\n\n"
            "--steps counts every step of the run: resuming a checkpoint saved at step 5000\n"
            "with --steps 8000 trains 3000 more. The family and its options come from the\n"
            "checkpoint; give the other options as in the first run to continue it exactly.\n\n"
            "On several processes (--nproc, or any torchrun launch) each process trains on a\n"
            "shard of the largest top-level plate (the batched one, if any) and they average\n"
            "their gradients; rank 0 writes the checkpoint, the run store's record and the\n"
            "posterior. A checkpoint resumes on any number of processes. With --data FILE.nc,\n"
            "every process but rank 0 reads its shard of the file alone (where its family\n"
            "trains on a shard: pavi-e's does)."
        ),
    )
    fit.add_argument("model", metavar="MODEL", help="a model JSON file, or example:NAME (see 'pavi-viz examples')")
    fit.add_argument("--option", action="append", type=_option_entry, default=[], metavar="KEY=VALUE",
                     help="an option of the example (example:NAME only; repeatable), e.g. G=200")
    fit.add_argument("--data", default=None, metavar="FILE",
                     help="the data to fit: a CSV or NetCDF (.nc) file whose columns or variables are named "
                          "like the model's plates, observed variables and covariates; it sizes the plates and "
                          "replaces the model's own data. On several processes, each but rank 0 reads its shard "
                          "of a NetCDF file alone")
    _add_fit_settings(fit)
    fit.add_argument("--checkpoint", default=None, metavar="FILE",
                     help="save the training state to FILE at the end (and on Ctrl-C)")
    fit.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="N",
                     help="also save the checkpoint every N steps")
    fit.add_argument("--resume", default=None, metavar="FILE", help="continue the run saved in checkpoint FILE")
    fit.add_argument("--out", default="posterior.nc", metavar="FILE",
                     help="the NetCDF file of the posterior's ArviZ groups (default: %(default)s)")
    fit.add_argument("--draws", type=_positive_int, default=1000,
                     help="posterior draws written (default: %(default)s)")
    fit.add_argument("--summary", action="store_true",
                     help="print each variable's posterior mean, sd and 90%% interval at the end")
    fit.add_argument("--quiet", action="store_true", help="no progress bar and no start-up line")
    fit.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                     help="train on N processes of this machine, data-parallel, through torchrun "
                          "(default: %(default)s)")
    recording = fit.add_mutually_exclusive_group()
    _add_store_option(recording, "record the run in the run store FILE")
    recording.add_argument("--no-store", action="store_true", help="do not record the run in a run store")
    fit.add_argument("--tensorboard", default=None, metavar="DIR",
                     help="also write the run's curves for TensorBoard to a folder of its own in DIR "
                          "(tensorboard --logdir DIR; needs pavi-viz[tensorboard])")
    fit.set_defaults(handler=_run_fit)


def _add_store_option(parser: Any, what: str) -> None:
    from pavi_viz.runner.store_schema import DEFAULT_PATH, PATH_VARIABLE

    parser.add_argument("--store", default=None, metavar="FILE",
                        help=f"{what} (default: ${PATH_VARIABLE}, else {DEFAULT_PATH} in the working folder)")


#: The fit settings that are dicts, read from repeatable options: the option, its
#: metavar, the reader of one entry, and the example of the help text.
_DICT_SETTINGS: dict[str, tuple[str, str, Callable[[str], tuple[str, Any]], str]] = {
    "batch": ("--batch", "PLATE=SIZE", _batch_entry, "repeatable; PLATE=all takes it whole"),
    "family_options": ("--family-option", "KEY=VALUE", _family_option_entry,
                       "repeatable; e.g. flow=nsf, transforms=3, encoding_size=16"),
}


def _add_fit_settings(fit: argparse.ArgumentParser) -> None:
    """One option per setting of :class:`~pavi_viz.inference.config.FitConfig`, its name,
    help text and default read off the setting (``steps`` becomes ``--steps``)."""
    from pavi_viz.inference.config import FitConfig

    group = fit.add_argument_group("fit settings (those of pavi_viz.inference.FitConfig)")
    for name in FitConfig.setting_names():
        setting = FitConfig.param[name]
        default = "none" if setting.default is None else setting.default
        help_text = setting.doc.replace("%", "%%")
        if name in _DICT_SETTINGS:
            option, metavar, entry, example = _DICT_SETTINGS[name]
            group.add_argument(option, dest=name, action="append", type=entry, default=None, metavar=metavar,
                               help=f"{help_text} ({example})")
            continue
        objects = getattr(setting, "objects", None)
        metavar = "{" + ",".join("none" if o is None else str(o) for o in objects) + "}" if objects else None
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_setting_type(setting), default=None,
                           metavar=metavar, help=f"{help_text} (default: {default})")


def _fit_config(args: argparse.Namespace) -> tuple[Any, set[str]]:
    """The :class:`~pavi_viz.inference.config.FitConfig` of the command line's fit
    settings, and the names of those given; a bad value names its option."""
    from pavi_viz.inference.config import FitConfig

    given = {}
    for name in FitConfig.setting_names():
        value = getattr(args, name)
        if value is not None:
            given[name] = dict(value) if name in _DICT_SETTINGS else value
    for name, value in given.items():
        try:
            FitConfig(**{name: value})
        except ValueError as err:
            option = _DICT_SETTINGS[name][0] if name in _DICT_SETTINGS else f"--{name.replace('_', '-')}"
            raise CliError(f"{option}: {_one_line(err)}") from None
    return FitConfig(**given), set(given)


def _add_examples(commands: Any, common: argparse.ArgumentParser) -> None:
    examples = commands.add_parser(
        "examples",
        parents=[common],
        formatter_class=_FORMATTER,
        help="list the bundled examples, or write one as a model file",
        description=(
            "Without NAME: list the bundled example models. With NAME: describe it, or with\n"
            "--out write it (with its data) as a model JSON file that 'pavi-viz fit' reads."
        ),
        epilog=(
            "examples:\n"
            "  pavi-viz examples\n"
            "  pavi-viz examples gre\n"
            "  pavi-viz examples gre --option G=500 --option N=20 --out gre.json\n"
            "  pavi-viz examples radon --out radon.json"
        ),
    )
    examples.add_argument("name", nargs="?", metavar="NAME", help="an example's name")
    examples.add_argument("--option", action="append", type=_option_entry, default=[], metavar="KEY=VALUE",
                          help="an option of the example (repeatable), e.g. G=200")
    examples.add_argument("--out", default=None, metavar="FILE", help="write the example as a model JSON file")
    examples.set_defaults(handler=_run_examples)


def _add_runs(commands: Any, common: argparse.ArgumentParser) -> None:
    runs = commands.add_parser(
        "runs",
        parents=[common],
        formatter_class=_FORMATTER,
        help="list the runs recorded in a run store, or delete some",
        description=(
            "List the runs that 'pavi-viz fit' (and pavi_viz.fit(..., store=...)) recorded in a run\n"
            "store, newest first: id, name, model, family, state, steps, final smoothed ELBO and\n"
            "age. A run whose process ended while it trained (killed, a crash, a reboot) shows\n"
            "as interrupted; 'pavi-viz fit ... --resume CHECKPOINT' takes it up again."
        ),
        epilog=(
            "examples:\n"
            "  pavi-viz runs\n"
            "  pavi-viz runs --store /shared/project/runs.db\n"
            "  pavi-viz runs --delete 3 4\n"
            "  pavi-viz runs --delete-finished"
        ),
    )
    _add_store_option(runs, "the run store")
    deleting = runs.add_mutually_exclusive_group()
    deleting.add_argument("--delete", nargs="+", type=_positive_int, default=None, metavar="ID",
                          help="delete these runs (not those training now), then compact the file")
    deleting.add_argument("--delete-finished", action="store_true",
                          help="delete the runs that finished, then compact the file")
    runs.set_defaults(handler=_run_runs)


#: Where ``pavi-viz serve`` listens by default: this machine only.
LOOPBACK = "127.0.0.1"
#: Addresses that serve this machine alone.
LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")


def _add_serve(commands: Any, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser(
        "serve",
        parents=[common],
        formatter_class=_FORMATTER,
        help="serve the dashboard with panel serve",
        description=(
            "Serve the pavi_viz dashboard with 'panel serve' at http://ADDRESS:PORT/dashboard\n"
            "until Ctrl-C: the app the package ships (pavi_viz/ui/apps/dashboard.py). Needs\n"
            "the 'app' extra: pip install 'pavi-viz[app]'."
        ),
        epilog=(
            "examples:\n"
            "  pavi-viz serve\n"
            "  pavi-viz serve --port 8080 --show\n"
            "  pavi-viz serve --max-steps 20000 --max-particles 16 --max-runs 4           # a workshop's limits\n"
            "  pavi-viz serve --num-procs 2 --max-runs 6    # two processes, 3 runs at once in each\n"
            "  pavi-viz serve --address 0.0.0.0 --allow-websocket-origin myhost:5006   # to a network: see README, Security\n"
            "  pavi-viz serve --store /shared/project/runs.db   # watch the runs of 'pavi-viz fit --store' there\n\n"
            "On loopback (the default address) the sessions record their runs in the run store\n"
            "that 'pavi-viz fit' records in, and its Runs tab lists the store's runs, live and\n"
            "past: watch one in the Fit tab, or tick several to compare them.\n\n"
            "--num-procs N forks N server processes that share the port; each browser session\n"
            "lives in one of them, and each process trains its share of --max-runs (the\n"
            "total divided by N, rounded down, at least 1): a session queued in one process\n"
            "waits for a slot of its own process, even while another has one free."
        ),
    )
    serve.add_argument("--port", type=int, default=5006, help="the port (default: %(default)s)")
    serve.add_argument("--address", default=LOOPBACK,
                       help="the address to listen on (default: %(default)s, this machine only; "
                            "0.0.0.0 serves every network this machine is on)")
    serve.add_argument("--show", action="store_true", help="open the dashboard in a browser")
    serve.add_argument("--allow-websocket-origin", action="append", default=[], metavar="HOST[:PORT]",
                       help="a host allowed to connect (repeatable), needed when served to other machines")
    serve.add_argument("--num-procs", type=_positive_int, default=1, metavar="N",
                       help="server processes sharing the port (Bokeh forks them; not on Windows), each with its "
                            "own share of --max-runs (default: %(default)s)")
    serve.add_argument("--basic-auth", default=None, metavar="PASSWORD_OR_FILE",
                       help="ask every browser for this password (or the users and passwords of this JSON "
                            "file) before the dashboard opens: Panel's basic authentication")
    limits = serve.add_argument_group("limits of every session (see README, Workshop)")
    limits.add_argument("--max-steps", type=_positive_int, default=None, metavar="N",
                        help="the most steps a run may train (default: pavi_viz's own bound, 10,000,000)")
    limits.add_argument("--max-particles", type=_positive_int, default=None, metavar="N",
                        help="the most particles a run may ask for (default: as many as a step's memory bound "
                             "allows)")
    limits.add_argument("--max-simulated", type=_positive_int, default=None, metavar="N",
                        help="the most numbers the builder's Simulate may draw (default: 50,000,000)")
    limits.add_argument("--max-runs", type=_positive_int, default=None, metavar="N",
                        help="the most runs that train at once, all sessions of all --num-procs processes "
                             "together, each process taking an equal share (rounded down, at least 1); the "
                             "others wait their turn (default: the CPUs this process may use but one, at least 1)")
    recording = serve.add_mutually_exclusive_group()
    _add_store_option(recording, "record the sessions' runs in the run store FILE, and list its runs (the Runs "
                                 "tab) to watch or compare them; on loopback the default store is used, on other "
                                 "addresses only the one named here")
    recording.add_argument("--no-store", action="store_true",
                           help="neither record the sessions' runs nor list stored runs")
    serve.set_defaults(handler=_run_serve)


# -- main ----------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --nproc's processes are given
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.handler(args)
    except CliError as err:
        if args.debug:
            raise
        _error(args, err.message)
        return err.status
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"\n{PROG} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # one line, not a traceback (--debug shows it)
        if args.debug:
            raise
        _error(args, f"{type(err).__name__}: {_one_line(err)} (--debug shows the traceback)")
        return EXIT_FAILURE


def _error(args: argparse.Namespace, message: str) -> None:
    # One write: the processes of a data-parallel run share the terminal.
    sys.stderr.write(f"{PROG} {args.command}: error: {message}\n")
    sys.stderr.flush()


def _one_line(err: BaseException) -> str:
    """The error's message on one line (several problems joined with '; ')."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    lines = [line.strip().lstrip("- ").strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return lines[0] + " " + "; ".join(lines[1:])
    return "; ".join(lines)


# -- models --------------------------------------------------------------------------
def _load_example(name: str, options: Sequence[tuple[str, str]]) -> Any:
    from pavi_viz import examples

    if name not in examples.list():
        raise CliError(f"unknown example {name!r}; the examples are: {', '.join(examples.list())}")
    defaults = examples.options(name)
    values: dict[str, Any] = {}
    for key, text in options:
        if key not in defaults:
            takes = ", ".join(defaults) if defaults else "no options"
            raise CliError(f"example {name!r} has no option {key!r}; it takes: {takes}")
        values[key] = _convert_option(name, key, text, defaults[key])
    try:
        return examples.load(name, **values)
    except (TypeError, ValueError) as err:
        raise CliError(f"example {name!r}: {_one_line(err)}") from err


def _load_model(source: str, options: Sequence[tuple[str, str]]) -> Any:
    """The model named on the command line: a JSON file or ``example:NAME``."""
    if source.startswith(EXAMPLE_PREFIX):
        return _load_example(source[len(EXAMPLE_PREFIX):], options)
    if options:
        raise CliError(f"--option applies to bundled examples (example:NAME), not to the model file {source!r}")
    path = Path(source)
    if not path.exists():
        hint = " (an example is named example:NAME; 'pavi-viz examples' lists them)" if ":" not in source else ""
        raise CliError(f"no model file {source!r}{hint}")
    if not path.is_file():
        raise CliError(f"model {source!r} is not a file")
    from pavi_viz.model import ModelError, PlateModel

    try:
        return PlateModel.from_json(path)
    except ModelError as err:
        raise CliError(f"model file {source!r}: {_one_line(err)}") from err


def _open_data(path: str, model: Any) -> Any:
    """The data file of --data, opened for ``model`` (a NetCDF file's arrays stay on disk)."""
    from pavi_viz.model import ModelError
    from pavi_viz.model.datafile import DataFile

    try:
        return DataFile.open(model, path)
    except ModelError as err:
        raise CliError(f"--data: {_one_line(err)}") from err


def _describe(model: Any) -> str:
    plates = ", ".join(f"{p.name}: {p.size}" for p in model.plates)
    return f"model {model.name!r} ({plates})" if plates else f"model {model.name!r}"


# -- fit -----------------------------------------------------------------------------
def _run_fit(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _check_fit_arguments(args, out)
    from pavi_viz.inference.distributed import ReplicaLost, Replicas, replica_device, world_size

    if args.nproc > 1 and world_size() == 1:
        return _launch_replicas(args)
    config, given = _fit_config(args)
    model = _load_model(args.model, args.option)
    data = _open_data(args.data, model) if args.data else None

    from pavi_viz.inference import CheckpointError, DivergenceError
    from pavi_viz.inference.threads import use_threads
    from pavi_viz.inference.trainer import Trainer
    from pavi_viz.inference.training import ERROR, INTERRUPTED, ProgressBar
    from pavi_viz.model import ModelError

    replicas = None
    labels = None  # the data file's labels of the plates' elements
    try:
        if world_size() > 1:
            config = config.copy(device=replica_device(config.device))
            replicas = Replicas.join(config.device)
            if not replicas.leader:  # rank 0 speaks for the run and writes its files
                args.quiet, args.no_store, args.tensorboard = True, True, None
        source = model
        if data is not None:
            if replicas is None or replicas.leader:  # it evaluates the whole model: it reads the whole file
                attached = data.attach()
                source = model = attached.model
                labels = attached.labels
            else:
                source = data
        trainer = Trainer.create(source, config, resume=args.resume,
                                 family_given=bool(given & {"family", "family_options"}), replicas=replicas)
    except (CheckpointError, ModelError, ValueError, ReplicaLost) as err:
        raise CliError(_one_line(err)) from err
    part = trainer.state.model.part
    if replicas is not None and trainer.shard is not None:
        shard = trainer.shard
        held = ""
        if part is not None:
            held = f", read alone from {args.data}" if data is not None else ", held alone"
        # One write: the processes share the terminal (print's line and its end are two).
        sys.stderr.write(f"rank {replicas.rank} of {replicas.size} (process {os.getpid()}): elements {shard.start} "
                         f"to {shard.stop - 1} of plate {shard.plate!r}{held}\n")
        sys.stderr.flush()
    if part is not None:
        model = None  # the whole data go: this process trains on its shard, and writes nothing
    state, config = trainer.state, trainer.config
    first, trained_before = state.step, state.elapsed
    if not args.quiet:
        start = f"resuming the run in {args.resume} at step {first}" if args.resume else f"fitting {config.family}"
        print(f"{_describe(model)}: {start}, up to step {config.steps}, on {state.model.device}", flush=True)
    # TensorBoard's log first: a missing package fails before the store records a run.
    board = _open_tensorboard(args, state)
    log = _open_log(args, model, state)
    sinks = [sink for sink in (board, log) if sink is not None]

    # Ctrl-C ends the loop after the current step (the run's state is then whole, and
    # the checkpoint is saved); a second Ctrl-C quits at once. In a run of several
    # processes, one that heard it stops them all; another's own Ctrl-C, which torchrun
    # passes on a moment later, is then its first, not its second.
    heard: list[bool] = []  # this process's Ctrl-C
    interrupted: list[bool] = []  # this one's or another process's

    def on_interrupt(signum: int, frame: Any) -> None:
        if heard:
            raise KeyboardInterrupt
        heard.append(True)
        interrupted[:] = [True]
        print(f"\n{PROG} fit: stopping after step {state.step + 1} (Ctrl-C again to quit at once)",
              file=sys.stderr, flush=True)

    def stopping() -> bool:
        """Whether to stop before the next step: Ctrl-C here, or on any process of the run.
        In a run of several processes, only what they agreed on counts: a Ctrl-C heard
        after the agreement is agreed on before the next step (a process that stopped on
        its own flag alone, heard during the agreement, left the others in their next
        step's collectives, where they lost it)."""
        if replicas is None:
            return bool(interrupted)
        agreed = bool(replicas.ranks_where(bool(interrupted), state.step, state.model.device))
        if agreed:
            interrupted[:] = [True]  # every process stops after the same step
        return agreed

    previous = signal.signal(signal.SIGINT, on_interrupt)
    if replicas is not None:
        # A system call that the signal lands in (a collective's socket read) resumes,
        # rather than failing as interrupted: only the handler's flag stops the run.
        signal.siginterrupt(signal.SIGINT, False)
    try:
        with use_threads(trainer.threads), ProgressBar(state, not args.quiet) as bar:
            while not trainer.done and not stopping():
                trainer.step()
                for sink in sinks:
                    sink.step(state)
                bar.update(state)
                if args.checkpoint_every and state.step % args.checkpoint_every == 0 and not trainer.done:
                    trainer.save(args.checkpoint)
    except DivergenceError as err:
        saved = ""
        if trainer.restore_last_good() > first and args.checkpoint:
            trainer.save(args.checkpoint)
            saved = f" The last good state (step {state.step}) is saved in {args.checkpoint}."
        _end_logs(sinks, state, "diverged", err.reason)
        raise CliError(err.reason + saved, EXIT_FAILURE) from err
    except ReplicaLost as err:
        _end_logs(sinks, state, ERROR, str(err))
        last = f"; the last checkpoint, {args.checkpoint}, stays loadable" if args.checkpoint else ""
        raise CliError(f"{err}{last}", EXIT_FAILURE) from err
    except KeyboardInterrupt:
        _end_logs(sinks, state, INTERRUPTED, f"interrupted at step {state.step} (Ctrl-C twice)")
        last = ""
        if args.checkpoint and Path(args.checkpoint).is_file() and state.step > 0:
            last = f"; the last checkpoint in {args.checkpoint} is older: resume it with --resume {args.checkpoint}"
        raise CliError(f"interrupted at step {state.step}, nothing saved{last}", EXIT_INTERRUPTED) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    state.finished = True
    if args.checkpoint:
        trainer.save(args.checkpoint)
    leads = replicas is None or replicas.leader  # this process speaks for the run and writes its files

    history = state.history
    if interrupted:  # every process of a run stops (and writes no posterior) together
        if replicas is not None:
            replicas.leave()
        if not leads:
            return 0
        message = f"interrupted at step {state.step} of {config.steps}"
        _end_logs(sinks, state, INTERRUPTED, f"{message} (Ctrl-C)")
        if args.checkpoint:
            command = [PROG, "fit", args.model, "--resume", args.checkpoint, "--steps", str(config.steps),
                       "--checkpoint", args.checkpoint]
            message += (f"; the checkpoint is saved in {args.checkpoint}. Resume with: "
                        f"{shlex.join(command)} (and this run's other options)")
        else:
            message += "; nothing saved (--checkpoint FILE makes a run resumable)"
        print(f"{PROG} fit: {message}", file=sys.stderr)
        return EXIT_INTERRUPTED

    if leads:
        if trainer.converged:
            print(f"converged at step {state.step} (at most {config.steps}) in {state.elapsed - trained_before:.1f} "
                  f"s: the ELBO stopped improving at the schedule's smallest learning rate")
        elif trainer.early_stopped:
            print(f"stopped early at step {state.step} of {config.steps}: the smoothed ELBO did not improve "
                  f"for {config.early_stopping} steps")
        elif state.step > first:
            print(f"trained steps {first + 1} to {state.step} of {config.steps} in "
                  f"{state.elapsed - trained_before:.1f} s")
        else:
            print(f"nothing to train: the run is at step {state.step}, --steps is {config.steps}")
        if history:
            print(f"final ELBO: {state.smoothed_elbo:.6g} (smoothed; last estimate {history.elbo[-1]:.6g})")
        if args.checkpoint:
            print(f"checkpoint: {args.checkpoint} (step {state.step})")

    try:
        written = _write_posterior(out, trainer, replicas, labels, args.draws)
    except OSError as err:
        _end_logs(sinks, state, ERROR, f"cannot write {out}: {err.strerror or err}")
        raise CliError(f"cannot write {str(out)!r}: {err.strerror or err}", EXIT_FAILURE) from err
    except ReplicaLost as err:
        _end_logs(sinks, state, ERROR, str(err))
        raise CliError(f"drawing the posterior: {err}", EXIT_FAILURE) from err
    finally:
        if replicas is not None:
            replicas.leave()
    if written is None:  # a process other than rank 0: its share of the draws is sent
        return 0
    posterior, tree = written
    names = ", ".join(posterior.model.latent_names)
    print(f"wrote {args.draws} posterior draws of {names} to {out}")
    # The check the draws made: the same n, seed and correction reuse their pool.
    check = posterior.importance_check(n=args.draws, seed=config.seed)
    if check is not None:
        print(_describe_check(check))
    # The statistics of the draws written (not drawn again).
    summary = posterior.summary_of(tree) if args.summary or log is not None else None
    if board is not None:
        board.end(state, trainer.stop_reason)
    if log is not None:
        log.end(state, trainer.stop_reason, summary=summary, posterior=out,
                pareto_k=None if check is None else check.pareto_k)
    if args.summary:
        print(_summary_table(summary, out))
    return 0


def _write_posterior(out: Path, trainer: Any, replicas: Any, labels: Any, draws: int) -> Any:
    """Write the posterior's NetCDF file: this process alone, or (a data-parallel run)
    every process drawing its shard's share and rank 0 writing
    (:mod:`~pavi_viz.inference.parallel_posterior`). On the process that wrote it, the
    posterior and the tree it wrote; ``None`` on the others."""
    from pavi_viz.inference import Posterior
    from pavi_viz.inference.parallel_posterior import to_datatree
    from pavi_viz.inference.posterior import netcdf_engine

    state, seed = trainer.state, trainer.config.seed
    if replicas is None:
        posterior = Posterior(state.model, state.family, coords=labels)
        drawn = posterior, posterior.to_datatree(draws, seed=seed)
    else:
        drawn = to_datatree(state.model, state.family, replicas, trainer.shard, draws, seed, coords=labels,
                            step=state.step)
    if drawn is not None:
        drawn[1].to_netcdf(out, engine=netcdf_engine())
    return drawn


def _launch_replicas(args: argparse.Namespace) -> int:
    """``--nproc N``: the same command on N processes of this machine, started and watched
    by torchrun (PyTorch's launcher: a process that fails ends the others, and its report
    names the rank)."""
    # Without --nproc, which torchrun's parser would take for an abbreviation of its own.
    argv = [a for i, a in enumerate(args.argv)
            if not (a == "--nproc" or a.startswith("--nproc=") or (i and args.argv[i - 1] == "--nproc"))]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
               f"--nproc-per-node={args.nproc}", "-m", "pavi_viz", *argv]
    received: set[int] = set()
    status = _run_passing_signals(command, received=received)
    if status != 0 and received:  # Ctrl-C: each process stopped after the same step and said so
        return EXIT_INTERRUPTED
    if status != 0:
        raise CliError(f"the run on {args.nproc} processes failed (exit status {status}): each process's error, "
                       "and torchrun's report naming the rank that failed first, are above", EXIT_FAILURE)
    return status


def _open_log(args: argparse.Namespace, model: Any, state: Any) -> Any:
    """The run's record in the run store (a :class:`~pavi_viz.runner.FitLog`), or None
    with --no-store. A store named by --store that cannot be used is an error; the
    default one, a warning (the run trains unrecorded)."""
    if args.no_store:
        return None
    from pavi_viz.runner.store import RunStore, StoreError

    try:
        log = RunStore(args.store).open_fit(model, state, checkpoint=args.checkpoint, resume=args.resume,
                                            name=args.model)
    except StoreError as err:
        if args.store is not None:
            raise CliError(f"--store: {err} (--no-store trains without recording the run)") from err
        print(f"{PROG} fit: warning: the run is not recorded: {err}", file=sys.stderr, flush=True)
        return None
    if not args.quiet:
        print(f"recording it as run {log.run_id} in {log.writer.path} ('{PROG} runs' lists the runs)", flush=True)
    return log


def _open_tensorboard(args: argparse.Namespace, state: Any) -> Any:
    """The run's TensorBoard log (a :class:`~pavi_viz.inference.tensorboard.TensorBoardLog`),
    or None without --tensorboard."""
    if args.tensorboard is None:
        return None
    from pavi_viz.inference.tensorboard import TensorBoardLog

    try:
        board = TensorBoardLog(args.tensorboard, state)
    except (ImportError, OSError) as err:
        raise CliError(f"--tensorboard: {_one_line(err)}", EXIT_FAILURE) from err
    if not args.quiet:
        print(f"writing its curves for TensorBoard to {board.path} (tensorboard --logdir {args.tensorboard})",
              flush=True)
    return board


def _end_logs(logs: Sequence[Any], state: Any, reason: str, message: str) -> None:
    """Record how the run ended in each of its logs (the run store's, TensorBoard's)."""
    for log in logs:
        log.end(state, reason, message)


def _describe_check(check: ImportanceCheck) -> str:
    from pavi_viz.inference.importance import PARETO_K_LIMIT, pareto_k_bound

    head = (f"Pareto k of the importance weights: {check.pareto_k:.2f} "
            f"({check.draws} draws of a defensive mixture of q)")
    if check.reweighted:
        return head + ": the draws were resampled by their weights, which corrects q's bias"
    if check.pareto_k <= PARETO_K_LIMIT:
        return head + f", above {pareto_k_bound(check.draws):.2f}: the draws are q's own, usable but not exact"
    return head + f", above {PARETO_K_LIMIT}: the draws are q's own and may be far off; compare with a reference"


def _check_fit_arguments(args: argparse.Namespace, out: Path) -> None:
    """What can be checked before loading torch and the model."""
    if args.checkpoint_every is not None and not args.checkpoint:
        raise CliError("--checkpoint-every needs --checkpoint FILE")
    if args.resume is not None:
        if not Path(args.resume).is_file():
            raise CliError(f"no checkpoint file {args.resume!r} to resume")
        if not zipfile.is_zipfile(args.resume):  # torch.save writes zip archives
            raise CliError(f"{args.resume!r} is not a pavi_viz checkpoint (a file written by fit --checkpoint)")
    if out.is_dir():
        raise CliError(f"--out {str(out)!r} is a folder; give a file name such as posterior.nc")
    if not out.parent.is_dir():
        raise CliError(f"--out {str(out)!r}: the folder {str(out.parent)!r} does not exist")
    if args.checkpoint and not Path(args.checkpoint).parent.is_dir():
        raise CliError(f"--checkpoint {args.checkpoint!r}: the folder {str(Path(args.checkpoint).parent)!r} "
                       f"does not exist")
    if importlib.util.find_spec("h5netcdf") is None and importlib.util.find_spec("netCDF4") is None:
        raise CliError("writing the posterior's NetCDF file needs h5netcdf: pip install 'pavi-viz[export]'",
                       EXIT_FAILURE)
    if importlib.util.find_spec("arviz_base") is None:
        raise CliError("writing the posterior's ArviZ groups needs arviz-base: pip install 'pavi-viz[export]'",
                       EXIT_FAILURE)


def _summary_table(summary: Any, out: Path) -> str:
    """Posterior mean, sd and quantiles: one row per element, the first few per variable."""
    stats = [str(s) for s in summary["stat"].values]
    rows: list[list[str]] = []
    notes: list[str] = []
    for name, array in summary.data_vars.items():
        dims = [d for d in array.dims if d != "stat"]
        values = array.transpose("stat", *dims).values
        count = int(values[0].size)
        flat = values.reshape(len(stats), count)
        shape = values.shape[1:]
        for k in range(min(count, SUMMARY_ROWS)):
            index = _unravel(k, shape)
            labels = [str(array[d].values[i]) if d in array.coords else str(i) for d, i in zip(dims, index)]
            label = f"{name}[{', '.join(labels)}]" if labels else str(name)
            rows.append([label, *(f"{v:.4g}" for v in flat[:, k])])
        if count > SUMMARY_ROWS:
            notes.append(f"{name}: {count - SUMMARY_ROWS} more elements in {out}")
    header = ["variable", *stats]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    return "\n".join(["", *lines, *notes])


def _unravel(k: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(k % size)
        k //= size
    return tuple(reversed(index))


# -- examples ------------------------------------------------------------------------
def _run_examples(args: argparse.Namespace) -> int:
    from pavi_viz import examples

    if args.name is None:
        if args.out or args.option:
            raise CliError("--out and --option need an example NAME ('pavi-viz examples' lists them)")
        descriptions = examples.describe()
        width = max(map(len, descriptions))
        for name, text in descriptions.items():
            print(f"{name.ljust(width)}  {text}")
        return 0
    model = _load_example(args.name, args.option)
    if args.out is None:
        defaults = examples.options(args.name)
        print(model.summary())
        if defaults:
            print("options: " + ", ".join(f"{k}={v}" for k, v in defaults.items()))
        print(f"write it as a model file: {PROG} examples {args.name} --out {args.name}.json")
        return 0
    out = Path(args.out)
    if out.is_dir() or not out.parent.is_dir():
        raise CliError(f"--out {args.out!r}: not a file in an existing folder")
    try:
        model.to_json(out)
    except OSError as err:
        raise CliError(f"cannot write {args.out!r}: {err.strerror or err}", EXIT_FAILURE) from err
    print(f"wrote example {args.name!r} ({_describe(model)}) to {out}; fit it with: {PROG} fit {shlex.quote(str(out))}")
    return 0


# -- runs ----------------------------------------------------------------------------
def _run_runs(args: argparse.Namespace) -> int:
    from pavi_viz.runner.store import RunStore, StoreError, duration_text

    try:
        store = RunStore(args.store, create=False)
        if args.delete or args.delete_finished:
            deleted = store.delete(args.delete) if args.delete else store.delete_finished()
            listed = f": {', '.join(map(str, deleted))}" if deleted else ""
            print(f"deleted {len(deleted)} run(s) from {store.path}{listed}")
        runs = store.runs()
    except StoreError as err:
        raise CliError(_one_line(err)) from err
    if not runs:
        print(f"no runs in {store.path}")
        return 0
    now = time.time()
    header = ["id", "name", "model", "family", "state", "step", "final ELBO", "age"]
    rows = [[str(r.id), r.name, r.model, r.family, r.state, f"{r.step}/{r.total_steps}", f"{r.smoothed_elbo:.6g}",
             duration_text(now - r.created)] for r in runs]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


# -- serve ---------------------------------------------------------------------------
def dashboard_path() -> Path:
    """The dashboard's script that ``panel serve`` runs, ``pavi_viz/ui/apps/dashboard.py``
    of the installed package (a wheel's, an editable or a conda install's alike), with
    Panel's ``--setup`` script ``warm_up.py`` beside it.

    Found from the ``pavi_viz`` package, not by importing :mod:`pavi_viz.ui.apps`:
    that would import Panel, which ``serve`` looks for itself, to say how to install it.
    """
    from importlib.resources import files

    return Path(str(files("pavi_viz").joinpath("ui", "apps", "dashboard.py")))


def _run_serve(args: argparse.Namespace) -> int:
    app = dashboard_path()
    if not app.is_file() or not app.with_name("warm_up.py").is_file():
        raise CliError(
            f"the dashboard's scripts are not in {app.parent} (dashboard.py and warm_up.py): this install of "
            f"pavi_viz is incomplete; reinstall it: pip install --force-reinstall 'pavi-viz[app]'", EXIT_FAILURE)
    if importlib.util.find_spec("panel") is None:
        raise CliError("the dashboard needs Panel: pip install 'pavi-viz[app]'", EXIT_FAILURE)
    address, port = args.address, args.port
    command = [sys.executable, "-m", "panel", "serve", str(app), "--port", str(port), "--address", address,
               "--setup", str(app.with_name("warm_up.py"))]  # the first visitor does not pay the imports
    if args.show:
        command.append("--show")
    if args.num_procs > 1:
        command += ["--num-procs", str(args.num_procs)]
    local = address in LOCAL_ADDRESSES
    # Bokeh lets browsers in from localhost:PORT alone unless told otherwise; on this
    # machine, 127.0.0.1:PORT is the same page.
    origins = args.allow_websocket_origin or ([f"localhost:{port}", f"127.0.0.1:{port}"] if local else [])
    # Values joined to their flags: a value that starts with "-" (a password, a random
    # secret: one in 64 does) would be read as a flag of its own.
    command += [f"--allow-websocket-origin={origin}" for origin in origins]
    # Session ids signed with a secret of this server's: a link carrying an id someone
    # chose (to join the session it opens) is refused.
    command += ["--session-ids", "signed"]
    env = {**os.environ, "BOKEH_SECRET_KEY": os.environ.get("BOKEH_SECRET_KEY") or secrets.token_urlsafe(32)}
    if args.basic_auth:
        command.append(f"--basic-auth={args.basic_auth}")
        if not os.environ.get("BOKEH_COOKIE_SECRET"):  # Bokeh reads that one itself, and refuses both
            command.append(f"--cookie-secret={secrets.token_urlsafe(32)}")
    env.update(_serve_limits(args).to_environment())
    # Pages are built for the hosts whose websockets are let in (Bokeh's default one alone
    # where none was named).
    from pavi_viz.ui.limits import HOSTS_VARIABLE, STORE_VARIABLE

    env[HOSTS_VARIABLE] = json.dumps(origins or [f"localhost:{port}"])
    env[STORE_VARIABLE] = _serve_store(args, local)
    host = f"[{address}]" if ":" in address else address
    print(f"serving the pavi_viz dashboard at http://{host}:{port}/dashboard (Ctrl-C to stop)", flush=True)
    if not local:
        allowed = ", ".join(origins) if origins else f"localhost:{port} only: add --allow-websocket-origin HOST:{port}"
        print(f"warning: listening on {address}: anyone who can reach this machine on port {port} can open the "
              f"dashboard and start runs on it; browsers may connect from {allowed}", file=sys.stderr, flush=True)
    return _run_passing_signals(command, env)


def _serve_store(args: argparse.Namespace, local: bool) -> str:
    """The run store's file that the served sessions record in and list ("": none).

    On loopback (one person's machine), the default store, as ``pavi-viz fit`` has it:
    runs started in a terminal show in the browser. Served to a network (a workshop),
    only a store named by ``--store``: every session lists the store's runs, and the
    students of a room are not to see one another's by default. The file is checked
    here, so that a bad one fails before the server starts.
    """
    from pavi_viz.runner.store import RunStore, StoreError

    if args.no_store or (args.store is None and not local):
        return ""
    try:
        return str(RunStore(args.store).path.resolve())
    except StoreError as err:
        raise CliError(f"--store: {err} (--no-store serves without a run store)") from err


def _serve_limits(args: argparse.Namespace) -> Any:
    """The :class:`~pavi_viz.ui.limits.ServeLimits` of ``serve``'s flags (each one given),
    for each of the ``--num-procs`` processes: every process keeps its own run slots,
    so each gets an equal share of ``--max-runs`` (rounded down, so that together they
    stay within it, and at least 1)."""
    from pavi_viz.inference.resolve import usable_cpus
    from pavi_viz.ui.limits import ServeLimits

    given = {"steps": args.max_steps, "particles": args.max_particles, "simulated": args.max_simulated}
    total_runs = args.max_runs or max(1, usable_cpus() - 1)
    try:
        return ServeLimits(**{k: v for k, v in given.items() if v is not None},
                           runs=max(1, total_runs // args.num_procs))
    except ValueError as err:
        raise CliError(str(err)) from None


#: The signal that ends a process at once (Windows has no SIGKILL: ``send_signal``
#: terminates the process for any signal but Ctrl events).
_KILL = getattr(signal, "SIGKILL", signal.SIGTERM)
#: Seconds the processes a served child forked have to end after it did, before they
#: are killed: a server process stops its sessions' runs first.
_GROUP_GRACE_SECONDS = 15.0


def _run_passing_signals(command: list[str], env: dict[str, str] | None = None,
                         received: set[int] | None = None) -> int:
    """Run ``command``, passing SIGINT, SIGTERM and SIGHUP on to it; its exit status
    (and, in ``received``, the signals passed on).

    On POSIX the child runs in a session of its own, so that a terminal's Ctrl-C
    reaches it once, through this process, as a ``kill`` of this process does; the
    signals go to its whole process group, the server processes that ``panel serve
    --num-procs`` forks included (signalled alone, its parent dies at once and leaves
    them serving), and this process returns once all of them have ended. A signal
    this process ignores (``nohup``, a background job's SIGINT) stays ignored, by the
    child too. The same signal twice kills them.
    """
    posix = os.name == "posix"
    running: list[subprocess.Popen] = []
    pending: list[int] = []
    received = set() if received is None else received

    def forward(signum: int, frame: Any) -> None:
        if not running:  # not started yet: passed on once it is
            pending.append(signum)
            return
        _signal_process_group(running[0], _KILL if signum in received else signum)
        received.add(signum)

    names = ("SIGINT", "SIGTERM", "SIGHUP") if posix else ("SIGTERM",)
    previous = {}
    for name in names:
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
            previous[number] = signal.signal(number, forward)
    try:
        running.append(subprocess.Popen(command, start_new_session=posix, env=env))
        child = running[0]
        for signum in pending:
            forward(signum, None)
        while True:
            try:
                status = child.wait()
                break
            except KeyboardInterrupt:  # not POSIX: the console's Ctrl-C reached the child too
                continue
    finally:
        if running and running[0].poll() is None:
            _signal_process_group(running[0], _KILL)
            running[0].wait()
        if running and posix:
            _wait_process_group(running[0].pid)
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 128 - status if status < 0 else status


def _signal_process_group(child: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to ``child`` and, on POSIX, to every process of its process group
    (it leads its own session: see :func:`_run_passing_signals`)."""
    if os.name != "posix":
        child.send_signal(signum)  # nothing once it has ended
        return
    with contextlib.suppress(ProcessLookupError):  # every one of them has ended
        os.killpg(child.pid, signum)


def _wait_process_group(group: int) -> None:
    """Wait for the processes left in process group ``group`` to end (forked servers
    whose parent has ended); kill those still there after :data:`_GROUP_GRACE_SECONDS`."""
    deadline = time.monotonic() + _GROUP_GRACE_SECONDS
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)  # only asks whether one is left
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, _KILL)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
