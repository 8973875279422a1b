"""The Responders part of ``group.html``: status counts, node tests, prediction and maps, as written."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from fmri_pain.report.tsv_html import described_table, description, tsv_table


def _described(path: Path, heading: str, query, columns: list[str]) -> list[str]:
    return described_table(path, heading, query, columns, level=4, max_rows=400, collapse=True)


def responder_report_section(outputs: dict[str, Path]) -> str:
    """HTML of the responder analysis from the pathway stage's outputs ("" when it did not run)."""
    if "responders" not in outputs:
        return ""
    parts = ["<h3>Responders</h3>", f"<p>{html.escape(description(outputs['responders']))}.</p>"]
    status = pd.read_csv(outputs["responders"], sep="\t", dtype={"responder": str}, na_values=["n/a"],
                         keep_default_na=False)
    counts = (status.assign(responder=status["responder"].fillna("n/a"))
              .groupby(["condition", "responder"]).size().unstack(fill_value=0).reset_index())
    parts.append(counts.to_html(index=False, classes="table pathways", border=0))
    if "responder_stats" in outputs:
        parts += _described(outputs["responder_stats"], "Node effects: responders vs non-responders",
                                  lambda d: d.sort_values(["condition", "level", "p_perm"]),
                                  ["condition", "level", "node", "n_responders", "n_non_responders",
                                   "difference", "t", "df", "p_welch", "p_perm", "p_fdr"])
    if "responder_prediction" in outputs:
        parts += _described(outputs["responder_prediction"], "Predicting response (leave-one-subject-out)",
                                  None, ["condition", "features", "n_subjects", "n_features", "accuracy",
                                         "p_accuracy", "balanced_accuracy", "p_balanced_accuracy", "auc",
                                         "p_auc", "n_rearrangements"])
    if "responder_maps" in outputs:
        parts.append("<h4>Maps: responders vs non-responders</h4>")
        parts.append(tsv_table(outputs["responder_maps"]))
    return "\n".join(parts)


def responder_methods(outputs: dict[str, Path]) -> str:
    """Methods sentences of the responder analysis, from the sidecars of what was written ("" if none)."""
    if "responders" not in outputs:
        return ""
    sentences = ["Responders: " + description(outputs["responders"]).rstrip(".") + "."]
    if "responder_stats" in outputs:
        sentences.append("Responders vs non-responders: " + description(outputs["responder_stats"]).rstrip(".")
                         + " [@benjamini1995].")
    if "responder_prediction" in outputs:
        sentences.append("Prediction of response: " + description(outputs["responder_prediction"]).rstrip(".")
                         + " [@sklearn].")
    if "responder_maps" in outputs:
        sentences.append("Maps of responders minus non-responders per condition: a two-group model "
                         "(nilearn SecondLevelModel [@nilearn]) and a permutation test exchanging whole "
                         "subjects between the groups (max-|t| family-wise error [@nichols2002]).")
    return " ".join(sentences)
