"""Validation vocabulary of the spec: its error, allowed ranges and string forms, and field helpers."""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
from dataclasses import dataclass, field
from typing import Any

LABEL_RE = re.compile(r"[A-Za-z0-9]+")
"""A BIDS label (task, space, contrast and condition names end up in file names)."""

MAX_ECHO = 200
"""Longest echo (characters) of a bad value in an error message."""

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 80, 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6


class SpecError(ValueError):
    """An analysis spec that cannot be used; the message names the key and file."""


def shown(value: Any) -> str:
    """A short ``repr`` of ``value`` for error messages.

    :mod:`reprlib` stops at a few elements and levels, so a YAML alias bomb
    (a 330-byte file whose value expands to billions of elements) is echoed in
    a few hundred characters without ever being expanded.
    """
    text = _REPR.repr(value)
    return text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 3] + "..."


@dataclass(frozen=True)
class Range:
    """The allowed numeric range of a spec key (NaN and infinities are never allowed).

    Parameters
    ----------
    lo, hi : float, optional
        Lower and upper limits (``None``: unbounded on that side).
    lo_open, hi_open : bool
        Exclude the limit itself.
    also : tuple of float
        Single values allowed outside the range (e.g. ``-1``: all cores).
    unit : str
        Unit shown in the documentation and in errors.
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    also: tuple[float, ...] = ()
    unit: str = ""

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if value in self.also:
            return True
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True

    def describe(self) -> str:
        """E.g. ``0 ≤ x ≤ 30 mm``, ``0 < x < 1``, ``x ≥ 1``, ``-1 or 1 ≤ x ≤ 1024``."""
        lo = None if self.lo is None else f"{self.lo:g} {'<' if self.lo_open else '≤'} "
        hi = None if self.hi is None else f" {'<' if self.hi_open else '≤'} {self.hi:g}"
        if lo and hi:
            text = f"{lo}x{hi}"
        elif lo:
            text = f"x {'>' if self.lo_open else '≥'} {self.lo:g}"
        elif hi:
            text = f"x{hi}"
        else:
            text = "any finite number"
        if self.also:
            text = " or ".join(f"{a:g}" for a in self.also) + " or " + text
        return f"{text} {self.unit}".rstrip()


@dataclass(frozen=True)
class Pattern:
    """The allowed form of a string spec key (a regular expression the whole value must match).

    Parameters
    ----------
    regex : str
        Matched with :func:`re.fullmatch`.
    description : str
        What the form is, for the documentation and errors.
    """

    regex: str
    description: str

    def __contains__(self, value: str) -> bool:
        return re.fullmatch(self.regex, value) is not None

    def describe(self) -> str:
        """The description."""
        return self.description


MEMORY = Pattern(r"\s*[0-9]+(\.[0-9]+)?\s*([kKmMgGtTpP]i?)?[bB]?\s*", "a size such as 4GiB, 500MB")
WALLTIME = Pattern(r"([0-9]+-)?[0-9]+(:[0-5][0-9]){0,2}", "[D-]HH[:MM[:SS]], e.g. 02:00:00")
HRF_MODELS = ("spm", "spm + derivative", "spm + derivative + dispersion", "glover",
              "glover + derivative", "fir")


def bounded(default: Any = dataclasses.MISSING, lo: float | None = None, hi: float | None = None, *,
            lo_open: bool = False, hi_open: bool = False, also: tuple[float, ...] = (),
            unit: str = "") -> Any:
    """A dataclass field with a default and an allowed :class:`Range` in its metadata."""
    return field(default=default, metadata={
        "range": Range(lo, hi, lo_open=lo_open, hi_open=hi_open, also=also, unit=unit)})
