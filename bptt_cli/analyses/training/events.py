"""Events detected on every training step from its gradient norm: spikes and vanishing stretches."""

from __future__ import annotations

import numpy as np


def detect_events(
    step: int,
    norm: float,
    norms: np.ndarray,
    reference: float | None,
    vanish_run: int,
    *,
    spike_factor: float,
    spike_window: int,
    vanish_ratio: float,
    vanish_steps: int,
) -> tuple[list[dict], np.ndarray, float | None, int]:
    """Spikes and vanishing stretches from this step's gradient norm.

    Returns (events, the updated window of recent norms, the reference norm, the vanishing run).
    A spike needs at least 10 earlier norms, so the first steps are never called spikes.
    """
    events = []
    if len(norms) >= 10:
        median = float(np.median(norms))
        if norm > spike_factor * median:
            events.append(
                {
                    "step": step,
                    "kind": "spike",
                    "grad_norm": norm,
                    "median": median,
                    "message": f"gradient norm {norm:.3g} at step {step} is {norm / median:.0f}x the running median",
                }
            )
    norms = np.append(norms, norm)[-spike_window:]
    if reference is None and len(norms) == spike_window:
        reference = float(np.median(norms))
    if reference is not None and norm < vanish_ratio * reference:
        vanish_run += 1
        if vanish_run == vanish_steps:
            events.append(
                {
                    "step": step,
                    "kind": "vanishing",
                    "since": step - vanish_steps + 1,
                    "grad_norm": norm,
                    "reference": reference,
                    "message": f"gradient norm below {vanish_ratio:g} x its early median for {vanish_steps} steps "
                    f"(steps {step - vanish_steps + 1}..{step})",
                }
            )
    else:
        vanish_run = 0
    return events, norms, reference, vanish_run
