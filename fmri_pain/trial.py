"""The crossover trial's domain: conditions, periods, Williams sequences, contrasts.

Pure definitions with no I/O and no imports from the rest of the package.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

CONDITIONS: tuple[str, ...] = ("SCS", "DRGS", "DUAL")
"""The three therapies of the trial, in the order used for weight vectors."""

N_PERIODS = 3


@dataclass(frozen=True)
class Contrast:
    """A named contrast over conditions.

    Parameters
    ----------
    name : str
        BIDS-safe contrast label (camelCase, no separators), e.g. ``dualMinusScs``.
    weights : numpy.ndarray
        Shape ``(n_conditions,)`` for a t contrast or ``(k, n_conditions)``
        for an F contrast, ordered as ``conditions``.
    conditions : tuple of str
        The conditions the weights refer to.
    description : str
        Human-readable meaning, used in reports.
    """

    name: str
    weights: np.ndarray
    conditions: tuple[str, ...]
    description: str = ""
    stat_type: str = field(init=False)

    def __post_init__(self) -> None:
        weights = np.atleast_1d(np.asarray(self.weights, dtype=float))
        if weights.shape[-1] != len(self.conditions):
            raise ValueError(
                f"contrast {self.name!r}: {weights.shape[-1]} weights for "
                f"{len(self.conditions)} conditions {self.conditions}"
            )
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "stat_type", "F" if weights.ndim == 2 else "t")

    @property
    def used_conditions(self) -> tuple[str, ...]:
        """Conditions with a non-zero weight: the data a subject needs for it."""
        w = np.atleast_2d(self.weights)
        return tuple(c for c, col in zip(self.conditions, w.T) if np.any(col != 0))

    def as_dict(self) -> dict[str, float]:
        """Condition -> weight (t contrasts only)."""
        if self.stat_type != "t":
            raise ValueError(f"{self.name} is an F contrast")
        return {c: float(w) for c, w in zip(self.conditions, self.weights) if w != 0}


def condition_label(condition: str) -> str:
    """The contrast label of a condition: ``SCS`` -> ``scs``."""
    return condition.lower()


def difference_name(first: str, second: str) -> str:
    """BIDS-safe name of ``first - second``: ``("DUAL", "SCS")`` -> ``dualMinusScs``."""
    return f"{first.lower()}Minus{second.lower().capitalize()}"


def trial_contrasts(conditions: tuple[str, ...] = CONDITIONS) -> dict[str, Contrast]:
    """The trial's contrast set over ``conditions``.

    For the trial's three conditions this is ``scs``, ``drgs``, ``dual`` (ON > OFF
    per condition), ``drgsMinusScs``, ``dualMinusScs``, ``dualMinusDrgs``,
    ``dualMinusMean`` (DUAL - (SCS + DRGS) / 2) and ``conditionF`` (any difference
    between conditions). For other condition names, each condition gets its own
    mean contrast, every later-minus-earlier pair a difference, the last minus the
    mean of the others a ``<last>MinusMean`` contrast, and (with 3 or more
    conditions) the F test.

    Parameters
    ----------
    conditions : tuple of str
        Condition names in order. The last is treated as the combined therapy.

    Returns
    -------
    dict of str to Contrast
    """
    conditions = tuple(conditions)
    if len(set(conditions)) != len(conditions) or not conditions:
        raise ValueError(f"conditions must be unique and non-empty, got {conditions}")
    n = len(conditions)
    eye = np.eye(n)
    out: dict[str, Contrast] = {}
    for i, cond in enumerate(conditions):
        out[condition_label(cond)] = Contrast(
            condition_label(cond), eye[i], conditions, f"{cond} ON > OFF"
        )
    for j, i in itertools.combinations(range(n), 2):
        name = difference_name(conditions[i], conditions[j])
        out[name] = Contrast(
            name, eye[i] - eye[j], conditions, f"{conditions[i]} > {conditions[j]}"
        )
    if n >= 3:
        last = conditions[-1]
        weights = np.full(n, -1.0 / (n - 1))
        weights[-1] = 1.0
        name = f"{last.lower()}MinusMean"
        others = " + ".join(conditions[:-1])
        out[name] = Contrast(name, weights, conditions, f"{last} > mean({others})")
        out["conditionF"] = Contrast(
            "conditionF",
            eye[1:] - eye[:1],
            conditions,
            "any difference between " + ", ".join(conditions),
        )
    return out


def difference_contrasts(contrasts: dict[str, Contrast]) -> dict[str, Contrast]:
    """The within-subject t contrasts that compare conditions (weights sum to 0)."""
    return {
        k: c
        for k, c in contrasts.items()
        if c.stat_type == "t" and np.isclose(c.weights.sum(), 0.0)
    }


def williams_sequences(conditions: tuple[str, ...] = CONDITIONS) -> list[tuple[str, ...]]:
    """Williams design sequences balanced for first-order carry-over.

    For an odd number of treatments a Williams design needs two Latin squares
    (2 x n sequences); for three treatments these are all six orderings.

    Returns
    -------
    list of tuple of str
        One tuple per sequence, conditions in period order.
    """
    n = len(conditions)
    # Standard construction: first row 0, 1, n-1, 2, n-2, ...; rows are cyclic shifts.
    first = [0]
    lo, hi = 1, n - 1
    while len(first) < n:
        first.append(lo)
        lo += 1
        if len(first) < n:
            first.append(hi)
            hi -= 1
    square = [[(x + shift) % n for x in first] for shift in range(n)]
    if n % 2:
        square += [row[::-1] for row in square]
    return [tuple(conditions[i] for i in row) for row in square]


def parse_sequence(sequence: str, conditions: tuple[str, ...] = CONDITIONS) -> tuple[str, ...]:
    """Parse a sequence such as ``"SCS-DRGS-DUAL"`` (case-insensitive) into conditions.

    Raises
    ------
    ValueError
        If an element is not one of ``conditions``.
    """
    lookup = {c.lower(): c for c in conditions}
    parts = [p.strip() for p in str(sequence).replace(",", "-").replace("/", "-").split("-")]
    parts = [p for p in parts if p]
    unknown = [p for p in parts if p.lower() not in lookup]
    if unknown or not parts:
        raise ValueError(
            f"sequence {sequence!r} has unknown conditions {unknown}; expected "
            f"elements of {conditions} separated by '-'"
        )
    return tuple(lookup[p.lower()] for p in parts)


def period_in_sequence(condition: str, sequence: tuple[str, ...]) -> int | None:
    """1-based period in which ``condition`` was given, or None if it is absent."""
    for i, c in enumerate(sequence, start=1):
        if c.lower() == condition.lower():
            return i
    return None


def carryover_from(condition: str, sequence: tuple[str, ...]) -> str | None:
    """The treatment given in the period before ``condition`` (first-order carry-over)."""
    period = period_in_sequence(condition, sequence)
    if period is None or period == 1:
        return None
    return sequence[period - 2]
