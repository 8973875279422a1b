"""What the pathway effect sizes write: ``desc-effectSizes_table.tsv``, its sidecar and forest plots of dz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fmri_pain.bids.derivatives import write_figure, write_tsv
from fmri_pain.bids.naming import bids_filename, pathway_table_name
from fmri_pain.config.pathways import PathwaysSpec
from fmri_pain.pathways.effect_sizes import STATISTICS, effect_size_table

INTERVAL_METHOD = (
    "BCa bootstrap (bias-corrected and accelerated; Efron & Tibshirani 1993, ch. 14) over "
    "subjects, each subject resampled whole (all its sessions), the period effects re-estimated "
    "in every resample; acceleration from the leave-one-subject-out jackknife; the psc interval "
    "expanded for the sample size (Hesterberg 2015, Am Stat 69:371: the tail quantile "
    "sqrt(n / (n - 1)) t(1 - alpha / 2, n - 1) instead of the normal z(1 - alpha / 2)), the dz and "
    "hedges_g intervals plain BCa; a limit whose BCa percentile leaves fewer than one resample "
    "beyond it is noted in interval_note (it rests on the most extreme resamples)")

DESCRIPTION = (
    "effect sizes of every t contrast over the conditions (per-condition ON > OFF effects and "
    "condition differences) per node, pathway mean and lateral-medial index, from each subject's "
    "contrast value d = sum_c w_c u_c, u_c the subject's mean node effect in condition c minus the "
    "effect of its period (within-subject model subject + condition + period, sum-coded periods); "
    "psc = mean(d), dz = mean(d) / sd(d), hedges_g = J dz with J = 1 - 3 / (4 df - 1), "
    "df = n_subjects - 1; subjects without a condition the contrast weighs are left out of it")

COLUMN_DESCRIPTIONS = {
    "level": {"Description": "node, pathway (mean over its nodes) or index (lateral - medial)"},
    "contrast": {"Description": "t contrast of the trial over the conditions present"},
    "n_subjects": {"Description": "subjects with every condition the contrast weighs"},
    "df": {"Description": "n_subjects - 1: df of sd(d), used by Hedges' J"},
    "hedges_j": {"Description": "Hedges' factor J = 1 - 3 / (4 df - 1)"},
    "psc": {"Description": "mean(d): the contrast's mean effect", "Units": "percent signal change"},
    "dz": {"Description": "mean(d) / sd(d), sd with ddof 1 (dimensionless)"},
    "hedges_g": {"Description": "J dz: dz corrected for small-sample bias (dimensionless)"},
    **{f"{s}_ci_{side}": {"Description": f"{'lower' if side == 'low' else 'upper'} limit of the "
                                         f"interval of {s} (see IntervalMethod)"}
       for s in STATISTICS for side in ("low", "high")},
    "n_boot_valid": {"Description": "resamples in which dz was defined (sd(d) > 0, two subjects)"},
    "interval_note": {"Description": "limits whose BCa percentile leaves fewer than one resample "
                                     "beyond them: rough, they rest on the most extreme resamples"},
    "period_adjustment": {"Description": "how the period was handled for this unit"},
    "left_out": {"Description": "subjects left out of the contrast: a condition it weighs is missing"},
}


def write_effect_sizes(effects: pd.DataFrame, out: Path, *, conditions: tuple[str, ...],
                       spec: PathwaysSpec, params: dict) -> dict[str, Path]:
    """Compute the effect sizes and write ``effect_sizes.tsv`` (+ sidecar) and dz forest plots.

    Parameters
    ----------
    effects : DataFrame
        The long ROI-effects table.
    out : Path
        ``group/pathways``.
    conditions : tuple of str
        The conditions analysed, in contrast order.
    spec : PathwaysSpec
        ``n_bootstrap``, ``alpha`` and ``random_state`` are used.
    params : dict
        The pathway parameters recorded in every sidecar.

    Returns
    -------
    dict
        ``effect_sizes`` and ``effect_forest_<contrast>`` -> path.
    """
    import matplotlib.pyplot as plt

    table = effect_size_table(effects, conditions, n_boot=spec.n_bootstrap, alpha=spec.alpha,
                              random_state=spec.random_state)
    outputs = {"effect_sizes": write_tsv(table, out / pathway_table_name("effect_sizes"), sidecar={
        "Description": DESCRIPTION, "IntervalMethod": INTERVAL_METHOD,
        "ConfidenceLevel": 1 - spec.alpha, "NumberOfBootstrapResamples": spec.n_bootstrap,
        "RandomSeed": spec.random_state,
        "ResamplingUnit": "subject (all sessions together; the same resamples for every unit)",
        "Notes": sorted({f"{r.node} ({r.level}), {r.contrast}: left out {r.left_out}"
                         for r in table.itertuples() if isinstance(r.left_out, str) and r.left_out}),
        "Parameters": params, **COLUMN_DESCRIPTIONS})}
    for contrast in dict.fromkeys(table["contrast"]):
        fig = plot_effect_forest(table, contrast, spec.alpha)
        outputs[f"effect_forest_{contrast}"] = write_figure(
            fig, out / bids_filename({"contrast": contrast, "stat": "dz"}, "forest", ".png"))
        plt.close(fig)
    # forests of contrasts no longer in the table go; the others were left alone if unchanged
    for stale in set(out.glob("contrast-*_stat-dz_forest.png")) - set(outputs.values()):
        stale.unlink()
    return outputs


def plot_effect_forest(table: pd.DataFrame, contrast: str, alpha: float = 0.05, stat: str = "dz"):
    """Forest plot of one contrast's effect size with its interval per node and pathway (no p values).

    A limit the resamples do not resolve (n/a in the table) is drawn dashed to the plot's edge.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = table[(table["contrast"] == contrast) & table[stat].notna()].iloc[::-1]
    colors = {"lateral": "tab:red", "medial": "tab:blue", "descending": "tab:green",
              "control": "0.5", "lateral-medial": "tab:purple"}
    fig, ax = plt.subplots(figsize=(6, 0.28 * len(data) + 1.2))
    ypos = np.arange(len(data))
    open_ended = []
    for y, row in zip(ypos, data.itertuples()):
        color = colors.get(row.pathway, "k")
        estimate = getattr(row, stat)
        low, high = getattr(row, f"{stat}_ci_low"), getattr(row, f"{stat}_ci_high")
        ax.plot([low if np.isfinite(low) else estimate, high if np.isfinite(high) else estimate],
                [y, y], color=color, lw=1.5)
        ax.plot(estimate, y, "o" if row.level == "node" else "D", color=color, ms=6)
        open_ended += [(y, estimate, side, color) for side, limit in ((0, low), (1, high))
                       if not np.isfinite(limit)]
    edges = ax.get_xlim()
    for y, estimate, side, color in open_ended:  # a limit the resamples do not resolve: dashed
        ax.plot([estimate, edges[side]], [y, y], color=color, lw=1.0, ls="--")
    ax.set_xlim(edges)
    ax.set_yticks(ypos)
    ax.set_yticklabels([r.node + ("" if r.level == "node" else f" [{r.level}]")
                        for r in data.itertuples()], fontsize=8)
    ax.axvline(0, color="0.6", lw=0.8)
    label = {"dz": "dz", "hedges_g": "Hedges' g", "psc": "% signal change"}[stat]
    ax.set_xlabel(f"{contrast}: {label} and {100 * (1 - alpha):.0f}% BCa interval"
                  + (" (dashed: limit not resolved by the resamples)" if open_ended else ""))
    fig.tight_layout()
    return fig
