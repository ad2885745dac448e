"""The posterior of a data-parallel run, drawn by all its processes together.

After training, every process holds the family and its shard of the shared plate: its
part of the model (:func:`~pavi_viz.model.sharding.compile_part`), or the whole model
(rank 0, and a process whose family needs the whole data). :func:`to_netcdf` draws
``n`` draws of q with all of them:

1. rank 0 draws the latents outside the shared plate's tree (the global ones) for all
   ``n`` draws, with their log q, and sends them to every process;
2. each process draws its shard's elements given them, chunk by chunk
   (:meth:`~pavi_viz.inference.posterior.Posterior.draw_share`), with noise of its own
   (a seed derived from the call's and its rank): the latents, their log likelihood,
   the replicates of the observed variables, and each draw's log p and log q over its
   elements;
3. rank 0 takes the shards one at a time, places them in the whole arrays, adds up the
   draws' log p and log q, and makes the ArviZ tree that
   :meth:`~pavi_viz.inference.posterior.Posterior.to_datatree` makes (:func:`to_datatree`;
   :func:`to_netcdf` writes it).

So drawing takes each process its shard's share of the time. The draws are q's own:
where one process would resample them by importance weights (a model small enough to
weigh whole draws of it: :meth:`~pavi_viz.inference.posterior.Posterior.resamples`),
rank 0 draws them alone, as one process does. Rank 0 holds the whole arrays it writes.

``pavi-viz fit`` on several processes writes its posterior so; a script that
``torchrun`` launched calls :func:`result_to_netcdf` with :func:`~pavi_viz.inference.fit`'s
result on every process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import xarray as xr

from pavi_viz.inference.distributed import Replicas
from pavi_viz.inference.families.base import VariationalFamily
from pavi_viz.inference.posterior import CHUNK_ELEMENTS, Posterior, Share, netcdf_engine
from pavi_viz.inference.resolve import batch_sizes
from pavi_viz.inference.state import FitResult, derived_seed
from pavi_viz.model.compiled import CompiledModel
from pavi_viz.model.plates import Shard, shard_of


def to_datatree(
    model: CompiledModel,
    family: VariationalFamily,
    replicas: Replicas,
    shard: Shard,
    n: int = 1000,
    seed: int | None = None,
    *,
    predictive: int | None = 100,
    coords: Mapping[str, Sequence] | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
    step: int = 0,
) -> tuple[Posterior, xr.DataTree] | None:
    """The ArviZ tree of a data-parallel run's posterior (:meth:`Posterior.to_datatree`'s),
    its ``n`` draws made by all the processes (see the module's notes). Every process
    calls it, with the model and family it trained, its ``shard``, and the same other
    arguments.

    Args:
        model: this process's model: the whole model (rank 0 holds it), or its part.
        family: the trained family (the same on every process).
        replicas: this process's place in the run.
        shard: this process's shard of the shared plate.
        n, seed, predictive, coords, chunk_elements: as for :meth:`Posterior.to_datatree`
            and :class:`Posterior` (``coords``: rank 0's).
        step: the run's step, named if a process stops answering.

    Returns:
        On rank 0, the posterior that drew the tree (for its importance check and
        :meth:`Posterior.summary_of` the tree) and the tree; ``None`` on the others.

    Raises:
        ReplicaLost: another process stopped answering.
    """
    posterior = Posterior(model, family, coords=coords) if replicas.leader else None
    # Rank 0 decides, for all: whether the draws are shared out, and the log likelihood kept.
    decided = torch.zeros(2, dtype=torch.float64, device=model.device)
    left_out = None
    if posterior is not None:
        left_out = posterior.log_likelihood_left_out(n)
        decided[0], decided[1] = float(not posterior.resamples(n)), float(left_out is None)
    shared, log_likelihood = (bool(flag) for flag in replicas.from_leader([decided], step)[0])
    if not shared:
        return None if posterior is None else (posterior, posterior.to_datatree(n, predictive, chunk_elements, seed))

    plate = shard.plate
    outside = [name for name in model.latent_names
               if not any(model.plates.root(q) == plate for q in model.plates_of(name))]
    given, outside_log_q = _outside_draws(model, family, plate, outside, n, seed, replicas, step)
    start, stop = (shard.start, shard.stop) if model.part is None else (0, shard.stop - shard.start)
    share = Share(plate, start, stop, given, counts_outside=replicas.leader)
    mine = posterior if posterior is not None else Posterior.for_share(model, family)
    own_seed = None if seed is None else derived_seed(seed, f"posterior share {replicas.rank}")
    got = mine.draw_share(n, share, own_seed, predictive, log_likelihood, chunk_elements)
    if posterior is None:
        replicas.send_to_leader(mine.cut_to_share(got, share), step)
        return None
    got.log_q[:] += outside_log_q.numpy()
    size = model.plates[plate].size
    for rank in range(1, replicas.size):
        theirs = shard_of(plate, size, rank, replicas.size)
        posterior.add_share(got, replicas.receive_from(rank, step), plate, theirs.start, theirs.stop)
    return posterior, posterior.tree(got, left_out=left_out)


def to_netcdf(path: str | Path, *args: Any, **options: Any) -> Posterior | None:
    """Write :func:`to_datatree`'s tree to the NetCDF file ``path`` (rank 0 writes; as
    :meth:`Posterior.to_netcdf` does); its arguments follow ``path``. Rank 0's posterior;
    ``None`` on the others."""
    drawn = to_datatree(*args, **options)
    if drawn is None:
        return None
    posterior, tree = drawn
    tree.to_netcdf(path, engine=netcdf_engine())
    return posterior


def result_to_netcdf(
    path: str | Path, result: FitResult, n: int = 1000, seed: int | None = None, **options: Any
) -> Posterior | None:
    """:func:`to_netcdf` for ``result``, what :func:`~pavi_viz.inference.fit` returned on
    this process of a data-parallel run (a script ``torchrun`` launched): every process
    of the run calls it, after the same fit. ``options``: :func:`to_netcdf`'s others."""
    replicas = Replicas.join(result.model.device)
    model = result.model
    shard = model.part if model.part is not None else replicas.shard(model, batch_sizes(model, result.config.batch))
    return to_netcdf(path, model, result.family, replicas, shard, n, seed, step=result.steps_done, **options)


def _outside_draws(
    model: CompiledModel, family: VariationalFamily, plate: str, outside: Sequence[str], n: int,
    seed: int | None, replicas: Replicas, step: int,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``n`` draws of the latents ``outside`` the shared ``plate``'s tree, rank 0's on every
    process (on the CPU), and, on rank 0, their log q (float64; zeros elsewhere)."""
    shapes = {name: (n, *model.plate_shape(name), *model.variables[name].event_shape) for name in outside}
    values = {name: torch.zeros(shape, dtype=model.dtype, device=model.device) for name, shape in shapes.items()}
    log_q = torch.zeros(n, dtype=torch.float64, device=model.device)
    if replicas.leader and outside:
        generator = None if seed is None else torch.Generator(model.device).manual_seed(seed)
        # Drawn with one element of the plate: the outside latents' draws do not depend on which.
        frame = model.frame({plate: torch.arange(1, device=model.device)})
        with torch.no_grad():
            draw = family.sample(frame, n, generator=generator)
        values = {name: draw.values[name] for name in outside}
        log_q = sum(draw.log_q[name].double() for name in outside)
    shared = replicas.from_leader(list(values.values()), step)
    (log_q,) = replicas.from_leader([log_q], step)
    return {name: value.cpu() for name, value in zip(outside, shared, strict=True)}, log_q.cpu()


__all__ = ["result_to_netcdf", "to_datatree", "to_netcdf"]
