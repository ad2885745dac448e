"""One process of a data-parallel run that only pools PAVI-E's whole-data summaries:
once over its shard, added up across the processes (as its training draws get them),
and once over the whole data in this process alone. Each process writes, for each
model, both at the positions its training draws read: the shard's elements of a
summary laid out along the shared plate, all of an average over it.

Run by tests/inference/test_distributed.py as a launcher would (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT`` in the environment). ``python distributed_summaries.py OUT``
writes ``OUT.RANK.pt``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository's root: its benchmarks

import pavi_viz  # noqa: E402
from benchmarks.models import build_nested  # noqa: E402
from pavi_viz.inference.config import FitConfig  # noqa: E402
from pavi_viz.inference.distributed import Replicas  # noqa: E402
from pavi_viz.inference.trainer import Trainer  # noqa: E402

#: A regular plate batched (so its shard is drawn in parts), a ragged one (radon's
#: houses, shared out with their counties), and two ragged levels whose per-school
#: summary (students averaged, then classes) lies along the shared plate.
MODELS = {
    "gre": (lambda: pavi_viz.examples.load("gre", G=24, N=4, D=2), {"group": 6}),
    "radon": (lambda: pavi_viz.examples.load("radon"), {"county": 20}),
    "nested": (build_nested, {"school": 3}),
}
#: Small chunks, so that each shard is pooled in several.
CHUNK_ELEMENTS = 40


def summaries(replicas: Replicas) -> dict[str, torch.Tensor]:
    """For each model and summary: the one pooled per shard and the one pooled whole."""
    out = {}
    for label, (build, batch) in MODELS.items():
        trainer = Trainer.create(build(),
                                 FitConfig(family="pavi-e", batch=batch, seed=1, threads=1), replicas=replicas)
        shard, encoder = trainer.shard, trainer.state.family.encoder
        shared = encoder.full_summaries(CHUNK_ELEMENTS, shard, trainer._total_over_replicas)
        whole = encoder.full_summaries(CHUNK_ELEMENTS)
        for (observed, level), value in whole.items():
            name = f"{label}/{observed}@{','.join(level)}"
            read = {"shared": shared[observed, level], "whole": value}
            if shard.plate in level:  # the shard's elements only
                dim = level.index(shard.plate)
                read = {k: v.narrow(dim, shard.start, shard.stop - shard.start) for k, v in read.items()}
            out.update({f"{name}/{k}": v for k, v in read.items()})
    return out


if __name__ == "__main__":
    replicas = Replicas.join("cpu")
    pooled = summaries(replicas)
    replicas.leave()
    torch.save(pooled, f"{sys.argv[1]}.{os.environ['RANK']}.pt")
