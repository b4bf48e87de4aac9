"""A sweep's grid: `--grid NAME=VALUES` axes, their product, and each point's seed.

VALUES is a list (`0.5,1,2`, `tanh,relu`), a linear range `START:STOP:N` (N values, both ends
included) or a log range `START:STOP:N:log`. A value is kept as the text the analysis' option
parses (so `--hidden 64:1024:5` gives the integers 64, 304, ...), and as a number where it is one
(for the table and the plots).

A point's seed comes from the sweep's seed and the point's coordinates, never from its position
in the grid or the worker that runs it: the same point gets the same randomness whichever
executor ran it, in whatever order, and adding an axis value leaves the other points' seeds
alone. A grid over `seed` itself uses those seeds as given.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass

import numpy as np

from bptt_cli.core.validate import OptionError

_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Axis:
    """One grid axis: the option's name (as typed, without `--`) and its values.

    texts : the values as the option parses them
    numbers : the same as floats where every value is a number, else None (a categorical axis)
    """

    name: str
    texts: tuple[str, ...]
    numbers: tuple[float, ...] | None
    log: bool = False

    @property
    def numeric(self) -> bool:
        return self.numbers is not None

    def value(self, i: int) -> float | str:
        """The i-th value as it goes into a point's coordinates (int for an integral number)."""
        if self.numbers is None:
            return self.texts[i]
        x = self.numbers[i]
        return int(x) if float(x).is_integer() and "." not in self.texts[i] and "e" not in self.texts[i] else x

    def as_dict(self) -> dict:
        return {"name": self.name, "values": [self.value(i) for i in range(len(self.texts))], "log": self.log}


@dataclass(frozen=True)
class GridPoint:
    """One point: its index in the grid's order, its coordinates {name: value} and its seed."""

    index: int
    coords: dict
    seed: int

    @property
    def key(self) -> str:
        """The point's identity in sweep.jsonl: its coordinates, canonically."""
        return point_key(self.coords)


def point_key(coords: dict) -> str:
    return json.dumps(coords, sort_keys=True, separators=(",", ":"))


def _number_text(x: float) -> str:
    """A range value as the option reads it: 12 significant digits (no 0.7000000000000001), an
    integral value without a decimal point (so that integer options take it)."""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.12g}"


def _as_number(text: str) -> float | None:
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def parse_axis(spec: str) -> Axis:
    """'NAME=VALUES' -> Axis; an OptionError naming `--grid` and the rule otherwise."""
    name, sep, values = spec.partition("=")
    name = name.strip().removeprefix("--")
    if not sep or not _NAME.match(name) or not values.strip():
        raise OptionError(
            f"`--grid` takes NAME=VALUES (an option of the analysis without its dashes, e.g. spectral-radius=0.5,1,2 "
            f"or lr=1e-4:1e-1:7:log); got {spec!r}"
        )
    values = values.strip()
    if ":" in values:
        return _parse_range(name, values)
    texts = tuple(v.strip() for v in values.split(","))
    if any(not t for t in texts):
        raise OptionError(f"`--grid {name}=...`: an empty value in the list {values!r}")
    if len(set(texts)) != len(texts):
        raise OptionError(f"`--grid {name}=...`: a value is listed twice in {values!r}")
    numbers = [_as_number(t) for t in texts]
    return Axis(name, texts, None if any(x is None for x in numbers) else tuple(numbers))


def _parse_range(name: str, values: str) -> Axis:
    parts = values.split(":")
    log = len(parts) == 4 and parts[3].strip().lower() == "log"
    rule = (
        f"`--grid {name}=...`: a range is START:STOP:N (N values from START to STOP, both included) or "
        f"START:STOP:N:log, with N a whole number >= 2"
    )
    if len(parts) not in (3, 4) or (len(parts) == 4 and not log):
        raise OptionError(f"{rule}; got {values!r}")
    start, stop = _as_number(parts[0]), _as_number(parts[1])
    try:
        n = int(parts[2])
    except ValueError:
        n = 0
    if start is None or stop is None or n < 2 or start == stop:
        raise OptionError(f"{rule} and START != STOP; got {values!r}")
    if log and (start <= 0 or stop <= 0):
        raise OptionError(f"`--grid {name}=...`: a log range needs START and STOP > 0; got {values!r}")
    xs = np.geomspace(start, stop, n) if log else np.linspace(start, stop, n)
    texts = tuple(_number_text(float(x)) for x in xs)
    if len(set(texts)) != n:
        raise OptionError(f"`--grid {name}=...`: {n} values from {start:g} to {stop:g} repeat at 12 digits")
    return Axis(name, texts, tuple(float(t) for t in texts), log)


def parse_grid(specs: list[str] | tuple[str, ...]) -> tuple[Axis, ...]:
    """The axes of `--grid` (repeated): at least one, each name once."""
    if not specs:
        raise OptionError("`--grid NAME=VALUES` is required (at least one axis), e.g. --grid spectral-radius=0.5:3:11")
    axes = tuple(parse_axis(s) for s in specs)
    names = [a.name for a in axes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise OptionError(f"`--grid`: the axis {', '.join(twice)} is given twice; give each option once")
    return axes


def grid_size(axes: tuple[Axis, ...]) -> int:
    return math.prod(len(a.texts) for a in axes)


def point_seed(sweep_seed: int, coords: dict) -> int:
    """The seed of the point at `coords`: a hash of the sweep's seed and the coordinates (module
    docstring), in [0, 2^32)."""
    digest = hashlib.sha256(f"{sweep_seed}|{point_key(coords)}".encode()).digest()
    return int(np.random.SeedSequence(list(np.frombuffer(digest, dtype="<u4"))).generate_state(1)[0])


def _given_seed(value: float | str) -> int:
    if isinstance(value, int) and 0 <= value <= MAX_SEED:
        return value
    raise OptionError(f"`--grid seed=...`: seeds are whole numbers in [0, {MAX_SEED}]; got {value!r}")


def grid_points(axes: tuple[Axis, ...], sweep_seed: int) -> list[GridPoint]:
    """The product of the axes, the last axis fastest, each point with its seed."""
    points = []
    for index, idx in enumerate(itertools.product(*(range(len(a.texts)) for a in axes))):
        coords = {a.name: a.value(i) for a, i in zip(axes, idx, strict=True)}
        seed = _given_seed(coords["seed"]) if "seed" in coords else point_seed(sweep_seed, coords)
        points.append(GridPoint(index, coords, seed))
    return points


def point_args(axes: tuple[Axis, ...], point: GridPoint) -> list[str]:
    """The point's options as the analysis command takes them: --NAME VALUE per axis, and --seed."""
    words = []
    for a in axes:
        words += [f"--{a.name}", str(point.coords[a.name])]
    if "seed" not in point.coords:
        words += ["--seed", str(point.seed)]
    return words
