"""Posterior collapse, said in words: the test-split diagnosis printed after a run.

A model has collapsed when its encoder's posterior means do not vary with the input: no latent unit
is *active* (Cov_x(E_q[z_u]) <= 0.01 for every u, Burda et al. 2015), so z carries almost no
information about the input and the conditional model is a label-conditioned decoder alone. Its KL is
then whatever the input-independent posterior costs: near 0 nats once training has settled (slightly
below 0 can be read with a flow, whose KL is a one-sample Monte Carlo estimate), more early on.
"""

from __future__ import annotations

from typing import Mapping


def collapse_note(final: Mapping[str, float]) -> str | None:
    """A one-line note when ``final["test_active_units"] == 0``; None otherwise (or when not measured)."""
    active = final.get("test_active_units")
    if active is None or active != active or active > 0:
        return None
    kl = final.get("test_kl", float("nan"))
    return (f"posterior collapse: no latent unit is active on the test split (every posterior mean varies by "
            f"<= 0.01 across examples; test_kl {kl:.3f} nats): z carries almost no information about the input")
