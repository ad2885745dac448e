"""One process of a data-parallel run that only pools PAVI-E's whole-data summaries:
once over its shard, added up across the processes (as its training draws get them),
and once over the whole data by a family of the whole model in the same state. Each
process writes, for each model, both at the positions its training draws read: the
shard's elements of a summary laid out along the shared plate, all of an average over
it; and whether it held its shard of the data alone (rank 1 does; rank 0, the leader,
holds the whole model).

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
from pavi_viz.inference.families import make_family  # noqa: E402
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
    """For each model and summary: the one pooled per shard and the one pooled whole,
    at the shard's elements; and whether the process held its shard of the data alone."""
    out = {}
    for label, (build, batch) in MODELS.items():
        trainer = Trainer.create(build(), FitConfig(family="pavi-e", batch=batch, seed=1, threads=1), replicas=replicas)
        family, shard, drawn = trainer.state.family, trainer.shard, trainer._drawn_shard
        shared = family.encoder.full_summaries(CHUNK_ELEMENTS, drawn, trainer._total_over_replicas)
        # The whole data's, pooled by a family of the whole model in the same state.
        whole_family = make_family("pavi-e", build().compile())
        whole_family.load_state_dict(family.state_dict())
        whole = whole_family.encoder.full_summaries(CHUNK_ELEMENTS)
        out[f"{label}/part"] = torch.tensor(trainer.state.model.part is not None)
        for (observed, level), value in whole.items():
            name = f"{label}/{observed}@{','.join(level)}"
            read = {"shared": shared[observed, level], "whole": value}
            if shard.plate in level:  # the shard's elements only
                dim, size = level.index(shard.plate), shard.stop - shard.start
                read = {"shared": read["shared"].narrow(dim, drawn.start, size),
                        "whole": value.narrow(dim, shard.start, size)}
            out.update({f"{name}/{k}": v for k, v in read.items()})
    return out


if __name__ == "__main__":
    replicas = Replicas.join("cpu")
    pooled = summaries(replicas)
    replicas.leave()
    torch.save(pooled, f"{sys.argv[1]}.{os.environ['RANK']}.pt")
