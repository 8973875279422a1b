"""First-order carry-over as a term of the crossover models (voxelwise and per ROI).

The carry-over factor of a map is the condition of the period before it (none in
period 1). With period in the model, the "none" level is period 1 itself, so only
differences between the ``k`` previous-condition levels are estimable (``k - 1`` df).
They are coded with ``k - 1`` sum-to-zero columns ``carryover_<Cond>`` (the last
level is ``-1`` in every column; period-1 rows are 0), so the carry-over of level
``j`` is ``lambda_j`` with ``sum_j lambda_j = 0``. The contrasts:

``carryoverF``
    all carry-over differences (the ``k - 1`` columns).
``carryover<Cond>``
    carry-over of ``Cond`` minus the mean carry-over of the other levels:
    ``lambda_c - mean_{j != c} lambda_j``. When only one condition ``c`` carries
    over, by ``delta``, this is ``delta``: the period terms absorb ``delta / k``,
    the mean carry-over of periods 2.., leaving ``lambda_c = delta (k - 1) / k``
    and ``lambda_j = -delta / k``.

With carry-over in the model, a period contrast includes the mean carry-over into that
period (period 1 has none), so it depends on this coding: the condition and carry-over
contrasts do not.

A Williams design is balanced for first-order carry-over, so with all its sequences
the terms are estimable; with too few sequences (e.g. one cyclic Latin square of
few subjects) they can be collinear with subject, period and condition: the terms
are then left out and the reason returned as a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fmri_pain.trial import carryover_from, parse_sequence

COLUMN_PREFIX = "carryover_"
"""Design columns of the carry-over term: ``carryover_<Cond>``."""


@dataclass
class CarryoverTerms:
    """The carry-over columns of a design and the contrasts defined on them.

    Attributes
    ----------
    columns : DataFrame
        ``k - 1`` sum-to-zero columns, one row per design row (empty when not estimable).
    levels : list of str
        The previous-condition levels, in condition order.
    contrasts : dict of str to ndarray
        ``carryoverF`` (matrix) and ``carryover<Cond>`` (vectors) over ``columns``.
    notes : list of str
        Why the term is not modelled (empty when it is).
    """

    columns: pd.DataFrame
    levels: list[str]
    contrasts: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def estimable(self) -> bool:
        """Whether the term is in the model."""
        return self.columns.shape[1] > 0


def carryover_name(condition: str) -> str:
    """Contrast name of a level's carry-over: ``DUAL`` -> ``carryoverDual``."""
    return "carryover" + condition.lower().capitalize()


def previous_conditions(rows: pd.DataFrame, conditions: tuple[str, ...]) -> pd.Series:
    """The condition of the period before each row's (None in period 1 or when unknown).

    From the row's ``sequence`` (e.g. ``SCS-DRGS-DUAL``) when it has one; else from the
    same subject's row of the period before (a missing session then leaves it unknown).

    Parameters
    ----------
    rows : DataFrame
        ``subject``, ``condition``, ``period`` and optionally ``sequence``.
    conditions : tuple of str
        The condition names a sequence is made of.

    Returns
    -------
    Series of str or None, aligned with ``rows``. Period-1 rows are ``""`` (no
    carry-over); rows whose previous condition is unknown are None.
    """
    out = pd.Series([None] * len(rows), index=rows.index, dtype=object)
    periods = pd.to_numeric(rows.get("period"), errors="coerce") if "period" in rows else None
    if periods is None:
        return out
    by_period = {(str(s), int(p)): str(c) for s, p, c in
                 zip(rows["subject"], periods, rows["condition"]) if pd.notna(p)}
    for idx, period in periods.items():
        if pd.isna(period):
            continue
        if int(period) == 1:
            out[idx] = ""
            continue
        prev = None
        sequence = rows.at[idx, "sequence"] if "sequence" in rows else None
        if isinstance(sequence, str) and sequence.strip():
            try:
                order = parse_sequence(sequence, tuple(conditions))
            except ValueError:
                order = ()
            if len(order) >= int(period) and order[int(period) - 1] == str(rows.at[idx, "condition"]):
                prev = carryover_from(str(rows.at[idx, "condition"]), order)
        if prev is None:
            prev = by_period.get((str(rows.at[idx, "subject"]), int(period) - 1))
        out[idx] = prev
    return out


def carryover_weights(levels: list[str]) -> dict[str, np.ndarray]:
    """``carryoverF`` and ``carryover<Cond>`` over the ``k - 1`` sum-to-zero columns.

    ``lambda = M gamma`` with ``M`` = the identity over the first ``k - 1`` levels
    and a row of ``-1`` for the last.
    """
    k = len(levels)
    m = np.vstack([np.eye(k - 1), -np.ones((1, k - 1))])
    out: dict[str, np.ndarray] = {"carryoverF": np.eye(k - 1)}
    for i, level in enumerate(levels):
        row = np.full(k, -1.0 / (k - 1))
        row[i] = 1.0
        out[carryover_name(level)] = row @ m
    return out


def carryover_terms(rows: pd.DataFrame, conditions: list[str] | tuple[str, ...],
                    base: pd.DataFrame) -> CarryoverTerms:
    """The carry-over columns for ``rows`` when estimable given the rest of the design.

    Parameters
    ----------
    rows : DataFrame
        One row per map / observation: ``subject``, ``condition``, ``period``, ``sequence``.
    conditions : sequence of str
        The conditions (levels are those that occur as a previous condition, in this order).
    base : DataFrame
        The design without carry-over (same rows), to check that the ``k - 1`` columns
        add ``k - 1`` to its rank.

    Returns
    -------
    CarryoverTerms
    """
    empty = pd.DataFrame(index=rows.index)
    previous = previous_conditions(rows, tuple(conditions))
    if previous.isna().any():
        return CarryoverTerms(empty, [], notes=[
            f"carry-over not modelled: the previous condition of {int(previous.isna().sum())} of "
            f"{len(rows)} maps is unknown (period or sequence missing)"])
    seen = set(previous[previous != ""])
    levels = [c for c in conditions if c in seen]
    if len(levels) < 2:
        return CarryoverTerms(empty, levels, notes=[
            "carry-over not modelled: fewer than two conditions precede another "
            f"({', '.join(levels) or 'none'}), so no carry-over difference is estimable"])
    cols = pd.DataFrame(index=rows.index)
    last = levels[-1]
    for level in levels[:-1]:
        cols[COLUMN_PREFIX + level] = ((previous == level).astype(float)
                                       - (previous == last).astype(float))
    x0 = base.to_numpy(dtype=float)
    gain = (np.linalg.matrix_rank(np.column_stack([x0, cols.to_numpy()]))
            - np.linalg.matrix_rank(x0))
    if gain < len(levels) - 1:
        return CarryoverTerms(empty, levels, notes=[
            f"carry-over not modelled: its {len(levels) - 1} difference(s) add only {gain} to the "
            "rank of subject + period + condition (collinear: too few sequences, e.g. not all "
            "Williams sequences, or too few subjects per sequence)"])
    return CarryoverTerms(cols, levels, carryover_weights(levels))


def embed(weights: np.ndarray, columns: list[str], design_columns: list[str]) -> np.ndarray:
    """Carry-over weights over ``columns`` placed into a full design's columns."""
    w = np.atleast_2d(weights)
    full = np.zeros((w.shape[0], len(design_columns)))
    for j, col in enumerate(columns):
        full[:, design_columns.index(col)] = w[:, j]
    return full[0] if np.ndim(weights) == 1 else full
