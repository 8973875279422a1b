"""Brain-behaviour: node effects against pain relief, pain and stimulation amplitude.

For each node (and pathway mean) and each covariate the model is

    effect ~ 1 + within + between,   random intercept per subject

with ``within`` the covariate centred on the subject's mean (does a session with
more relief than the subject's usual show a larger effect?) and ``between`` the
subject mean centred over subjects (do subjects with more relief show larger
effects?) -- the within/between decomposition of Bell & Jones (2015, Political
Science Research and Methods 3:133) / Enders & Tofighi (2007). Subjects with a
single session only inform the between term; with one observation per subject
the model is OLS on the covariate. Slopes are t tests with Satterthwaite df
(:func:`fmri_pain.pathways.stats.satterthwaite_df`; for complete data about
``n_obs - n_subjects - 1`` for the within and ``n_subjects - 2`` for the between
slope), or the OLS residual df.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fmri_pain.pathways.stats import add_fdr, contrast_test, fit_model, pathway_means

BEHAVIOUR_COLUMNS = ("level", "node", "pathway", "covariate", "term", "estimate", "se", "ci_low",
                     "ci_high", "stat", "df", "df_method", "p", "p_fdr", "n_subjects", "n_obs", "model")


def within_between(data: pd.DataFrame, covariate: str) -> pd.DataFrame:
    """Add ``within`` and ``between`` columns of ``covariate`` (subject-centred)."""
    data = data.copy()
    values = pd.to_numeric(data[covariate], errors="coerce")
    subject_mean = values.groupby(data["subject"]).transform("mean")
    data["within"] = values - subject_mean
    per_subject = values.groupby(data["subject"]).mean()
    data["between"] = subject_mean - per_subject.mean()
    return data


def behaviour_model(data: pd.DataFrame, covariate: str, value: str = "effect",
                    alpha: float = 0.05) -> list[dict]:
    """Within- and between-subject slopes of ``value`` on ``covariate``."""
    data = within_between(data, covariate).dropna(subset=[value, "within", "between"])
    if len(data) < 3 or data[covariate].astype(float).std() == 0:
        return []
    groups = data["subject"].astype(str).to_numpy()
    has_within = data["within"].abs().max() > 1e-12 and data.groupby("subject").size().max() > 1
    exog = pd.DataFrame({"const": 1.0, "within": data["within"], "between": data["between"]},
                        index=data.index)
    if not has_within:
        exog = exog.drop(columns="within")
    fit = fit_model(data[value].astype(float).to_numpy(), exog, groups)
    rows = []
    for term in [c for c in ("within", "between") if c in exog.columns]:
        w = (exog.columns == term).astype(float)
        rows.append({"term": term, **contrast_test(fit, w, alpha), "n_subjects": fit["n_subjects"],
                     "n_obs": fit["n_obs"], "model": fit["model"]})
    return rows


def behaviour_statistics(effects: pd.DataFrame, covariates: Sequence[str], *,
                         alpha: float = 0.05) -> pd.DataFrame:
    """Brain-behaviour slopes for every node and pathway mean and every covariate present.

    ``p_fdr`` is Benjamini-Hochberg over nodes (per level, covariate and term).
    """
    present = [c for c in covariates if c in effects.columns
               and pd.to_numeric(effects[c], errors="coerce").notna().any()]
    rows = []
    session_keys = [c for c in ("subject", "session") if c in effects.columns]
    for cov in present:
        for node, data in effects.groupby("node", sort=False):
            for row in behaviour_model(data, cov, alpha=alpha):
                rows.append({"level": "node", "node": node, "pathway": data["pathway"].iloc[0],
                             "covariate": cov, **row})
        covs = effects.drop_duplicates(session_keys)[session_keys + [cov]]
        means = pathway_means(effects).merge(covs, on=session_keys, how="left")
        for pathway, data in means.groupby("pathway", sort=False):
            for row in behaviour_model(data, cov, alpha=alpha):
                rows.append({"level": "pathway", "node": pathway, "pathway": pathway,
                             "covariate": cov, **row})
    table = pd.DataFrame(rows, columns=[c for c in BEHAVIOUR_COLUMNS if c != "p_fdr"])
    return add_fdr(table, ["level", "covariate", "term"]).reindex(columns=list(BEHAVIOUR_COLUMNS))


def plot_behaviour(effects: pd.DataFrame, covariate: str):
    """Scatter of each pathway's mean effect against ``covariate``, coloured by condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    session_keys = [c for c in ("subject", "session") if c in effects.columns]
    covs = effects.drop_duplicates(session_keys)[session_keys + [covariate]]
    means = pathway_means(effects).merge(covs, on=session_keys, how="left")
    pathways = list(dict.fromkeys(means["pathway"]))
    fig, axes = plt.subplots(1, len(pathways), figsize=(3.2 * len(pathways), 3.0), squeeze=False)
    for ax, pathway in zip(axes[0], pathways):
        data = means[means["pathway"] == pathway]
        for cond, sub in data.groupby("condition", sort=False):
            ax.scatter(pd.to_numeric(sub[covariate], errors="coerce"), sub["effect"], label=cond, s=18)
        x = pd.to_numeric(data[covariate], errors="coerce")
        ok = x.notna() & data["effect"].notna()
        if ok.sum() > 2 and x[ok].std() > 0:
            slope, intercept = np.polyfit(x[ok], data["effect"][ok], 1)
            grid = np.linspace(x[ok].min(), x[ok].max(), 10)
            ax.plot(grid, intercept + slope * grid, color="k", lw=1)
        ax.set_title(pathway)
        ax.set_xlabel(covariate)
        ax.axhline(0, color="0.7", lw=0.5)
    axes[0][0].set_ylabel("ON > OFF effect (pathway mean)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig
