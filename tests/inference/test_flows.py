"""Conditional flows (pavi_viz.inference.flows)."""

from __future__ import annotations

import pytest
import torch

from pavi_viz.inference.flows import make_flow, rsample_and_log_prob


@pytest.mark.parametrize("kind", ["maf", "nsf"])
def test_draws_from_a_generator_are_zukos_given_the_same_noise(kind) -> None:
    torch.manual_seed(0)
    flow = make_flow(kind, features=3, context=5, transforms=2, hidden=(16, 16))
    context = torch.randn(40, 5)
    torch.manual_seed(11)
    expected = flow(context).rsample_and_log_prob()
    x, log_q = rsample_and_log_prob(flow(context), torch.Generator().manual_seed(11))
    assert x.shape == (40, 3) and log_q.shape == (40,)
    assert torch.equal(x, expected[0]) and torch.equal(log_q, expected[1])
    # Gradients flow through the draws and their log densities (reparametrization).
    (x.sum() + log_q.sum()).backward()
    assert all(p.grad is not None for p in flow.parameters() if p.requires_grad)
