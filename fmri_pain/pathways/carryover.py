"""How carry-over changes the pathway statistics: detection per unit and the shift of estimates.

Per node, pathway and index: the carry-over F test (``carryoverF``, its Benjamini-Hochberg
p over the units of a level) and, per condition contrast, the estimate with carry-over in
the crossover model, the estimate without, and their difference (``shift``). Units
whose data cannot estimate carry-over carry the reason in ``note``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmri_pain.pathways.stats import crossover_design, roi_carryover_terms
from fmri_pain.pathways.units import analysis_units
from fmri_pain.pathways.within import within_subject_fit
from fmri_pain.trial import CONDITIONS

CARRYOVER_COLUMNS = ("level", "node", "pathway", "contrast", "estimate", "se",
                     "estimate_without_carryover", "se_without_carryover", "shift",
                     "carryover_F", "carryover_df_num", "carryover_df", "carryover_p",
                     "carryover_p_fdr", "carryover_detected", "note")

COLUMN_DESCRIPTIONS = {
    "estimate": {"Description": "condition contrast with carry-over in the model (as roi_stats.tsv: "
                                "the within-subject model, subjects as fixed effects)"},
    "estimate_without_carryover": {"Description": "the same contrast, model without carry-over"},
    "shift": {"Description": "estimate - estimate_without_carryover"},
    "carryover_p": {"Description": "p of carryoverF (all carry-over differences; F test of the "
                                   "within-subject model, subjects as fixed effects)"},
    "carryover_p_fdr": {"Description": "Benjamini-Hochberg of carryover_p over the units of a level"},
    "carryover_detected": {"Description": "carryover_p_fdr < alpha"},
    "note": {"Description": "why carry-over was not modelled for this unit (empty when it was)"},
}


def unit_notes(effects: pd.DataFrame, conditions: tuple[str, ...] = CONDITIONS,
               value: str = "effect") -> dict[tuple[str, str], str]:
    """``(level, node) -> note`` for the units whose data cannot estimate carry-over."""
    out = {}
    for ids, data in analysis_units(effects, value):
        data = data.dropna(subset=["effect"])
        exog, _, _ = crossover_design(data, conditions)
        terms = roi_carryover_terms(data, conditions, exog)
        notes = terms.notes
        if terms.estimable and within_subject_fit(
                data["effect"].to_numpy(float), pd.concat([exog, terms.columns], axis=1),
                data["subject"].to_numpy()) is None:
            notes = ["carry-over not modelled: no residual degrees of freedom within subjects"]
        if notes:
            out[(ids["level"], ids["node"])] = "; ".join(notes)
    return out


def carryover_table(with_carryover: pd.DataFrame, without_carryover: pd.DataFrame,
                    notes: dict[tuple[str, str], str], alpha: float = 0.05) -> pd.DataFrame:
    """Join the crossover statistics with and without carry-over, one row per unit x contrast.

    Parameters
    ----------
    with_carryover, without_carryover : DataFrame
        :func:`~fmri_pain.pathways.stats.roi_statistics` with ``carryover=True`` / ``False``.
    notes : dict
        :func:`unit_notes`.
    alpha : float
        Level of ``carryover_detected``.

    Returns
    -------
    DataFrame with columns ``CARRYOVER_COLUMNS``.
    """
    keys = ["level", "node", "pathway", "contrast"]
    # the condition differences (drgsMinusScs, ..., dualMinusMean); not the period effects
    names = {c for c in with_carryover["contrast"].unique()
             if "Minus" in str(c) and not str(c).startswith("period")}
    cond = with_carryover[with_carryover["contrast"].isin(names)][keys + ["estimate", "se"]]
    plain = without_carryover[without_carryover["contrast"].isin(names)][keys + ["estimate", "se"]]
    table = cond.merge(plain.rename(columns={"estimate": "estimate_without_carryover",
                                             "se": "se_without_carryover"}), on=keys, how="outer")
    table["shift"] = table["estimate"] - table["estimate_without_carryover"]
    f = with_carryover[with_carryover["contrast"] == "carryoverF"].rename(columns={
        "stat": "carryover_F", "df_num": "carryover_df_num", "df": "carryover_df",
        "p": "carryover_p", "p_fdr": "carryover_p_fdr"})
    table = table.merge(f[["level", "node", "carryover_F", "carryover_df_num", "carryover_df",
                           "carryover_p", "carryover_p_fdr"]], on=["level", "node"], how="left")
    table["carryover_detected"] = np.where(table["carryover_p_fdr"].notna(),
                                           table["carryover_p_fdr"] < alpha, np.nan)
    table["note"] = [notes.get((lv, nd), "") for lv, nd in zip(table["level"], table["node"])]
    return table.reindex(columns=list(CARRYOVER_COLUMNS))
