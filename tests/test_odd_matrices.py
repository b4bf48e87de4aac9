"""`bptt spectrum` on odd matrices: zero and nilpotent W_h on both sides of the dense limit,
a Krylov answer ARPACK gets wrong, entries of extreme size, and a spectral radius beyond float64.

The oracles are closed forms (a zero matrix, N with N @ N = 0, the rank-one c 1 1^T whose only
non-zero eigenvalue and singular value are n c) and numpy.linalg.eigvals.
"""

import json
import math
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from typer.testing import CliRunner

from bptt_cli.analyses.spectrum import NUMPY_REFERENCE_MAX
from bptt_cli.cli.app import app
from bptt_cli.core.eigen import METHODS, ArpackFailed, dominant_eigenvalue, reference_spectrum, singular_values
from bptt_cli.core.verdict import EIGENPAIR_RESIDUAL, choose_rho

runner = CliRunner()
EPS = np.finfo(np.float64).eps
BIG = NUMPY_REFERENCE_MAX + 52  # above the dense limit: the reference is ARPACK's
SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "json-schema.json").read_text())


def nilpotent(n: int) -> np.ndarray:
    """n/2 blocks [[3, -3], [3, -3]]: W @ W = 0, and W @ ones = 0 (every row sums to zero)."""
    return np.kron(np.eye(n // 2), [[3.0, -3.0], [3.0, -3.0]])


def defective_zero_bound(W: np.ndarray) -> float:
    """How far from 0 a backward-stable method may put the eigenvalue 0 of 2 x 2 Jordan blocks:
    a perturbation of eps ||W|| moves it by about sqrt(eps) ||W||."""
    return 10 * math.sqrt(EPS) * float(np.linalg.norm(W, 2))


def spectrum_json(*args) -> dict:
    r = runner.invoke(app, ["spectrum", *[str(a) for a in args], "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    return doc


def spectrum_error(*args) -> tuple[str, dict]:
    r = runner.invoke(app, ["spectrum", *[str(a) for a in args], "--json"])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bptt: error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout and "internal error" not in r.stderr
    return lines[0], {"exit_code": r.exit_code, **json.loads(r.stdout)["error"]}


# ---------------------------------------------------------------------------- 1. zero and nilpotent


def test_the_premises_of_the_zero_and_nilpotent_cases():
    assert BIG > NUMPY_REFERENCE_MAX
    N = nilpotent(8)
    assert not np.any(N @ N)  # nilpotent: every eigenvalue is 0
    assert not np.any(N @ np.ones(8))  # the all-ones start vector is in its kernel
    assert np.allclose(np.linalg.svd(N, compute_uv=False), [6] * 4 + [0] * 4, atol=1e-12)


def test_zero_matrix_above_the_dense_limit_has_rho_zero(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((BIG, BIG)))
    doc = spectrum_json("--model", tmp_path / "z.npy", "--lyapunov", "0", "--activation", "identity")
    res = doc["results"]
    assert res["reference"]["method"] == "arpack"
    assert res["reference"]["abs_eigenvalue"] == 0.0
    assert res["dominant_eigenvalue"]["abs_eigenvalue"] == 0.0 and res["dominant_eigenvalue"]["converged"] is True
    assert res["rho"] == 0.0 and res["rho_uncertain"] is False and res["rho_uncertainty"] is None
    assert res["singular_values"]["max"] == 0.0
    v = doc["verdict"]
    assert (v["label"], v["basis"]) == ("vanishing", "spectral_radius")  # a linear network: rho decides


def test_nilpotent_matrix_above_the_dense_limit(tmp_path):
    W = nilpotent(BIG)
    np.save(tmp_path / "n.npy", W)
    res = spectrum_json("--model", tmp_path / "n.npy", "--lyapunov", "0")["results"]
    bound = defective_zero_bound(nilpotent(8))  # ||W||_2 = 6 at every size
    assert res["reference"]["method"] == "arpack" and res["reference"]["abs_eigenvalue"] <= bound
    assert res["dominant_eigenvalue"]["converged"] is True
    assert res["rho"] <= bound
    assert res["rho_uncertain"] is False  # both answers are 0 to working precision: no disagreement
    assert res["singular_values"]["max"] == pytest.approx(6.0, rel=1e-12)


@pytest.mark.parametrize("n", [8, BIG])
@pytest.mark.parametrize("kind", ["zero", "nilpotent"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_zero_and_nilpotent(n, kind, method):
    W = np.zeros((n, n)) if kind == "zero" else nilpotent(n)
    bound = 0.0 if kind == "zero" else defective_zero_bound(W[:8, :8])
    r = dominant_eigenvalue(W, method=method)
    assert r.converged
    assert r.abs_eigenvalue <= bound
    # the pair returned is one: W maps the vector (or the plane) into itself, to rounding
    V = r.vector.reshape(n, -1)
    assert np.linalg.norm(W @ V - V @ (V.T @ W @ V), 2) <= 1e-12 * 6


@pytest.mark.parametrize("n", [8, BIG])
@pytest.mark.parametrize("kind", ["zero", "nilpotent", "rows sum to zero"])
def test_arpack_reference_on_matrices_that_annihilate_the_ones_vector(n, kind):
    if kind == "zero":
        W, rho, bound = np.zeros((n, n)), 0.0, 0.0
    elif kind == "nilpotent":
        W, rho = nilpotent(n), 0.0
        bound = defective_zero_bound(W[:8, :8])
    else:  # the centring projection I - 11^T/n: eigenvalues 1 (n - 1 times) and 0
        W, rho, bound = np.eye(n) - 1.0 / n, 1.0, 1e-12
    assert not np.any(np.abs(W @ np.ones(n)) > 1e-12)
    ref = reference_spectrum(W, "arpack")
    assert abs(abs(ref.eigenvalues[0]) - rho) <= bound
    assert ref.residual is not None


# ---------------------------------------------------------------------------- 2. Krylov vs ARPACK


def arpack_trap() -> np.ndarray:
    """A seeded N(0, 1/H) matrix on which ARPACK converges to a non-dominant eigenvalue."""
    H = 300
    return np.random.default_rng(2).standard_normal((H, H)) / np.sqrt(H)


def test_arpack_trap_premises():
    W = arpack_trap()
    ev = np.linalg.eigvals(W)
    rho = float(np.max(np.abs(ev)))
    ref = reference_spectrum(W, "arpack")
    a = abs(ref.eigenvalues[0])
    assert ref.residual <= 1e-12  # ARPACK's answer is an eigenvalue ...
    assert np.min(np.abs(ev - ref.eigenvalues[0])) <= 1e-10
    assert rho - a > 2e-3  # ... but not the dominant one
    assert 1.006 < rho < 1.008 and a < 1.006  # so the linear verdict at --verdict-tol 0.006 depends on it


def test_unconverged_krylov_estimate_beats_a_wrong_arpack_answer(tmp_path):
    W = arpack_trap()
    rho_true = float(np.max(np.abs(np.linalg.eigvals(W))))
    arpack = abs(reference_spectrum(W, "arpack").eigenvalues[0])
    np.save(tmp_path / "w.npy", W)
    args = ["--model", tmp_path / "w.npy", "--activation", "identity", "--reference", "arpack", "--lyapunov", "0"]
    doc = spectrum_json(*args, "--max-iter", "180", "--verdict-tol", "0.006")
    res, e = doc["results"], doc["results"]["dominant_eigenvalue"]
    # the premise: ours stopped short of --tol, but its residual shows it is an eigenvalue
    assert e["converged"] is False and 1e-10 < e["residual"] <= EIGENPAIR_RESIDUAL
    assert res["reference"]["abs_eigenvalue"] == pytest.approx(arpack, rel=1e-12)
    assert res["reference"]["residual"] <= 1e-12
    # eigenvalue error <= condition number x residual; the edge of a random spectrum is well conditioned
    assert abs(res["rho"] - rho_true) <= 10 * e["residual"] * rho_true
    assert res["rho_source"] == "krylov-schur (not converged)"
    assert res["rho_uncertain"] is True
    why = res["rho_uncertainty"]
    assert "did not converge" in why and "disagree" in why and "--max-iter" in why
    assert why in res["notes"]
    assert doc["verdict"]["label"] == "exploding"  # rho 1.00707 > 1.006; ARPACK's 1.00495 would say stable
    # converged, ours is rho and the disagreement is still reported
    res = spectrum_json(*args)["results"]
    assert res["dominant_eigenvalue"]["converged"] is True
    assert res["rho"] == pytest.approx(rho_true, rel=1e-9) and res["rho_source"] == "krylov-schur"
    assert res["rho_uncertain"] is True and "disagree" in res["rho_uncertainty"]


def test_choose_rho_prefers_the_largest_answer_shown_to_be_an_eigenvalue():
    # the 4096 x 4096 case: ours not converged but right, ARPACK converged to a smaller eigenvalue
    c = choose_rho(1.00981, False, "krylov-schur", 1.00454, "arpack", residual=2e-7, reference_residual=1e-15)
    assert (c.value, c.source, c.uncertain) == (1.00981, "krylov-schur (not converged)", True)
    # an unconverged estimate that is not an eigenvalue yet does not count
    c = choose_rho(1.2, False, "krylov-schur", 1.00454, "arpack", residual=1e-2, reference_residual=1e-15)
    assert (c.value, c.source, c.uncertain) == (1.00454, "arpack", True)
    # an ARPACK answer that is not an eigenvalue does not count either
    c = choose_rho(1.00981, True, "krylov-schur", 1.5, "arpack", residual=1e-12, reference_residual=1e-3)
    assert (c.value, c.source, c.uncertain) == (1.00981, "krylov-schur", True)
    assert "not an eigenvalue" in c.note
    # nothing counts: the unconverged estimate, flagged
    c = choose_rho(1.2, False, "krylov-schur", None, None, residual=1e-2)
    assert (c.value, c.source, c.uncertain) == (1.2, "krylov-schur (not converged)", True)
    # agreement is certain; so are two moduli that are both zero to working precision
    assert not choose_rho(1.01, True, "krylov-schur", 1.01 * (1 + 1e-9), "arpack", reference_residual=1e-15).uncertain
    assert not choose_rho(1e-9, True, "krylov-schur", 0.0, "arpack", reference_residual=0.0, sigma_max=6.0).uncertain
    assert choose_rho(1e-9, True, "krylov-schur", 0.0, "arpack", reference_residual=0.0).uncertain  # no scale
    # numpy has every eigenvalue
    assert choose_rho(1.2, False, "krylov-schur", 1.01, "numpy", residual=1.0) == (1.01, "numpy", None)


def test_arpack_that_does_not_converge_leaves_a_note_not_an_internal_error(tmp_path):
    W = np.random.default_rng(2).standard_normal((200, 200)) / np.sqrt(200)
    with pytest.raises(ArpackFailed):  # the premise
        reference_spectrum(W, "arpack")
    np.save(tmp_path / "w.npy", W)
    res = spectrum_json("--model", tmp_path / "w.npy", "--reference", "arpack", "--lyapunov", "0")["results"]
    assert res["reference"] is None
    assert any(n.startswith("no arpack reference: ARPACK found no eigenvalue") for n in res["notes"])
    assert res["dominant_eigenvalue"]["converged"] is True
    assert res["rho"] == pytest.approx(float(np.max(np.abs(np.linalg.eigvals(W)))), rel=1e-9)


def test_an_ordinary_run_is_certain():
    res = spectrum_json("--hidden", "16", "--lyapunov", "0")["results"]
    assert res["rho_source"] == "numpy" and res["rho_uncertain"] is False and res["rho_uncertainty"] is None
    assert res["reference"]["residual"] is None


# ---------------------------------------------------------------------------- 3. extreme entries


@pytest.mark.parametrize("c", [1e-300, 1e-200, 1e200, 2e307])
@pytest.mark.parametrize("method", METHODS)
def test_rank_one_matrices_of_extreme_size(c, method):
    """c 1 1^T (8 x 8): rho = sigma_max = 8 c. The vector norms of an unscaled iteration overflow
    (or underflow) here and once returned 0.29 x 8 c as converged."""
    W = np.full((8, 8), c)
    r = dominant_eigenvalue(W, method=method)
    assert r.converged and r.abs_eigenvalue == pytest.approx(8 * c, rel=1e-12)
    assert float(singular_values(W)[0]) == pytest.approx(8 * c, rel=1e-12)
    ref = reference_spectrum(W, "arpack")
    assert abs(ref.eigenvalues[0]) == pytest.approx(8 * c, rel=1e-12) and ref.residual <= 1e-12


def test_representable_huge_matrix_keeps_its_lyapunov_exponent(tmp_path):
    """J_t = W_h for a linear network: the top exponent is ln rho = ln(8e200) even though the
    states overflow after two steps."""
    np.save(tmp_path / "w.npy", np.full((8, 8), 1e200))
    doc = spectrum_json("--model", tmp_path / "w.npy", "--activation", "identity", "--seq-len", "60")
    res = doc["results"]
    assert res["rho"] == pytest.approx(8e200, rel=1e-12) and res["rho_uncertain"] is False
    assert res["dominant_eigenvalue"]["abs_eigenvalue"] == pytest.approx(8e200, rel=1e-12)
    assert res["lyapunov"]["exponents"][0] == pytest.approx(math.log(8) + 200 * math.log(10), rel=1e-12)
    assert any("no gradient signal traced" in n for n in res["notes"])
    assert doc["verdict"]["label"] == "exploding"


@pytest.mark.parametrize(
    ("W", "fragment"),
    [
        (np.full((8, 8), 1e308), "its spectral radius (8e+308) and largest singular value (8e+308) overflow float64"),
        (np.full((8, 8), 3e307), "its spectral radius (2.4e+308) and largest singular value (2.4e+308) overflow"),
        # nilpotent, rho = 0: only sigma_max = 2 c overflows
        (np.array([[1e308, 1e308], [-1e308, -1e308]]), "its largest singular value (2e+308) overflows float64"),
    ],
    ids=["1e308", "3e307", "nilpotent"],
)
def test_spectral_radius_beyond_float64_is_one_line_naming_the_file(tmp_path, W, fragment):
    assert np.all(np.isfinite(W))  # the premise: finite entries ...
    n, c = W.shape[0], abs(W[0, 0])
    assert math.log(n * (c / 2**1000)) > math.log(sys.float_info.max / 2**1000)  # ... sigma_max = n c is not
    np.save(tmp_path / "w.npy", W)
    line, err = spectrum_error("--model", tmp_path / "w.npy")
    assert err["exit_code"] == 1 and err["message"] == line.removeprefix("bptt: error: ")
    assert f"--model {tmp_path / 'w.npy'}" in line
    assert fragment in line
    assert "not finite" not in line


def test_just_inside_float64_is_analysed(tmp_path):
    np.save(tmp_path / "w.npy", np.full((8, 8), 2e307))  # sigma_max = rho = 1.6e308 < 1.8e308
    res = spectrum_json("--model", tmp_path / "w.npy", "--activation", "identity", "--lyapunov", "0")["results"]
    assert res["rho"] == pytest.approx(1.6e308, rel=1e-12)
    assert res["singular_values"]["max"] == pytest.approx(1.6e308, rel=1e-12)
