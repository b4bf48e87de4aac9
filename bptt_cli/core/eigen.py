"""The spectrum of a recurrent matrix: its dominant eigenvalue, found so that it is right or says
it is not, the dense references, and the singular values.

`dominant_eigenvalue` finds lambda_1 of a real, generally non-symmetric matrix (or a matvec
callable) and says honestly whether it converged. Plain power iteration fails on such matrices
in three quiet ways: a complex-conjugate dominant pair makes the iterate rotate forever (its
Rayleigh quotient tends to Re lambda, not |lambda|); |lambda_2/lambda_1| near 1 (the rule for
random matrices) makes it crawl; non-normality makes the per-step ratio swing long before it
settles. Three methods, each Rayleigh-Ritz on a subspace built from the same matvecs:

- "krylov-schur" (default): the Arnoldi process restarted by the Krylov-Schur method (Stewart
  2001): each matvec extends a Krylov basis of up to m = 60 vectors, the Ritz values of the
  small projected matrix are checked early in the first cycle and at every restart, and a
  restart keeps the m/2 Ritz vectors of largest modulus. Polynomial acceleration makes it far
  faster than block power iteration when |lambda_2/lambda_1| is close to 1. One iteration = one
  matvec. A Krylov method can converge to a near-dominant eigenvalue while the true lambda_1 is
  still hidden; a basis of 60 and waiting for the three largest Ritz values make that rare
  (benchmarks/README.md has the wrong-answer counts), not impossible.
- "subspace": block power iteration on a 2-dimensional subspace (the real invariant plane of a
  conjugate pair), then the 2 x 2 Rayleigh-Ritz problem. Converges like |lambda_3 / lambda_1|^k.
- "power": plain power iteration (the subspace method with one vector), kept for teaching: it
  never converges on a conjugate pair, and says so.

All stop when the relative residual ||W u - theta u|| / (|theta| ||u||) of the dominant Ritz
pair is <= tol, and report converged=False when max_iter runs out first.

A matrix is first divided by a power of two (exact in floating point) so that its largest entry
is of order 1: the vector norms of the iteration would otherwise overflow for entries beyond
about 1e150, or underflow below 1e-150, and report a residual of 0 for a wrong answer. The
eigenvalue is scaled back at the end; one beyond the float64 range comes back as inf.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import scipy.linalg

from bptt_cli.core.validate import check_choice, check_positive_int

METHODS = ("krylov-schur", "subspace", "power")
REFERENCES = ("numpy", "arpack")

Matvec = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EigenResult:
    """The dominant eigenvalue and how it was found.

    eigenvalue : complex lambda_1 (for a conjugate pair, the member with Im > 0)
    abs_eigenvalue : |lambda_1|
    vector : (n,) unit eigenvector for a real lambda_1, or an (n, 2) orthonormal basis of the
        real invariant plane of a complex pair
    is_complex_pair : lambda_1 has a non-zero imaginary part (so conj(lambda_1) ties it)
    iterations : iterations used (Arnoldi steps for "krylov-schur", block products otherwise)
    matvecs : single-vector products with W in total (for "krylov-schur", the steps plus the one or two
        products that check the final residual)
    converged : the residual reached tol within max_iter
    residual : ||W u - lambda u|| / (|lambda| ||u||) of the returned pair
    history : the |lambda_1| estimate after each iteration ("subspace", "power"), or after each step of
        the first Krylov cycle and then each restart ("krylov-schur")
    residual_history : the residual at the same points
    history_iterations : the iteration number of each history entry
    ratio_estimate : |lambda_2 / lambda_1| (lambda_2: largest eigenvalue other than lambda_1 and
        its conjugate), from the Ritz values or the residual's decay rate; None if unknown
    method : "krylov-schur" | "subspace" | "power"
    """

    eigenvalue: complex
    abs_eigenvalue: float
    vector: np.ndarray
    is_complex_pair: bool
    iterations: int
    matvecs: int
    converged: bool
    residual: float
    history: np.ndarray
    residual_history: np.ndarray
    history_iterations: np.ndarray
    ratio_estimate: float | None
    method: str


# ---------------------------------------------------------------------------- helpers


def _exponent(W: np.ndarray) -> int:
    """e with max |W| in [2^(e-1), 2^e): W / 2^e has entries of order 1 (0 for a zero matrix)."""
    top = float(np.max(np.abs(W))) if W.size else 0.0
    return int(np.frexp(top)[1]) if top > 0 else 0


def _as_operator(A: np.ndarray | Matvec, n: int | None) -> tuple[Matvec, int, int]:
    """The matvec, the dimension, and the power of two e the matrix was divided by (0 for a callable)."""
    if callable(A):
        if n is None:
            raise ValueError("`n` (the dimension) is required when `A` is a matvec callable")
        return A, check_positive_int("n", n), 0
    W = np.asarray(A)
    if W.ndim != 2 or W.shape[0] != W.shape[1] or W.size == 0:
        raise ValueError(f"`A` must be a non-empty square matrix; got shape {W.shape}")
    if np.iscomplexobj(W) or W.dtype.kind not in "iuf":
        raise ValueError(f"`A` must be a real matrix; got dtype {W.dtype}")
    W = W.astype(np.float64, copy=False)
    if not np.all(np.isfinite(W)):
        raise ValueError("`A` contains NaN or infinite values")
    if n is not None and n != W.shape[0]:
        raise ValueError(f"`n` = {n} does not match the matrix size {W.shape[0]}")
    e = _exponent(W)
    Ws = np.ldexp(W, -e) if e else W
    return (lambda v: Ws @ v), W.shape[0], e


def _scaled_back(r: EigenResult, e: int) -> EigenResult:
    """The result for 2^e W from the one for W: the eigenvalue and its history scale, nothing else does."""
    if e == 0:
        return r
    with np.errstate(over="ignore"):
        lam = complex(np.ldexp(r.eigenvalue.real, e), np.ldexp(r.eigenvalue.imag, e))
        modulus = float(np.ldexp(r.abs_eigenvalue, e))
        history = np.ldexp(r.history, e)
    return replace(r, eigenvalue=lam, abs_eigenvalue=modulus, history=history)


def _start_vector(n: int, rng: np.random.Generator, v0: np.ndarray | None) -> np.ndarray:
    """A unit start vector: v0 (a vector or the first column of a 2-D basis) plus a tiny random
    component, so that a warm start that is exactly a non-dominant eigenvector cannot trap us."""
    r = rng.standard_normal(n)
    if v0 is None:
        return r / np.linalg.norm(r)
    v = np.asarray(v0, dtype=np.float64)
    if v.shape not in ((n,), (n, 2)):
        raise ValueError(f"`v0` must have shape ({n},) or ({n}, 2); got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("`v0` contains NaN or infinite values")
    if v.ndim == 2:
        v = v[:, 0] + 0.5 * v[:, 1]  # any generic vector of the plane; the Krylov space holds both
    nv = np.linalg.norm(v)
    if nv == 0:
        return r / np.linalg.norm(r)
    v = v / nv + 1e-6 * r / np.linalg.norm(r)
    return v / np.linalg.norm(v)


def _relative(res: float, theta: complex) -> float:
    if abs(theta) > 0:
        return res / abs(theta)
    return 0.0 if res == 0 else float("inf")


def _vector_of(u: np.ndarray, complex_pair: bool) -> np.ndarray:
    """A real unit vector (sign: largest entry positive), or an orthonormal basis of span{Re u, Im u}."""
    if complex_pair:
        q, _ = np.linalg.qr(np.column_stack([u.real, u.imag]))
        return q
    v = u.real if np.linalg.norm(u.real) >= np.linalg.norm(u.imag) else u.imag
    v = v / np.linalg.norm(v)
    return v if v[np.argmax(np.abs(v))] >= 0 else -v


def _pick(theta: np.ndarray) -> int:
    """Index of the dominant Ritz value; of a conjugate pair, the member with Im >= 0."""
    mod = np.abs(theta)
    top = np.flatnonzero(mod >= mod.max() * (1 - 1e-14))
    return int(top[np.argmax(theta[top].imag)])


def _ratio_from_ritz(theta: np.ndarray, i: int) -> float | None:
    lam = theta[i]
    others = np.delete(theta, i)
    if lam.imag != 0:
        others = others[~np.isclose(others, np.conj(lam), rtol=1e-10, atol=0)]
    if others.size == 0 or abs(lam) == 0:
        return None
    return float(np.max(np.abs(others)) / abs(lam))


def _ratio_from_decay(res_hist: list[float], window: int = 20) -> float | None:
    """Geometric decay rate of the residual over the last `window` iterations."""
    r = np.asarray(res_hist[-window - 1 :], dtype=np.float64)
    r = r[np.isfinite(r) & (r > 0)]
    if r.size < 3:
        return None
    slope = np.polyfit(np.arange(r.size), np.log(r), 1)[0]
    return float(min(np.exp(slope), 1.0))


def _result(theta, u, its, mv, ok, res, hist, rhist, ratio, method, at=None) -> EigenResult:
    lam = complex(theta)
    pair = lam.imag != 0
    if pair and lam.imag < 0:
        lam, u = lam.conjugate(), u.conj()
    return EigenResult(
        eigenvalue=lam,
        abs_eigenvalue=float(abs(lam)),
        vector=_vector_of(np.asarray(u, dtype=np.complex128), pair),
        is_complex_pair=bool(pair),
        iterations=its,
        matvecs=mv,
        converged=bool(ok),
        residual=float(res),
        history=np.asarray(hist, dtype=np.float64),
        residual_history=np.asarray(rhist, dtype=np.float64),
        history_iterations=np.arange(1, len(hist) + 1) if at is None else np.asarray(at, dtype=np.int64),
        ratio_estimate=ratio,
        method=method,
    )


# ---------------------------------------------------------------------------- subspace iteration


def _subspace(
    matvec: Matvec, n: int, v: np.ndarray, block: int, max_iter: int, tol: float, rng, method: str
) -> EigenResult:
    p = min(block, n)
    V = np.column_stack([v, rng.standard_normal((n, p - 1))]) if p > 1 else v[:, None]  # (n, p)
    V, _ = np.linalg.qr(V)
    hist: list[float] = []
    rhist: list[float] = []
    theta, u, res = 0j, V[:, 0].astype(complex), float("inf")
    for it in range(1, max_iter + 1):
        Y = np.column_stack([matvec(V[:, j]) for j in range(p)])  # (n, p) = W V
        G = V.T @ Y  # (p, p) Rayleigh-Ritz projection
        th, S = np.linalg.eig(G)
        i = _pick(th)
        theta, s = th[i], S[:, i]
        u = V @ s  # (n,) Ritz vector, unit norm
        res = _relative(float(np.linalg.norm(Y @ s - theta * u)), theta)
        hist.append(abs(theta))
        rhist.append(res)
        if res <= tol:
            ratio = _ratio_from_ritz(th, i) if p > 2 or th[i].imag == 0 else None
            if ratio is None and p <= 2:
                ratio = _ratio_from_decay(rhist)
            return _result(theta, u, it, it * p, True, res, hist, rhist, ratio, method)
        if not np.any(Y):  # W annihilates the subspace: a new random direction
            Y = rng.standard_normal((n, p))
        V, _ = np.linalg.qr(Y)
    return _result(theta, u, max_iter, max_iter * p, False, res, hist, rhist, _ratio_from_decay(rhist), method)


# ---------------------------------------------------------------------------- Krylov-Schur


def _krylov(
    matvec: Matvec, n: int, v: np.ndarray, m: int, nev: int, max_iter: int, tol: float, keep: int | None = None
) -> EigenResult:
    m = min(m, n)
    keep = max(1, m // 2) if keep is None else min(keep, m - 2)
    V = np.zeros((n, m + 1))  # (n, m+1) orthonormal Krylov-Schur basis
    Hm = np.zeros((m + 1, m))  # (m+1, m): W V[:, :m] = V Hm
    V[:, 0] = v
    k, mv = 0, 0
    hist: list[float] = []
    rhist: list[float] = []
    scale = 0.0  # running estimate of ||W||, for the breakdown test
    at: list[int] = []  # the iteration (matvec count) of each history entry
    cycle = -1
    while True:
        cycle += 1
        for j in range(k, m):
            w = matvec(V[:, j])
            mv += 1
            Vj = V[:, : j + 1]
            norm_w = float(np.linalg.norm(w))
            h = Vj.T @ w
            w = w - Vj @ h
            beta = float(np.linalg.norm(w))
            if beta < 0.717 * norm_w:  # heavy cancellation (DGKS test): a second Gram-Schmidt pass
                h2 = Vj.T @ w
                w -= Vj @ h2
                h += h2
                beta = float(np.linalg.norm(w))
            Hm[: j + 1, j] = h
            Hm[j + 1, j] = beta
            scale = max(scale, float(np.linalg.norm(h)), beta)
            breakdown = beta <= 1e-13 * scale or j + 1 == n
            # the small eigenproblem costs more than a matvec for modest n: solve it after the
            # first few steps and every 4th of the first cycle (small and warm-started problems
            # finish there), then once per restart cycle
            early = cycle == 0 and (j < 4 or j % 4 == 3)
            if not (early or j == m - 1 or breakdown or mv >= max_iter):
                V[:, j + 1] = w / beta
                continue
            th, S = np.linalg.eig(Hm[: j + 1, : j + 1])
            i = _pick(th)
            # ||W u - theta u|| = beta |e_j^T s| for every Ritz pair; besides lambda_1's own,
            # require the next nev - 1 largest to have settled too, relative to |theta_1|: a
            # Krylov space can lock in one of the many near-dominant eigenvalues of a random
            # matrix before the true lambda_1 has emerged, and this is what exposes that
            top = np.argsort(-np.abs(th))[: min(nev, j + 1)]
            res = _relative(beta * abs(S[j, i]), th[i])
            watch = _relative(beta * float(np.max(np.abs(S[j, top]))), th[i])
            if breakdown:
                res = watch = 0.0  # an invariant subspace: the Ritz values are eigenvalues
            hist.append(abs(th[i]))
            rhist.append(res)
            at.append(mv)
            if max(res, watch) <= tol or mv >= max_iter:
                u = Vj @ S[:, i]
                if not breakdown:  # report the true residual, not the recurrence's estimate
                    if u.imag.any():
                        r = matvec(u.real) + 1j * matvec(u.imag) - th[i] * u
                        mv += 2
                    else:
                        r = matvec(u.real) - th[i] * u
                        mv += 1
                    res = _relative(float(np.linalg.norm(r)), th[i])
                    rhist[-1] = res
                ok = res <= tol
                ratio = _ratio_from_ritz(th, i) if ok else None
                return _result(th[i], u, at[-1], mv, ok, res, hist, rhist, ratio, "krylov-schur", at)
            V[:, j + 1] = w / beta
        # restart: reorder the Schur form so the `keep` Ritz values of largest modulus lead
        Hs = Hm[:m, :m]
        mods = np.sort(np.abs(th))[::-1]  # th: the Ritz values of Hs, from the check at j = m - 1
        cut = mods[keep - 1] * (1 - 1e-12)
        T, Z, sdim = scipy.linalg.schur(Hs, output="real", sort=lambda re, im, cut=cut: np.hypot(re, im) >= cut)
        k = min(int(sdim), m - 1)
        if k < m and k > 0 and T[k, k - 1] != 0:  # do not split a 2 x 2 block of a conjugate pair
            k = k + 1 if k + 1 < m else k - 1
        k = max(k, 1)
        b = Hm[m, m - 1] * Z[m - 1, :k]  # (k,) the new last row
        V[:, :k] = V[:, :m] @ Z[:, :k]
        V[:, k] = V[:, m]
        Hm[:] = 0
        Hm[:k, :k] = T[:k, :k]
        Hm[k, :k] = b


def dominant_eigenvalue(
    A: np.ndarray | Matvec,
    *,
    n: int | None = None,
    max_iter: int = 1000,
    tol: float = 1e-10,
    rng: np.random.Generator | None = None,
    v0: np.ndarray | None = None,
    method: str = "krylov-schur",
    krylov_dim: int = 60,
    nev: int | None = None,
) -> EigenResult:
    """The dominant eigenvalue of a real square matrix, with an honest convergence flag.

    Parameters
    ----------
    A : (n, n) real matrix, or a callable v (n,) -> W v (n,)
    n : the dimension, required when `A` is a callable
    max_iter : iteration budget (matvecs for "krylov-schur", block products otherwise), >= 1
    tol : relative residual ||W u - lambda u|| / (|lambda| ||u||) to reach, > 0
    rng : source of the random start vector (default: np.random.default_rng(0), deterministic)
    v0 : (n,) or (n, 2) warm start, e.g. a previous result's `vector`
    method : "krylov-schur" (restarted Arnoldi, default), "subspace" (2-D block power
        iteration) or "power" (plain power iteration)
    krylov_dim : largest Krylov basis m for "krylov-schur" before a restart
    nev : "krylov-schur" converges the nev largest Ritz values, not only the first (a guard against
        locking in one of many near-dominant eigenvalues); default 3 from a random start, 1 with
        a warm start v0 (which already points at lambda_1)

    Returns
    -------
    EigenResult. `converged` is False when the residual did not reach `tol` in `max_iter`
    iterations (a near tie |lambda_2| ~ |lambda_1|, a defective eigenvalue, too small a budget);
    the estimate is then the best one seen, flagged as such. A matrix is scaled by a power of
    two for the iteration (see the module docstring); a callable's products are used as they
    come, so they must stay within about 1e+-150 for the norms to be finite and non-zero.
    """
    check_choice("method", method, METHODS)
    max_iter = check_positive_int("max_iter", max_iter)
    if isinstance(tol, bool) or not (isinstance(tol, (int, float)) and np.isfinite(tol) and tol > 0):
        raise ValueError(f"`tol` must be a positive number; got {tol!r}")
    krylov_dim = check_positive_int("krylov_dim", krylov_dim)
    nev = (3 if v0 is None else 1) if nev is None else check_positive_int("nev", nev)
    if krylov_dim < 3:
        raise ValueError(f"`krylov_dim` must be at least 3; got {krylov_dim}")
    if nev > krylov_dim // 2:
        raise ValueError(f"`nev` must be at most krylov_dim // 2 = {krylov_dim // 2}; got {nev}")
    matvec, n, e = _as_operator(A, n)
    rng = np.random.default_rng(0) if rng is None else rng
    v = _start_vector(n, rng, v0)
    if n == 1:
        w = float(np.asarray(matvec(np.ones(1)))[0])
        return _scaled_back(_result(w, np.ones(1), 1, 1, True, 0.0, [abs(w)], [0.0], None, method), e)
    with np.errstate(over="ignore", invalid="ignore"):
        if method == "krylov-schur":
            r = _krylov(matvec, n, v, krylov_dim, nev, max_iter, float(tol))
        else:
            r = _subspace(matvec, n, v, 2 if method == "subspace" else 1, max_iter, float(tol), rng, method)
    return _scaled_back(r, e)


# ---------------------------------------------------------------------------- references

# ARPACK's start vector: fixed, so that the same matrix gets the same reference, and generic: the
# all-ones vector is annihilated by every matrix whose rows sum to zero, and ARPACK then stops
# with "starting vector is zero"
ARPACK_START_SEED = 0x5EED


class ArpackFailed(ValueError):
    """ARPACK stopped without an eigenvalue (no convergence within its iteration budget, or an error)."""


@dataclass(frozen=True)
class Reference:
    """The reference for lambda_1.

    method : "numpy" | "arpack"
    eigenvalues : sorted by modulus, descending: all of them ("numpy"), or the dominant one
        ARPACK converged to ("arpack"), which may not be lambda_1
    residual : ||W v - lambda v|| / (|lambda| ||v||) of ARPACK's pair; None for "numpy", whose
        eigenvalues are all there and backward stable
    """

    method: str
    eigenvalues: np.ndarray
    residual: float | None


def binary_exponent(W: np.ndarray) -> int:
    """The power of two e with max |W| in [2^(e-1), 2^e), 0 for a zero matrix.

    Parameters
    ----------
    W : a finite real array

    Returns
    -------
    int. W / 2^e (np.ldexp(W, -e), exact in floating point) has entries of order 1.
    """
    return _exponent(np.asarray(W, dtype=np.float64))


def reference_spectrum(W: np.ndarray, method: str = "numpy") -> Reference:
    """The dense reference (numpy.linalg.eigvals: every eigenvalue) or ARPACK's dominant pair
    (scipy.sparse.linalg.eigs, k = 1, from a fixed random start; numpy below n = 3), with the
    residual that shows whether ARPACK's answer is an eigenvalue.

    Parameters
    ----------
    W : (n, n) finite real matrix
    method : "numpy" or "arpack"

    Returns
    -------
    Reference. A zero matrix gets its exact answer, zeros, without ARPACK (which cannot start:
    every vector is in the kernel). ARPACK runs on W divided by a power of two, so that its
    iteration neither overflows nor underflows; the eigenvalue is scaled back (inf beyond the
    float64 range).

    Raises
    ------
    ArpackFailed (a ValueError) when ARPACK does not converge or stops with an error.
    """
    check_choice("method", method, REFERENCES)
    W = np.asarray(W, dtype=np.float64)
    n = W.shape[0]
    if method == "numpy" or n < 3:
        return Reference(method, _by_modulus(np.linalg.eigvals(W)), None)
    if not np.any(W):
        return Reference(method, np.zeros(1, dtype=np.complex128), 0.0)
    from scipy.sparse.linalg import ArpackError, eigs

    e = _exponent(W)
    Ws = np.ldexp(W, -e)
    v0 = np.random.default_rng(ARPACK_START_SEED).standard_normal(n)
    try:
        ev, V = eigs(Ws, k=1, which="LM", v0=v0)
    except ArpackError as err:  # ArpackNoConvergence is one
        raise ArpackFailed(f"ARPACK found no eigenvalue of the {n} x {n} matrix ({err})") from None
    lam, v = complex(ev[0]), V[:, 0]
    residual = _relative(float(np.linalg.norm(Ws @ v - lam * v) / np.linalg.norm(v)), lam)
    with np.errstate(over="ignore"):
        lam = complex(np.ldexp(lam.real, e), np.ldexp(lam.imag, e))
    return Reference(method, np.array([lam]), residual)


def _by_modulus(ev: np.ndarray) -> np.ndarray:
    ev = np.asarray(ev, dtype=np.complex128)
    return ev[np.lexsort((-ev.imag, -np.abs(ev)))]


def reference_eigenvalues(W: np.ndarray, method: str = "numpy") -> np.ndarray:
    """Eigenvalues of W sorted by modulus, descending: all of them (numpy.linalg.eigvals) or
    only the dominant one ARPACK finds (`reference_spectrum`, which also gives its residual)."""
    return reference_spectrum(W, method).eigenvalues


def singular_values(W: np.ndarray) -> np.ndarray:
    """All singular values of W, descending (sigma_max first); exact zeros for a zero matrix.

    LAPACK scales a matrix with huge entries itself, so sigma_max is inf only when it is beyond
    the float64 range."""
    W = np.asarray(W, dtype=np.float64)
    if not np.any(W):
        return np.zeros(min(W.shape))
    return np.linalg.svd(W, compute_uv=False)


def dense_spectral_radius(W: np.ndarray) -> float:
    """rho(W) = max |eigenvalue|, from LAPACK (numpy.linalg.eigvals): the reference."""
    if W.size == 0:
        return 0.0
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(W, dtype=np.float64)))))
