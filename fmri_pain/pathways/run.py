"""The pain-pathway analysis at the group level: files in, tables and figures out."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fmri_pain.bids.derivatives import space_of, write_figure, write_nifti, write_tsv
from fmri_pain.bids.naming import PATHWAY_ATLAS, bids_filename, label, pathway_table_name
from fmri_pain.config.equivalence import EquivalenceSpec
from fmri_pain.config.events import EventsSpec
from fmri_pain.config.first_level import FirstLevelSpec
from fmri_pain.config.pathways import PathwaysSpec
from fmri_pain.config.responders import RespondersSpec
from fmri_pain.errors import InputError
from fmri_pain.glm.second_level.site import sites_by_subject
from fmri_pain.pathways.atlas import PathwayAtlas, build_atlas, spatial_reference
from fmri_pain.pathways.behaviour import behaviour_statistics, plot_behaviour
from fmri_pain.pathways.carryover import COLUMN_DESCRIPTIONS as CARRYOVER_DESCRIPTIONS
from fmri_pain.pathways.carryover import carryover_table, unit_notes
from fmri_pain.pathways.connectivity import (
    correlation_statistics,
    plot_connectomes,
    ppi_statistics,
    run_connectivity,
)
from fmri_pain.pathways.decoding import run_decoding
from fmri_pain.pathways.effect_size_outputs import write_effect_sizes
from fmri_pain.pathways.equivalence import write_equivalence
from fmri_pain.pathways.responder_analysis import remove_responder_files, run_responder_analysis
from fmri_pain.pathways.roi import extract_roi_effects
from fmri_pain.pathways.sequence import sequence_statistics
from fmri_pain.pathways.stats import DF_METHODS, roi_statistics
from fmri_pain.trial import CONDITIONS

LOGGER = logging.getLogger(__name__)

PATHWAYS_DIR = ("group", "pathways")

def _table_files(*keys: str) -> tuple[str, ...]:
    return tuple(pathway_table_name(k, ext) for k in keys for ext in (".tsv", ".json"))


PART_FILES = {
    "roi_stats": (*_table_files("roi_stats", "effect_sizes"), "contrast-*_stat-effect_forest.png",
                  "contrast-*_stat-dz_forest.png"),
    "connectivity": (*_table_files("connectivity_ppi", "connectivity_ppi_stats",
                                   "connectivity_correlation", "connectivity_correlation_stats"),
                     "condition-*_connectome.png"),
    "behaviour": (*_table_files("behaviour"), "desc-behaviour*_scatter.png"),
    "equivalence": (*_table_files("equivalence"), "contrast-*_desc-*_margins.png"),
    "carryover": _table_files("carryover", "sequence_stats"),
    "decoding": (*_table_files("decoding"), "desc-decoding*_weights.nii.gz",
                 "desc-decoding*_weights.json"),
}
"""Files of each part of the analysis (removed when the part is skipped, so none is stale)."""

STAT_COLUMN_DESCRIPTIONS = {
    "stat_type": {"Description": "t (one contrast row) or F (several rows)"},
    "stat": {"Description": "t statistic, or F statistic (Wald chi2 / df_num)"},
    "df": {"Description": "degrees of freedom of the t reference distribution, or the F denominator "
                          "df; how they were obtained is in df_method"},
    "df_num": {"Description": "numerator df of an F test (n/a for t)"},
    "df_method": {"Description": "how df was obtained", "Levels": DF_METHODS},
    "p": {"Description": "two-sided p value of t, or p value of F, against the small-sample reference"},
    "p_fdr": {"Description": "Benjamini-Hochberg adjusted p value over the units of the family"},
}


SEQUENCE_N_PERM = 4999
"""Random rearrangements of the subjects' sequence labels in the ROI sequence test (all distinct
ones when they are fewer)."""


def study_conditions(maps: pd.DataFrame, conditions: Sequence[str]) -> tuple[tuple[str, ...], bool]:
    """The conditions to model, in ``conditions`` order, and whether the study has one condition.

    A one-condition study (no sessions, other task and event names) carries its
    task name as the condition of every map: it is modelled on its own.

    Raises
    ------
    InputError
        Maps without a condition, or conditions both among and outside ``conditions``.
    """
    observed = list(dict.fromkeys(maps["condition"].dropna().astype(str)))
    if not observed:
        raise InputError("pathways: no subject map has a condition")
    known = [c for c in conditions if c in observed]
    unknown = [c for c in observed if c not in conditions]
    if not known and len(observed) == 1:
        return (observed[0],), True
    if unknown:
        raise InputError(f"pathways: conditions {unknown} of the subject maps are not among the "
                         f"spec's conditions {tuple(conditions)}")
    return tuple(known), len(known) == 1


def roi_model_description(one_condition: bool, carryover: bool = False) -> str:
    """What computed ``roi_stats.tsv`` (also the report's methods sentence)."""
    if one_condition:
        return ("one condition: per node, pathway mean and lateral-medial index, a one-sample t test "
                "of the subjects' node effects against 0 (ordinary least squares on an intercept, df = "
                "n_subjects - 1); p_fdr = Benjamini-Hochberg over units per level and contrast")
    return ("crossover linear mixed model per node, pathway mean and lateral-medial index: "
            "effect ~ 0 + condition + C(period, Sum)"
            + (" + first-order carry-over (previous condition, sum-to-zero; left out, with a note in "
               "carryover.tsv, where the data cannot estimate it; with it, the within-subject "
               "comparisons - condition differences, conditionF, period, carryoverF, carryover<Cond> - "
               "are tested in the within-subject model, subjects as fixed effects, exact t and F "
               "with residual df: model column ols-subject-fixed)" if carryover else "")
            + ", random intercept per subject (REML, the criterion profiled over the ratio of the "
            "subject to the residual variance, as lme4 does); t and F tests with Satterthwaite degrees of freedom (Fai-Cornelius for F), "
            "not the normal reference; OLS (model column) where no subject has two observations; "
            "p_fdr = Benjamini-Hochberg over units per level and contrast")


class _Parts:
    """Which parts ran and which were skipped, with the reason (logged and tabled)."""

    def __init__(self, out: Path):
        self.out = out
        self.skipped: list[dict[str, str]] = []

    def skip(self, part: str, reason: str) -> None:
        LOGGER.warning("pathways: %s not computed: %s", part, reason)
        self.skipped.append({"part": part, "reason": reason})
        for pattern in PART_FILES.get(part, ()):
            for stale in self.out.glob(pattern):
                stale.unlink()

    def write(self) -> Path | None:
        path = self.out / pathway_table_name("skipped")
        if not self.skipped:
            for stale in (path, path.with_suffix(".json")):
                stale.unlink(missing_ok=True)
            return None
        return write_tsv(pd.DataFrame(self.skipped, columns=["part", "reason"]), path, sidecar={
            "Description": "parts of the pain-pathway analysis that were not computed, and why",
            "part": {"Description": "roi_stats, equivalence, connectivity, behaviour, decoding or "
                                    "responders"},
            "reason": {"Description": "why the part was not computed"}})


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
                         spec: PathwaysSpec | None = None, events: EventsSpec | None = None, *,
                         conditions: tuple[str, ...] = CONDITIONS,
                         atlas: PathwayAtlas | None = None,
                         equivalence: EquivalenceSpec | None = None,
                         carryover: bool = False,
                         site_column: str | None = None,
                         responders: RespondersSpec | None = None) -> dict[str, Path]:
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
        The ``pathways`` section (default: its defaults); its null design keys
        (``hrf_model``, ``drift_model``, ``high_pass``) take the default first level's
        values here, so a caller passes ``spec.pathways.with_design_of(spec.first_level)``.
    events : EventsSpec, optional
        The ``events`` section (default: its defaults): ``on_trial_type`` is the
        ``trial_type`` of stimulator-ON blocks for connectivity; a run without it
        but with one active trial type uses that one.
    conditions : tuple of str
        Condition names in contrast order; those absent from ``maps`` are dropped.
        Maps whose single condition is none of them (a one-condition study, whose
        condition is the task name) are analysed as one condition: one-sample
        statistics, no decoding.
    atlas : PathwayAtlas, optional
        Use this atlas for every subject (e.g. :func:`atlas_from_masks`) instead of
        building the pathway atlas per pain side.
    equivalence : EquivalenceSpec, optional
        The ``equivalence`` section: its tests are run per node and pathway
        (``equivalence.tsv`` and one margin figure per test; None or no tests: not run).
    carryover : bool
        The ``group.carryover`` value: first-order carry-over in the crossover models
        (``roi_stats.tsv`` rows ``carryoverF``, ``carryover<Cond>``, condition contrasts
        adjusted), ``carryover.tsv`` (detection and the shift of the condition estimates)
        and ``sequence_stats.tsv`` (between-subject sequence test).
    site_column : str, optional
        The site column of ``maps`` (``group.site_column``): with two or more sites the ROI
        models get site indicators (recorded as ``Sites`` in ``roi_stats.json``).
    responders : RespondersSpec, optional
        The ``responders`` section: when active, responder status, node tests and
        prediction (:mod:`fmri_pain.pathways.responder_analysis`).

    Returns
    -------
    dict of output name -> path (TSVs, figures, atlas images; ``skipped``: the
    table of parts not computed and why, also logged as warnings).

    Raises
    ------
    InputError
        Empty maps table, conditions outside ``conditions``, unreadable maps.
    """
    spec = (spec or PathwaysSpec()).with_design_of(FirstLevelSpec())  # no-op for a resolved section
    on_trial_type = (events or EventsSpec()).on_trial_type
    out = Path(output_dir).joinpath(*PATHWAYS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    if maps is None or len(maps) == 0:
        raise InputError("pathways: the table of subject maps is empty")
    trial_conditions = tuple(conditions)
    conditions, one_condition = study_conditions(maps, conditions)
    generic = conditions[0] not in trial_conditions  # a one-condition study named by its task
    if one_condition:
        LOGGER.info("pathways: one condition (%s): one-sample statistics over subjects", conditions[0])
    first = maps["effect"].iloc[0]
    from fmri_pain.pathways.roi import load_map

    target = load_map(first, maps["subject"].iloc[0], maps.get("session", pd.Series([None])).iloc[0])
    atlas_for = AtlasCache(spec, atlas, target_img=target)
    params = {k: v for k, v in vars(spec).items()}
    params["atlas"] = str(spec.atlas_file) if atlas is None else "given"
    params["conditions"] = list(conditions)
    params["on_trial_type"] = on_trial_type
    outputs: dict[str, Path] = {}
    parts = _Parts(out)

    effects = extract_roi_effects(maps, atlas_for, default_pain_side=spec.default_pain_side)
    has_side = "pain_side" in maps.columns and maps["pain_side"].notna().any()
    where = ("in each node of the given atlas" if atlas is not None else
             "in each node of the pain-pathway atlas (lateral, medial and descending pathways; " + (
                 "hemispheres relative to each patient's pain side)" if has_side else
                 f"no pain side given: contralateral/ipsilateral nodes are relative to a "
                 f"{spec.default_pain_side}-sided pain, pathways.default_pain_side)"))
    outputs["roi_effects"] = write_tsv(effects, out / pathway_table_name("roi_effects"), sidecar={
        "Description": "mean (and median) first-level " + (
            "stim effect (ON, or the active trial types, > baseline)" if generic else "ON > OFF effect") +
            f" and mean voxel variance {where}",
        "Parameters": params})
    for side, built in atlas_for.built.items():
        # desc, not hemi: the atlas spans both hemispheres, oriented by the pain side
        entities = {"space": space_of(first), "atlas": PATHWAY_ATLAS,
                    "desc": "given" if side == "fixed" else "pain" + side.capitalize()}
        outputs[f"atlas_{side}"] = write_nifti(
            built.img, out / bids_filename(entities, "dseg", ".nii.gz"),
            sidecar={"SpatialReference": spatial_reference(built, space_of(first))})
        outputs[f"atlas_{side}_labels"] = write_tsv(built.nodes, out / bids_filename(entities, "dseg", ".tsv"))

    import matplotlib.pyplot as plt

    n_subjects = effects["subject"].nunique()
    if n_subjects < 2:
        parts.skip("roi_stats", f"{n_subjects} subject: group statistics need two or more")
    elif effects["effect"].notna().sum() == 0:
        parts.skip("roi_stats", "no node of the atlas has data in the subject maps")
    else:
        with_carryover = carryover and not one_condition
        stats = roi_statistics(effects, conditions=conditions, alpha=spec.alpha,
                               carryover=with_carryover, site_column=site_column)
        sites, site_note = sites_by_subject(effects, site_column)
        site_record = ({"Sites": {"Column": site_column, "Subjects": dict(Counter(sites.values())),
                                  "Model": "mean-centred site indicators (between-subject fixed "
                                           "effects) in every ROI model"}} if sites else
                       {"Sites": {"Column": site_column, "Model": None, "Note": site_note}}
                       if site_note else {})
        if sites:
            LOGGER.info("pathways: ROI models include site (%s, %d sites)", site_column,
                        len(set(sites.values())))
        outputs["roi_stats"] = write_tsv(stats, out / pathway_table_name("roi_stats"), sidecar={
            "Description": roi_model_description(one_condition, with_carryover) + (
                "; site entered every model as mean-centred indicator columns (between-subject "
                "fixed effects)" if sites else ""), "Parameters": params, **site_record,
            **STAT_COLUMN_DESCRIPTIONS})
        if with_carryover:
            outputs.update(_write_carryover(effects, stats, conditions, spec, out, params))
        elif carryover:
            parts.skip("carryover", f"one condition ({conditions[0]}): no carry-over between "
                                    "conditions to model")
        else:
            for pattern in PART_FILES["carryover"]:
                (out / pattern).unlink(missing_ok=True)
        for contrast in stats.loc[stats["stat_type"] == "t", "contrast"].unique():
            fig = plot_forest(stats, contrast, spec.alpha)
            outputs[f"forest_{contrast}"] = write_figure(fig, out / bids_filename(
                {"contrast": contrast, "stat": "effect"}, "forest", ".png"))
            plt.close(fig)
        outputs.update(write_effect_sizes(effects, out, conditions=conditions, spec=spec, params=params))
    if equivalence is not None and equivalence.tests:
        if "roi_stats" in outputs:
            outputs.update(write_equivalence(effects, equivalence, out, conditions=conditions,
                                             parameters=params))
        else:
            parts.skip("equivalence", "no group statistics (see roi_stats)")
    else:  # no tests asked: no file of an earlier run stays
        for stale in (f for pattern in PART_FILES["equivalence"] for f in out.glob(pattern)):
            stale.unlink()

    if not spec.connectivity:
        parts.skip("connectivity", "disabled in the spec (pathways.connectivity: false)")
    elif not runs:
        parts.skip("connectivity", "no preprocessed runs with a confounds file")
    elif n_subjects < 2:
        parts.skip("connectivity", f"{n_subjects} subject: group statistics need two or more")
    else:
        try:
            ppi, corr = run_connectivity(
                runs, atlas_for, on_trial_type=on_trial_type, hrf_model=spec.hrf_model,
                drift_model=None if spec.drift_model == "none" else spec.drift_model,
                high_pass=spec.high_pass, seeds=spec.ppi_seeds,
                confounds=spec.connectivity_confounds,
                default_pain_side=spec.default_pain_side)
        except ValueError as exc:  # InputError included: a run whose data cannot be modelled
            parts.skip("connectivity", str(exc)[:500])
        else:
            outputs.update(_write_connectivity(ppi, corr, out, conditions, one_condition, params,
                                               spec, atlas_for))

    _behaviour(effects, spec, out, outputs, parts)

    if responders is not None and responders.active:
        written, reasons = run_responder_analysis(
            maps, effects, out, responders, n_permutations=spec.n_permutations,
            random_state=spec.random_state, alpha=spec.alpha, parameters=params)
        outputs.update(written)
        for reason in reasons:
            parts.skip("responders", reason)
    else:
        remove_responder_files(out)

    if not spec.decoding:
        parts.skip("decoding", "disabled in the spec (pathways.decoding: false)")
    elif len(conditions) < 2:
        parts.skip("decoding", f"one condition ({conditions[0]}): decoding needs two or more conditions")
    else:
        decoding = run_decoding(maps, atlas_for, out, conditions=conditions,
                                n_permutations=spec.n_permutations, random_state=spec.random_state,
                                default_pain_side=spec.default_pain_side)
        if decoding.empty:
            parts.skip("decoding", "no pair of conditions has maps of three or more subjects")
        else:
            outputs["decoding"] = write_tsv(decoding, out / pathway_table_name("decoding"))
    skipped = parts.write()
    if skipped is not None:
        outputs["skipped"] = skipped
    return outputs


def _write_carryover(effects: pd.DataFrame, stats: pd.DataFrame, conditions, spec: PathwaysSpec,
                     out: Path, params: dict) -> dict[str, Path]:
    plain = roi_statistics(effects, conditions=conditions, alpha=spec.alpha)
    table = carryover_table(stats, plain, unit_notes(effects, conditions), spec.alpha)
    outputs = {"carryover": write_tsv(table, out / pathway_table_name("carryover"), sidecar={
        "Description": "carry-over per node, pathway mean and lateral-medial index: the carryoverF "
                       "test of roi_stats.tsv (FDR over the units of a level) and each condition "
                       "contrast's estimate with and without carry-over in the crossover model",
        "Parameters": params, **CARRYOVER_DESCRIPTIONS})}
    sequence = sequence_statistics(effects, n_perm=SEQUENCE_N_PERM, random_state=spec.random_state)
    outputs["sequence_stats"] = write_tsv(sequence, out / pathway_table_name("sequence_stats"), sidecar={
        "Description": "between-subject sequence test per node, pathway mean and lateral-medial index: "
                       "each subject's mean over its conditions, one-way F across treatment sequences "
                       "(p from F(df_num, df)); p_perm from permuting the subjects' sequence labels "
                       f"({SEQUENCE_N_PERM} random rearrangements, or all distinct ones when fewer; "
                       "p_perm = (1 + #{F* >= F}) / n_perm with the observed one counted in n_perm); "
                       "p_perm_fdr = Benjamini-Hochberg over the units of a level",
        "Parameters": params,
        "n_perm": {"Description": "rearrangements used, the observed one included"},
        "exhaustive": {"Description": "all distinct rearrangements enumerated (an exact test)"}})
    return outputs


def _write_connectivity(ppi: pd.DataFrame, corr: pd.DataFrame, out: Path, conditions, one_condition,
                        params: dict, spec: PathwaysSpec, atlas_for) -> dict[str, Path]:
    on_types = sorted(set(ppi["on_trial_type"].astype(str)))
    outputs = {}
    outputs["connectivity_ppi"] = write_tsv(ppi, out / pathway_table_name("connectivity_ppi"), sidecar={
        "Description": "gPPI interaction betas (z-scored node series) per seed -> target and session",
        "OnTrialType": on_types, "Parameters": params})
    model = ("one-sample t test over subjects per pair (df = n_subjects - 1)" if one_condition else
             "crossover mixed model per pair as roi_stats (Satterthwaite df)")
    outputs["connectivity_ppi_stats"] = write_tsv(
        ppi_statistics(ppi, conditions=conditions, alpha=spec.alpha), out / pathway_table_name("connectivity_ppi_stats"),
        sidecar={"Description": f"gPPI betas: {model}; p_fdr = Benjamini-Hochberg over pairs per contrast",
                 "OnTrialType": on_types, "Parameters": params, **STAT_COLUMN_DESCRIPTIONS})
    outputs["connectivity_correlation"] = write_tsv(corr, out / pathway_table_name("connectivity_correlation"), sidecar={
        "Description": "Fisher-z correlations of the node residuals after the task design, per session",
        "Parameters": params})
    outputs["connectivity_correlation_stats"] = write_tsv(
        correlation_statistics(corr, conditions=conditions), out / pathway_table_name("connectivity_correlation_stats"),
        sidecar={"Description": "residual correlations: one-sample t test over subjects" + (
                     " (df = n_subjects - 1)" if one_condition else
                     " per condition and paired t tests between conditions (df = n_subjects - 1; "
                     "not adjusted for period)") +
                     "; p_fdr = Benjamini-Hochberg over pairs per contrast",
                 "Parameters": params, **STAT_COLUMN_DESCRIPTIONS})
    for cond, path in plot_connectomes(ppi, atlas_for(spec.default_pain_side), out,
                                       conditions=conditions).items():
        outputs[f"connectome_{cond}"] = path
    return outputs


def _behaviour(effects: pd.DataFrame, spec: PathwaysSpec, out: Path, outputs: dict, parts: _Parts) -> None:
    import matplotlib.pyplot as plt

    listed = spec.behaviour_covariates
    present = [c for c in listed if c in effects.columns
               and pd.to_numeric(effects[c], errors="coerce").notna().any()]
    if not listed:
        parts.skip("behaviour", "no covariates listed (pathways.behaviour_covariates)")
        return
    if not present:
        parts.skip("behaviour", f"none of the covariates {', '.join(listed)} has values in "
                                "sessions.tsv or participants.tsv")
        return
    behaviour = behaviour_statistics(effects, present, alpha=spec.alpha)
    if behaviour.empty:
        parts.skip("behaviour", f"the covariates {', '.join(present)} do not vary or have fewer than "
                                "three observations")
        return
    outputs["behaviour"] = write_tsv(behaviour, out / pathway_table_name("behaviour"), sidecar={
        "Description": "within- and between-subject slopes of the node effects on each covariate: "
                       "effect ~ 1 + within + between, random intercept per subject (REML), t tests "
                       "with Satterthwaite df; OLS (model column) with one observation per subject; "
                       "p_fdr = Benjamini-Hochberg over nodes per level, covariate and term",
        **STAT_COLUMN_DESCRIPTIONS})
    for cov in dict.fromkeys(behaviour["covariate"]):
        fig = plot_behaviour(effects, cov)
        outputs[f"behaviour_{cov}"] = write_figure(fig, out / bids_filename(
            {"desc": label("behaviour", cov)}, "scatter", ".png"))
        plt.close(fig)
