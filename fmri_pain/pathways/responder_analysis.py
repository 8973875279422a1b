"""The responder analysis of the pathways: status, node tests and prediction written as tables.

Files under ``group/pathways``: ``responders.tsv`` (status per subject x condition),
``responder_stats.tsv`` (:func:`fmri_pain.pathways.responders.responder_statistics`) and
``responder_prediction.tsv`` (:func:`fmri_pain.pathways.responder_prediction.predict_response`),
each with a JSON sidecar. What could not be computed is returned as skip reasons, which
the pathway run records in ``skipped.tsv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fmri_pain.bids.derivatives import write_tsv
from fmri_pain.config.responders import RespondersSpec
from fmri_pain.pathways.responder_prediction import METRICS, RIDGE_ALPHA, predict_response
from fmri_pain.bids.naming import pathway_table_name
from fmri_pain.pathways.responders import MissingColumnError, responder_statistics, responder_status
from fmri_pain.pathways.stats import pathway_means

RESPONDER_FILES = tuple(pathway_table_name(key, ext) for key in (
    "responders", "responder_stats", "responder_prediction", "responder_maps") for ext in (".tsv", ".json"))
"""Files of the responder analysis (removed before it runs and when it is off, so none is stale)."""


def remove_responder_files(out: Path) -> None:
    """Remove the responder tables of an earlier run from ``out``."""
    for stale in RESPONDER_FILES:
        (out / stale).unlink(missing_ok=True)

PREDICTION_COLUMNS = ("condition", "features", "n_subjects", "n_responders", "n_non_responders",
                      "n_features", *METRICS, *(f"p_{m}" for m in METRICS),
                      *(f"null_mean_{m}" for m in METRICS), "n_rearrangements", "exhaustive")


def responder_features(effects: pd.DataFrame, condition: str, features: str) -> pd.DataFrame:
    """Subjects x nodes (``features="nodes"``) or x pathway means (``"pathways"``) under ``condition``.

    Units with a missing value for some subject are left out (the classifier needs every feature).
    """
    data = effects[effects["condition"].astype(str) == condition]
    if features == "pathways":
        data = pathway_means(data).rename(columns={"pathway": "unit"})
    else:
        data = data.rename(columns={"node": "unit"})
    wide = data.pivot_table(index="subject", columns="unit", values="effect", aggfunc="mean", sort=False)
    return wide.dropna(axis=1, how="any")


def responder_prediction(effects: pd.DataFrame, status: pd.DataFrame, *, n_permutations: int,
                         random_state: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """LOSO prediction of responder status per condition, from node effects and from pathway means."""
    rng = np.random.default_rng(random_state)
    rows, notes = [], []
    effects = effects.assign(subject=effects["subject"].astype(str))
    known = status.dropna(subset=["responder"])
    for condition, block in known.groupby(known["condition"].astype(str), sort=False):
        labels = dict(zip(block["subject"].astype(str), block["responder"].astype(bool)))
        for features in ("nodes", "pathways"):
            X = responder_features(effects, condition, features)
            X = X.loc[[s for s in X.index if s in labels]]
            y = np.array([labels[s] for s in X.index], dtype=bool)
            if y.sum() < 2 or (~y).sum() < 2 or X.shape[1] == 0:
                notes.append(f"{condition} ({features}): {int(y.sum())} responder(s), {int((~y).sum())} "
                             f"non-responder(s) and {X.shape[1]} feature(s) with data; the prediction needs "
                             "two or more subjects per class and one feature")
                continue
            result = predict_response(X.to_numpy(), y, n_permutations=n_permutations, random_state=rng)
            rows.append({"condition": condition, "features": features, "n_subjects": len(y),
                         **{k: v for k, v in result.items() if k != "scores"}})
    return pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS)), notes


def run_responder_analysis(maps: pd.DataFrame, effects: pd.DataFrame, out: Path, spec: RespondersSpec, *,
                           n_permutations: int, random_state: int, alpha: float,
                           parameters: dict | None = None) -> tuple[dict[str, Path], list[str]]:
    """Write the responder tables; return the files written and the reasons for what was not done.

    Parameters
    ----------
    maps : DataFrame
        The pathway analysis' subject maps table (subject, condition and sessions.tsv columns).
    effects : DataFrame
        Its node effects (``desc-roiEffects_table.tsv``).
    out : Path
        ``group/pathways``.
    spec : RespondersSpec
        The ``responders`` section.
    n_permutations, random_state, alpha
        The pathway section's permutations, seed and FDR level.

    Returns
    -------
    outputs : dict of name -> path
    skipped : list of str
        Why a part was not computed (an empty list when everything ran).
    """
    remove_responder_files(out)
    try:
        status = responder_status(maps, spec.rules, combine=spec.combine, conditions=spec.conditions)
    except (MissingColumnError, ValueError) as exc:
        return {}, [f"responder status not computed: {exc}"]
    definition = spec.describe()
    params = {"Rules": [dict(column=r.column, at_least=r.at_least, at_most=r.at_most) for r in spec.rules],
              "Combine": spec.combine, "Definition": definition,
              "Conditions": list(spec.conditions) or "all", "NPermutations": n_permutations,
              "RandomState": random_state, **({"PathwayParameters": parameters} if parameters else {})}
    n_missing = int(status["responder"].isna().sum())
    outputs = {"responders": write_tsv(status, out / pathway_table_name("responders"), sidecar={
        "Description": f"responder status per subject and condition: responder when {definition} in the "
                       "session of that condition (sessions.tsv)",
        "responder": {"Description": f"{definition}; n/a when a value the rules need is missing "
                                     f"({n_missing} session(s))"},
        "Parameters": params})}
    skipped = []
    stats, notes = responder_statistics(effects, status, n_permutations=n_permutations,
                                        random_state=random_state)
    if stats.empty:
        skipped.append("responder node tests: " + ("; ".join(notes) or "no condition has node effects "
                                                   "of two or more responders and non-responders"))
    else:
        p_source = "p_perm" if n_permutations > 0 else "p_welch"
        outputs["responder_stats"] = write_tsv(stats, out / pathway_table_name("responder_stats"), sidecar={
            "Description": "node effects (ON > OFF) of responders minus non-responders per condition, node "
                           "and pathway mean: Welch t (unequal variances, Welch-Satterthwaite df) and a "
                           "permutation test of |t| with responder labels rearranged among the subjects of "
                           "the condition (group sizes fixed; all distinct relabellings when there are no "
                           f"more than {n_permutations + 1}); p_fdr = Benjamini-Hochberg of {p_source} over "
                           "the nodes (and over the pathway means) of each condition",
            "p_welch": {"Description": "two-sided p of Welch's t"},
            "p_perm": {"Description": "two-sided permutation p of |t|: count of relabellings with |t| at "
                                      "least the observed (the observed included) / n_rearrangements"},
            "p_fdr": {"Description": f"Benjamini-Hochberg adjusted {p_source}"},
            "Alpha": alpha, "Notes": notes, "Parameters": params})
    prediction, pred_notes = responder_prediction(effects, status, n_permutations=n_permutations,
                                                  random_state=random_state)
    if prediction.empty:
        skipped.append("responder prediction: " + ("; ".join(pred_notes) or "no condition to predict"))
    else:
        outputs["responder_prediction"] = write_tsv(prediction, out / pathway_table_name("responder_prediction"), sidecar={
            "Description": "leave-one-subject-out prediction of responder status from the node effects "
                           "(features nodes) or pathway means (features pathways) under the condition: "
                           "scikit-learn StandardScaler then RidgeClassifier (alpha "
                           f"{RIDGE_ALPHA:g}) fitted on the other subjects; accuracy, balanced accuracy "
                           "and AUC of the held-out decision scores; p = (1 + count) / (1 + "
                           "n_permutations) over responder labels permuted across subjects (the whole "
                           "cross-validation repeated), or count / total over all distinct relabellings "
                           "when there are few",
            "Notes": pred_notes, "Parameters": params})
    return outputs, skipped
