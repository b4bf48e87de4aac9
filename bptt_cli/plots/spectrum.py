"""The figures of `bptt spectrum`: eigenvalues in the complex plane, power-iteration error, singular values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bptt_cli.plots import pyplot, save


def eigenvalue_plane(path: Path, eigenvalues: np.ndarray | None, lambda1: complex, *, title: str) -> Path:
    """Every eigenvalue (when known) as dots, the unit circle, and lambda_1 (and its conjugate) marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    phi = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(phi), np.sin(phi), color="grey", lw=1, label="unit circle")
    r1 = abs(lambda1)
    if r1 > 0:
        ax.plot(r1 * np.cos(phi), r1 * np.sin(phi), color="tab:red", lw=0.8, ls=":", label=f"|lambda_1| = {r1:.4g}")
    if eigenvalues is not None and len(eigenvalues):
        ev = np.asarray(eigenvalues)
        ax.scatter(ev.real, ev.imag, s=8, color="tab:blue", alpha=0.7, label=f"eigenvalues ({ev.size})")
    marks = [lambda1] if lambda1.imag == 0 else [lambda1, lambda1.conjugate()]
    ax.scatter(
        [z.real for z in marks], [z.imag for z in marks], s=90, marker="*", color="tab:red", zorder=3, label="lambda_1"
    )
    lim = max(1.05, 1.1 * r1)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axhline(0, color="k", lw=0.4)
    ax.axvline(0, color="k", lw=0.4)
    ax.set_xlabel("Re")
    ax.set_ylabel("Im")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    return save(fig, path)


def convergence(
    path: Path,
    iterations: np.ndarray,
    history: np.ndarray,
    residuals: np.ndarray,
    reference_abs: float | None,
    *,
    tol: float,
    title: str,
) -> Path:
    """Relative error of the |lambda_1| estimate against the reference, and the residual, per iteration (log y)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    it = np.asarray(iterations, dtype=float)
    tiny = np.finfo(float).tiny
    if reference_abs is not None and reference_abs > 0:
        err = np.abs(np.asarray(history) - reference_abs) / reference_abs
        ax.semilogy(it, np.maximum(err, tiny), marker=".", ms=3, label="| |lambda| estimate - reference | / reference")
    res = np.asarray(residuals, dtype=float)
    ok = np.isfinite(res)
    ax.semilogy(it[ok], np.maximum(res[ok], tiny), marker=".", ms=3, label="residual ||Wu - lambda u|| / |lambda|")
    ax.axhline(tol, color="grey", ls="--", lw=1, label=f"tol = {tol:g}")
    ax.set_xlabel("iteration (products with W_h)")
    ax.set_ylabel("error")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def singular_spectrum(path: Path, sigma: np.ndarray, *, one_over_gamma: float, rho: float, title: str) -> Path:
    """sigma_i against i, with 1/gamma (the Pascanu vanishing bound) and rho for comparison."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    s = np.asarray(sigma, dtype=float)
    ax.semilogy(np.arange(1, s.size + 1), np.maximum(s, np.finfo(float).tiny), marker=".", ms=3, label="sigma_i")
    ax.axhline(one_over_gamma, color="tab:red", ls="--", lw=1, label=f"1/gamma = {one_over_gamma:g}")
    ax.axhline(rho, color="tab:green", ls=":", lw=1, label=f"rho = {rho:.4g}")
    ax.set_xlabel("index i")
    ax.set_ylabel("singular value")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def spectrum_plots(folder: Path, W: np.ndarray, result: Any, *, tol: float) -> list[Path]:
    """The three figures of an analyses.spectrum result, written into `folder`."""
    H = W.shape[0]
    eig, ref_all = result.eig, result.reference
    ref_abs = None if ref_all is None else float(abs(ref_all[0]))
    # the complex plane shows every eigenvalue when numpy gave them all, else only lambda_1
    every = ref_all if ref_all is not None and ref_all.size == H else None
    return [
        eigenvalue_plane(
            folder / "spectrum-eigenvalues.png", every, eig.eigenvalue, title=f"eigenvalues of W_h (H = {H})"
        ),
        convergence(
            folder / "spectrum-convergence.png",
            eig.history_iterations,
            eig.history,
            eig.residual_history,
            ref_abs,
            tol=tol,
            title=f"{eig.method}: error against iteration",
        ),
        singular_spectrum(
            folder / "spectrum-singular-values.png",
            result.sigma,
            one_over_gamma=result.bounds["one_over_gamma"],
            rho=result.bounds["rho"],
            title=f"singular values of W_h (H = {H})",
        ),
    ]


def lyapunov_plot(path: Path, result: Any) -> Path:
    """The Lyapunov spectrum over the full state (bars, log gain per step, 0 the neutral line) and
    the per-step norm of the state-to-state Jacobian along the trajectory, for a cell without one
    recurrent matrix."""
    plt = pyplot()
    fig, (ax_l, ax_j) = plt.subplots(1, 2, figsize=(10, 3.8))
    ex = np.asarray(result.lyapunov.exponents, dtype=float)
    finite = np.isfinite(ex)
    ax_l.bar(np.arange(1, ex.size + 1)[finite], ex[finite], color=["C3" if v > 0 else "C0" for v in ex[finite]])
    ax_l.axhline(0.0, color="grey", linewidth=1)
    ax_l.set_xlabel("i")
    ax_l.set_ylabel("Lyapunov exponent (log gain per step)")
    ax_l.set_title(f"{result.source.cell.describe()}: Lyapunov spectrum")
    sig = result.signal
    if sig is not None and sig.jacobian_kind != "none":
        t = np.arange(1, sig.seq_len + 1)
        ax_j.plot(t, sig.jacobian_norm, color="C4", label=f"||J_t|| ({sig.jacobian_kind})")
        for i, (name, v) in enumerate(sig.gain_stats.items()):
            ax_j.plot(t, v, color=f"C{i % 8}", linestyle="--", linewidth=1, label=name)
        ax_j.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        ax_j.legend(fontsize=7)
    ax_j.set_xlabel("time step t")
    ax_j.set_title("the state-to-state Jacobian along the trajectory")
    for ax in (ax_l, ax_j):
        ax.grid(True, alpha=0.3)
    return save(fig, path)
