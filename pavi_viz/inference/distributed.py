"""Data-parallel training on ``torch.distributed``: each process fits on a shard of one plate.

A run on several processes (launched by ``torchrun``, or by ``pavi-viz fit --nproc N``,
which sets the same environment) has each process hold a replica of the family and one
:class:`~pavi_viz.model.plates.Shard` of one top-level plate (:func:`sharded_plate`: the
batched one, else the largest). The leader (rank 0) holds the whole model: it evaluates
the run and draws the posterior. Every other process holds its shard of the data alone
(:func:`~pavi_viz.model.sharding.compile_part`: the shard's elements and everything
nested in them) where its family trains so
(:meth:`~pavi_viz.inference.families.base.VariationalFamily.trains_on_a_part`: PAVI-E,
unless a summarised variable's statistics average over the shared plate itself, or its
data cross it), and the whole model otherwise. A step on each process:

1. draws its share of the step's batch from its shard, everything nested in those
   elements included (ragged plates too), and estimates the ELBO on it, the shard's
   terms scaled so that the *average* of the processes' estimates is unbiased for the
   whole model's (:class:`~pavi_viz.model.plates.Frame`'s weights; the terms outside
   the shard, the global latents', are each process's own unbiased estimate);
2. agrees with the others, in one all-reduce, on the estimate (their average) and on
   whether any process drew a non-finite value (then every process raises the same
   :class:`~pavi_viz.inference.state.DivergenceError`, naming the process);
3. back-propagates, and averages the gradients with the others (one all-reduce of
   them all, flattened): every process takes the same Adam step.

So the expected estimate and gradient are the single-process ones, and every process
keeps the same parameters, history, schedule and stopping decisions. PAVI-E's
whole-data summaries are pooled by each process over its shard and added up; what the
family derives from the whole data once (the data's mean and sd, the statistics'
standardisation) comes with the leader's parameters (:meth:`Replicas.copy_from_leader`).
SAGA's tables (:mod:`~pavi_viz.inference.control_variates`) are kept per process for
its shard's elements, and summed into one table for a checkpoint.

A process that dies makes the others' next collective fail: they end with a
:class:`ReplicaLost` naming the step.
"""

from __future__ import annotations

import datetime
import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from pavi_viz.inference.resolve import resolve_device
from pavi_viz.model.compiled import CompiledModel
from pavi_viz.model.plates import Shard, shard_of

#: Seconds a process waits in a collective (or for the others to start) before it
#: gives up: a process that hangs, rather than dies, ends the run after this long.
TIMEOUT_SECONDS = float(os.environ.get("PAVI_VIZ_DISTRIBUTED_TIMEOUT", "600"))


class ReplicaLost(RuntimeError):
    """Another process of a data-parallel run stopped answering (it died, or was killed).

    Attributes:
        rank: this process's rank. step: the step (counted from 1) it was taking.
    """

    def __init__(self, rank: int, step: int, cause: BaseException) -> None:
        # The transport's first sentence ("... Connection reset by peer"), not its advice.
        said = str(cause).splitlines()[0].split(". ")[0] if str(cause) else "no message"
        super().__init__(f"rank {rank}: another process of the run stopped answering at step {step} "
                         f"({type(cause).__name__}: {said})")
        self.rank, self.step = rank, step


def world_size() -> int:
    """The number of processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be a whole number, not {os.environ['WORLD_SIZE']!r}") from None


def replica_device(device: str) -> str:
    """The device of this process of a run on ``device``: on CUDA, the launcher's
    ``LOCAL_RANK``-th GPU of the machine (one process per GPU)."""
    resolved = resolve_device(device)
    if resolved.type != "cuda" or resolved.index is not None or "LOCAL_RANK" not in os.environ:
        return str(resolved)
    return f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"


@dataclass(frozen=True)
class Replicas:
    """This process's place in a data-parallel run: its ``rank`` of ``size`` processes,
    ``local_size`` of which run on this machine.

    Every method but :attr:`leader`, :meth:`shard` and the point-to-point
    :meth:`send_to_leader` and :meth:`receive_from` is a collective: all processes call
    it, in the same order.
    """

    rank: int
    size: int
    local_size: int = 1

    @classmethod
    def join(cls, device: torch.device | str) -> Replicas:
        """Join the run the launcher's environment describes (``RANK``, ``WORLD_SIZE``,
        ``MASTER_ADDR``, ``MASTER_PORT``), over ``gloo`` on CPUs and ``nccl`` on GPUs.

        Raises:
            ValueError: the environment does not describe a run.
        """
        missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise ValueError(f"WORLD_SIZE is {world_size()} but {', '.join(missing)} is not set: "
                             "launch with torchrun or pavi-viz fit --nproc N")
        if not dist.is_initialized():
            # Loaded after the group exists (by the first torch.optim optimizer), torch._dynamo
            # keeps a reference to it: leave() then leaves the group's threads running into
            # the interpreter's exit, where one of them takes the GIL and aborts the process
            # ("terminate called without an active exception"; one two-process run in ten
            # here). Loaded before, it holds none.
            importlib.import_module("torch._dynamo")
            backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=TIMEOUT_SECONDS))
        size = dist.get_world_size()
        return cls(dist.get_rank(), size, int(os.environ.get("LOCAL_WORLD_SIZE", size)))

    @property
    def leader(self) -> bool:
        """Whether this process writes what the run writes (checkpoints, the store, the posterior)."""
        return self.rank == 0

    def shard(self, model: CompiledModel, batch_sizes: dict[str, int]) -> Shard:
        """This process's shard of the model's :func:`sharded_plate`."""
        plate = sharded_plate(model, batch_sizes)
        return shard_of(plate, model.plates[plate].size, self.rank, self.size)

    def ranks_where(self, flag: bool, step: int, device: torch.device) -> list[int]:
        """The ranks whose ``flag`` is set."""
        flags = torch.zeros(self.size, device=device)
        flags[self.rank] = float(flag)
        self._all_reduce([flags], step)
        return [rank for rank in range(self.size) if flags[rank] > 0]

    def average(self, tensors: Sequence[Tensor], step: int) -> list[Tensor]:
        """The processes' average of each of ``tensors`` (all-reduced at once, flattened)."""
        return [total / self.size for total in self.total(tensors, step)]

    def average_gradients(self, params: Sequence[nn.Parameter], step: int) -> None:
        """Replace each parameter's gradient by the processes' average (a parameter
        without one on some process counts as a zero gradient there)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        for p, averaged in zip(params, self.average(grads, step), strict=True):
            p.grad = averaged

    def total(self, tensors: Sequence[Tensor], step: int) -> list[Tensor]:
        """The processes' sum of each of ``tensors``."""
        if not tensors:
            return []
        flat = _flatten_dense_tensors(list(tensors))
        self._all_reduce([flat], step)
        return list(_unflatten_dense_tensors(flat, list(tensors)))

    def from_leader(self, tensors: Sequence[Tensor], step: int) -> list[Tensor]:
        """The leader's ``tensors`` (every process gives tensors of the same shapes and
        dtypes; the others' values are not read)."""
        if not tensors:
            return []
        flat = _flatten_dense_tensors(list(tensors))
        try:
            dist.broadcast(flat, 0)
        except RuntimeError as err:
            raise ReplicaLost(self.rank, step, err) from err
        return list(_unflatten_dense_tensors(flat, list(tensors)))

    def send_to_leader(self, value: object, step: int) -> None:
        """Send ``value`` to the leader, which takes it with :meth:`receive_from` (pickled:
        the processes' own results, never a user's file). Point to point, not a collective."""
        try:
            dist.send_object_list([value], dst=0)
        except RuntimeError as err:
            raise ReplicaLost(self.rank, step, err) from err

    def receive_from(self, rank: int, step: int) -> object:
        """On the leader, what process ``rank`` sends with :meth:`send_to_leader`: the
        leader takes one process's value at a time, so that it holds one at a time."""
        box: list[object] = [None]
        try:
            dist.recv_object_list(box, src=rank)
        except RuntimeError as err:
            raise ReplicaLost(self.rank, step, err) from err
        return box[0]

    def copy_from_leader(self, module: nn.Module, step: int) -> None:
        """Make ``module``'s state (its ``state_dict``: parameters and saved buffers) the
        leader's (rank 0's). It is loaded with ``load_state_dict``, so that a module
        computes again what it derives from that state and its own data (PAVI-E's
        statistics of a shard's data, standardised as the whole data's)."""
        state = module.state_dict()
        names = [name for name, t in state.items() if t.is_floating_point()]
        if not names:
            return
        leaders = self.from_leader([state[name] for name in names], step)
        module.load_state_dict({**state, **dict(zip(names, leaders, strict=True))})

    def _all_reduce(self, tensors: list[Tensor], step: int) -> None:
        try:
            for t in tensors:
                dist.all_reduce(t)
        except RuntimeError as err:
            raise ReplicaLost(self.rank, step, err) from err

    @staticmethod
    def leave() -> None:
        """Leave the run (at its end, or on an error): frees the process group. A
        script that torchrun launched calls it (or
        ``torch.distributed.destroy_process_group()``) after its last fit."""
        if dist.is_initialized():
            dist.destroy_process_group()


def sharded_plate(model: CompiledModel, batch_sizes: dict[str, int]) -> str:
    """The top-level plate a data-parallel run shards: the batched one (the largest, if
    several are), else the largest.

    Raises:
        ValueError: the model has no plate.
    """
    roots = [p.name for p in model.plates if p.parent is None]
    if not roots:
        raise ValueError(f"model {model.name!r} has no plate to share between processes")
    batched = [p for p in roots if p in batch_sizes]
    return max(batched or roots, key=lambda p: model.plates[p].size)


__all__ = ["ReplicaLost", "Replicas", "replica_device", "sharded_plate", "world_size"]
