"""One process of a data-parallel run that only estimates: ``draws`` ELBO estimates and
gradients of a GRE model's family, its parameters held fixed, written by rank 0.

Run by tests/inference/test_distributed.py as a launcher would (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT`` in the environment); without them, the single-process
run. ``python distributed_estimates.py OUT.pt DRAWS``.
"""

from __future__ import annotations

import os
import sys

import torch

import pavi_viz
from pavi_viz.inference.config import FitConfig
from pavi_viz.inference.distributed import Replicas, world_size
from pavi_viz.inference.trainer import Trainer

#: The model and the settings both runs estimate with: a batched plate (so that the
#: shard's batch and SAGA's tables are exercised) and the same family.
MODEL = {"G": 24, "N": 4, "D": 2}
CONFIG = FitConfig(batch={"group": 6}, particles=2, seed=3, threads=1)


def estimates(draws: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``draws`` ELBO estimates (shape ``(draws,)``) and gradients (``(draws, parameters)``)."""
    replicas = Replicas.join("cpu") if world_size() > 1 else None
    trainer = Trainer.create(pavi_viz.examples.load("gre", **MODEL), CONFIG, replicas=replicas)
    values, grads = [], []
    for number in range(1, draws + 1):
        value, _ = trainer._gradient(number)  # the step's estimate, without its Adam step
        values.append(value)
        grads.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                for p in trainer._params]))
    if replicas is not None:
        replicas.leave()
    return torch.tensor(values, dtype=torch.float64), torch.stack(grads).double()


if __name__ == "__main__":
    out, draws = sys.argv[1], int(sys.argv[2])
    values, grads = estimates(draws)
    if os.environ.get("RANK", "0") == "0":
        torch.save({"values": values, "grads": grads}, out)
