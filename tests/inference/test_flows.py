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
    assert torch.equal(x, expected[0]) and torch.allclose(log_q, expected[1], rtol=0, atol=1e-5)
    # Gradients flow through the draws and their log densities (reparametrization).
    (x.sum() + log_q.sum()).backward()
    assert all(p.grad is not None for p in flow.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind", ["maf", "nsf"])
def test_a_spread_draws_half_from_a_wider_flow_with_the_mixtures_density(kind) -> None:
    """With ``spread``, each draw is the flow's own or, on a fair coin, one from the flow
    over a base ``spread`` times wider (the same noise, spread); the densities are
    those of the equal mixture of the two, checked against zuko's own density of the
    flow (its inverse pass)."""
    torch.manual_seed(0)
    flow = make_flow(kind, features=3, context=5, transforms=2, hidden=(16, 16))
    conditioned = flow(torch.randn(40, 5))
    own, own_log_q = rsample_and_log_prob(conditioned, torch.Generator().manual_seed(3))
    x, log_q = rsample_and_log_prob(conditioned, torch.Generator().manual_seed(3), spread=2.0)
    same = (x == own).all(-1)
    assert 8 <= int(same.sum()) <= 32  # 40 fair coins
    with torch.no_grad():
        narrow = conditioned.log_prob(x)
        z = conditioned.transform(x)  # the base draws
        base = conditioned.base
        wide = narrow - base.log_prob(z) + torch.distributions.Independent(
            torch.distributions.Normal(base.base_dist.loc, 2.0 * base.base_dist.scale), 1).log_prob(z)
    mixture = torch.logaddexp(narrow, wide) - torch.log(torch.tensor(2.0))
    assert torch.allclose(log_q, mixture, atol=1e-4)
    assert torch.allclose(own_log_q[same], narrow[same], atol=1e-4)
