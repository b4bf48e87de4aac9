"""Checks at the boundary: every public function validates its arguments once, with these.

A failed check raises ValueError whose message names the parameter and the rule. Inside
`options()` (the analyses' configs use it) the same failure becomes an OptionError, which the
command line reports as a usage error (exit code 2) instead of bad input (exit code 1).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

DTYPES = {"float64": np.float64, "float32": np.float32}


class OptionError(ValueError):
    """An option's value breaks its rule (a usage error, exit code 2 on the command line)."""


@contextlib.contextmanager
def options() -> Iterator[None]:
    """Turn the ValueErrors raised inside the block into OptionErrors (same message)."""
    try:
        yield
    except OptionError:
        raise
    except ValueError as e:
        raise OptionError(str(e)) from None


def check_choice(name: str, value: Any, choices: tuple[str, ...] | list[str]) -> str:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_int(name: str, value: Any, *, min: int | None = 1, max: int | None = None) -> int:  # noqa: A002
    """An integer in [min, max] (either bound may be None); bools are not integers."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an integer; got {value!r}")
    if min is not None and value < min:
        rule = "positive" if min == 1 else "non-negative" if min == 0 else f"at least {min}"
        raise ValueError(f"`{name}` must be {rule}; got {value}")
    if max is not None and value > max:
        raise ValueError(f"`{name}` must be at most {max}; got {value}")
    return int(value)


def check_positive_int(name: str, value: Any, *, allow_zero: bool = False) -> int:
    return check_int(name, value, min=0 if allow_zero else 1)


def check_float(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    finite: bool = True,
) -> float:
    """A real number in the interval the bounds describe, e.g. lo=0, lo_open=True for > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"`{name}` must be a number; got {value!r}")
    v = float(value)
    if math.isnan(v) or (finite and not math.isfinite(v)):
        raise ValueError(f"`{name}` must be a finite number; got {value!r}")
    below = lo is not None and (v <= lo if lo_open else v < lo)
    above = hi is not None and (v >= hi if hi_open else v > hi)
    if below or above:
        raise ValueError(f"`{name}` must be {interval(lo, hi, lo_open, hi_open)}; got {value!r}")
    return v


def interval(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> str:
    """The rule as words: '> 0', 'in (0, 1)', '>= 0'."""
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return "a number"


def check_positive(name: str, value: Any) -> float:
    return check_float(name, value, lo=0.0, lo_open=True)


def check_optional_positive(name: str, value: Any) -> float | None:
    return None if value is None else check_positive(name, value)


def check_fraction(name: str, value: Any) -> float:
    """A number strictly between 0 and 1."""
    return check_float(name, value, lo=0.0, hi=1.0, lo_open=True, hi_open=True)


def check_finite(name: str, array: np.ndarray) -> None:
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` contains NaN or infinite values")


def check_real(name: str, array: Any) -> np.ndarray:
    """A real numeric (or boolean) array without NaN or inf."""
    a = np.asarray(array)
    if a.dtype.hasobject or np.iscomplexobj(a) or a.dtype.kind not in "biuf":
        raise ValueError(f"`{name}` must be real numbers; got dtype {a.dtype}")
    check_finite(name, a)
    return a


def resolve_dtype(dtype: str | np.dtype | type) -> np.dtype:
    """'float32' / 'float64' / a numpy float dtype -> np.dtype; anything else is an error."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {', '.join(DTYPES)}; got {dtype!r}")
        return np.dtype(DTYPES[dtype])
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"`dtype` must be float32 or float64; got {dt}")
    return dt
