"""power_iteration on every matrix family of issue 3, against numpy.linalg.eigvals.

Accuracy oracle: a returned pair with relative residual r is an exact eigenpair of W + E with
||E|| = r |lambda|, so first-order perturbation theory bounds its eigenvalue error by
kappa * r * |lambda|, kappa = 1 / |y^H x| the condition number of lambda_1 (left and right unit
eigenvectors from scipy.linalg.eig). numpy's own answer carries kappa * eps * ||W||. The tests
use that bound (times a safety factor of 10), not a hand-picked tolerance.
"""

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from bptt_cli.core.eigen import dominant_eigenvalue, reference_eigenvalues, singular_values

N = 40
EPS = np.finfo(float).eps


def rot(a: float) -> np.ndarray:
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def orthogonal(rng, n):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def similar(rng, T, condition=1.0):
    """Q T Q^T (normal part kept) or S T S^-1 with a mildly ill-conditioned S."""
    n = T.shape[0]
    Q = orthogonal(rng, n)
    if condition == 1.0:
        return Q @ T @ Q.T
    S = Q @ np.diag(np.geomspace(1, condition, n)) @ orthogonal(rng, n)
    return S @ T @ np.linalg.inv(S)


def bulk(rng, n, radius):
    """n eigenvalues (real and conjugate pairs) inside |z| <= radius, as a real block diagonal."""
    T = np.zeros((n, n))
    i = 0
    while i < n:
        if i + 1 < n and rng.random() < 0.5:
            r, a = radius * np.sqrt(rng.random()), rng.uniform(0.2, 3.0)
            T[i : i + 2, i : i + 2] = r * rot(a)
            i += 2
        else:
            T[i, i] = rng.uniform(-radius, radius)
            i += 1
    return T


def family(name: str, rng) -> np.ndarray:
    T = bulk(rng, N, 0.8)
    if name == "real-positive":
        T[0, :] = T[:, 0] = 0
        T[0, 0] = 2.0
        return similar(rng, T, 30.0)
    if name == "real-negative":
        T[0, :] = T[:, 0] = 0
        T[0, 0] = -1.7
        return similar(rng, T, 30.0)
    if name == "complex-pair":
        T[:2, :] = T[:, :2] = 0
        T[:2, :2] = 1.3 * rot(0.9)
        return similar(rng, T, 30.0)
    if name == "non-normal":
        # eigenvalues inside 0.9, but strong couplings above the diagonal: ||W|| / rho > 100. (A
        # dense large upper triangle would make the eigenvalues themselves meaningless in floating
        # point -- its pseudospectra fill a disc -- so the couplings pair well separated eigenvalues.)
        d = np.concatenate([[0.9], rng.uniform(-0.6, 0.6, N - 1)])
        T = np.diag(d) + np.triu(rng.normal(0, 0.05, (N, N)), 1)
        T[0, 1] = 150.0
        T[2:20:2, 3:21:2] += np.diag(np.full(9, 60.0))
        return similar(rng, T)
    if name == "jordan":
        T[:2, :] = T[:, :2] = 0
        T[:2, :2] = [[1.5, 1.0], [0.0, 1.5]]
        return similar(rng, T)
    if name == "gaussian":
        return rng.standard_normal((N, N)) / np.sqrt(N)
    raise AssertionError(name)


FAMILIES = ["real-positive", "real-negative", "complex-pair", "non-normal", "jordan", "gaussian"]


def condition_of_dominant(W: np.ndarray) -> tuple[complex, float]:
    w, vl, vr = scipy.linalg.eig(W, left=True, right=True)
    i = int(np.argmax(np.abs(w)))
    x, y = vr[:, i] / np.linalg.norm(vr[:, i]), vl[:, i] / np.linalg.norm(vl[:, i])
    return complex(w[i]), 1.0 / max(abs(np.vdot(y, x)), 1e-300)


def check_pair(W, r) -> None:
    """The returned vector or plane really is an eigenvector / invariant plane for lambda_1."""
    lam = r.eigenvalue
    if r.is_complex_pair:
        V = r.vector
        assert V.shape == (W.shape[0], 2)
        assert_allclose(V.T @ V, np.eye(2), atol=1e-12)
        G = V.T @ W @ V  # (2, 2) the restriction of W to the plane
        resid = np.linalg.norm(W @ V - V @ G) / abs(lam)
        assert resid <= 10 * r.residual + 1e-13
        assert_allclose(sorted(np.linalg.eigvals(G), key=lambda z: z.imag)[1], lam, rtol=1e-6)
    else:
        v = r.vector
        assert v.shape == (W.shape[0],)
        assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-12)
        resid = np.linalg.norm(W @ v - lam.real * v) / max(abs(lam), 1e-300)
        assert resid <= 10 * r.residual + 1e-13


@pytest.mark.parametrize("method", ["krylov-schur", "subspace"])
@pytest.mark.parametrize("name", FAMILIES)
def test_families_against_numpy(name, method):
    rng = np.random.default_rng(FAMILIES.index(name))
    W = family(name, rng)
    ref = reference_eigenvalues(W)[0]
    r = dominant_eigenvalue(W, method=method, max_iter=20000, tol=1e-10, rng=np.random.default_rng(1))
    assert r.method == method
    assert len(r.history) == len(r.residual_history) == len(r.history_iterations) >= 1
    assert r.converged, (r.iterations, r.residual)
    if name == "jordan":
        # a defective eigenvalue moves by sqrt(perturbation): the residual bound does not apply,
        # but the answer is right to ~sqrt(tol * ||W||)
        assert abs(r.abs_eigenvalue - abs(ref)) <= 10 * np.sqrt(1e-10 * np.linalg.norm(W, 2))
        return
    assert r.residual <= 1e-10
    lam, kappa = condition_of_dominant(W)
    bound = 10 * kappa * (r.residual + N * EPS * np.linalg.norm(W, 2) / abs(lam)) * abs(lam)
    assert abs(r.eigenvalue - ref) <= bound, (r.eigenvalue, ref, bound)
    assert r.is_complex_pair == (ref.imag != 0)
    assert r.eigenvalue.imag >= 0
    check_pair(W, r)
    if name != "gaussian":  # the bulk sits inside 0.8 or 0.6: the ratio is known to be small
        assert r.ratio_estimate is not None and r.ratio_estimate < 0.8


def test_non_normal_family_is_strongly_non_normal():
    W = family("non-normal", np.random.default_rng(FAMILIES.index("non-normal")))
    assert np.linalg.norm(W, 2) / np.max(np.abs(np.linalg.eigvals(W))) > 100


def test_plain_power_iteration_rotates_on_a_complex_pair():
    """Block size 1 (textbook power iteration) cannot converge on a conjugate pair: it says so."""
    W = family("complex-pair", np.random.default_rng(2))
    r = dominant_eigenvalue(W, method="power", max_iter=300)
    assert not r.converged
    assert r.residual > 1e-3
    ref = reference_eigenvalues(W)[0]
    # its Rayleigh quotient wanders around the real axis, far from |lambda_1| on most steps
    assert np.median(np.abs(r.history[50:] - abs(ref))) > 1e-2


@pytest.mark.parametrize("method", ["krylov-schur", "subspace"])
def test_near_tie_is_never_a_wrong_converged_answer(method):
    """lambda_1 = 1 real, a conjugate pair at 0.9999999: block-2 power iteration cannot split
    them within the budget and must say not converged; whatever converges must be right."""
    rng = np.random.default_rng(7)
    T = bulk(rng, N, 0.5)
    T[:3, :] = T[:, :3] = 0
    T[0, 0] = 1.0
    T[1:3, 1:3] = (1 - 1e-7) * rot(2.0)
    W = similar(rng, T)
    ref = reference_eigenvalues(W)[0]
    r = dominant_eigenvalue(W, method=method, max_iter=400, tol=1e-10, rng=np.random.default_rng(3))
    if method == "subspace":  # rate |lambda_3 / lambda_1| = 1 - 1e-7: hopeless in 400 iterations, and it says so
        assert not r.converged and r.residual > 1e-3
    else:  # the Krylov space separates the tie
        assert r.converged and abs(r.eigenvalue - ref) <= 1e-8


def test_real_near_tie_of_opposite_signs_is_split_by_the_plane():
    rng = np.random.default_rng(8)
    T = bulk(rng, N, 0.5)
    T[:2, :] = T[:, :2] = 0
    T[0, 0], T[1, 1] = -1.0, 1.0 - 1e-9
    W = similar(rng, T)
    r = dominant_eigenvalue(W, method="subspace", max_iter=2000)
    assert r.converged
    assert_allclose(r.eigenvalue, -1.0, rtol=1e-9)


@pytest.mark.parametrize("method", ["krylov-schur", "subspace"])
@pytest.mark.parametrize(
    ("W", "expected"),
    [
        (np.array([[-2.5]]), -2.5),
        (np.array([[0.0]]), 0.0),
        (np.zeros((6, 6)), 0.0),
        (np.eye(6), 1.0),
        (-3 * np.eye(5), -3.0),
    ],
    ids=["1x1", "1x1-zero", "zero", "identity", "scaled-identity"],
)
def test_trivial_matrices(W, expected, method):
    r = dominant_eigenvalue(W, method=method, max_iter=200)
    assert r.converged
    assert_allclose(r.eigenvalue, expected, atol=1e-12)
    assert r.residual <= 1e-12
    assert np.isfinite(r.vector).all()


@pytest.mark.parametrize("method", ["krylov-schur", "subspace"])
def test_nilpotent_jordan_block(method):
    """Every eigenvalue 0 in one 6 x 6 Jordan block: a rounding error of eps moves them to
    eps^(1/6) ~ 2e-3 (the same happens to any backward-stable method on a rotated copy)."""
    W = similar(np.random.default_rng(0), np.diag(np.ones(5), 1))
    r = dominant_eigenvalue(W, method=method, max_iter=300)
    spread = 10 * (EPS * np.linalg.norm(W, 2)) ** (1 / 6)
    if method == "krylov-schur":  # the Krylov space is W's invariant subspace after 6 steps
        assert r.converged and r.abs_eigenvalue <= spread
    else:  # six eigenvalues within eps^(1/6) of each other: no gap for a 2-D block to use
        assert not r.converged
    assert abs(reference_eigenvalues(W)[0]) <= spread


def test_matvec_callable_matches_the_matrix():
    W = family("complex-pair", np.random.default_rng(2))
    a = dominant_eigenvalue(W, rng=np.random.default_rng(5))
    b = dominant_eigenvalue(lambda v: W @ v, n=N, rng=np.random.default_rng(5))
    assert_allclose(b.eigenvalue, a.eigenvalue, rtol=1e-12)
    assert b.iterations == a.iterations


@pytest.mark.parametrize("method", ["krylov-schur", "subspace"])
def test_warm_start_needs_fewer_iterations(method):
    """A training loop re-estimates lambda_1 of a slowly changing W_h from the last vector."""
    rng = np.random.default_rng(11)
    W = family("complex-pair", rng)
    cold = dominant_eigenvalue(W, method=method, rng=np.random.default_rng(0))
    W2 = W + 1e-4 * rng.standard_normal(W.shape)
    warm = dominant_eigenvalue(W2, method=method, v0=cold.vector, rng=np.random.default_rng(0))
    cold2 = dominant_eigenvalue(W2, method=method, rng=np.random.default_rng(0))
    assert warm.converged and cold2.converged
    assert warm.iterations < cold2.iterations
    assert_allclose(warm.eigenvalue, reference_eigenvalues(W2)[0], rtol=1e-8)


def test_warm_start_on_a_non_dominant_eigenvector_still_finds_lambda_1():
    W = np.diag([3.0, 1.0, 0.5, 0.2, 0.1])
    r = dominant_eigenvalue(W, v0=np.array([0.0, 1.0, 0.0, 0.0, 0.0]))
    assert r.converged
    assert_allclose(r.eigenvalue, 3.0, rtol=1e-10)


def test_budget_exhausted_is_not_converged():
    W = family("gaussian", np.random.default_rng(5))
    r = dominant_eigenvalue(W, max_iter=5)
    assert not r.converged
    assert r.iterations == 5
    assert r.residual > 1e-10


def test_same_rng_same_numbers():
    W = family("gaussian", np.random.default_rng(5))
    a = dominant_eigenvalue(W, rng=np.random.default_rng(3))
    b = dominant_eigenvalue(W, rng=np.random.default_rng(3))
    assert a.eigenvalue == b.eigenvalue and a.iterations == b.iterations


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_iter": 0}, "max_iter"),
        ({"tol": 0.0}, "tol"),
        ({"tol": -1e-3}, "tol"),
        ({"tol": float("nan")}, "tol"),
        ({"method": "lanczos"}, "method"),
        ({"v0": np.ones(3)}, "v0"),
        ({"nev": 31}, "nev"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dominant_eigenvalue(np.eye(4), **kwargs)


@pytest.mark.parametrize(
    ("A", "match"),
    [
        (np.ones((3, 4)), "square"),
        (np.ones((0, 0)), "square"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
        (np.eye(2) * 1j, "real"),
    ],
)
def test_bad_matrices(A, match):
    with pytest.raises(ValueError, match=match):
        dominant_eigenvalue(A)


def test_callable_needs_n():
    with pytest.raises(ValueError, match="`n`"):
        dominant_eigenvalue(lambda v: v)


@pytest.mark.parametrize("n", [3, 30])
def test_arpack_reference_agrees_with_numpy(n):
    W = np.random.default_rng(n).standard_normal((n, n)) + np.diag(np.r_[5.0, np.zeros(n - 1)])
    assert_allclose(abs(reference_eigenvalues(W, "arpack")[0]), abs(reference_eigenvalues(W)[0]), rtol=1e-10)


def test_reference_sorted_by_modulus_and_singular_values_descending():
    W = np.random.default_rng(4).standard_normal((12, 12))
    ev = reference_eigenvalues(W)
    assert np.all(np.diff(np.abs(ev)) <= 1e-12)
    s = singular_values(W)
    assert np.all(np.diff(s) <= 0)
    assert_allclose(s[0], np.linalg.norm(W, 2), rtol=1e-12)
    assert_allclose(np.prod(s), abs(np.linalg.det(W)), rtol=1e-10)


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 9),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    method=st.sampled_from(["krylov-schur", "subspace"]),
)
def test_random_small_matrices_never_a_wrong_converged_answer(n, seed, scale, method):
    """Whatever the matrix, a converged answer is lambda_1 to within its condition-number bound."""
    rng = np.random.default_rng(seed)
    W = scale * rng.standard_normal((n, n))
    r = dominant_eigenvalue(W, method=method, max_iter=500, rng=rng)
    moduli = np.sort(np.abs(np.linalg.eigvals(W)))[::-1]
    if not r.converged:
        # honest, and only where it must be: Krylov-Schur converges on all of these; block-2 power
        # iteration converges like |lambda_3 / lambda_1|^k, which needs a ratio below ~0.955 for
        # 1e-10 in 500 iterations
        assert method == "subspace" and n >= 3 and moduli[2] / moduli[0] > 0.9, (moduli, r.residual)
        assert r.residual > 1e-10
        return
    ref = reference_eigenvalues(W)
    lam, kappa = condition_of_dominant(W)
    # ties in modulus (a real matrix's conjugate pairs aside) make "the" lambda_1 ambiguous: compare moduli
    bound = 10 * kappa * (r.residual + n * EPS * np.linalg.norm(W, 2) / max(abs(lam), 1e-300)) * abs(lam)
    assert abs(r.abs_eigenvalue - abs(ref[0])) <= bound + 1e-12 * abs(ref[0]), (r.eigenvalue, ref[0], bound)
