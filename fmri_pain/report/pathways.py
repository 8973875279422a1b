"""The Pain pathways section of ``group.html``: the pathway stage's tables and figures, as written."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from fmri_pain.report.tsv_html import described_table, description, img_tag, tsv_table


def _described(path: Path, heading: str, query, columns: list[str]) -> list[str]:
    return described_table(path, heading, query, columns, level=3, max_rows=400, collapse=True)


def pathway_report_section(outputs: dict[str, Path]) -> str:
    """The Pathways section of ``group.html`` (tables and base64-embedded figures).

    The methods sentences are the sidecar descriptions of the tables that were
    written, so they state the model that ran; parts not computed are listed with
    their reason.
    """
    parts = ['<div class="pathways">']
    if "roi_effects" in outputs:
        parts.append(f"<p>Node effects: {html.escape(description(outputs['roi_effects']))}.</p>")
    if "roi_stats" in outputs:
        parts.append(f"<p>Statistics: {html.escape(description(outputs['roi_stats']))}. Every table "
                     "gives the degrees of freedom (df) of its t or F reference.</p>")
    if "skipped" in outputs:
        skipped = pd.read_csv(outputs["skipped"], sep="\t", na_values="n/a")
        parts.append("<h3>Not computed</h3><ul>" + "".join(
            f"<li><b>{html.escape(str(r.part))}</b>: {html.escape(str(r.reason))}</li>"
            for r in skipped.itertuples()) + "</ul>")
    cols = ["level", "node", "pathway", "contrast", "estimate", "ci_low", "ci_high", "stat", "df", "p",
            "p_fdr", "model"]
    if "roi_stats" in outputs:
        parts.append("<h3>ROI statistics</h3>")
        parts.append(tsv_table(outputs["roi_stats"], lambda d: d[d["stat_type"] == "t"], cols, max_rows=400,
                               collapse=True))
    for key in sorted(k for k in outputs if k.startswith("forest_")):
        parts.append(img_tag(outputs[key], f"forest plot, contrast {key.removeprefix('forest_')}"))
    if "effect_sizes" in outputs:
        parts += _described(outputs["effect_sizes"], "Effect sizes with BCa intervals",
                                  lambda d: d[d["level"] != "node"],
                                  ["level", "node", "contrast", "n_subjects", "psc", "psc_ci_low",
                                   "psc_ci_high", "dz", "dz_ci_low", "dz_ci_high", "hedges_g"])
        for key in sorted(k for k in outputs if k.startswith("effect_forest_")):
            parts.append(img_tag(outputs[key], f"forest plot of dz, contrast "
                                                f"{key.removeprefix('effect_forest_')}"))
    if "connectivity_ppi_stats" in outputs:
        parts += _described(outputs["connectivity_ppi_stats"],
                                  "Condition-dependent connectivity (gPPI)",
                                  lambda d: d[d["stat_type"] == "t"],
                                  ["seed", "target", "contrast", "estimate", "ci_low", "ci_high",
                                   "stat", "df", "p", "p_fdr"])
        for key in sorted(k for k in outputs if k.startswith("connectome_")):
            parts.append(img_tag(outputs[key], f"gPPI connectome, {key.removeprefix('connectome_')}"))
    if "connectivity_correlation_stats" in outputs:
        parts += _described(outputs["connectivity_correlation_stats"], "Residual correlations",
                                  None,
                                  ["node_a", "node_b", "contrast", "estimate", "stat", "df", "p",
                                   "p_fdr"])
    if "behaviour" in outputs:
        parts += _described(outputs["behaviour"], "Brain-behaviour",
                                  lambda d: d[d["level"] == "pathway"],
                                  ["node", "covariate", "term", "estimate", "ci_low", "ci_high",
                                   "stat", "df", "p", "p_fdr", "n_subjects", "n_obs", "model"])
        for key in sorted(k for k in outputs if k.startswith("behaviour_")):
            parts.append(img_tag(outputs[key], f"pathway effects vs {key.removeprefix('behaviour_')}"))
    if "decoding" in outputs:
        parts.append("<h3>Decoding the condition (leave-one-subject-out)</h3>")
        parts.append(tsv_table(outputs["decoding"], columns=["task", "region", "n_samples", "n_features",
                                                          "accuracy", "chance", "p_perm"]))
    from fmri_pain.report.responders import responder_report_section

    parts.append(responder_report_section(outputs))
    parts.append("</div>")
    return "\n".join(parts)
