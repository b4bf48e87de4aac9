"""The state of a training run: everything that determines the rest of it, as a plain value.

`fit` (loop.py) returns a TrainState and accepts one (`resume=`). `to_checkpoint` splits it into
arrays (checkpoint extras) and plain JSON (the checkpoint's config); `from_checkpoint` puts it
back together, so a resumed run continues bit-identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bptt_cli.analyses.training import optim
from bptt_cli.io.jsondoc import jsonable


def _plain(obj: Any) -> Any:
    """A generator state as JSON values (MT19937 keeps a numpy array in it; PCG64 big ints)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


@dataclass(frozen=True)
class TrainState:
    """Everything that determines the rest of a run (a plain value; `fit` returns a new one).

    params, opt : the model and the optimiser's memory
    rng_state : the training generator's `bit_generator.state` (data and random truncation)
    step : updates done so far
    position : text (sequential): offset into the B streams; h : the carried (B, H) state or None
    power_vector : last power-iteration vector (warm start) or None
    norms : recent gradient norms (spike detection), oldest first
    reference_norm : median norm of the first window (vanishing detection), or None
    vanish_run : current stretch of steps with vanishing norms
    clip_count : steps on which clipping changed the gradient
    events : spikes, vanishing stretches, blow-ups, divergence (dicts with 'step' and 'kind')
    xi_rng_state : the state of the truncation strategy's own generator (Strategy.xi_rng), if any
    first_loss, first_norm : the loss of step 1 and the norm of the initial parameters, the
        references of the blow-up detector (core.verdict.blew_up)
    blow_up : the event of the first step at which the run blew up, or None
    """

    params: Any
    opt: optim.OptState
    rng_state: dict
    step: int = 0
    position: int = 0
    h: np.ndarray | None = None
    power_vector: np.ndarray | None = None
    norms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    reference_norm: float | None = None
    vanish_run: int = 0
    clip_count: int = 0
    events: tuple[dict, ...] = ()
    xi_rng_state: dict | None = None
    first_loss: float | None = None
    first_norm: float | None = None
    blow_up: dict | None = None

    def to_checkpoint(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, meta): arrays for checkpoint extras (no params: they are saved as the model),
        meta plain JSON (the generator state holds big integers, which JSON keeps exactly)."""
        arrays = {f"opt.{k}": v for k, v in self.opt.arrays().items()}
        arrays["norms"] = np.asarray(self.norms, dtype=np.float64)
        if self.h is not None:
            arrays["h"] = self.h
        if self.power_vector is not None:
            arrays["power_vector"] = self.power_vector
        meta = {
            "rng_state": _plain(self.rng_state),
            "step": self.step,
            "position": self.position,
            "opt_count": self.opt.count,
            "reference_norm": self.reference_norm,
            "vanish_run": self.vanish_run,
            "clip_count": self.clip_count,
            "events": jsonable(list(self.events))[0],  # a blown-up run's numbers may be inf: null
            "xi_rng_state": None if self.xi_rng_state is None else _plain(self.xi_rng_state),
            "first_loss": self.first_loss,
            "first_norm": self.first_norm,
            "blow_up": jsonable(self.blow_up)[0],
        }
        return arrays, meta

    @staticmethod
    def from_checkpoint(
        params: Any, optimizer: optim.Optimizer, arrays: dict[str, np.ndarray], meta: dict
    ) -> TrainState:
        """Inverse of `to_checkpoint`; ValueError naming what is missing."""
        for key in ("rng_state", "step", "position", "opt_count"):
            if key not in meta:
                raise ValueError(f"the checkpoint's training state lacks `{key}`; it was not written by `bptt train`")
        opt_arrays = {k[4:]: v for k, v in arrays.items() if k.startswith("opt.")}
        return TrainState(
            params=params,
            opt=optim.OptState.from_arrays(optimizer, meta["opt_count"], opt_arrays, params),
            rng_state=meta["rng_state"],
            step=int(meta["step"]),
            position=int(meta["position"]),
            h=arrays.get("h"),
            power_vector=arrays.get("power_vector"),
            norms=np.asarray(arrays.get("norms", np.zeros(0)), dtype=np.float64),
            reference_norm=meta.get("reference_norm"),
            vanish_run=int(meta.get("vanish_run", 0)),
            clip_count=int(meta.get("clip_count", 0)),
            events=tuple(meta.get("events", ())),
            xi_rng_state=meta.get("xi_rng_state"),
            first_loss=meta.get("first_loss"),
            first_norm=meta.get("first_norm"),
            blow_up=meta.get("blow_up"),
        )


def initial_state(params: Any, optimizer: optim.Optimizer, rng: np.random.Generator) -> TrainState:
    """The state of a run that has not started: fresh optimiser memory, the generator as it is."""
    return TrainState(params=params, opt=optim.init_state(optimizer, params), rng_state=rng.bit_generator.state)
