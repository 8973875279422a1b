"""Dataset-level between-subject designs of one subject-level contrast: two groups or a covariate.

The ``group.between_subjects`` tests of the spec, on one map per subject:

- ``two-group``: cell means, one indicator column per level of a participants.tsv column
  (``group-<A>``, ``group-<B>``); the contrast ``[1, -1]`` is the difference of the group means
  (``n - 2`` residual df without covariates; equal variances, as any nilearn SecondLevelModel).
- ``covariate``: intercept plus the mean-centred column; the contrast is its slope.

Both add the spec's ``group.covariates`` (mean-centred; the tested column excepted) as
adjustments. Subjects without a usable value of the column or of a covariate are left out,
and the notes returned name them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmri_pain.config.group import BetweenSubjectsTest
from fmri_pain.glm.second_level.models import GroupDesign

BETWEEN_ROUTES = ("two-group", "covariate")
"""Routes (``GroupDesign.route``) of the between-subject designs."""
GROUP_PREFIX = "group-"
"""Prefix of the cell-means indicator columns (``group-<level>``)."""
MIN_GROUP = 2
"""Fewest subjects per group (a group variance needs two)."""
MIN_COVARIATE = 3
"""Fewest subjects for a slope with a residual degree of freedom."""


def _label(value: object) -> str:
    text = str(value)
    return text[:-2] if text.endswith(".0") and text[:-2].lstrip("-").isdigit() else text


def between_subjects_design(rows: pd.DataFrame, test: BetweenSubjectsTest,
                            covariates: tuple[str, ...] = ()) -> tuple[GroupDesign, list[str]]:
    """Design of one between-subject test on the maps described by ``rows``.

    Parameters
    ----------
    rows : DataFrame
        One row per subject map of the contrast (``subject`` and the participants.tsv columns).
    test : BetweenSubjectsTest
        The spec's test: design, column, levels.
    covariates : tuple of str
        ``group.covariates``: adjusted for (mean-centred); the tested column is skipped.

    Returns
    -------
    design : GroupDesign
        Route ``two-group`` or ``covariate``; its one contrast is keyed ``test.name``.
    notes : list of str
        Subjects left out for a missing value (named), covariates not available.

    Raises
    ------
    ValueError
        The column is absent, a subject has two maps, a two-group column without exactly two
        levels (or without the levels asked for), a non-numeric covariate column, too few subjects.
    """
    rows = rows.reset_index(drop=True)
    column = test.column
    if column not in rows:
        raise ValueError(f"column {column!r} is not in participants.tsv / sessions.tsv")
    if rows["subject"].duplicated().any():
        raise ValueError("a subject has more than one map of the contrast")
    notes: list[str] = []
    keep = rows[column].notna() & (rows[column].astype(str).str.strip() != "")
    if test.design == "covariate":
        keep &= pd.to_numeric(rows[column], errors="coerce").notna()
    if not keep.all():
        left = ", ".join(f"sub-{s}" for s in rows.loc[~keep, "subject"])
        notes.append(f"{left} left out: no {'numeric ' if test.design == 'covariate' else ''}"
                     f"value of {column}")
    adjust = []
    for cov in (c for c in covariates if c != column):
        if cov not in rows:
            notes.append(f"covariate {cov} left out: not a column of sessions.tsv / participants.tsv")
            continue
        ok = pd.to_numeric(rows[cov], errors="coerce").notna()
        if not (ok | ~keep).all():
            notes.append(f"{', '.join(f'sub-{s}' for s in rows.loc[keep & ~ok, 'subject'])} left out: "
                         f"no numeric value of the covariate {cov}")
            keep &= ok
        adjust.append(cov)
    rows = rows[keep].reset_index(drop=True)
    if test.design == "two-group":
        design, weights = _two_group(rows, test)
    else:
        if len(rows) < MIN_COVARIATE:
            raise ValueError(f"{len(rows)} subject(s) with a value of {column}: a slope needs "
                             f"{MIN_COVARIATE} or more")
        values = pd.to_numeric(rows[column])
        if values.nunique() < 2:
            raise ValueError(f"{column} has the same value for every subject: no slope to test")
        design = pd.DataFrame({"intercept": np.ones(len(rows)),
                               column: (values - values.mean()).to_numpy(dtype=float)})
        weights = np.array([0.0, 1.0])
    for cov in adjust:
        values = pd.to_numeric(rows[cov])
        design[cov] = (values - values.mean()).to_numpy(dtype=float)
    weights = np.concatenate([weights, np.zeros(len(adjust))])
    if np.linalg.matrix_rank(design.to_numpy(dtype=float)) < design.shape[1]:
        raise ValueError(f"the design ({', '.join(design.columns)}) is collinear: a covariate is "
                         f"determined by {column}")
    return GroupDesign(test.design, design, {test.name: weights}, rows), notes


def _two_group(rows: pd.DataFrame, test: BetweenSubjectsTest) -> tuple[pd.DataFrame, np.ndarray]:
    values = rows[test.column].map(_label)
    found = sorted(values.unique())
    if len(found) != 2:
        raise ValueError(f"{test.column} has {len(found)} level(s) ({', '.join(found)}) among the "
                         "subjects with a map; a two-group design needs exactly two")
    missing = [level for level in test.levels if level not in found]
    if missing:
        raise ValueError(f"level(s) {', '.join(missing)} of {test.column} not found (levels: "
                         f"{', '.join(found)})")
    first = test.levels[0] if test.levels else found[0]
    order = [first, next(level for level in found if level != first)]
    counts = [int((values == level).sum()) for level in order]
    if min(counts) < MIN_GROUP:
        raise ValueError(f"{test.column}: {counts[0]} subject(s) in {order[0]} and {counts[1]} in "
                         f"{order[1]}; the two-group model needs {MIN_GROUP} or more in each")
    design = pd.DataFrame({f"{GROUP_PREFIX}{level}": (values == level).to_numpy(dtype=float)
                           for level in order})
    return design, np.array([1.0, -1.0])
