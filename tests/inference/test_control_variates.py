"""SAGA's control variate for the global latents' gradient on a batched plate."""

from __future__ import annotations

import pytest
import torch

import pavi_viz
from pavi_viz.inference import FitConfig, Trainer, fit
from pavi_viz.inference.checkpoints import CheckpointError, load_checkpoint, read_checkpoint
from pavi_viz.inference.control_variates import GlobalGradientTables
from pavi_viz.inference.objective import elbo

BATCH = {"group": 20}


@pytest.fixture(scope="module")
def gre():
    return pavi_viz.examples.load("gre", G=200, N=5, D=2)


def trainer(model, **settings) -> Trainer:
    config = FitConfig(**{"family": "pavi-e", "steps": 1000, "batch": BATCH, "threads": 1, "seed": 0, **settings})
    return Trainer.create(model, config)


def test_tables_apply_to_one_batched_top_level_plate_with_global_latents(gre):
    assert trainer(gre).gradient_tables is not None
    assert trainer(gre, batch=None).gradient_tables is None  # 1,000 groups' worth is taken whole
    tables = trainer(gre).gradient_tables
    assert tables.plate == "group"
    assert {k: tuple(t.shape) for k, t in tables.tables.items()} == {("mu", "model"): (200, 2),
                                                                      ("mu", "context"): (200, 2)}


def test_the_offsets_carry_each_elements_share_of_the_global_gradient(gre):
    """The gradient reaching ``mu`` from the batch's terms equals the sum of the
    elements' shares that the tables store."""
    t = trainer(gre)
    state, model = t.state, t.state.model
    frame = model.frame(model.sample_batch(t.batch_sizes, state.generator))
    t.gradient_tables.attach(frame, 4)
    estimate = elbo(model, state.family, frame, 4, state.noise_generator)
    value = estimate.draw.values["mu"]
    log_p = model.log_joint_terms(estimate.draw.values, frame=frame)
    batch_terms = sum(term for name, term in log_p.items() if name != "mu").mean()
    (direct,) = torch.autograd.grad(batch_terms, value, retain_graph=True)  # along the "model" uses
    (-estimate.value).backward()
    offset = t.gradient_tables._offsets["mu", "model"]
    assert torch.allclose(-offset.grad.sum(1), direct, atol=1e-4)
    t.gradient_tables.update(frame)
    table = t.gradient_tables.tables["mu", "model"]
    seen = frame.indices("group")
    assert bool((table[seen] != 0).all()) and torch.allclose(t.gradient_tables.sums["mu", "model"], table.sum(0))


def test_the_correction_averages_to_zero_over_the_plate_whatever_the_tables_hold(gre):
    """SAGA is unbiased for any table: over batches that partition the plate, the
    correction ``c = H_old - w * sum_batch h_old`` sums to zero."""
    t = trainer(gre)
    tables = t.gradient_tables
    for table in tables.tables.values():
        table.copy_(torch.randn_like(table))
    tables.sums = {k: table.sum(0) for k, table in tables.tables.items()}
    model = t.state.model
    values = {"mu": torch.ones(1, 2, requires_grad=True)}
    corrections = []
    for start in range(0, 200, 20):
        frame = model.frame({"group": torch.arange(start, start + 20)})
        (grad,) = torch.autograd.grad(tables.surrogate(frame, values, values), values["mu"])
        corrections.append(grad)
    assert torch.allclose(torch.stack(corrections).mean(0), torch.zeros(1, 2), atol=1e-4)  # float32 sums of ~100


def test_saga_cuts_the_noise_of_the_global_flows_gradient(gre):
    """At one state of the family, the gradient of ``mu``'s flow varies from batch to
    batch far less once each group's share is in the table (one pass over the plate)."""
    fit_state = fit(gre, "mean-field", steps=300, batch=BATCH, threads=1, seed=0, progress=False).state
    t = Trainer.create(gre, FitConfig(family="mean-field", steps=1000, batch=BATCH, threads=1, seed=0),
                       resume=fit_state)
    params = [p for n, p in t.state.family.named_parameters() if n.endswith(".mu")]

    def gradients(with_tables: bool) -> torch.Tensor:
        out = []
        for _ in range(40):
            if not with_tables:
                for table in t.gradient_tables.tables.values():
                    table.zero_()
                t.gradient_tables.sums = {k: torch.zeros_like(v) for k, v in t.gradient_tables.sums.items()}
            t._gradient(1)
            out.append(torch.cat([p.grad.flatten() for p in params]).clone())
        return torch.stack(out)

    for _ in range(10):  # one pass over the 200 groups fills the tables
        t._gradient(1)
    saga, plain = gradients(True), gradients(False)
    assert saga.var(0).sum() < 0.3 * plain.var(0).sum(), (saga.var(0), plain.var(0))


def test_tables_are_checkpointed_and_a_resumed_run_goes_on_exactly(gre, tmp_path):
    settings = {"batch": BATCH, "threads": 1, "seed": 1, "progress": False}
    whole = fit(gre, "pavi-f", steps=30, **settings)  # pavi-e refreshes its summaries on its own clock
    path = tmp_path / "half.pt"
    fit(gre, "pavi-f", steps=15, checkpoint=path, **settings)
    resumed = fit(gre, "pavi-f", steps=30, resume=path, **settings)
    assert resumed.history.elbo == whole.history.elbo
    saved = read_checkpoint(path)["gradient_tables"]
    assert {(e["variable"], e["use"]) for e in saved} == {("mu", "model"), ("mu", "context")}
    raw = torch.load(path, weights_only=True)
    raw["gradient_tables"][0]["table"] = torch.zeros(200, 3)
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="gradient table of 'mu' has shape"):
        load_checkpoint(path, gre)
