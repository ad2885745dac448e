"""What a :class:`~pavi_viz.inference.config.FitConfig` means for one compiled model.

The batch size of each plate, the device, the intra-op threads and the spacing of
PAVI-E's whole-data refreshes: each a function of the settings and the model's sizes
(never of the machine's load, so that a seeded fit is the same on every run).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import torch

from pavi_viz.inference.config import (
    MAX_AUTO_PARTICLES,
    MAX_STEP_NUMBERS,
    MIN_REFRESH_EVERY,
    NUMBERS_PER_THREAD,
    PARTICLE_NUMBERS,
    REFRESH_COST,
    REFRESH_SHARE,
    WHOLE_STEP_NUMBERS,
)
from pavi_viz.model.compiled import CompiledModel
from pavi_viz.model.plates import Frame


#: The devices :func:`resolve_device` takes, as its errors list them.
DEVICE_CHOICES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"``,
    ``"cuda:N"``, ``"mps"`` (Apple's GPU) or a torch.device.

    ``"auto"`` never picks MPS: on the models measured here a step is short enough
    that the CPU is as fast, and MPS lacks some of torch's operators (see
    :func:`unsupported_operator`); ask for it by name.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}; use {DEVICE_CHOICES}") from None
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}; use {DEVICE_CHOICES}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here; use 'cpu' or 'auto'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        why = ("this torch was built without MPS" if not torch.backends.mps.is_built()
               else "it needs an Apple-silicon Mac with macOS 12.3 or newer")
        raise ValueError(f"device {device!r} asked for, but MPS is not available here ({why}); use 'cpu' or 'auto'")
    return resolved


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """The dtype of sums that must not overflow or lose small terms (the gradient's
    norm, SAGA's gradient tables): float64, but float32 on MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def unsupported_operator(err: NotImplementedError, device: torch.device) -> NotImplementedError | None:
    """A clear error for a torch operator that ``device`` lacks (MPS implements most
    of torch, not all of it), or ``None`` when ``err`` is something else."""
    if device.type != "mps" or "MPS" not in str(err):
        return None
    return NotImplementedError(
        f"this model needs a torch operator that the MPS device lacks ({str(err).splitlines()[0]}); "
        f"fit with device='cpu', or set PYTORCH_ENABLE_MPS_FALLBACK=1 to run that operator on the CPU")


def default_batch_sizes(model: CompiledModel) -> dict[str, int]:
    """The batch size of each plate that a fit batches by default.

    A model of at most :data:`WHOLE_STEP_NUMBERS` numbers (latent and observed values)
    is taken whole: no plate is batched. In a larger one, plates are batched outermost
    first (the largest first among plates at one depth), each to the share of its
    elements that brings a step within :data:`WHOLE_STEP_NUMBERS` numbers, until a
    step is within it: the data of a drawn group stay whole unless one group alone is
    over the budget. A regular nested plate's size counts per outer element, a ragged
    plate's among the members of the drawn outer elements.

    Plates left out of the result are taken whole.
    """
    numbers = data_numbers(model)
    sizes: dict[str, int] = {}
    for plate in sorted(model.plates, key=lambda p: (len(model.plates.outer(p.name)), -p.size)):
        if numbers <= WHOLE_STEP_NUMBERS:
            break
        drawn = _frame(model, sizes).sizes[plate.name]
        size = max(1, math.floor(drawn * WHOLE_STEP_NUMBERS / numbers))
        if size < drawn:
            sizes[plate.name] = size
            numbers = data_numbers(model, sizes)
    return sizes


def _frame(model: CompiledModel, sizes: Mapping[str, int] | None) -> Frame:
    """The frame of one seeded batch drawn with ``sizes`` (``None`` or empty: the whole
    model), so that the same sizes always give the same frame."""
    if not sizes:
        return model.frame()
    return model.frame(model.sample_batch(dict(sizes), torch.Generator(model.device).manual_seed(0)))


def batch_sizes(model: CompiledModel, batch: Mapping[str, int | None] | None = None) -> dict[str, int]:
    """The defaults of :func:`default_batch_sizes`, overridden by ``batch``.

    ``batch`` maps plate names to a number of elements per step; ``None``, or a number
    at least the plate's size, takes the plate whole.

    Raises:
        ValueError: for unknown plate names (all named) or sizes below 1.
    """
    sizes = default_batch_sizes(model)
    if not batch:
        return sizes
    known = [p.name for p in model.plates]
    unknown = [name for name in batch if name not in known]
    if unknown:
        raise ValueError(
            f"batch sizes name unknown plate(s) {unknown}; model {model.name!r} has plates {known}"
        )
    for name, size in batch.items():
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"the batch size of plate {name!r} must be a whole number of at least 1, got {size!r}")
        if size is None or size >= model.plates[name].size:
            sizes.pop(name, None)  # taken whole
        else:
            sizes[name] = size
    return sizes


def data_numbers(model: CompiledModel, sizes: Mapping[str, int] | None = None) -> int:
    """The numbers (latent and observed values) in one batch drawn with ``sizes``
    (``None``: the whole model): the size of a step's work, of one particle.

    A ragged plate's batch depends on the outer elements drawn: one seeded draw is
    counted, so the answer is the same on every call.
    """
    frame = _frame(model, sizes)
    total = 0
    for name in (*model.latent_names, *model.observed_names):
        total += math.prod(frame.batch_shape(model.plates_of(name))) * math.prod(model.variables[name].event_shape)
    return total


def resolve_particles(particles: int | None, step_numbers: int) -> int:
    """The Monte Carlo draws of a step of ``step_numbers`` numbers: ``particles``
    itself, or for ``None`` as many as keep the step within :data:`PARTICLE_NUMBERS`
    numbers, between 1 and :data:`MAX_AUTO_PARTICLES`.

    Raises:
        ValueError: the step would hold more than :data:`MAX_STEP_NUMBERS` numbers.
    """
    chosen = particles if particles is not None else max(1, min(MAX_AUTO_PARTICLES, PARTICLE_NUMBERS // max(step_numbers, 1)))
    if step_numbers * chosen > MAX_STEP_NUMBERS:
        most = MAX_STEP_NUMBERS // max(step_numbers, 1)
        remedy = f"ask for at most {most:,} particles" if most >= 1 else "batch the plates (batch={plate: size})"
        raise ValueError(f"{chosen:,} particles of a step of {step_numbers:,} numbers would hold "
                         f"{step_numbers * chosen:,} numbers, over the {MAX_STEP_NUMBERS:,} a step may hold "
                         f"(about 2 GB of memory): {remedy}")
    return chosen


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_threads(threads: int | str, step_numbers: int, processes: int = 1) -> int:
    """The intra-op threads of a fit whose steps hold ``step_numbers`` numbers:
    ``threads`` itself, or for ``"auto"`` one per :data:`NUMBERS_PER_THREAD`, between 1
    and one less than :func:`usable_cpus` (see the constant for why), shared by the
    ``processes`` of a data-parallel run on this machine. The rule reads sizes only,
    never the machine's load, so a seeded fit takes the same number of threads (and
    sums in the same order) on every run of one machine."""
    if threads != "auto":
        return int(threads)
    return max(1, min((usable_cpus() - 1) // processes, step_numbers // NUMBERS_PER_THREAD))


def resolve_refresh_every(refresh_every: int | str, whole_numbers: int, step_numbers: int) -> int:
    """Steps between two refreshes of whole-data summaries: ``refresh_every`` itself,
    or for ``"auto"`` at least :data:`MIN_REFRESH_EVERY` and enough to keep refreshes
    (each :data:`REFRESH_COST` times ``whole_numbers / step_numbers`` steps) under
    :data:`REFRESH_SHARE` of the training time."""
    if refresh_every != "auto":
        return int(refresh_every)
    refresh_cost = REFRESH_COST * whole_numbers / max(step_numbers, 1)  # in steps
    return max(MIN_REFRESH_EVERY, math.ceil(refresh_cost / REFRESH_SHARE))


__all__ = [
    "batch_sizes",
    "data_numbers",
    "default_batch_sizes",
    "DEVICE_CHOICES",
    "accumulation_dtype",
    "resolve_device",
    "unsupported_operator",
    "resolve_particles",
    "resolve_refresh_every",
    "resolve_threads",
    "usable_cpus",
]
