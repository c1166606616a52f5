"""Posterior collapse: the criterion a study's trials must pass, and the test-split note printed after a run.

A model has collapsed when its encoder's posterior means do not vary with the input: no latent unit
is *active* (Cov_x(E_q[z_u]) <= 0.01 for every u, Burda et al. 2015), so z carries almost no
information about the input and the conditional model is a label-conditioned decoder alone. Its KL is
then whatever the input-independent posterior costs: near 0 nats once training has settled (slightly
below 0 can be read with a flow, whose KL is a one-sample Monte Carlo estimate), more early on.

A model *uses its latent* (:func:`latent_constraints`) when at least :data:`MIN_ACTIVE_UNITS` unit is
active and its KL is at least :data:`KL_FLOOR` nats per example. The floor is one bit: the average KL
bounds what z tells about the input, E_x KL(q(z|x,c) || p(z)) >= I(x; z | c), so under ln 2 nats z
cannot tell apart even two styles of one class. The active-unit test alone lets through a unit whose
posterior means vary with variance 0.011 (~0.005 nats of KL); a KL alone can be spent on an input-independent
posterior. Studies measure both on the validation split (:mod:`studies.feasibility`).
"""

from __future__ import annotations

import math
from typing import Mapping

#: Fewest active units (Cov_x(E_q[z_u]) > 0.01) of a model that uses its latent.
MIN_ACTIVE_UNITS = 1
#: Least KL (beta = 1, nats per example) of a model that uses its latent: one bit.
KL_FLOOR = math.log(2)


def latent_constraints(active_units: float, kl: float) -> dict[str, float]:
    """How far a model is from using its latent, as Optuna constraint values (``> 0``: violated by that
    much; the model uses its latent when every value is ``<= 0``).

    ``active_units_missing`` = :data:`MIN_ACTIVE_UNITS` - ``active_units`` (units);
    ``kl_below_floor`` = :data:`KL_FLOOR` - ``kl`` (nats per example). A NaN input counts as violated.
    """
    missing = MIN_ACTIVE_UNITS - active_units if active_units == active_units else float(MIN_ACTIVE_UNITS)
    below = KL_FLOOR - kl if kl == kl else KL_FLOOR
    return {"active_units_missing": float(missing), "kl_below_floor": float(below)}


def latent_unused_reason(active_units: float, kl: float) -> str | None:
    """Why a model with these values does not use its latent, in words (None: it does)."""
    reasons = []
    if not active_units >= MIN_ACTIVE_UNITS:
        reasons.append("no active latent unit")
    if not kl >= KL_FLOOR:
        reasons.append(f"KL {kl:.3f} < {KL_FLOOR:.3f} nats (one bit)")
    return "; ".join(reasons) or None


def collapse_note(final: Mapping[str, float]) -> str | None:
    """A one-line note when ``final["test_active_units"] == 0``; None otherwise (or when not measured)."""
    active = final.get("test_active_units")
    if active is None or active != active or active > 0:
        return None
    kl = final.get("test_kl", float("nan"))
    return (f"posterior collapse: no latent unit is active on the test split (every posterior mean varies by "
            f"<= 0.01 across examples; test_kl {kl:.3f} nats): z carries almost no information about the input")
