"""The library glue of compare-truncation: target detection, own generators, the influence
comparison's signs and optimum, and the heavy-tail note."""

import numpy as np
import pytest

from bptt_cli.analyses.influence import InfluenceRun, theta_gradient
from bptt_cli.analyses.truncation import (
    BiasPoint,
    EstimatorReport,
    EstimatorStats,
    compare_influence,
    heavy_tail_note,
    influence_steps_to_target,
    reached,
    with_own_generators,
)
from bptt_cli.core.truncation import Strategy, parse_strategies


@pytest.mark.parametrize(
    "value, target, higher, expected",
    [(0.9, 0.9, True, True), (0.89, 0.9, True, False), (0.05, 0.05, False, True), (0.2, 0.05, False, False),
     (None, 0.9, True, False), (float("nan"), 0.9, True, False)],
)  # fmt: skip
def test_reached(value, target, higher, expected):
    assert reached(value, target, higher) is expected


def test_own_generators_only_for_random_strategies_and_reproducible():
    specs = parse_strategies("full,chunk:4,random:0.5,random:0.9")
    a, b = with_own_generators(specs, 3), with_own_generators(specs, 3)
    assert a == specs  # same specs, generators are not part of equality
    assert [s.xi_rng is None for s in a] == [True, True, False, False]
    assert a[2].xi_rng.random() == b[2].xi_rng.random() != a[3].xi_rng.random()


def test_influence_steps_to_target():
    run = InfluenceRun("full", np.array([0.5, 0.2, 0.06, -0.04, -0.05]), np.zeros(4), np.zeros(4), None, 0.0)
    assert influence_steps_to_target(run, -0.05, 0.011) == 3  # theta after step 3 is -0.04
    assert influence_steps_to_target(run, -0.05, 1e-3) == 4
    assert influence_steps_to_target(run, 3.0, 0.1) is None


def test_compare_influence_signs_and_optimum():
    cmp = compare_influence(
        parse_strategies("full,chunk:5,random:0.9"), seq_len=120, batch=4, samples=40,
        rng=np.random.default_rng(0), steps=0, lr=0.01,
    )  # fmt: skip
    assert cmp.runs == ()
    assert cmp.full_gradient == pytest.approx(theta_gradient(0.5, Strategy("full"), seq_len=120)[1], rel=1e-12)
    # the optimum is the root of the (linear) full gradient
    assert theta_gradient(cmp.theta_opt, Strategy("full"), seq_len=120)[1] == pytest.approx(0.0, abs=1e-10)
    signs = {s.spec: s for s in cmp.signs}
    assert signs["full"].right_sign_share == 1.0 and signs["chunk:5"].right_sign_share == 0.0
    assert signs["chunk:5"].mean == pytest.approx(theta_gradient(0.5, Strategy("chunk", k=5), seq_len=120)[1])
    r9 = signs["random:0.9"]
    assert r9.samples == 40 and abs(r9.mean - cmp.full_gradient) <= 3 * r9.se
    stats = {r.spec: r for r in cmp.statistics.rows}
    assert cmp.statistics.full_grad_norm == pytest.approx(abs(cmp.full_gradient), rel=1e-12)
    assert stats["chunk:5"].cosine == -1.0  # a scalar's cosine is the agreement of signs


def row(spec, samples, bias, se):
    return EstimatorStats(
        spec, spec.split(":")[0], samples, bias, se, bias <= 3 * se, 1, 1, 0, 1, 0, (BiasPoint(2, 1, 1),)
    )


def test_heavy_tail_note_only_for_failed_random_rows():
    ok = EstimatorReport(1.0, 1.0, 0.0, (row("full", 1, 0.0, 0.0), row("random:0.9", 50, 0.1, 0.1)))
    assert heavy_tail_note(ok, 41, "x") == ""
    bad = EstimatorReport(1.0, 1.0, 0.0, (row("random:0.9", 50, 0.1, 0.1), row("random:0.5", 50, 2.0, 0.1)))
    note = heavy_tail_note(bad, 41, "the shortest window")
    assert note.startswith(" random:0.5: unbiased in expectation") and "P^41 = 4.5e-13" in note
