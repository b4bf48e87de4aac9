"""verdict.py: the rules of DESIGN.md section 1, and the verdicts issue 3 asks for."""

import math

import numpy as np
import pytest

from bptt_cli.core.eigen import singular_values
from bptt_cli.core.lyapunov import lyapunov_exponents
from bptt_cli.core.rnn import Params, init_params
from bptt_cli.core.verdict import LABELS, Verdict, judge_gain, judge_matrix, judge_trace, pascanu_bounds


@pytest.mark.parametrize(
    ("gain", "label"),
    [
        (1.5, "exploding"),
        (1.0205, "exploding"),
        (1.0195, "stable"),
        (1.0, "stable"),
        (0.9805, "stable"),
        (0.9795, "vanishing"),
        (0.0, "vanishing"),
        (float("inf"), "diverged"),
        (float("nan"), "diverged"),
    ],
)
def test_judge_gain_thresholds(gain, label):
    v = judge_gain(gain, basis="lyapunov", tol=0.02)
    assert v.label == label
    assert v.basis == "lyapunov"
    assert v.evidence["tol"] == 0.02
    assert v.message


@pytest.mark.parametrize(("rho", "label"), [(1.2, "exploding"), (0.8, "vanishing"), (1.0, "stable")])
def test_linear_network_is_judged_by_rho(rho, label):
    v = judge_matrix(rho, rho * 1.7, 1.0, linear=True)
    assert v.label == label
    assert v.basis == "spectral_radius"
    assert v.evidence["rho"] == rho


@pytest.mark.parametrize(("rho", "label"), [(1.2, "exploding"), (0.8, "vanishing"), (1.0, "stable")])
def test_linear_network_lyapunov_agrees_with_rho(rho, label):
    """The measured gain along a trajectory of a linear network is rho itself, so the verdicts agree."""
    rng = np.random.default_rng(0)
    H = 10
    Q, _ = np.linalg.qr(rng.standard_normal((H, H)))
    W = Q @ np.diag(np.r_[rho, rng.uniform(-0.5, 0.5, H - 1)]) @ Q.T
    p = init_params(rng, input_size=2, hidden_size=H, output_size=1)
    p = Params(W_x=p.W_x, W_h=W, b=p.b, W_y=p.W_y, c=p.c)
    lyap = lyapunov_exponents(p, rng.normal(size=(200, 1, 2)), activation="identity", warmup=50)
    v = judge_matrix(rho, float(singular_values(W)[0]), 1.0, linear=True, lyapunov_gain=float(lyap.gains[0]))
    assert v.basis == "lyapunov"
    assert v.label == label


def test_saturated_tanh_rho_3_is_not_exploding_and_shows_the_measured_gain():
    rng = np.random.default_rng(1)
    p = init_params(rng, input_size=4, hidden_size=32, output_size=1, spectral_radius=3.0)
    lyap = lyapunov_exponents(p, rng.normal(0, 20.0, size=(200, 4, 4)), activation="tanh", warmup=20)
    sigma = float(singular_values(p.W_h)[0])
    v = judge_matrix(3.0, sigma, 1.0, linear=False, lyapunov_gain=float(lyap.gains[0]))
    assert v.label != "exploding"
    assert v.label == "vanishing"
    assert v.basis == "lyapunov"
    assert v.evidence["lyapunov_gain"] == pytest.approx(float(lyap.gains[0]))
    assert v.evidence["bounds"]["explosion_possible"] is True


def test_nonlinear_never_exploding_from_rho_alone():
    for rho in (1.5, 3.0, 10.0):
        v = judge_matrix(rho, rho * 2, 1.0, linear=False)
        assert v.label == "undetermined"
        assert v.basis == "matrix_bounds"
        assert "not determined by the matrix alone" in v.message
        assert v.evidence["bounds"]["explosion_possible"] is True
        assert v.evidence["bounds"]["rho_statement"].endswith("for a nonlinear one it guarantees nothing")


def test_sigma_max_below_one_guarantees_vanishing():
    v = judge_matrix(0.5, 0.9, 1.0, linear=False)
    assert (v.label, v.basis) == ("vanishing", "sigma_max")
    assert "vanishing is guaranteed" in v.message
    # sigma_max = 0.99: the bound decides, and the message says so (it never says "undetermined ... guaranteed")
    v = judge_matrix(0.5, 0.99, 1.0, linear=False)
    assert (v.label, v.basis) == ("vanishing", "sigma_max")
    assert "vanishing is guaranteed" in v.message and "at most 0.99 per step" in v.message
    assert v.evidence["gain_bound"] == pytest.approx(0.99)
    # gamma enters: relu has gamma = 1 too, but a bounded-slope activation with gamma = 2 doubles the bound
    assert judge_matrix(0.5, 0.9, 2.0, linear=False).label == "undetermined"


def test_pascanu_bounds_statements():
    # rho < 1 but sigma_max > 1: no guarantee either way (the old "explosion is impossible" was false)
    b = pascanu_bounds(0.95, 1.3, 1.0)
    assert b["gamma"] == 1.0
    assert not b["vanishing_guaranteed"] and b["explosion_possible"]
    assert "explosion is possible" in b["sigma_statement"] and "impossible" not in str(b)
    assert pascanu_bounds(1.2, 0.9, 1.0)["vanishing_guaranteed"]
    # the nilpotent case: rho = 0 says nothing, sigma_max = 6 > 1 leaves explosion possible
    b0 = pascanu_bounds(0.0, 6.0, 1.0)
    assert b0["explosion_possible"] and not b0["vanishing_guaranteed"]
    edge = pascanu_bounds(0.5, 1.0, 1.0)
    assert not edge["vanishing_guaranteed"] and not edge["explosion_possible"]


def test_non_finite_matrix_is_diverged_and_bad_values_raise():
    assert judge_matrix(math.inf, math.inf, 1.0, linear=False).label == "diverged"
    with pytest.raises(ValueError, match="rho"):
        judge_matrix(-1.0, 1.0, 1.0, linear=False)
    with pytest.raises(ValueError, match="tol"):
        judge_gain(1.0, basis="lyapunov", tol=1.5)
    with pytest.raises(ValueError, match="label"):
        Verdict("fine", "lyapunov", "")
    with pytest.raises(ValueError, match="basis"):  # the basis is from a fixed vocabulary too
        Verdict("stable", "a hunch", "")


def test_as_dict_is_plain_and_labels_are_closed():
    v = judge_gain(1.3, basis="lyapunov", evidence={"steps": 10})
    d = v.as_dict()
    assert set(d) == {"label", "basis", "evidence", "message"}
    assert d["evidence"]["steps"] == 10 and d["evidence"]["gain"] == 1.3
    assert set(LABELS) == {"exploding", "vanishing", "stable", "diverged", "undetermined"}


# ---------------------------------------------------------------- judge_trace


@pytest.mark.parametrize(
    "gain, r2, log_net, expected, basis_suffix",
    [
        (0.9, 0.99, 19 * math.log(0.9), "vanishing", ""),  # exponential: the per-step gain decides
        (1.1, 0.99, 19 * math.log(1.1), "exploding", ""),
        (0.96, 0.32, math.log(1.24), "stable", "_net"),  # wandering signal that arrives intact
        (0.96, 0.32, math.log(1e-4), "vanishing", "_net"),  # wandering, but lost below eps
        (1.04, 0.10, math.log(1e4), "exploding", "_net"),
    ],
)
def test_judge_trace_uses_the_gain_only_when_the_fit_is_exponential(gain, r2, log_net, expected, basis_suffix):
    from bptt_cli.core.verdict import judge_trace

    v = judge_trace(gain, r2, 20, log_net, 19, basis="trace_last_loss", eps=1e-3)
    assert v.label == expected
    assert v.basis == "trace_last_loss" + basis_suffix
    assert v.evidence["r2"] == r2 and v.evidence["steps"] == 19


def test_judge_trace_without_points_is_undetermined():
    from bptt_cli.core.verdict import judge_trace

    assert judge_trace(math.nan, math.nan, 0, math.nan, 19, basis="trace_last_loss").label == "undetermined"


def test_a_signal_that_is_zero_one_step_back_is_vanishing_not_undetermined():
    """W_h = 0: dl_T/dh_T is finite and every earlier signal exactly zero (log -inf): no line can be
    fitted through one point, but the signal plainly dies at once."""
    v = judge_trace(math.nan, math.nan, 1, -math.inf, 29, basis="trace_last_loss")
    assert (v.label, v.basis) == ("vanishing", "trace_last_loss_net") and v.evidence["gain"] == 0.0
    # with no signal at T either, nothing is known
    assert judge_trace(math.nan, math.nan, 0, math.nan, 29, basis="trace_last_loss").label == "undetermined"
