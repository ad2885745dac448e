"""Conditional flows (pavi_viz.inference.flows)."""

from __future__ import annotations

import pytest
import torch

from pavi_viz.inference.flows import _affine_layers, draw, make_flow, reset_to_identity, rsample_and_log_prob


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
@pytest.mark.parametrize("spread", [1.0, 2.0])
@pytest.mark.parametrize("features", [1, 3])
def test_a_draw_without_building_the_flow_is_zukos_draw_number_for_number(kind, spread, features) -> None:
    """``draw`` computes an affine MAF's layers itself (nsf takes zuko's path): the same
    draws, densities and gradients as zuko's flow given the same noise, on weights far
    from the identity (so every layer's shift and bounded log scale count)."""
    torch.manual_seed(0)
    flow = make_flow(kind, features=features, context=5, transforms=3, hidden=(16, 16))
    assert (_affine_layers(flow) is not None) == (kind == "maf")
    for parameter in flow.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    context = torch.randn(40, 5)
    results = []
    for compute in (lambda: rsample_and_log_prob(flow(context), torch.Generator().manual_seed(3), spread),
                    lambda: draw(flow, context, torch.Generator().manual_seed(3), spread)):
        flow.zero_grad()
        x, log_q = compute()
        (x.square().sum() + log_q.sum()).backward()
        results.append((x, log_q, [p.grad.clone() for p in flow.parameters()]))
    (zuko_x, zuko_log_q, zuko_grads), (x, log_q, grads) = results
    assert x.shape == (40, features) and log_q.shape == (40,)
    assert bool((x - zuko_x).abs().max() > 0) is False and torch.equal(log_q, zuko_log_q)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(grads, zuko_grads, strict=True))


@pytest.mark.parametrize("kind", ["maf", "nsf"])
@pytest.mark.parametrize("features", [1, 3])
def test_a_flow_reset_to_the_identity_is_its_base_normal_whatever_the_context(kind, features) -> None:
    torch.manual_seed(0)
    flow = make_flow(kind, features=features, context=5, transforms=2, hidden=(16, 16))
    context, x = 3 * torch.randn(40, 5), 2 * torch.randn(40, features)
    standard = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
    assert not torch.allclose(flow(context).log_prob(x), standard, atol=1e-3)  # trained-like weights: not the base
    reset_to_identity(flow)
    assert torch.allclose(flow(context).log_prob(x), standard, atol=1e-5)
    u, log_q = rsample_and_log_prob(flow(context), torch.Generator().manual_seed(3))
    assert torch.allclose(log_q, torch.distributions.Normal(0.0, 1.0).log_prob(u).sum(-1), atol=1e-5)
    without_context = make_flow(kind, features=features, context=0, transforms=2, hidden=(16, 16))
    reset_to_identity(without_context)
    assert torch.allclose(without_context().log_prob(x), standard, atol=1e-5)
    # It learns away from the identity: the zeroed output layers get gradients.
    flow(context).log_prob(x).sum().backward()
    outputs = [[m for m in t.hyper.modules() if isinstance(getattr(m, "weight", None), torch.nn.Parameter)][-1]
               for t in flow.modules() if "hyper" in dict(t.named_children())]
    assert len(outputs) == 2 and all(bool(layer.weight.grad.abs().sum() > 0) for layer in outputs)


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
