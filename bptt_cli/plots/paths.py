"""The log-log plot of `bptt paths`: wall time against T for both methods."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bptt_cli.plots import pyplot, save


def scaling_plot(
    path: Path, lengths: list[int], efficient_s: list[float], naive_s: list[float], exponents: dict[str, float]
) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    T = np.asarray(lengths, float)
    for label, secs, marker in (("naive", naive_s, "s"), ("efficient", efficient_s, "o")):
        secs = np.asarray(secs, float)
        ax.loglog(T, secs, marker=marker, label=f"{label}: time ~ T^{exponents[label]:.2f}")
        # fitted line through the geometric centre of the points
        k = exponents[label]
        centre = np.exp(np.mean(np.log(secs)) - k * np.mean(np.log(T)))
        ax.loglog(T, centre * T**k, linestyle=":", color="grey")
    # label the measured lengths themselves; the default minor labels (3x10^1, 4x10^1, ...) overlap
    from matplotlib.ticker import NullFormatter

    ax.set_xticks(T, [str(int(t)) for t in T])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("seconds per gradient (median)")
    ax.set_title("BPTT: path enumeration O(T^2) vs recursion O(T)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return save(fig, path)
