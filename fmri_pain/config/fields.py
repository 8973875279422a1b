"""Validation vocabulary of the spec: its error, allowed ranges and string forms, and field helpers.

Every section is a frozen :func:`spec_dataclass` (a pydantic dataclass: attribute access and
``dataclasses.replace/asdict/fields`` work as on a plain one). A range is declared with
:func:`bounded` (pydantic ``ge/gt/le/lt`` constraints plus a ``unit``), a string form with
:func:`formed`; both end up in the JSON Schema (``fmri_pain.config.schema``), from which the
documentation and the range shown in an error are read.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic
import pydantic.dataclasses

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


CONFIG = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False, use_attribute_docstrings=True)
"""Every section: unknown keys refused, NaN and infinities refused, docstrings become descriptions."""

_T = TypeVar("_T")


def spec_dataclass(cls: type[_T]) -> type[_T]:
    """Make ``cls`` a frozen, validating spec section (a pydantic dataclass with :data:`CONFIG`)."""
    return pydantic.dataclasses.dataclass(frozen=True, config=CONFIG)(cls)


def bounded(default: Any = dataclasses.MISSING, lo: float | None = None, hi: float | None = None, *,
            lo_open: bool = False, hi_open: bool = False, unit: str = "") -> Any:
    """A field with a default and an allowed range (pydantic constraints; ``unit`` in the schema).

    Parameters
    ----------
    default : any, optional
        The default (missing: the key is required).
    lo, hi : float, optional
        Lower and upper limits (``None``: unbounded on that side).
    lo_open, hi_open : bool
        Exclude the limit itself.
    unit : str
        Unit shown in the documentation and in errors.
    """
    limits: dict[str, float] = {}
    if lo is not None:
        limits["gt" if lo_open else "ge"] = lo
    if hi is not None:
        limits["lt" if hi_open else "le"] = hi
    extra = {"unit": unit} if unit else None
    if default is dataclasses.MISSING:
        return pydantic.Field(json_schema_extra=extra, **limits)
    return pydantic.Field(default, json_schema_extra=extra, **limits)


def formed(default: str, form: Pattern) -> Any:
    """A string field with a default that must match ``form`` (its description in the schema)."""
    return pydantic.Field(default, pattern=f"^(?:{form.regex})$", json_schema_extra={"form": form.description})


def no_bool(value: Any) -> Any:
    """Refuse ``true``/``false`` where a number is meant (``Literal[0, 1]`` alone would take ``true`` as 1)."""
    if isinstance(value, bool):
        raise key_error("must be a number, not a boolean, got {value}", value)
    return value


def key_error(message: str, value: Any) -> Exception:
    """An error pydantic reports with ``message`` (``{value}``: the value, shortened) at the key."""
    from pydantic_core import PydanticCustomError

    return PydanticCustomError("spec", message.replace("{value}", "{shown}"), {"shown": shown(value)})


def range_from_schema(node: dict[str, Any]) -> Range | None:
    """The :class:`Range` a JSON Schema node allows (``None``: the node is not numeric).

    Reads ``minimum``/``exclusiveMinimum``/``maximum``/``exclusiveMaximum`` and ``unit``; numbers
    given as ``const`` beside the range in an ``anyOf`` (e.g. ``-1``: all cores) become ``also``.
    """
    if "enum" in node:
        return None  # a set of values, not a range
    members = node.get("anyOf", [node])
    numeric = [m for m in members if m.get("type") in ("number", "integer") and "enum" not in m]
    if not numeric:
        return None
    also = tuple(m["const"] for m in members
                 if isinstance(m.get("const"), (int, float)) and not isinstance(m.get("const"), bool))
    part = numeric[0]
    lo = part.get("exclusiveMinimum", part.get("minimum"))
    hi = part.get("exclusiveMaximum", part.get("maximum"))
    return Range(lo, hi, lo_open="exclusiveMinimum" in part, hi_open="exclusiveMaximum" in part,
                 also=also, unit=node.get("unit") or part.get("unit", ""))

