"""Non-inferiority, superiority and equivalence (TOST) tests of node and pathway contrasts.

Each test of the ``equivalence`` section (``fmri_pain.config.equivalence``) is run on the
crossover model of every node, pathway mean and the lateral-medial index (the model of
``roi_stats.tsv``: :func:`fmri_pain.pathways.stats.fit_crossover`). With the contrast's estimate
``D`` (positive: the first condition higher), its standard error ``se`` and Satterthwaite df:

- non-inferiority, H0 ``D <= -m``: ``t = (D + m) / se``, ``p = P(T >= t)``;
- superiority, H0 ``D <= m``: ``t = (D - m) / se``, ``p = P(T >= t)``;
- equivalence (TOST), H0 ``|D| >= m``: ``p_low`` of ``D + m > 0`` as above, ``p_high = P(T <=
  (D - m) / se)``, ``p = max(p_low, p_high)``.

The confidence interval is the two-sided ``1 - 2 alpha`` interval for every kind (CONSORT's
figure for non-inferiority trials): a one-sided test rejects at ``alpha`` exactly when the
interval's bound on its side clears the margin, TOST exactly when the interval lies inside
``(-m, m)``.

Units. ``psc`` margins are used as given (node effects are percent signal change). A ``dz``
margin is standardised by the within-subject SD of the contrast, ``sd = sqrt(s2_e w'w +
s2_u (sum w)^2)`` with the model's REML residual (``s2_e``) and subject (``s2_u``) variances and
contrast weights ``w``: the SD of a subject's contrast value net of period effects (for a
difference, ``sum w = 0``: ``s_e sqrt(w'w)``, ``sqrt(2) s_e`` for a pair of conditions; Cohen's
d_z of a paired comparison). Two routes (the ``method`` column):

- ``noncentral-t`` (exact): when the data are a complete comparison (every subject has one
  observation of every condition present, and the same periods), the contrast is a difference
  and REML's subject variance is positive, or with one observation per subject (OLS), ``D / se``
  follows a noncentral t with ``df`` and noncentrality ``delta * sd / sd(D)``, and ``sd / se``
  is a known design constant (``sqrt(n)`` for a paired comparison without periods, as
  ``ncp = margin_dz * sqrt(n)``). The p values come from that noncentral t at ``delta = -m``
  (``+m``) and the interval for ``delta`` inverts it, so decision and interval agree.
- ``t-plugin-sd`` (approximate): otherwise (drop-outs, a condition's own mean, REML at the
  boundary) the margin is converted to percent signal change with the estimated ``sd`` and
  treated as known.

``psc`` tests have ``method`` ``t``. p values are per unit; ``p_fdr`` is Benjamini-Hochberg over
the units of a level for each test.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

from fmri_pain.bids.derivatives import write_figure, write_tsv
from fmri_pain.bids.naming import bids_filename, pathway_table_name
from fmri_pain.config.equivalence import EquivalenceSpec, EquivalenceTest
from fmri_pain.pathways.stats import (DF_METHODS, add_fdr, contrast_test, fit_crossover,
                                      lateral_medial_index, pathway_means)
from fmri_pain.trial import CONDITIONS, trial_contrasts

LOGGER = logging.getLogger(__name__)

COLUMNS = ("level", "node", "pathway", "contrast", "kind", "unit", "margin", "alpha", "estimate",
           "se", "df", "df_method", "method", "sd_contrast", "margin_psc", "estimate_unit",
           "ci_level", "ci_low", "ci_high", "bound_low", "t_low", "p_low", "bound_high", "t_high",
           "p_high", "p", "p_fdr", "rejected", "conclusion", "n_subjects", "n_obs", "model", "note")

METHODS = {
    "t": "t tests of the estimate against the margin (psc) with the model's df (df_method)",
    "noncentral-t": "exact: D / se against the noncentral t at the dz margin (complete data)",
    "t-plugin-sd": "approximate: dz margin x estimated within-subject SD of the contrast, then t tests",
}
"""What the ``method`` column of ``equivalence.tsv`` means."""

CONCLUSIONS = {"non-inferiority": ("non-inferior", "non-inferiority not shown"),
               "superiority": ("superior", "superiority not shown"),
               "equivalence": ("equivalent", "equivalence not shown")}

KIND_LABELS = {"non-inferiority": "noninferiority", "superiority": "superiority",
               "equivalence": "equivalence"}
"""BIDS-safe labels of the kinds (``desc-`` of the figures)."""


def margin_bounds(kind: str, margin: float) -> tuple[float, float]:
    """``(bound_low, bound_high)``: H0 ``D <= bound_low`` and (TOST) ``D >= bound_high`` (NaN: none)."""
    if kind == "non-inferiority":
        return -margin, np.nan
    if kind == "superiority":
        return margin, np.nan
    if kind == "equivalence":
        return -margin, margin
    raise ValueError(f"unknown kind {kind!r}; choose from {tuple(CONCLUSIONS)}")


def margin_tests(estimate, se, df, kind: str, margin: float, alpha: float = 0.05) -> dict:
    """One-sided t tests of an estimate against a margin, and the ``1 - 2 alpha`` interval.

    Parameters
    ----------
    estimate, se, df : float or ndarray
        Estimate of the contrast, its standard error and the df of its t reference.
    kind : {"non-inferiority", "superiority", "equivalence"}
    margin : float
        In the unit of ``estimate``.
    alpha : float
        Level of each one-sided test.

    Returns
    -------
    dict with bound_low, t_low, p_low (test of ``D > bound_low``), bound_high, t_high, p_high
    (test of ``D < bound_high``; NaN unless equivalence), p (the test's p value), ci_low, ci_high.
    """
    estimate, se, df = (np.asarray(a, dtype=float) for a in (estimate, se, df))
    low, high = margin_bounds(kind, margin)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_low = (estimate - low) / se
        t_high = (estimate - high) / se
    p_low = special.stdtr(df, -t_low)
    p_high = special.stdtr(df, t_high)
    q = special.stdtrit(df, 1 - alpha)
    return {"bound_low": low, "t_low": t_low, "p_low": p_low, "bound_high": high,
            "t_high": t_high, "p_high": p_high,
            "p": np.fmax(p_low, p_high) if kind == "equivalence" else p_low,
            "ci_low": estimate - q * se, "ci_high": estimate + q * se}


def noncentral_margin_tests(t, df, ratio, kind: str, margin: float, alpha: float = 0.05) -> dict:
    """Exact tests of a standardised effect ``delta`` against a margin with the noncentral t.

    Parameters
    ----------
    t : float or ndarray
        ``D / se``, distributed as noncentral t(``df``, ``delta * ratio``).
    ratio : float or ndarray
        ``sd / sd(D)``: ``sqrt(n)`` for a paired comparison of ``n`` subjects.
    margin : float
        In units of ``delta`` (d_z).

    Returns
    -------
    dict as :func:`margin_tests`; ``t_low`` and ``t_high`` are ``t`` itself, the interval is
    the ``1 - 2 alpha`` interval of ``delta`` (noncentrality inverted).
    """
    t, df, ratio = (np.asarray(a, dtype=float) for a in (t, df, ratio))
    low, high = margin_bounds(kind, margin)
    p_low = 1.0 - special.nctdtr(df, low * ratio, t)
    p_high = special.nctdtr(df, high * ratio, t) if kind == "equivalence" else np.full(t.shape, np.nan)
    # the noncentrality whose upper (lower) tail at t is alpha: the interval's bounds
    ci_low = special.nctdtrinc(df, 1 - alpha, t) / ratio
    ci_high = special.nctdtrinc(df, alpha, t) / ratio
    return {"bound_low": low, "t_low": t, "p_low": p_low, "bound_high": high, "t_high": t,
            "p_high": p_high, "p": np.fmax(p_low, p_high) if kind == "equivalence" else p_low,
            "ci_low": ci_low, "ci_high": ci_high}


def _complete(data: pd.DataFrame, value: str, present: list[str]) -> bool:
    """Every subject has one observation of each present condition, and all the same periods."""
    data = data.dropna(subset=[value])
    counts = data.groupby(["subject", "condition"]).size()
    if len(counts) != data["subject"].nunique() * len(present) or (counts != 1).any():
        return False
    if "period" in data.columns and data["period"].notna().all():
        periods = data.groupby("subject")["period"].apply(lambda p: tuple(sorted(p)))
        return periods.nunique() == 1
    return True


def fit_tests(fit: dict, data: pd.DataFrame, tests: tuple[EquivalenceTest, ...] | list,
              alpha: float = 0.05, value: str = "effect") -> list[dict]:
    """The margin tests of one unit's crossover fit.

    Parameters
    ----------
    fit : dict
        :func:`fit_crossover` of ``data`` (or a fit record with the same keys).
    data : DataFrame
        The unit's long table (subject, condition, period, ``value``), to tell complete data.
    tests : sequence of EquivalenceTest

    Returns
    -------
    list of dict, one per test (keys of :data:`COLUMNS` except level, node, pathway, p_fdr);
    a test whose contrast the unit cannot estimate gets NaNs and a ``note``.
    """
    columns = list(fit["params"].index)
    contrasts = trial_contrasts(tuple(fit["present"]))
    complete = None
    rows = []
    for test in tests:
        row = {"contrast": test.contrast, "kind": test.kind, "unit": test.unit,
               "margin": test.margin, "alpha": alpha, "ci_level": 1 - 2 * alpha,
               "n_subjects": fit["n_subjects"], "n_obs": fit["n_obs"], "model": fit["model"],
               "note": ""}
        contrast = contrasts.get(test.contrast)
        if contrast is None or contrast.stat_type != "t":
            rows.append({**row, "rejected": False, "conclusion": "not tested",
                         "note": f"{test.contrast} cannot be estimated: conditions present are "
                                 f"{', '.join(fit['present'])}"})
            continue
        w = np.zeros(len(columns))
        for cond, weight in zip(contrast.conditions, contrast.weights):
            w[columns.index(cond)] = weight
        ct = contrast_test(fit, w, 2 * alpha)
        row.update(estimate=ct["estimate"], se=ct["se"], df=ct["df"], df_method=ct["df_method"])
        group_var = 0.0 if not np.isfinite(fit["group_var"]) else fit["group_var"]
        sd = float(np.sqrt(fit["resid_var"] * w @ w + group_var * w.sum() ** 2))
        if test.unit == "psc":
            res = margin_tests(ct["estimate"], ct["se"], ct["df"], test.kind, test.margin, alpha)
            row.update(method="t", sd_contrast=sd, margin_psc=test.margin,
                       estimate_unit=ct["estimate"])
        else:
            if complete is None:
                complete = _complete(data, value, list(fit["present"]))
            # REML at its boundary (subject variance 0) pools the strata: no longer exact
            exact = (fit["n_obs"] == fit["n_subjects"] if fit["model"] == "ols" else
                     complete and abs(w.sum()) < 1e-12 and ct["df_method"] == "satterthwaite"
                     and group_var > 0)
            row.update(sd_contrast=sd, margin_psc=test.margin * sd, estimate_unit=ct["estimate"] / sd)
            if exact:
                res = noncentral_margin_tests(ct["stat"], ct["df"], sd / ct["se"], test.kind,
                                              test.margin, alpha)
                row["method"] = "noncentral-t"
            else:
                res = margin_tests(ct["estimate"], ct["se"], ct["df"], test.kind, test.margin * sd,
                                   alpha)
                res = {**res, "bound_low": res["bound_low"] / sd, "bound_high": res["bound_high"] / sd,
                       "ci_low": res["ci_low"] / sd, "ci_high": res["ci_high"] / sd}
                row["method"] = "t-plugin-sd"
        row.update({k: float(v) for k, v in res.items()})
        row["rejected"] = bool(np.isfinite(row["p"]) and row["p"] < alpha)
        row["conclusion"] = CONCLUSIONS[test.kind][0 if row["rejected"] else 1]
        rows.append(row)
    return rows


def equivalence_statistics(effects: pd.DataFrame, tests: tuple[EquivalenceTest, ...] | list, *,
                           conditions: tuple[str, ...] = CONDITIONS, alpha: float = 0.05,
                           value: str = "effect") -> pd.DataFrame:
    """The margin tests per node, pathway mean and lateral-medial index.

    Parameters
    ----------
    effects : DataFrame
        The long ROI-effects table (:func:`fmri_pain.pathways.roi.extract_roi_effects`).
    tests : sequence of EquivalenceTest
    conditions : tuple of str
        The trial's conditions, in contrast order.
    alpha : float
        Level of each one-sided test (intervals at ``1 - 2 alpha``).

    Returns
    -------
    DataFrame with columns :data:`COLUMNS`, one row per unit and test.
    """
    units = [("node", node, data["pathway"].iloc[0], data, value)
             for node, data in effects.groupby("node", sort=False) if data[value].notna().any()]
    units += [("pathway", p, p, data, "effect")
              for p, data in pathway_means(effects).groupby("pathway", sort=False)]
    index = lateral_medial_index(effects)
    if not index.empty and index["effect"].notna().any():
        units.append(("index", "lateral_minus_medial", "lateral-medial", index, "effect"))
    rows = []
    for level, node, pathway, data, column in units:
        fit = fit_crossover(data, column, conditions=conditions)
        rows += [{"level": level, "node": node, "pathway": pathway, **row}
                 for row in fit_tests(fit, data, tests, alpha, column)]
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "p_fdr"])
    return add_fdr(table, ["level", "contrast", "kind"]).reindex(columns=list(COLUMNS))


def plot_margins(table: pd.DataFrame, contrast: str, kind: str):
    """CONSORT-style figure of one test: estimate and ``1 - 2 alpha`` CI per unit against the margin.

    Filled markers: the test rejects its null (decision in the label); dashed lines: the margin(s).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = table[(table["contrast"] == contrast) & (table["kind"] == kind)
                 & table["estimate_unit"].notna()].iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * max(len(data), 1) + 1.4))
    ypos = np.arange(len(data))
    for y, (_, row) in zip(ypos, data.iterrows()):
        color = "tab:green" if row["rejected"] else "0.35"
        ax.plot([row["ci_low"], row["ci_high"]], [y, y], color=color, lw=1.6)
        ax.plot(row["estimate_unit"], y, "o" if row["level"] == "node" else "D", color=color,
                mfc=color if row["rejected"] else "white", ms=6)
    ax.set_yticks(ypos)
    ax.set_yticklabels([f"{r['node']}" + ("" if r["level"] == "node" else f" [{r['level']}]")
                        + f"  ({r['conclusion']}, p={r['p']:.3g})" for _, r in data.iterrows()],
                       fontsize=7)
    if len(data):
        first = data.iloc[0]
        for bound in (first["bound_low"], first["bound_high"]):
            if np.isfinite(bound):
                ax.axvline(bound, color="tab:red", ls="--", lw=1)
        unit = first["unit"]
        ax.set_xlabel(f"{contrast} ({unit}): estimate and {100 * first['ci_level']:.0f}% CI; dashed: "
                      f"margin {first['margin']:g} {unit}; filled: {CONCLUSIONS[kind][0]} at "
                      f"alpha {first['alpha']:g}", fontsize=8)
    ax.axvline(0, color="0.6", lw=0.8)
    ax.set_title(f"{kind}: {contrast}", fontsize=9)
    fig.tight_layout()
    return fig


COLUMN_DESCRIPTIONS = {
    "kind": {"Description": "non-inferiority (H0 D <= -margin), superiority (H0 D <= margin) or "
                            "equivalence (TOST, H0 |D| >= margin); D = the contrast's estimate"},
    "unit": {"Description": "unit of margin, estimate_unit, ci_low, ci_high, bound_low, bound_high: "
                            "psc (percent signal change) or dz (D / sd_contrast)"},
    "estimate": {"Description": "the contrast's estimate D in percent signal change (crossover model)"},
    "se": {"Description": "standard error of D (psc)"},
    "df": {"Description": "degrees of freedom of the t (noncentral t) reference"},
    "df_method": {"Description": "how df was obtained", "Levels": DF_METHODS},
    "method": {"Description": "how the p values were computed", "Levels": METHODS},
    "sd_contrast": {"Description": "within-subject SD of the contrast, sqrt(resid_var w'w + group_var "
                                   "(sum w)^2), psc; the dz denominator"},
    "margin_psc": {"Description": "the margin in psc (margin x sd_contrast for dz)"},
    "estimate_unit": {"Description": "D in the test's unit"},
    "ci_level": {"Description": "level of the two-sided interval, 1 - 2 alpha"},
    "bound_low": {"Description": "H0 of the first one-sided test: D <= bound_low (unit)"},
    "t_low": {"Description": "(D - bound_low) / se; for method noncentral-t, D / se (referred to the "
                             "noncentral t at the bound)"},
    "p_low": {"Description": "one-sided p of D > bound_low"},
    "bound_high": {"Description": "equivalence only: H0 of the second test, D >= bound_high (unit)"},
    "t_high": {"Description": "(D - bound_high) / se (noncentral-t: D / se)"},
    "p_high": {"Description": "one-sided p of D < bound_high"},
    "p": {"Description": "p of the test: p_low, or max(p_low, p_high) for equivalence"},
    "p_fdr": {"Description": "Benjamini-Hochberg adjusted p over the units of a level, per test"},
    "rejected": {"Description": "p < alpha (unadjusted)"},
    "note": {"Description": "why a test could not be computed for the unit"},
}


def write_equivalence(effects: pd.DataFrame, section: EquivalenceSpec, out: Path, *,
                      conditions: tuple[str, ...], parameters: dict) -> dict[str, Path]:
    """Write ``equivalence.tsv`` (+ sidecar) and one margin figure per test under ``out``.

    Returns
    -------
    dict of output name -> path (``equivalence``, ``equivalence_<contrast>_<kind>``).
    """
    import matplotlib.pyplot as plt

    table = equivalence_statistics(effects, section.tests, conditions=conditions, alpha=section.alpha)
    tests = [{"contrast": t.contrast, "kind": t.kind, "margin": t.margin, "unit": t.unit}
             for t in section.tests]
    outputs = {"equivalence": write_tsv(table, out / pathway_table_name("equivalence"), sidecar={
        "Description": "non-inferiority, superiority and equivalence (TOST) tests per node, pathway "
                       "mean and lateral-medial index on the crossover model of roi_stats.tsv "
                       f"(Satterthwaite df); one-sided tests at alpha = {section.alpha:g}, two-sided "
                       f"{100 * (1 - 2 * section.alpha):g}% confidence intervals (CONSORT)",
        "Parameters": {"tests": tests, "alpha": section.alpha, "conditions": list(conditions),
                       "pathways": parameters},
        **COLUMN_DESCRIPTIONS})}
    for test in section.tests:
        fig = plot_margins(table, test.contrast, test.kind)
        name = bids_filename({"contrast": test.contrast, "desc": KIND_LABELS[test.kind]}, "margins", ".png")
        outputs[f"equivalence_{test.contrast}_{KIND_LABELS[test.kind]}"] = write_figure(fig, out / name)
        plt.close(fig)
    return outputs
