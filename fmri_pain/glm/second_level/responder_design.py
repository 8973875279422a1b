"""The two-group design of one condition's subject maps: responders vs non-responders.

Cell means: one indicator column per group (``responders``, ``nonResponders``), so
the contrast ``respondersMinusNonResponders`` (``[1, -1]``) is the difference of the
group means and ``n - 2`` residual df remain (equal variances assumed, as in any
nilearn ``SecondLevelModel``). Each subject contributes its one map of the condition.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmri_pain.glm.second_level.models import GroupDesign

ROUTE = "responders"
CONTRAST = "respondersMinusNonResponders"
MIN_GROUP = 2
"""Fewest subjects per group for the two-group model (a variance per group needs two)."""


def responder_design(rows: pd.DataFrame, responder: str = "responder") -> GroupDesign:
    """Design of the responder comparison on the maps described by ``rows``.

    Parameters
    ----------
    rows : DataFrame
        One row per subject map of the condition, with a boolean ``responder`` column.
    responder : str
        Name of the status column.

    Returns
    -------
    GroupDesign
        Columns ``responders`` and ``nonResponders``; contrast ``respondersMinusNonResponders``.

    Raises
    ------
    ValueError
        A missing status, a subject with two maps, or fewer than two subjects in a group.
    """
    rows = rows.reset_index(drop=True)
    status = rows[responder]
    if status.isna().any():
        raise ValueError(f"responder status missing for subject(s) "
                         f"{', '.join(map(str, rows.loc[status.isna(), 'subject']))}")
    if "subject" in rows and rows["subject"].duplicated().any():
        raise ValueError("a subject has more than one map of the condition")
    r = status.astype(bool).to_numpy()
    n1, n0 = int(r.sum()), int((~r).sum())
    if n1 < MIN_GROUP or n0 < MIN_GROUP:
        raise ValueError(f"{n1} responder(s) and {n0} non-responder(s): the two-group model needs "
                         f"{MIN_GROUP} or more in each group")
    design = pd.DataFrame({"responders": r.astype(float), "nonResponders": (~r).astype(float)})
    return GroupDesign(ROUTE, design, {CONTRAST: np.array([1.0, -1.0])}, rows)
