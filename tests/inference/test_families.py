"""Variational families: draws, log densities, parameter counts, unbiased batched ELBO."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

import pavi_viz
from benchmarks.models import build_nested
from pavi_viz.inference import FAMILIES, elbo, make_family
from pavi_viz.inference.families import base as family_base
from pavi_viz.inference.families import MeanField, PaviF
from pavi_viz.model.plates import Shard
from pavi_viz.model.sharding import compile_part

EXAMPLES = {
    "gre": {"G": 6, "N": 4, "D": 2},
    "eight_schools": {},
    "radon": {},
    "radon_uranium": {},
    "spikes": {"A": 3, "min_neurons": 2, "max_neurons": 4, "T": 5},
    "mixture": {"G": 3, "N": 5},
}


@pytest.fixture(scope="module")
def compiled():
    return {name: pavi_viz.examples.load(name, **options).compile() for name, options in EXAMPLES.items()}


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("example", list(EXAMPLES))
def test_draws_have_batch_shapes_and_lie_in_the_support(compiled, family, example) -> None:
    model = compiled[example]
    torch.manual_seed(0)
    fam = make_family(family, model)
    sizes = {p.name: 2 for p in model.plates if not p.ragged}
    frame = model.frame(model.sample_batch(sizes, torch.Generator().manual_seed(1)))
    with torch.no_grad():
        draw = fam.sample(frame, particles=3)
    context = {**model.batch_data(frame), **draw.values}
    for name in model.latent_names:
        var = model.variables[name]
        assert draw.values[name].shape == (3, *frame.batch_shape(var.plates), *var.event_shape)
        assert draw.log_q[name].shape == (3,)
        assert torch.isfinite(draw.log_q[name]).all()
        support = model.distribution(name, context, frame, (3,)).support
        assert bool(support.check(draw.values[name]).all()), name


@pytest.mark.parametrize("family", list(FAMILIES))
def test_draws_take_their_noise_from_the_generator_given(compiled, family) -> None:
    model = compiled["radon"]
    torch.manual_seed(0)
    fam = make_family(family, model)
    frame = model.frame(model.sample_batch({"county": 5}, torch.Generator().manual_seed(0)))
    before = torch.get_rng_state()
    with torch.no_grad():
        a, b, c = (fam.sample(frame, 3, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    assert torch.equal(torch.get_rng_state(), before)  # the global generator is left alone
    for name in model.latent_names:
        assert torch.equal(a.values[name], b.values[name]) and torch.equal(a.log_q[name], b.log_q[name])
        assert not torch.equal(a.values[name], c.values[name])


def test_mean_field_log_density_is_the_transformed_gaussian(compiled) -> None:
    model = compiled["eight_schools"]
    fam = MeanField(model)
    with torch.no_grad():
        fam.loc["tau"].fill_(0.7)
        fam.log_scale["tau"].fill_(math.log(0.3))
        draw = fam.sample(model.frame(), particles=5)
    # tau > 0: q is a Gaussian pushed through exp, i.e. a log-normal.
    expected = torch.distributions.LogNormal(0.7, 0.3).log_prob(draw.values["tau"])
    torch.testing.assert_close(draw.log_q["tau"], expected)


def test_pavi_log_density_is_the_joint_flow_pushed_onto_the_supports(compiled) -> None:
    # Eight schools' globals mu (real) and tau (> 0) are drawn jointly by one flow over
    # (mu, log tau): their log q together is that flow's density minus log tau, the
    # log-Jacobian of exp.
    model = compiled["eight_schools"]
    torch.manual_seed(0)
    fam = PaviF(model)
    frame = model.frame()
    assert fam.blocks[0] == ("mu", "tau")
    with torch.no_grad():
        draw = fam.sample(frame, particles=4)
        context = torch.cat([fam.encodings(model.variables[n], frame) for n in ("mu", "tau")]).expand(4, -1)
        flow = fam.flows["mu+tau"](context)
        z = torch.stack([draw.values["mu"], draw.values["tau"].log()], -1)
        expected = flow.log_prob(z) - draw.values["tau"].log()
    torch.testing.assert_close(draw.log_q["mu"] + draw.log_q["tau"], expected, rtol=1e-4, atol=1e-4)


def test_pavi_local_log_density_is_the_flow_through_its_scale_and_shift(compiled) -> None:
    # Radon's county slope beta is drawn given mu_beta, sigma_beta (its parents),
    # sigma_y and the county's alpha (the other parents of log_radon), as
    # exp(B(e) g) * z + A(e) g, z from its flow and g the draws of sigma_y and alpha
    # (unconstrained), then as k * mu_beta + sigma_beta^k * (that), the partial
    # non-centring of its funnel: its log q is the flow's density of z minus both
    # log-scales. Made-up slopes and k, so that every term counts.
    model = compiled["radon"]
    torch.manual_seed(0)
    fam = PaviF(model)
    assert fam.given["beta",] == ["mu_beta", "sigma_beta", "sigma_y", "alpha"]
    assert fam.coupled["beta",] == ["sigma_y", "alpha"]
    assert set(fam.centring) == {"alpha", "beta"}  # the variables whose prior scale is drawn
    frame = model.frame()
    counties = model.plates["county"].size
    with torch.no_grad():
        for parameter in fam.slopes["beta"].parameters():
            parameter.normal_(0.0, 0.3)
        k = 0.6
        fam.centring["beta"].fill_(k)
        draw = fam.sample(frame, particles=4)
        v = draw.values
        beta = v["beta"].unsqueeze(-1)  # (4, counties, 1)
        globals_ = torch.stack([v["mu_beta"], v["sigma_beta"].log(), v["sigma_y"].log()], -1)
        given = torch.cat([globals_[:, None, :].expand(4, counties, 3), v["alpha"].unsqueeze(-1)], -1)
        coupled = given[..., 2:].unsqueeze(-1)  # sigma_y and alpha
        encoding = fam.encodings(model.variables["beta"], frame).expand(4, counties, -1)
        slopes = fam.slopes["beta"](encoding).unflatten(-1, (2, 1, 2))
        log_scale = (slopes[..., 0, :, :] @ coupled).squeeze(-1)
        centred = (beta - k * v["mu_beta"][:, None, None]) / v["sigma_beta"][:, None, None] ** k
        z = (centred - (slopes[..., 1, :, :] @ coupled).squeeze(-1)) / log_scale.exp()
        flow = fam.flows["beta"](torch.cat([encoding, given], -1).reshape(4 * counties, -1))
        density = flow.log_prob(z.reshape(4 * counties, 1)).reshape(4, counties)
        expected = (density - log_scale.squeeze(-1)).sum(-1) - counties * k * v["sigma_beta"].log()
    torch.testing.assert_close(draw.log_q["beta"], expected, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_funnel_blocks_density_at_given_draws_and_its_mixture_with_the_prior(compiled, family) -> None:
    """``log_q_unconstrained`` gives q's density of its own draws back (radon's county
    effects: made-up slopes and centring, so that their inverses count); with
    ``spread`` the block's log q is that of the equal mixture of q and the Normal of
    the prior's location and scale, jointly over the counties."""
    model = compiled["radon"]
    torch.manual_seed(0)
    fam = make_family(family, model)
    frame = model.frame()
    with torch.no_grad():
        for parameter in getattr(fam, "slopes", torch.nn.ModuleDict()).parameters():
            parameter.normal_(0.0, 0.3)
        for parameter in getattr(fam, "centring", {}).values():
            parameter.fill_(0.6)
        for spread in (1.0, 2.0):
            draw = fam.sample(frame, particles=6, generator=torch.Generator().manual_seed(1), spread=spread)
            values = {**model.batch_data(frame), **draw.values}
            z = draw.unconstrained["beta"]
            log_q = fam.log_q_unconstrained(("beta",), frame, 6, draw.unconstrained, values, z).sum(-1)
            if spread == 1.0:
                torch.testing.assert_close(log_q, draw.log_q["beta"], rtol=1e-4, atol=1e-3)
                continue
            prior = model.distribution("beta", values, frame, (6,))
            log_prior = Normal(prior.loc, prior.scale).log_prob(z.squeeze(-1)).sum(-1)
            mixture = torch.logaddexp(log_q, log_prior) - math.log(2)
            torch.testing.assert_close(draw.log_q["beta"], mixture, rtol=1e-4, atol=1e-3)


def test_parameter_counts(compiled) -> None:
    small = pavi_viz.examples.load("gre", G=10, N=4, D=2).compile()
    large = pavi_viz.examples.load("gre", G=100, N=4, D=2).compile()
    counts = {
        name: (make_family(name, small).parameter_count(), make_family(name, large).parameter_count())
        for name in FAMILIES
    }
    assert counts["pavi-e"][0] == counts["pavi-e"][1]  # amortized: independent of the plates
    assert counts["pavi-f"][1] - counts["pavi-f"][0] == 90 * 16  # one encoding per group
    assert counts["mean-field"] == (2 * (2 + 10 * 2), 2 * (2 + 100 * 2))


def _mean_and_error(estimates: torch.Tensor) -> tuple[float, float]:
    return estimates.mean().item(), estimates.std().item() / math.sqrt(len(estimates))


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize(
    ("example", "options", "sizes"),
    [
        ("gre", {"G": 12, "N": 6, "D": 1}, {"group": 4, "obs": 3}),
        ("radon", {}, {"county": 12}),
    ],
)
def test_batched_elbo_is_unbiased_on_a_fixed_state(family, example, options, sizes) -> None:
    model = pavi_viz.examples.load(example, **options).compile()
    torch.manual_seed(0)
    fam = make_family(family, model)
    generator = torch.Generator().manual_seed(2)
    draws = 300
    with torch.no_grad():
        full = torch.stack([elbo(model, fam, model.frame(), particles=1).value for _ in range(draws)])
        batched = torch.stack(
            [elbo(model, fam, model.frame(model.sample_batch(sizes, generator)), particles=1).value for _ in range(draws)]
        )
    (m_full, e_full), (m_batch, e_batch) = _mean_and_error(full), _mean_and_error(batched)
    assert abs(m_full - m_batch) < 4 * math.hypot(e_full, e_batch), (m_full, m_batch, e_full, e_batch)


def test_pavi_e_encodings_of_a_fixed_state_do_not_depend_on_the_batch() -> None:
    model = pavi_viz.examples.load("gre", G=12, N=6, D=1).compile()
    torch.manual_seed(0)
    fam = make_family("pavi-e", model)
    with torch.no_grad():
        whole = fam.encoder(model.frame())
        frame = model.frame(model.sample_batch({"group": 4}, torch.Generator().manual_seed(0)))
        batched = fam.encoder(frame, fam.encoder.full_summaries())
    torch.testing.assert_close(batched["mu"], whole["mu"])
    torch.testing.assert_close(batched["mu_g"], frame.select(whole["mu_g"], ["group"]))


@pytest.mark.parametrize(
    ("build", "sizes"),
    [
        (lambda: pavi_viz.examples.load("gre", G=12, N=6, D=2), {"group": 4}),
        (lambda: pavi_viz.examples.load("radon"), {"county": 10}),  # houses: all of the counties drawn
        (lambda: pavi_viz.examples.load("radon"), {"county": 10, "house": 30}),  # and some of them
        (build_nested, {"school": 4, "class": 6}),
    ],
)
def test_pavi_e_keeps_only_the_whole_data_summaries_that_a_batch_reads(build, sizes) -> None:
    """The summaries averaged over the plates a batch holds part of are all that its
    encodings read: with only those, they are the encodings of the whole data's."""
    model = build().compile()
    torch.manual_seed(0)
    encoder = make_family("pavi-e", model).encoder
    frame = model.frame(model.sample_batch(sizes, torch.Generator().manual_seed(0)))
    every = encoder.full_summaries()
    partial = encoder.partial_plates(frame)
    kept = encoder.full_summaries(averaged_over=partial)
    assert partial and kept and kept.keys() <= every.keys()
    with torch.no_grad():
        encodings = encoder(frame, kept)
        for name, value in encoder(frame, every).items():
            torch.testing.assert_close(encodings[name], value)
    if model.name == "gre":  # not the summary per group, as large as the data, which no batch reads
        assert list(kept) == [("x", ())]


def test_unknown_family_is_named() -> None:
    model = pavi_viz.examples.load("eight_schools").compile()
    with pytest.raises(ValueError, match="unknown family 'pavi'"):
        make_family("pavi", model)


def test_gradients_reach_every_parameter() -> None:
    model = pavi_viz.examples.load("radon").compile()
    for name in FAMILIES:
        fam = make_family(name, model)
        frame = model.frame(model.sample_batch({"county": 5}, torch.Generator().manual_seed(0)))
        elbo(model, fam, frame, particles=2).value.backward()
        missing = [n for n, p in fam.named_parameters() if p.grad is None]
        # Free encodings and mean-field parameters of undrawn elements get zero gradients, never None.
        assert missing == [], (name, missing)


def test_normal_sanity() -> None:
    # The log-normal identity the mean-field test relies on.
    x = torch.tensor([0.5, 2.0])
    lhs = torch.distributions.LogNormal(0.1, 0.4).log_prob(x)
    rhs = Normal(0.1, 0.4).log_prob(x.log()) - x.log()
    torch.testing.assert_close(lhs, rhs)


@pytest.mark.parametrize(
    ("example", "options"),
    [("gre", {"G": 12, "N": 6, "D": 2}), ("radon", {}), ("spikes", {"A": 5, "min_neurons": 1, "max_neurons": 4, "T": 3})],
)
def test_whole_data_summaries_are_the_same_chunked(example, options) -> None:
    model = pavi_viz.examples.load(example, **options).compile()
    torch.manual_seed(0)
    encoder = make_family("pavi-e", model).encoder
    whole = encoder.full_summaries(chunk_elements=10**9)
    chunked = encoder.full_summaries(chunk_elements=7)  # a chunk per outer element or so
    assert whole.keys() == chunked.keys()
    for key in whole:
        torch.testing.assert_close(chunked[key], whole[key], rtol=1e-5, atol=1e-6)


def test_a_family_that_grows_with_the_plates_is_refused_before_it_is_allocated(monkeypatch) -> None:
    # GRE at G = 100 (D = 2): pavi-f holds 16 * 101 free encodings, mean-field 2 * 2 * 101
    # numbers; pavi-e's size does not depend on G.
    model = pavi_viz.examples.load("gre", G=100, N=3, D=2).compile()
    monkeypatch.setattr(family_base, "MAX_PLATE_NUMBERS", 1_000)
    with pytest.raises(ValueError, match=r"the pavi-f family of model 'gre' would hold 1,616 numbers of free "
                                         r"encodings .* over the 1,000 a family may hold; pavi-e"):
        make_family("pavi-f", model)
    monkeypatch.setattr(family_base, "MAX_PLATE_NUMBERS", 400)
    with pytest.raises(ValueError, match=r"the mean-field family of model 'gre' would hold 404 means and scales"):
        make_family("mean-field", model)
    assert make_family("pavi-e", model).parameter_count() > 400


def test_a_pavi_e_family_built_on_a_shard_encodes_its_elements_as_the_whole_models_does() -> None:
    """Given the whole model's family's state, a family of one process's shard of the data
    alone keeps the whole data's statistics at the shard's groups (standardised by the
    whole data's constants, not its own) and gives their ground variables the same
    encodings; its own constants, before, were the shard's."""
    whole_model = pavi_viz.examples.load("gre", G=16, N=5, D=2)
    compiled = whole_model.compile()
    torch.manual_seed(0)
    whole = make_family("pavi-e", compiled)
    part = make_family("pavi-e", compile_part(whole_model, Shard("group", 5, 12, 2)))
    statistics = "statistics:x:obs"
    assert not torch.allclose(part.encoder.mean_x, whole.encoder.mean_x)
    part.load_state_dict(whole.state_dict())
    torch.testing.assert_close(getattr(part.encoder, statistics), getattr(whole.encoder, statistics)[5:12])
    frame = compiled.frame({"group": torch.arange(5, 12)})
    with torch.no_grad():
        expected = whole.encoder(frame, whole.encoder.full_summaries())["mu_g"]
        torch.testing.assert_close(part.encoder(part.model.frame())["mu_g"], expected)


def test_which_families_train_on_a_shard_of_the_data_alone() -> None:
    gre = pavi_viz.examples.load("gre", G=16, N=5, D=2).compile()
    assert FAMILIES["pavi-e"].trains_on_a_part(gre, "group")
    assert not FAMILIES["pavi-f"].trains_on_a_part(gre, "group")  # an encoding of each group's own
    assert not FAMILIES["mean-field"].trains_on_a_part(gre, "group")
    # Eight schools' scores are summarised by statistics averaged over the schools themselves.
    assert not FAMILIES["pavi-e"].trains_on_a_part(pavi_viz.examples.load("eight_schools").compile(), "school")


def test_a_pavi_e_state_saved_without_the_statistics_standardisation_still_loads() -> None:
    # Checkpoints made before the standardisation was saved: it is the one computed from
    # the same data.
    model = pavi_viz.examples.load("gre", G=16, N=5, D=2).compile()
    saved = make_family("pavi-e", model).state_dict()
    old = {name: value for name, value in saved.items() if not name.endswith((":centre", ":scale"))}
    assert len(old) == len(saved) - 2
    family = make_family("pavi-e", model)
    family.load_state_dict(old)
    for name, value in saved.items():
        torch.testing.assert_close(family.state_dict()[name], value)
