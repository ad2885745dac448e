"""Training checkpoints: plain files that ``torch.load(path, weights_only=True)`` reads.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only (no pickled
objects, so loading one never runs code):

* ``model``: the model's name, its *fingerprint* (see :func:`model_fingerprint`) and a
  short description (plate sizes, variable names, data shapes) for error messages;
* ``family``: the family's name, the options it was built with and its ``state_dict``;
* ``optimizer``: the Adam optimizer's ``state_dict``;
* ``step``, ``total_steps`` and the ``history`` (a dict of lists);
* ``rng``: the states of the run's two generators, ``generator`` (the plate batches)
  and ``noise_generator`` (the family's sampling noise), and the device they ran on
  (``generator_device``): with them a resumed run draws the same batches and noise
  as an uninterrupted one;
* ``schedule``: the learning-rate schedule (its name, base rate and length);
* ``training``: the running bookkeeping (smoothed ELBO, early-stopping counters,
  elapsed time) and the settings of the run.

:func:`load_checkpoint` checks that the checkpoint was made for the model at hand
(the same plates, variables, parameters and data shapes; the data values and the
model's name may differ) and rebuilds a :class:`~pavi_viz.inference.state.TrainingState`
that ``fit(..., resume=state)`` continues.

PAVI-E on a batched plate: its whole-data summaries are not saved (they may hold
numbers per plate element); a resumed run makes them anew at its first step, where an
uninterrupted one would use those of its latest refresh, so the two then differ a
little. Every other run resumes bit for bit on the CPU.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pavi_viz.inference.control_variates import USES, entry_shape
from pavi_viz.inference.families import VariationalFamily, check_options, make_family
from pavi_viz.inference.resolve import accumulation_dtype, resolve_device
from pavi_viz.inference.state import History, TrainingState, derived_seed, make_optimizer
from pavi_viz.model.compiled import CompiledModel, seeded

if TYPE_CHECKING:
    from pavi_viz.model.spec import PlateModel

#: The ``format`` entry of every checkpoint, and its version.
CHECKPOINT_FORMAT = "pavi_viz.checkpoint"
CHECKPOINT_VERSION = 3
#: What each version changed, for the message that refuses an older checkpoint.
VERSION_CHANGES = {
    2: "its runs drew their noise from torch's global random state, not from a generator of the run's own",
    3: "its pavi-e families embedded each datum, not the moments of a group's data",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that was made for another model or family."""


# -- model fingerprints -------------------------------------------------------------
def model_description(model: PlateModel | CompiledModel) -> dict[str, Any]:
    """The structure of a model as plain data: what a checkpoint must agree with.

    Plates (sizes, nesting, a hash of ragged memberships), covariates, variables
    (distribution, plates, event shape, parameters as expression text or constants)
    and the shapes of the attached data. Not the data values, nor the model's name or
    description: a family trained on one dataset may be resumed on another of the same
    shape.
    """
    compiled = _as_compiled(model)
    plates = []
    for plate in compiled.plates:
        membership = None
        if plate.membership is not None:
            membership = hashlib.sha256(plate.membership.cpu().numpy().tobytes()).hexdigest()
        plates.append([plate.name, plate.size, plate.parent, membership])
    variables = []
    for name, var in compiled.variables.items():
        params = {
            k: (v.tolist() if isinstance(v, Tensor) else f"expr:{v.text}") for k, v in sorted(var.params.items())
        }
        variables.append([name, var.info.name, list(var.plates), list(var.event_shape), var.observed, params])
    covariates = [
        [name, list(compiled.plates_of(name)), compiled._event_ranks[name]]
        for name in sorted(compiled._plates_of)
        if name not in compiled.variables
    ]
    data = {k: list(v.shape) for k, v in sorted(compiled.data.items())}
    return {"plates": plates, "covariates": covariates, "variables": variables, "data_shapes": data}


def model_fingerprint(model: PlateModel | CompiledModel) -> str:
    """The sha256 of :func:`model_description` as canonical JSON (hex digits)."""
    text = json.dumps(model_description(model), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _as_compiled(model: PlateModel | CompiledModel) -> CompiledModel:
    if isinstance(model, CompiledModel):
        return model
    return model.compile()


def model_entry(compiled: CompiledModel) -> dict[str, Any]:
    return {
        "name": compiled.name,
        "fingerprint": model_fingerprint(compiled),
        "plates": {p.name: p.size for p in compiled.plates},
        "variables": list(compiled.variables),
        "data_shapes": {k: list(v.shape) for k, v in compiled.data.items()},
    }


def check_model(saved: Mapping[str, Any], compiled: CompiledModel, what: str = "checkpoint") -> None:
    """Raise a :class:`CheckpointError` unless ``saved`` (a checkpoint's ``model``
    entry) describes ``compiled``; the message names both models and how they differ."""
    fingerprint = model_fingerprint(compiled)
    if saved.get("fingerprint") == fingerprint:
        return
    here = model_entry(compiled)
    differences = []
    for plate, size in here["plates"].items():
        if plate not in saved.get("plates", {}):
            differences.append(f"plate {plate!r} is not in the checkpoint's model")
        elif saved["plates"][plate] != size:
            differences.append(f"plate {plate!r} has size {size} here, {saved['plates'][plate]} in the {what}")
    gone = [p for p in saved.get("plates", {}) if p not in here["plates"]]
    if gone:
        differences.append(f"the {what}'s model has plate(s) {gone} that this one lacks")
    if list(saved.get("variables", [])) != here["variables"]:
        differences.append(f"variables {here['variables']} here, {list(saved.get('variables', []))} in the {what}")
    for name, shape in here["data_shapes"].items():
        other = saved.get("data_shapes", {}).get(name)
        if other is not None and list(other) != shape:
            differences.append(f"data {name!r} has shape {shape} here, {list(other)} in the {what}")
    if not differences:
        differences.append("their distributions, parameters or data differ")
    raise CheckpointError(
        f"the {what} was made for model {saved.get('name')!r}, not for model {compiled.name!r} "
        f"(fingerprints {str(saved.get('fingerprint'))[:12]} and {fingerprint[:12]}): " + "; ".join(differences)
    )


# -- saving ------------------------------------------------------------------------
def checkpoint_dict(state: TrainingState) -> dict[str, Any]:
    """The plain dict that :func:`save_checkpoint` writes for ``state``."""
    out = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "torch_version": str(torch.__version__),
        "model": model_entry(state.model),
        "family": {
            "name": state.family_name,
            "options": dict(state.family_options),
            "state": state.family.state_dict(),
        },
        "optimizer": {"kind": type(state.optimizer).__name__, "state": state.optimizer.state_dict()},
        "step": int(state.step),
        "total_steps": int(state.total_steps),
        "history": state.history.to_dict(),
        "gradient_tables": [{"variable": name, "use": use, "table": table}
                            for (name, use), table in state.gradient_tables.items()],
        "rng": {
            "generator": state.generator.get_state() if state.generator is not None else None,
            "noise_generator": state.noise_generator.get_state() if state.noise_generator is not None else None,
            "generator_device": str(state.model.device),
        },
        "schedule": {
            "name": state.settings.get("schedule"),
            "lr": float(state.settings.get("lr", state.optimizer.param_groups[0]["lr"])),
            "total_steps": int(state.total_steps),
        },
        "training": {
            "elbo": float(state.elbo),
            "smoothed_elbo": float(state.smoothed_elbo),
            "best_smoothed_elbo": float(state.best_smoothed_elbo),
            "steps_since_best": int(state.steps_since_best),
            "elapsed": float(state.elapsed),
            "seed": state.settings.get("seed"),
            "settings": dict(state.settings),
        },
    }
    _check_plain(out, "checkpoint")
    return out


def save_checkpoint(path: str | Path, state: TrainingState) -> Path:
    """Write ``state`` to ``path`` with ``torch.save`` (atomically: a reader never sees
    a half-written file); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = checkpoint_dict(state)
    _remove_orphans(path)
    # The writer's process id in the name: a later write can tell an orphan (its
    # writer killed mid-write) from a write still going on.
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(content, file)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _remove_orphans(path: Path) -> None:
    """Delete the temporary files of earlier writes of ``path`` whose writing process
    is gone (killed mid-write). POSIX only: elsewhere nothing tells a live writer."""
    if os.name != "posix":
        return
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:  # another user's process, alive
            pass


_SCALARS = (str, int, float, bool, type(None), torch.Size, torch.dtype)


def _check_plain(value: Any, where: str) -> None:
    """Refuse anything ``torch.load(weights_only=True)`` would not read back (exact types:
    a subclass of str or dict would be pickled as its own class)."""
    kind = type(value)
    if kind in (dict, collections.OrderedDict):
        for k, v in value.items():
            if type(k) not in (str, int):
                raise CheckpointError(f"cannot checkpoint {where}: key {k!r} is not a string or an integer")
            _check_plain(v, f"{where}[{k!r}]")
    elif kind in (list, tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif kind not in _SCALARS and kind not in (Tensor, torch.nn.Parameter):
        raise CheckpointError(
            f"cannot checkpoint {where}: a {kind.__name__} is not a tensor, number, string, list or dict"
        )


# -- loading -----------------------------------------------------------------------
def read_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """The raw content of a checkpoint, read with ``weights_only=True`` and checked for its format."""
    try:
        raw = torch.load(Path(path), map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r}: the file is damaged (cut short?) or not a checkpoint "
            f"({type(err).__name__}: {err})") from err
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a pavi_viz training checkpoint")
    version = raw.get("version")
    if version != CHECKPOINT_VERSION:
        changes = [
            VERSION_CHANGES[v] for v in sorted(VERSION_CHANGES) if isinstance(version, int) and version < v
        ]
        hint = (
            f" (written by an older pavi_viz: {'; '.join(changes)}; it cannot be resumed; train anew, "
            "or resume it with the pavi_viz that wrote it)"
            if changes
            else ""
        )
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {version}; this pavi_viz reads version "
            f"{CHECKPOINT_VERSION}{hint}"
        )
    _check_entries(raw, str(path))
    return raw


#: The entries every checkpoint holds, and their types (``step`` and ``total_steps`` are ints).
_ENTRIES = {"model": dict, "family": dict, "optimizer": dict, "step": int, "total_steps": int, "history": dict}


def _check_entries(raw: dict[str, Any], path: str) -> None:
    """Refuse a checkpoint whose entries are missing or malformed, before anything is
    built from it (an edited or damaged file): a :class:`CheckpointError` naming the entry."""

    def damaged(what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path!r} is damaged: {what}")

    for key, kind in _ENTRIES.items():
        if type(raw.get(key)) is not kind:
            raise damaged(f"its {key!r} entry is missing or not a {kind.__name__}")
    family = raw["family"]
    if not isinstance(family.get("name"), str) or not isinstance(family.get("state"), dict) \
            or not isinstance(family.get("options") or {}, dict):
        raise damaged("its family entry needs a name, options and a state")
    try:
        check_options(family["name"], family.get("options") or {})
    except ValueError as err:
        raise damaged(str(err)) from None
    if not isinstance(raw["optimizer"].get("state"), dict):
        raise damaged("its optimizer entry has no state")
    history = raw["history"]
    lengths = {len(column) if isinstance(column, list) else -1 for column in history.values()}
    if "step" not in history or len(lengths) != 1 or -1 in lengths:
        raise damaged("its history's columns are missing, not lists, or of unequal lengths")
    if not 0 <= raw["step"] <= raw["total_steps"] or len(history["step"]) > raw["step"]:
        raise damaged(f"step {raw['step']} of {raw['total_steps']} with {len(history['step'])} history records")
    tables = raw.get("gradient_tables", [])
    if not isinstance(tables, list) or not all(
            isinstance(t, dict) and isinstance(t.get("variable"), str) and t.get("use") in USES
            and isinstance(t.get("table"), torch.Tensor) for t in tables):
        raise damaged("its gradient tables are not a list of variable, use and table")


def load_checkpoint(
    path: str | Path,
    model: PlateModel | CompiledModel,
    family: VariationalFamily | None = None,
    *,
    device: str | torch.device = "auto",
) -> TrainingState:
    """The training state saved at ``path``, rebuilt for ``model``.

    Args:
        path: the checkpoint file.
        model: the model it was made for (a :class:`PlateModel` is compiled on
            ``device``; a compiled model is used as it is).
        family: load into this family instead of building one from the saved name
            and options (it must be of the saved kind).
        device: where to compile a :class:`PlateModel` (``"auto"``: CUDA when present).

    Raises:
        CheckpointError: the file is no checkpoint, or it was made for another model
            (the message names both) or another family.
    """
    if family is not None:
        compiled = family.model
        if not isinstance(model, CompiledModel) or model is not compiled:
            check_model(model_entry(_as_compiled(model)), compiled, what="family")
    elif isinstance(model, CompiledModel):
        compiled = model
    else:
        compiled = model.compile(device=resolve_device(device))
    raw = read_checkpoint(path, map_location=compiled.device)
    check_model(raw["model"], compiled)

    saved_family = raw["family"]
    name, options = saved_family["name"], dict(saved_family.get("options") or {})
    if family is None:
        # Building a family draws initial weights (replaced by the saved ones) from the
        # global generator: seeded, to leave the caller's and other threads' draws alone.
        with seeded(0, compiled.device):
            family = make_family(name, compiled, **options)
    elif family.name != name:
        raise CheckpointError(f"the checkpoint holds a {name!r} family, not a {family.name!r} one")
    try:
        family.load_state_dict(saved_family["state"])
    except RuntimeError as err:
        raise CheckpointError(
            f"the checkpoint's {name!r} family does not fit one built with options {options}: {err}"
        ) from err

    schedule = raw.get("schedule") or {}
    optimizer = make_optimizer(family, float(schedule.get("lr", 1e-2)))
    try:
        optimizer.load_state_dict(raw["optimizer"]["state"])
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"the checkpoint's optimizer state does not fit the family: {err}") from err

    gradient_tables = _gradient_tables(raw.get("gradient_tables", []), compiled, family)
    training = raw.get("training") or {}
    settings = dict(training.get("settings") or {})
    rng = raw.get("rng") or {}
    seed = settings.get("seed")
    fallback = (0 if seed is None else int(seed)) + int(raw["step"])
    same_device = torch.device(rng.get("generator_device", "cpu")).type == compiled.device.type
    generators, lost = {}, []
    for key, stream, what in (("generator", "batches", "batches"), ("noise_generator", "noise", "sampling noise")):
        generator = torch.Generator(device=compiled.device)
        state_bytes = rng.get(key)
        restored = False
        if state_bytes is not None and same_device:
            with contextlib.suppress(RuntimeError):
                generator.set_state(state_bytes.cpu())
                restored = True
        if not restored:
            generator.manual_seed(derived_seed(fallback, stream))
            if state_bytes is not None:
                lost.append(what)
        generators[key] = generator
    if lost:
        warnings.warn(
            f"the checkpoint's generator states (saved on {rng.get('generator_device')}) do not fit "
            f"{compiled.device}: a resumed run will draw other {' and '.join(lost)} than an uninterrupted one",
            stacklevel=2,
        )
    return TrainingState(
        model=compiled,
        family=family,
        family_name=name,
        family_options=options,
        optimizer=optimizer,
        generator=generators["generator"],
        noise_generator=generators["noise_generator"],
        history=History.from_dict(raw["history"]),
        settings=settings,
        step=int(raw["step"]),
        total_steps=int(raw["total_steps"]),
        elbo=float(training.get("elbo", float("nan"))),
        smoothed_elbo=float(training.get("smoothed_elbo", float("nan"))),
        best_smoothed_elbo=float(training.get("best_smoothed_elbo", float("-inf"))),
        steps_since_best=int(training.get("steps_since_best", 0)),
        elapsed=float(training.get("elapsed", 0.0)),
        gradient_tables=gradient_tables,
    )


def _gradient_tables(entries: list[dict[str, Any]], model: CompiledModel,
                     family: VariationalFamily) -> dict[tuple[str, str], torch.Tensor]:
    """The saved SAGA tables, each checked against the global latent it is of (a table
    of another shape would add a wrong gradient to every step)."""
    tables = {}
    for entry in entries:
        name, use, table = entry["variable"], entry["use"], entry["table"]
        if name not in model.latent_names or model.plates_of(name):
            raise CheckpointError(f"the checkpoint's gradient table of {name!r} is of no global latent of the model")
        shape = entry_shape(family, name, use)
        if table.dim() != 1 + len(shape) or tuple(table.shape[1:]) != shape:
            raise CheckpointError(f"the checkpoint's {use} gradient table of {name!r} has shape "
                                  f"{tuple(table.shape)}, not (elements, {', '.join(map(str, shape))})")
        tables[name, use] = table.to(device=model.device, dtype=accumulation_dtype(model.device))
    return tables


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "check_model",
    "checkpoint_dict",
    "load_checkpoint",
    "model_description",
    "model_entry",
    "model_fingerprint",
    "read_checkpoint",
    "save_checkpoint",
]
