"""Group-level models for the crossover: design matrices and nilearn fits.

Two routes answer "how do the conditions differ?":

``repeated``
    The full repeated-measures model on every subject x condition map:
    one column per condition, subject columns (the first subject is the
    reference, absorbed by the condition columns), period dummies and optional
    session-level covariates. Differences between conditions are t contrasts;
    ``conditionF`` is the F test. Subjects with a missing session contribute
    what they have.
``paired``
    A one-sample test of each subject's within-subject difference map, with
    the difference of the two periods as covariate so the intercept is the
    condition difference adjusted for period.

Per condition (``scs``, ``drgs``, ``dual``) the route is ``one-sample``: the
mean ON > OFF effect over subjects, with optional mean-centred covariates
whose slopes are reported as their own maps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm.second_level import SecondLevelModel
from nilearn.image import resample_to_img

from fmri_pain.glm.second_level.carryover import COLUMN_PREFIX, carryover_terms, embed
from fmri_pain.trial import Contrast


@dataclass
class GroupDesign:
    """A group design matrix with the contrasts defined on it.

    Attributes
    ----------
    route : str
        ``one-sample``, ``repeated``, ``paired``, ``sequence``, ``two-group`` or ``covariate``.
    design : DataFrame
        One row per input map, one column per regressor.
    contrasts : dict of str to ndarray
        Contrast name -> weight vector (t) or matrix (F) over ``design``'s columns.
    rows : DataFrame
        What each row is (subject, condition, period ...).
    notes : list of str
        Decisions taken while building the design that change the model from
        the one asked for (a term not modelled, a column dropped as collinear):
        the group level reports them with the maps.
    sites : tuple of str
        Each row's site (multi-centre trials; empty: no site term), for the
        permutation stage's exchangeability blocks and variance groups.
    """

    route: str
    design: pd.DataFrame
    contrasts: dict[str, np.ndarray]
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)
    sites: tuple[str, ...] = ()

    def stat_type(self, name: str) -> str:
        """``F`` for matrix contrasts, ``t`` otherwise."""
        return "F" if np.ndim(self.contrasts[name]) == 2 else "t"

    @property
    def residual_dof(self) -> int:
        """Residual degrees of freedom: maps minus the rank of the design."""
        return int(len(self.design) - np.linalg.matrix_rank(self.design.to_numpy(dtype=float)))

    def degrees_of_freedom(self, name: str) -> int | list[int]:
        """df of a contrast's statistic: residual df (t), [numerator, denominator] (F)."""
        if self.stat_type(name) == "F":
            return [int(np.linalg.matrix_rank(np.atleast_2d(self.contrasts[name]))), self.residual_dof]
        return self.residual_dof

    @property
    def covariates(self) -> list[str]:
        """Covariate columns kept in the design (not intercept, condition, subject or period)."""
        structural = {"intercept", "period_difference", *map(str, self.rows.get("condition", []))}
        return [c for c in self.design.columns
                if c not in structural and not c.startswith(("sub-", "period", COLUMN_PREFIX,
                                                              "sequence_", "site-", "group-"))]

    @property
    def terms(self) -> str:
        """The model as it was fitted, e.g. ``condition + subject + period + pain_relief``."""
        cols = list(self.design.columns)
        terms = []
        if self.route == "sequence":
            terms.append("sequence (cell means)")
        elif self.route == "two-group":
            terms.append("group (cell means: " + ", ".join(c[len("group-"):] for c in cols
                                                           if c.startswith("group-")) + ")")
        elif self.route == "repeated":
            terms.append("condition")
            if any(c.startswith("sub-") for c in cols):
                terms.append("subject")
        else:
            terms.append("intercept")
        if any(c.startswith("period") for c in cols):
            terms.append("period difference" if self.route == "paired" else "period")
        if any(c.startswith(COLUMN_PREFIX) for c in cols):
            terms.append("carry-over (previous condition, sum-to-zero)")
        if any(c.startswith("site-") for c in cols):
            terms.append("site")
        return " + ".join(terms + self.covariates)


def _centred(values: pd.Series, name: str) -> np.ndarray:
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.isna().any():
        missing = values.index[numeric.isna()].tolist()
        raise ValueError(f"covariate {name!r} is missing or not numeric for rows {missing}")
    return (numeric - numeric.mean()).to_numpy(dtype=float)


def covariate_label(name: str) -> str:
    """BIDS-safe camelCase label of a covariate: ``pain_relief`` -> ``PainRelief``."""
    return "".join(part.capitalize() for part in str(name).replace("-", "_").split("_") if part)


def one_sample_design(rows: pd.DataFrame, covariates: tuple[str, ...] = ()) -> GroupDesign:
    """Intercept plus mean-centred covariates.

    Parameters
    ----------
    rows : DataFrame
        One row per subject map, with the covariate columns.
    covariates : tuple of str
        Columns of ``rows`` to add, mean-centred.

    Returns
    -------
    GroupDesign
        Contrasts ``intercept`` and ``by<Covariate>`` per covariate.
    """
    design = pd.DataFrame({"intercept": np.ones(len(rows))}, index=rows.index)
    for cov in covariates:
        design[cov] = _centred(rows[cov], cov)
    contrasts = {"intercept": _unit(design.columns, "intercept")}
    for cov in covariates:
        contrasts[f"by{covariate_label(cov)}"] = _unit(design.columns, cov)
    return GroupDesign("one-sample", design.reset_index(drop=True), contrasts,
                       rows.reset_index(drop=True))


def repeated_measures_design(rows: pd.DataFrame, conditions: tuple[str, ...],
                             contrasts: dict[str, Contrast],
                             covariates: tuple[str, ...] = (),
                             carryover: bool = False) -> GroupDesign:
    """Subject + condition + period (+ carry-over, covariates) model of all subject x condition maps.

    Parameters
    ----------
    rows : DataFrame
        One row per subject x condition map: ``subject``, ``condition``,
        ``period`` (may be missing for all rows) and covariate columns.
    conditions : tuple of str
        Conditions in the order of the contrast weights.
    contrasts : dict of str to Contrast
        Trial contrasts; those comparing conditions (weights summing to zero,
        and F contrasts) are kept.
    covariates : tuple of str
        Session-level covariates, mean-centred.
    carryover : bool
        Add first-order carry-over (:mod:`~fmri_pain.glm.second_level.carryover`):
        ``carryover_<Cond>`` columns and the ``carryoverF`` / ``carryover<Cond>``
        contrasts; the condition contrasts are then adjusted for it. When the
        data cannot estimate it, it is left out with a note.

    Returns
    -------
    GroupDesign
        Columns: one per condition present, ``sub-XX`` for every subject but
        the first, ``period<P>`` for every period but the first, carry-over, covariates.
        Contrasts: each estimable difference, ``conditionF``, and
        ``periodLinear`` (the average change per period, (last - first) / (P - 1)).
    """
    rows = rows.reset_index(drop=True)
    present = [c for c in conditions if (rows["condition"] == c).any()]
    design = pd.DataFrame(index=rows.index)
    for cond in present:
        design[cond] = (rows["condition"] == cond).astype(float)
    subjects = sorted(rows["subject"].unique())
    for sub in subjects[1:]:
        design[f"sub-{sub}"] = (rows["subject"] == sub).astype(float)
    periods: list[int] = []
    notes: list[str] = []
    if "period" in rows and rows["period"].notna().all():
        periods = sorted(int(p) for p in rows["period"].unique())
        for p in periods[1:]:
            design[f"period{p}"] = (rows["period"].astype(int) == p).astype(float)
        if len(periods) < 2:
            notes.append(f"period not modelled: every map is from period {periods[0]}")
    else:
        unknown = int(rows["period"].isna().sum()) if "period" in rows else len(rows)
        notes.append(f"period not modelled: the period of {unknown} of {len(rows)} maps is unknown")
    carry = None
    if carryover:
        carry = carryover_terms(rows, tuple(dict.fromkeys([*conditions, *present])), design)
        notes += carry.notes
        design = pd.concat([design, carry.columns], axis=1)
    for cov in covariates:
        design[cov] = _centred(rows[cov], cov)
    dropped = _drop_collinear(design, protect=[*present, *(carry.columns if carry else [])])
    if dropped:
        notes.append(f"column(s) {', '.join(dropped)} dropped: collinear with the other terms "
                     "(e.g. every subject on one sequence confounds period with condition)")

    out: dict[str, np.ndarray] = {}
    cols = list(design.columns)
    for name, con in contrasts.items():
        weights = np.atleast_2d(con.weights)
        if con.stat_type == "t" and not np.isclose(weights.sum(), 0.0):
            continue
        if not set(con.used_conditions) <= set(present):
            continue
        mat = np.zeros((weights.shape[0], len(cols)))
        for j, cond in enumerate(con.conditions):
            if cond in present:
                mat[:, cols.index(cond)] = weights[:, j]
        out[name] = mat[0] if con.stat_type == "t" else mat
    if len(periods) >= 2 and f"period{periods[-1]}" in cols:
        vec = np.zeros(len(cols))
        vec[cols.index(f"period{periods[-1]}")] = 1.0 / (periods[-1] - periods[0])
        out["periodLinear"] = vec
    if carry is not None and carry.estimable:
        for name, weights in carry.contrasts.items():
            out[name] = embed(weights, list(carry.columns), cols)
    return GroupDesign("repeated", design, out, rows, notes)


def paired_design(rows: pd.DataFrame, covariates: tuple[str, ...] = ()) -> GroupDesign:
    """One-sample design for within-subject difference maps, adjusted for period.

    Parameters
    ----------
    rows : DataFrame
        One row per subject difference map with ``period_difference`` (period
        of the first condition minus that of the second; may be all missing)
        and covariates.

    Returns
    -------
    GroupDesign
        Contrast ``intercept``: the condition difference at equal periods.
    """
    rows = rows.reset_index(drop=True)
    design = pd.DataFrame({"intercept": np.ones(len(rows))})
    notes: list[str] = []
    if "period_difference" in rows and rows["period_difference"].notna().all():
        diff = rows["period_difference"].astype(float).to_numpy()
        # Uncentred on purpose: the intercept is then the effect at equal periods.
        if np.ptp(diff) > 0:
            design["period_difference"] = diff
        else:
            notes.append("period difference not modelled: it is the same for every subject "
                         "(confounded with the intercept)")
    else:
        notes.append("period difference not modelled: unknown for some subjects")
    for cov in covariates:
        design[cov] = _centred(rows[cov], cov)
    dropped = _drop_collinear(design, protect=["intercept"])
    if dropped:
        notes.append(f"column(s) {', '.join(dropped)} dropped: collinear with the other terms")
    return GroupDesign("paired", design, {"intercept": _unit(design.columns, "intercept")}, rows,
                       notes)


def fit_second_level(images: list[nib.Nifti1Image | str], design: GroupDesign,
                     mask_img: nib.Nifti1Image | None = None,
                     smoothing_fwhm: float | None = None) -> SecondLevelModel:
    """Fit nilearn's SecondLevelModel with an explicit design matrix."""
    if len(images) != len(design.design):
        raise ValueError(f"{len(images)} maps for a design of {len(design.design)} rows")
    if len(images) <= design.design.shape[1]:
        raise ValueError(
            f"{design.route} model has {design.design.shape[1]} regressors for "
            f"{len(images)} maps: no residual degrees of freedom"
        )
    model = SecondLevelModel(mask_img=mask_img, smoothing_fwhm=smoothing_fwhm, minimize_memory=True)
    return model.fit([str(i) if not isinstance(i, nib.Nifti1Image) else i for i in images],
                     design_matrix=design.design)


def compute_group_contrast(model: SecondLevelModel, design: GroupDesign,
                           name: str) -> dict[str, nib.Nifti1Image]:
    """Maps of one contrast: ``t`` or ``F``, ``z``, ``p``, ``effect`` and ``variance``.

    As nilearn computes them: for a t contrast ``effect`` is c'b and ``variance`` its
    variance; for an F contrast ``effect`` has one volume per contrast row, the whitened
    estimate (C (X'X)^-1 C')^(-1/2) C b, and ``variance`` is the residual variance, so that
    F = sum(effect**2) / rows / variance.
    """
    stat_type = design.stat_type(name)
    maps = model.compute_contrast(design.contrasts[name], second_level_stat_type=stat_type,
                                  output_type="all")
    return {"z": maps["z_score"], "p": maps["p_value"],
            ("F" if stat_type == "F" else "t"): maps["stat"],
            "effect": maps["effect_size"], "variance": maps["effect_variance"]}


def mirror_left_right(img: nib.Nifti1Image | str | Path) -> nib.Nifti1Image:
    """The image mirrored about the mid-sagittal plane (x -> -x), on its own grid.

    Used to bring every patient's pain to one side, so contralateral
    responses overlap across patients with left- and right-sided pain.
    """
    img = nib.load(img) if not isinstance(img, nib.Nifti1Image) else img
    mirrored = nib.Nifti1Image(np.asanyarray(img.dataobj, dtype=np.float32),
                               np.diag([-1.0, 1.0, 1.0, 1.0]) @ img.affine)
    return resample_to_img(mirrored, img, interpolation="linear", force_resample=True,
                           copy_header=True)


def load_subject_map(path: str | Path, flip: bool) -> nib.Nifti1Image:
    """A subject map (in memory), mirrored left-right when ``flip``.

    The group level reads each map for the mask, several models and the
    permutation test: it is read (and mirrored) once per file version.
    """
    st = Path(path).stat()
    return _load_subject_map(str(Path(path).resolve()), bool(flip), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=512)
def _load_subject_map(path: str, flip: bool, size: int, mtime_ns: int) -> nib.Nifti1Image:
    img = nib.load(path)
    img = nib.Nifti1Image(np.asanyarray(img.dataobj, dtype=np.float32), img.affine, img.header)
    return mirror_left_right(img) if flip else img


def needs_flip(pain_side: object, flip_to: str | None) -> bool:
    """Whether a patient's maps are mirrored so that their pain is on ``flip_to``'s side."""
    if flip_to in (None, "none") or not isinstance(pain_side, str):
        return False
    side = pain_side.strip().lower()[:1]
    return side in ("l", "r") and side != flip_to[0]


def group_mask(images: list[nib.Nifti1Image | str], coverage: float = 1.0) -> nib.Nifti1Image:
    """Voxels with a finite, non-zero value in at least ``coverage`` of the maps."""
    count = None
    ref = None
    for img in images:
        img = nib.load(img) if not isinstance(img, nib.Nifti1Image) else img
        data = np.asanyarray(img.dataobj)
        valid = np.isfinite(data) & (data != 0)
        count = valid.astype(np.int32) if count is None else count + valid
        ref = img
    if ref is None:
        raise ValueError("no maps for a group mask")
    mask = count >= max(1, int(np.ceil(coverage * len(images))))
    return nib.Nifti1Image(mask.astype(np.uint8), ref.affine)


def _unit(columns, name: str) -> np.ndarray:
    vec = np.zeros(len(columns))
    vec[list(columns).index(name)] = 1.0
    return vec


def _drop_collinear(design: pd.DataFrame, protect: list[str]) -> list[str]:
    """Drop columns (never ``protect``-ed ones) that add no rank, in reverse order; return them."""
    dropped = []
    for col in reversed(list(design.columns)):
        if col in protect:
            continue
        others = design.drop(columns=col)
        if np.linalg.matrix_rank(design.to_numpy()) == np.linalg.matrix_rank(others.to_numpy()):
            design.drop(columns=col, inplace=True)
            dropped.append(col)
    return dropped[::-1]
