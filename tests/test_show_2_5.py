"""Stage 2.5's figure shows what its caption claims (``nox -s show -- 2.5``), checked against eq. 7 of
the DPO paper (Rafailov et al., 2023) computed here from the reference's log-probabilities."""

from __future__ import annotations

import math

from shared.registry import BY_ID
from tests.test_show import env, reference_data  # noqa: F401  (env: a fixture)


def test_data_2_5(env: None) -> None:  # noqa: F811
    d = reference_data(BY_ID["2.5"], "dpo-rewards")
    assert d["chosen"][0] == 0.0 and d["rejected"][0] == 0.0  # policy = reference: every implicit reward is 0
    assert abs(d["loss"][0] - math.log(2)) < 1e-6  # ... and the loss is log 2
    for c, r, loss in zip(d["chosen"], d["rejected"], d["loss"], strict=True):
        assert loss > 0
        assert loss >= math.log1p(math.exp(-(c - r))) - 1e-6  # Jensen: mean over pairs of softplus(-margin) >= softplus(-mean margin)
    assert d["chosen"][-1] > 3 and abs(d["rejected"][-1]) < 1  # the chosen reward climbs, the rejected one stays near 0
    assert d["loss"][-1] < 0.01 and d["loss"][-1] < d["loss"][1] < d["loss"][0]
