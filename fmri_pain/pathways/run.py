"""The pain-pathway analysis at the group level: files in, tables and figures out."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fmri_pain.derivatives import space_of, write_figure, write_nifti, write_tsv
from fmri_pain.pathways.atlas import PathwayAtlas, build_atlas, spatial_reference
from fmri_pain.pathways.behaviour import behaviour_statistics, plot_behaviour
from fmri_pain.pathways.connectivity import (
    correlation_statistics,
    plot_connectomes,
    ppi_statistics,
    run_connectivity,
)
from fmri_pain.pathways.decoding import run_decoding
from fmri_pain.pathways.roi import extract_roi_effects
from fmri_pain.pathways.spec import PathwaysSpec
from fmri_pain.pathways.stats import roi_statistics
from fmri_pain.trial import CONDITIONS

PATHWAYS_DIR = ("group", "pathways")


class AtlasCache:
    """``pain_side -> PathwayAtlas``, built once per side (or one fixed atlas)."""

    def __init__(self, spec: PathwaysSpec, fixed: PathwayAtlas | None = None, target_img=None):
        self.spec = spec
        self.fixed = fixed
        self.target_img = target_img
        self._cache: dict[str, PathwayAtlas] = {}

    def __call__(self, pain_side: str) -> PathwayAtlas:
        if self.fixed is not None:
            return self.fixed
        if pain_side not in self._cache:
            self._cache[pain_side] = build_atlas(
                self.target_img, pain_side, table=self.spec.atlas_file,
                probability_threshold=self.spec.probability_threshold,
                label_fraction=self.spec.label_fraction)
        return self._cache[pain_side]

    @property
    def built(self) -> dict[str, PathwayAtlas]:
        return {"fixed": self.fixed} if self.fixed is not None else dict(self._cache)


def plot_forest(stats: pd.DataFrame, contrast: str, alpha: float = 0.05):
    """Forest plot of one t contrast: estimate and CI per node and pathway."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = stats[(stats["contrast"] == contrast) & stats["level"].isin(["node", "pathway", "index"])]
    data = data.iloc[::-1]
    colors = {"lateral": "tab:red", "medial": "tab:blue", "descending": "tab:green",
              "control": "0.5", "lateral-medial": "tab:purple"}
    fig, ax = plt.subplots(figsize=(6, 0.28 * len(data) + 1.2))
    ypos = np.arange(len(data))
    for y, (_, row) in zip(ypos, data.iterrows()):
        color = colors.get(row["pathway"], "k")
        sig = np.isfinite(row["p_fdr"]) and row["p_fdr"] < alpha
        ax.plot([row["ci_low"], row["ci_high"]], [y, y], color=color, lw=1.5)
        ax.plot(row["estimate"], y, "o" if row["level"] == "node" else "D", color=color,
                mfc=color if sig else "white", ms=6)
    ax.set_yticks(ypos)
    ax.set_yticklabels([f"{r['node']}" + ("" if r["level"] == "node" else f" [{r['level']}]")
                        for _, r in data.iterrows()], fontsize=8)
    ax.axvline(0, color="0.6", lw=0.8)
    ax.set_xlabel(f"{contrast}: estimate and {100 * (1 - alpha):.0f}% CI (filled: FDR < {alpha})")
    fig.tight_layout()
    return fig


def run_pathway_analysis(maps: pd.DataFrame, runs: Sequence | None, output_dir: Path | str,
                         spec: PathwaysSpec | None = None, *,
                         conditions: tuple[str, ...] = CONDITIONS,
                         atlas: PathwayAtlas | None = None) -> dict[str, Path]:
    """Run the pain-pathway analysis and write its outputs under ``output_dir/group/pathways``.

    Parameters
    ----------
    maps : DataFrame
        One row per subject x session: subject, session, condition, period,
        sequence, effect (path of the first-level ``stim`` effect map), variance
        (path), and covariates (pain_relief, vas_pain, stim_amplitude_ma, pain_side ...).
    runs : list of Run or None
        Preprocessed MNI runs for connectivity (None or empty: skipped).
    output_dir : path
        The derivatives root.
    spec : PathwaysSpec
    conditions : tuple of str
        Condition names in contrast order; those absent from ``maps`` are dropped.
    atlas : PathwayAtlas, optional
        Use this atlas for every subject (e.g. :func:`atlas_from_masks`) instead of
        building the pathway atlas per pain side.

    Returns
    -------
    dict of output name -> path (TSVs, figures, atlas images).
    """
    spec = spec or PathwaysSpec()
    out = Path(output_dir).joinpath(*PATHWAYS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    if maps is None or len(maps) == 0:
        raise ValueError("run_pathway_analysis: the maps table is empty")
    first = maps["effect"].iloc[0]
    from fmri_pain.pathways.roi import load_map

    target = load_map(first, maps["subject"].iloc[0], maps.get("session", pd.Series([None])).iloc[0])
    atlas_for = AtlasCache(spec, atlas, target_img=target)
    conditions = tuple(conditions)
    params = {k: v for k, v in vars(spec).items()}
    params["atlas"] = str(spec.atlas_file) if atlas is None else "given"
    outputs: dict[str, Path] = {}

    effects = extract_roi_effects(maps, atlas_for, default_pain_side=spec.default_pain_side)
    outputs["roi_effects"] = write_tsv(effects, out / "roi_effects.tsv", sidecar={
        "Description": "mean (and median) first-level ON > OFF effect and mean voxel variance per node",
        "Parameters": params})
    for side, built in atlas_for.built.items():
        stem = f"atlas-painPathways_hemi-{'given' if side == 'fixed' else 'pain' + side.capitalize()}"
        outputs[f"atlas_{side}"] = write_nifti(built.img, out / f"{stem}_dseg.nii.gz", sidecar={
            "SpatialReference": spatial_reference(built, space_of(first))})
        outputs[f"atlas_{side}_labels"] = write_tsv(built.nodes, out / f"{stem}_dseg.tsv")

    stats = roi_statistics(effects, conditions=conditions, alpha=spec.alpha)
    outputs["roi_stats"] = write_tsv(stats, out / "roi_stats.tsv", sidecar={
        "Description": "crossover mixed model per node / pathway mean / lateral-medial index: "
                       "effect ~ 0 + condition + C(period, Sum), random intercept per subject (REML); "
                       "Wald tests; p_fdr = Benjamini-Hochberg over units per level and contrast",
        "Parameters": params})
    import matplotlib.pyplot as plt

    for contrast in stats.loc[stats["stat_type"] == "t", "contrast"].unique():
        fig = plot_forest(stats, contrast, spec.alpha)
        outputs[f"forest_{contrast}"] = write_figure(fig, out / f"forest_contrast-{contrast}.png")
        plt.close(fig)

    if spec.connectivity and runs:
        ppi, corr = run_connectivity(
            runs, atlas_for, on_trial_type=spec.on_trial_type, hrf_model=spec.hrf_model,
            drift_model=spec.drift_model, high_pass=spec.high_pass, seeds=spec.ppi_seeds,
            confounds=spec.connectivity_confounds,
            default_pain_side=spec.default_pain_side)
        outputs["connectivity_ppi"] = write_tsv(ppi, out / "connectivity_ppi.tsv")
        outputs["connectivity_ppi_stats"] = write_tsv(
            ppi_statistics(ppi, conditions=conditions, alpha=spec.alpha), out / "connectivity_ppi_stats.tsv")
        outputs["connectivity_correlation"] = write_tsv(corr, out / "connectivity_correlation.tsv")
        outputs["connectivity_correlation_stats"] = write_tsv(
            correlation_statistics(corr, conditions=conditions), out / "connectivity_correlation_stats.tsv")
        for cond, path in plot_connectomes(ppi, atlas_for(spec.default_pain_side), out,
                                           conditions=conditions).items():
            outputs[f"connectome_{cond}"] = path

    behaviour = behaviour_statistics(effects, spec.behaviour_covariates, alpha=spec.alpha)
    outputs["behaviour"] = write_tsv(behaviour, out / "behaviour.tsv")
    for cov in dict.fromkeys(behaviour.get("covariate", pd.Series(dtype=str))):
        fig = plot_behaviour(effects, cov)
        outputs[f"behaviour_{cov}"] = write_figure(fig, out / f"behaviour_covariate-{cov}.png")
        plt.close(fig)

    if spec.decoding:
        decoding = run_decoding(maps, atlas_for, out, conditions=conditions,
                                n_permutations=spec.n_permutations, random_state=spec.random_state,
                                default_pain_side=spec.default_pain_side)
        outputs["decoding"] = write_tsv(decoding, out / "decoding.tsv")
    return outputs


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"/>' \
           f"<figcaption>{html.escape(alt)}</figcaption></figure>"


def _table(path: Path, query=None, columns=None, max_rows: int = 60) -> str:
    df = pd.read_csv(path, sep="\t", na_values="n/a")
    if query is not None:
        df = query(df)
    if columns:
        df = df[[c for c in columns if c in df.columns]]
    return df.head(max_rows).to_html(index=False, float_format=lambda v: f"{v:.3g}", na_rep="",
                                     classes="table pathways", border=0)


def pathway_report_section(outputs: dict[str, Path]) -> str:
    """The Pathways section of ``group.html`` (tables and base64-embedded figures)."""
    parts = ['<section id="pathways"><h2>Pain pathways</h2>',
             "<p>Node effects are the mean first-level ON &gt; OFF effect in each node of the pain-pathway "
             "atlas (lateral, medial and descending pathways; hemispheres relative to the pain side). "
             "Statistics: crossover linear mixed model per node (condition + period, random intercept "
             "per subject), Benjamini-Hochberg FDR over nodes.</p>"]
    cols = ["level", "node", "pathway", "contrast", "estimate", "ci_low", "ci_high", "p", "p_fdr", "model"]
    if "roi_stats" in outputs:
        parts.append("<h3>ROI statistics</h3>")
        parts.append(_table(outputs["roi_stats"], lambda d: d[d["stat_type"] == "t"], cols, max_rows=400))
    for key in sorted(k for k in outputs if k.startswith("forest_")):
        parts.append(_img_tag(outputs[key], f"forest plot, contrast {key.removeprefix('forest_')}"))
    if "connectivity_ppi_stats" in outputs:
        parts.append("<h3>Condition-dependent connectivity (gPPI)</h3>")
        parts.append(_table(outputs["connectivity_ppi_stats"],
                            lambda d: d[d["stat_type"] == "t"].sort_values("p").head(30),
                            ["seed", "target", "contrast", "estimate", "ci_low", "ci_high", "p", "p_fdr"]))
        for key in sorted(k for k in outputs if k.startswith("connectome_")):
            parts.append(_img_tag(outputs[key], f"gPPI connectome, {key.removeprefix('connectome_')}"))
    if "connectivity_correlation_stats" in outputs:
        parts.append("<h3>Residual correlations: paired comparisons</h3>")
        parts.append(_table(outputs["connectivity_correlation_stats"],
                            lambda d: d[d["contrast"].str.contains("Minus")].sort_values("p").head(20)))
    if "behaviour" in outputs:
        parts.append("<h3>Brain-behaviour</h3>")
        parts.append(_table(outputs["behaviour"], lambda d: d[d["level"] == "pathway"]))
        for key in sorted(k for k in outputs if k.startswith("behaviour_")):
            parts.append(_img_tag(outputs[key], f"pathway effects vs {key.removeprefix('behaviour_')}"))
    if "decoding" in outputs:
        parts.append("<h3>Decoding the condition (leave-one-subject-out)</h3>")
        parts.append(_table(outputs["decoding"], columns=["task", "region", "n_samples", "n_features",
                                                          "accuracy", "chance", "p_perm"]))
    parts.append("</section>")
    return "\n".join(parts)
