"""The gate's decision rule (pure): tolerance, popularity, first version."""

from __future__ import annotations

import pytest

from jobs.gate import decide


@pytest.mark.parametrize("cand,champ,pop,promote", [
    (0.30, None, 0.10, True),     # first version beats popularity
    (0.09, None, 0.10, False),    # first version must beat popularity
    (0.300, 0.300, 0.10, True),   # equal
    (0.296, 0.300, 0.10, True),   # worse, but within the tolerance (0.005)
    (0.294, 0.300, 0.10, False),  # worse than the tolerance allows
    (0.31, 0.30, 0.32, False),    # better than the champion but not than popularity
])
def test_decide(cand, champ, pop, promote):
    ok, reason = decide(cand, champ, pop, 0.005)
    assert ok is promote and f"{cand:.4f}" in reason
