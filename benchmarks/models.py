"""Models as users would write them: checks of ``pavi_viz.fit`` beyond the bundled examples.

The bundled examples (``pavi_viz.examples``) were written with the library and tuned
alongside it. These four are the kinds of model people bring to it, written with the
public API only (:class:`~pavi_viz.model.Plate`, :class:`~pavi_viz.model.PlateModel`,
:class:`~pavi_viz.model.Variable`, :class:`~pavi_viz.model.Covariate`: ragged plates,
linear predictors as expressions, covariates as data), each with a NUTS reference
posterior (``benchmarks/references.py`` writes ``benchmarks/references/NAME_reference.json``,
``pavi_viz.examples.read_reference`` reads it):

``glmm``
    A logistic GLMM: patients in clinics (a ragged plate), a Bernoulli outcome on the
    logit scale with an intercept, three fixed effects of which two come from correlated
    covariates (their coefficients are correlated in the posterior, -0.76), and a
    random intercept per clinic with a HalfNormal scale. Tests posterior dependence
    between globals and a non-Gaussian likelihood.
``poisson_exposure``
    Counts per site over a known exposure (person-years, 200 to 5,000 a site), a
    Poisson rate ``person_years * exp(alpha + beta * deprivation + u[region])``, and a
    random effect per region (sites ragged in regions). Tests an offset that spans
    more than an order of magnitude and a log link.
``nested``
    Three nested levels: students in classes in schools, both ragged (school effects,
    class effects around their school's, scores around their class's), three scales.
    Tests a plate nested in a ragged plate nested in another, and scale parameters
    learnt from few groups.
``funnel``
    Eight-schools-like, with 30 groups: centred group effects ``theta ~ Normal(mu,
    tau)``, ``tau ~ HalfCauchy(5)``, known per-group sds large next to ``tau``, so the
    posterior is a funnel in ``(tau, theta)``. Tests the hardest geometry of
    hierarchical models as users write it (centred).

Each ``build_NAME(seed=0)`` draws its design and data with NumPy from fixed "true"
parameters (kept in the model's ``truth``), so that every build is the same.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pavi_viz.model import Covariate, Plate, PlateModel, Variable


def _ragged(rng: np.random.Generator, outer: int, low: int, high: int) -> np.ndarray:
    """The outer element of each member, with ``low..high`` members per outer element (sorted)."""
    return np.repeat(np.arange(outer), rng.integers(low, high + 1, size=outer))


def build_glmm(clinics: int = 40, seed: int = 0) -> PlateModel:
    """Logistic GLMM: 20 to 60 patients per clinic, a binary outcome per patient.

    ::

        alpha ~ Normal(0, 2.5);  beta ~ Normal(0, 2.5), 3 entries;  sigma_clinic ~ HalfNormal(1)
        u[c] ~ Normal(0, sigma_clinic)
        outcome[i] ~ Bernoulli(logits = alpha + u[clinic_i] + beta[0] age_i + beta[1] bmi_i
                                         + beta[2] treated_i)

    ``age`` is standardised, ``bmi = 0.75 age + 0.66 noise`` (correlation 0.75 with
    ``age``), ``treated`` is 0 or 1.
    """
    rng = np.random.default_rng(seed)
    clinic = _ragged(rng, clinics, 20, 60)
    n = len(clinic)
    age = rng.normal(size=n)
    bmi = 0.75 * age + 0.66 * rng.normal(size=n)
    treated = rng.integers(0, 2, size=n).astype(float)
    truth = {"alpha": -0.5, "beta": np.array([0.8, -0.5, 0.6]), "sigma_clinic": 0.6}
    truth["u"] = truth["sigma_clinic"] * rng.normal(size=clinics)
    logits = truth["alpha"] + truth["u"][clinic] + truth["beta"] @ np.stack([age, bmi, treated])
    outcome = (rng.uniform(size=n) < 1 / (1 + np.exp(-logits))).astype(float)
    return PlateModel(
        [Plate("clinic", clinics), Plate("patient", nested_in="clinic", membership=clinic)],
        [
            Variable("alpha", "Normal", loc=0.0, scale=2.5),
            Variable("beta", "Normal", loc=0.0, scale=2.5, event_shape=[3]),
            Variable("sigma_clinic", "HalfNormal", scale=1.0),
            Variable("u", "Normal", loc=0.0, scale="sigma_clinic", plates=["clinic"]),
            Variable("outcome", "Bernoulli",
                     logits="alpha + u[clinic] + beta[0] * age + beta[1] * bmi + beta[2] * treated",
                     plates=["patient"], observed=True),
        ],
        [Covariate("age", ["patient"]), Covariate("bmi", ["patient"]), Covariate("treated", ["patient"])],
        data={"outcome": outcome, "age": age, "bmi": bmi, "treated": treated},
        truth=truth,
        name="glmm",
        description="Binary outcomes of patients in 40 clinics: correlated fixed effects and a random "
                    "intercept per clinic (logistic GLMM, simulated).",
    )


def build_poisson_exposure(regions: int = 20, seed: int = 0) -> PlateModel:
    """Poisson counts with an exposure: 3 to 9 sites per region, person-years per site.

    ::

        alpha ~ Normal(-5, 2);  beta ~ Normal(0, 1);  sigma_region ~ HalfNormal(1)
        u[r] ~ Normal(0, sigma_region)
        cases[s] ~ Poisson(person_years_s * exp(alpha + beta * deprivation_s + u[region_s]))

    ``person_years`` is log-uniform in 200..5,000, ``deprivation`` standardised.
    """
    rng = np.random.default_rng(seed)
    region = _ragged(rng, regions, 3, 9)
    n = len(region)
    person_years = np.exp(rng.uniform(np.log(200.0), np.log(5000.0), size=n))
    deprivation = rng.normal(size=n)
    truth = {"alpha": -5.0, "beta": 0.3, "sigma_region": 0.4}
    truth["u"] = truth["sigma_region"] * rng.normal(size=regions)
    rate = person_years * np.exp(truth["alpha"] + truth["beta"] * deprivation + truth["u"][region])
    return PlateModel(
        [Plate("region", regions), Plate("site", nested_in="region", membership=region)],
        [
            Variable("alpha", "Normal", loc=-5.0, scale=2.0),
            Variable("beta", "Normal", loc=0.0, scale=1.0),
            Variable("sigma_region", "HalfNormal", scale=1.0),
            Variable("u", "Normal", loc=0.0, scale="sigma_region", plates=["region"]),
            Variable("cases", "Poisson", rate="person_years * exp(alpha + beta * deprivation + u[region])",
                     plates=["site"], observed=True),
        ],
        [Covariate("person_years", ["site"]), Covariate("deprivation", ["site"])],
        data={"cases": rng.poisson(rate).astype(float), "person_years": person_years, "deprivation": deprivation},
        truth=truth,
        name="poisson_exposure",
        description="Case counts of sites in 20 regions over their person-years: a log-rate with "
                    "an offset and a random effect per region (simulated).",
    )


def build_nested(schools: int = 12, seed: int = 0) -> PlateModel:
    """Students in classes in schools: 2 to 5 classes per school, 8 to 25 students per class.

    ::

        mu ~ Normal(0, 5);  sigma_school, sigma_class, sigma_y ~ HalfNormal(1)
        school_effect[s] ~ Normal(mu, sigma_school)
        class_effect[c] ~ Normal(school_effect[school_c], sigma_class)
        score[i] ~ Normal(class_effect[class_i], sigma_y)
    """
    rng = np.random.default_rng(seed)
    school = _ragged(rng, schools, 2, 5)
    klass = _ragged(rng, len(school), 8, 25)
    truth = {"mu": 0.3, "sigma_school": 0.5, "sigma_class": 0.3, "sigma_y": 1.0}
    truth["school_effect"] = truth["mu"] + truth["sigma_school"] * rng.normal(size=schools)
    truth["class_effect"] = truth["school_effect"][school] + truth["sigma_class"] * rng.normal(size=len(school))
    score = truth["class_effect"][klass] + truth["sigma_y"] * rng.normal(size=len(klass))
    return PlateModel(
        [
            Plate("school", schools),
            Plate("class", nested_in="school", membership=school),
            Plate("student", nested_in="class", membership=klass),
        ],
        [
            Variable("mu", "Normal", loc=0.0, scale=5.0),
            Variable("sigma_school", "HalfNormal", scale=1.0),
            Variable("sigma_class", "HalfNormal", scale=1.0),
            Variable("sigma_y", "HalfNormal", scale=1.0),
            Variable("school_effect", "Normal", loc="mu", scale="sigma_school", plates=["school"]),
            Variable("class_effect", "Normal", loc="school_effect[school]", scale="sigma_class", plates=["class"]),
            Variable("score", "Normal", loc="class_effect[class]", scale="sigma_y", plates=["student"],
                     observed=True),
        ],
        data={"score": score},
        truth=truth,
        name="nested",
        description="Test scores of students in classes in 12 schools: three nested levels, "
                    "ragged (simulated).",
    )


def build_funnel(groups: int = 30, seed: int = 0) -> PlateModel:
    """Eight schools with 30 groups, centred: a funnel in ``(tau, theta)``.

    ::

        mu ~ Normal(0, 5);  tau ~ HalfCauchy(5)
        theta[j] ~ Normal(mu, tau)
        y[j] ~ Normal(theta[j], sigma_j)      sigma_j known, uniform in 8..18
    """
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(8.0, 18.0, size=groups)
    truth = {"mu": 4.0, "tau": 3.0}
    truth["theta"] = truth["mu"] + truth["tau"] * rng.normal(size=groups)
    y = truth["theta"] + sigma * rng.normal(size=groups)
    return PlateModel(
        [Plate("group", groups)],
        [
            Variable("mu", "Normal", loc=0.0, scale=5.0),
            Variable("tau", "HalfCauchy", scale=5.0),
            Variable("theta", "Normal", loc="mu", scale="tau", plates=["group"]),
            Variable("y", "Normal", loc="theta", scale="sigma", plates=["group"], observed=True),
        ],
        [Covariate("sigma", ["group"])],
        data={"y": y, "sigma": sigma},
        truth=truth,
        name="funnel",
        description="Thirty noisy group estimates partially pooled, centred: eight schools' funnel "
                    "at 30 groups (simulated).",
    )


#: name -> builder, in order of the module docstring.
MODELS: dict[str, Callable[..., PlateModel]] = {
    "glmm": build_glmm,
    "poisson_exposure": build_poisson_exposure,
    "nested": build_nested,
    "funnel": build_funnel,
}
