"""core/theory.py against closed forms and an independent quadrature (scipy.integrate.quad)."""

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.integrate import quad

from bptt_cli.core.theory import edge_of_chaos, fixed_point_variance, mean_field


def gauss(f):
    """E[f(z)], z ~ N(0, 1), by adaptive quadrature: an oracle independent of the Hermite nodes."""
    return quad(lambda z: f(z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -np.inf, np.inf, epsabs=1e-14)[0]


@pytest.mark.parametrize("g", [0.3, 0.5, 0.9, 1.0])
def test_the_ordered_phase_without_input_is_closed_form(g):
    # q* = 0, so f'(0) = 1: chi = g^2, lambda = ln g, xi = -1 / (2 ln g)
    m = mean_field(g)
    assert m.q == 0.0 and m.chi == pytest.approx(g * g, rel=1e-14)
    assert m.lyapunov == pytest.approx(math.log(g), abs=1e-14)
    assert (m.memory is None) if g == 1.0 else m.memory == pytest.approx(-1 / (2 * math.log(g)), rel=1e-12)


@pytest.mark.parametrize(("g", "s_x", "s_b"), [(1.5, 0.0, 0.0), (2.0, 0.01, 0.0), (3.0, 0.5, 0.1), (0.8, 1.0, 0.2)])
def test_the_fixed_point_and_the_gain_against_quad(g, s_x, s_b):
    m = mean_field(g, s_x, s_b)
    q = m.q
    # q* solves its own equation, and chi is the expectation, both to quadrature accuracy
    assert_allclose(q, g * g * gauss(lambda z: math.tanh(math.sqrt(q) * z) ** 2) + s_x**2 + s_b**2, rtol=1e-10)
    assert_allclose(m.chi, g * g * gauss(lambda z: (1 - math.tanh(math.sqrt(q) * z) ** 2) ** 2), rtol=1e-10)
    assert m.lyapunov == pytest.approx(0.5 * math.log(m.chi), abs=1e-15) and m.gain == pytest.approx(math.sqrt(m.chi))
    # the root is the stable one: the map's slope at q* is below 1
    h = 1e-6 * q
    slope = (
        g
        * g
        * (
            gauss(lambda z: math.tanh(math.sqrt(q + h) * z) ** 2)
            - gauss(lambda z: math.tanh(math.sqrt(q - h) * z) ** 2)
        )
        / (2 * h)
    )
    assert slope < 1


def test_the_values_the_issue_measured_by_hand():
    # mean field at small input (0.01): -0.6931 at g = 0.5, 0.0652 at g = 1.5, 0.3102 at g = 3
    assert mean_field(0.5, 0.01).lyapunov == pytest.approx(-0.6931, abs=2e-4)
    assert mean_field(1.5, 0.01).lyapunov == pytest.approx(0.0652, abs=1e-4)
    assert mean_field(3.0, 0.01).lyapunov == pytest.approx(0.3102, abs=1e-4)


def test_the_edge_of_chaos():
    assert edge_of_chaos() == pytest.approx(1.0, abs=1e-6)  # no drive: chi = g^2 until g = 1
    g = edge_of_chaos(0.5)
    assert g > 1 and mean_field(g, 0.5).chi == pytest.approx(1.0, abs=1e-9)  # input moves the edge up
    chis = [mean_field(g, 0.1).chi for g in np.linspace(0.5, 3, 11)]
    assert all(a < b for a, b in zip(chis, chis[1:], strict=False))  # chi grows with g
    assert fixed_point_variance(1.2) > 0 == fixed_point_variance(0.99)


@pytest.mark.parametrize("g", [0.5, 0.9, 1.5, 2.0, 3.0])
def test_spectrum_measures_what_the_theory_predicts(g):
    """A gaussian tanh RNN, H = 600, input std 0.01, from a random start. Chaotic phase (g > 1): the
    measured top Lyapunov exponent within 0.02 of the mean-field value spectrum shows beside it,
    for the matrix's own g = ||W_h||_F / sqrt(H) (finite H: fluctuations O(1/sqrt(H)) ~ 0.01).
    Ordered phase: the state settles at 0, J_t -> W_h, and the exponent is exactly ln rho(W_h) of
    this one matrix; mean field's ln g differs from it by the finite-H excess of rho over g (the
    circular law's edge: a few per cent at H = 600), which the test bounds instead."""
    import json

    from typer.testing import CliRunner

    from bptt_cli.cli.app import app

    args = ["spectrum", "-H", "600", "--spectral-radius", str(g), "--input-scale", "0.01", "-T", "600", "-B", "2"]
    r = CliRunner().invoke(app, [*args, "--h0", "random", "--reference", "none", "--json", "-q"])
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)["results"]
    theory, measured = res["theory"], res["lyapunov"]["exponents"][0]
    sigma = np.asarray(res["singular_values"]["all"])
    assert theory["g"] == pytest.approx(math.sqrt(np.sum(sigma**2) / 600), rel=1e-12)  # the matrix's own gain
    if g > 1:
        assert measured == pytest.approx(theory["lyapunov"], abs=0.02)
    else:
        assert measured == pytest.approx(math.log(res["rho"]), abs=0.01)
        assert 0 <= measured - theory["lyapunov"] < 0.06
