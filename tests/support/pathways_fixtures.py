"""Test fixtures of the pathway tests: a simulated trial through a plain nilearn first level.

The project's own first level is tested elsewhere; here a FirstLevelModel per run
(ON regressor, 6 motion parameters, cosine drifts) gives the effect/variance maps
the pathway analysis consumes, as the group level would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fmri_pain.bids.runs import Run
from fmri_pain.simulate.layout import SPACE as SIM_SPACE  # the template the simulator's derivatives are in

MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]


def first_level_maps(sim_root: Path, truth: dict, out: Path) -> tuple[pd.DataFrame, list[Run]]:
    """Effect/variance maps (nilearn FirstLevelModel) and Run records of a simulated trial."""
    from nilearn.glm.first_level import FirstLevelModel

    deriv = sim_root / "derivatives" / "fmriprep"
    design = truth["design"]
    events = pd.DataFrame({"onset": design["onsets_s"], "duration": design["block_s"],
                           "trial_type": design["trial_type"]})
    out.mkdir(parents=True, exist_ok=True)
    events_path = out / "events.tsv"
    events.to_csv(events_path, sep="\t", index=False)
    rows, runs = [], []
    for sub, info in sorted(truth["subjects"].items()):
        label = sub.removeprefix("sub-")
        for ses_key, sess in info["sessions"].items():
            ses = ses_key.removeprefix("ses-")
            func = deriv / sub / f"ses-{ses}" / "func"
            stem = f"{sub}_ses-{ses}_task-stim_run-1"
            bold = func / f"{stem}_space-{SIM_SPACE}_desc-preproc_bold.nii.gz"
            mask = func / f"{stem}_space-{SIM_SPACE}_desc-brain_mask.nii.gz"
            conf = func / f"{stem}_desc-confounds_timeseries.tsv"
            meta = json.loads(bold.with_name(bold.name.replace(".nii.gz", ".json")).read_text())
            confounds = pd.read_csv(conf, sep="\t")[MOTION].fillna(0.0)
            model = FirstLevelModel(t_r=meta["RepetitionTime"], slice_time_ref=meta["StartTime"] / meta["RepetitionTime"],
                                    hrf_model="spm", drift_model="cosine", high_pass=0.008,
                                    mask_img=str(mask), signal_scaling=0, noise_model="ar1",
                                    minimize_memory=True)
            # signal_scaling=0: percent signal change per voxel, as the project's first level
            model.fit(str(bold), events=events, confounds=confounds)
            maps = model.compute_contrast("on", output_type="all")
            eff = out / f"{sub}_ses-{ses}_effect.nii.gz"
            var = out / f"{sub}_ses-{ses}_variance.nii.gz"
            maps["effect_size"].to_filename(eff)
            maps["effect_variance"].to_filename(var)
            rows.append({"subject": label, "session": ses, "condition": sess["condition"],
                         "period": sess["period"], "sequence": info["sequence"], "effect": str(eff),
                         "variance": str(var), "pain_relief": sess["pain_relief"],
                         "vas_pain": sess["vas_pain"], "stim_amplitude_ma": sess["stim_amplitude_ma"],
                         "pain_side": info["pain_side"]})
            runs.append(Run(subject=label, session=ses, condition=sess["condition"], period=sess["period"],
                            task="stim", run=1, bold=bold, events=events_path, mask=mask, confounds=conf,
                            metadata=meta, sequence=info["sequence"],
                            covariates={"pain_side": info["pain_side"]}))
    return pd.DataFrame(rows), runs


# --------------------------------------------------------------------------- null ROI tables

def williams_design(n_subjects: int, n_periods_kept: int | None = None) -> pd.DataFrame:
    """Long design table of a Williams crossover of the trial's three conditions.

    Subject ``i`` follows Williams sequence ``i mod 6``; ``n_periods_kept`` keeps the
    first periods only of the last subject (a drop-out).
    """
    from fmri_pain.trial import williams_sequences

    sequences = williams_sequences()
    rows = []
    for i in range(n_subjects):
        seq = sequences[i % len(sequences)]
        periods = len(seq) if (n_periods_kept is None or i < n_subjects - 1) else n_periods_kept
        for period, condition in enumerate(seq[:periods], 1):
            rows.append({"subject": f"{i:02d}", "session": condition.lower(), "condition": condition,
                         "period": period, "sequence": "-".join(seq)})
    return pd.DataFrame(rows)


def null_effects(design: pd.DataFrame, n_sets: int, rng, *, subject_sd: float = 1.0,
                 residual_sd: float = 0.5, period_effects=(0.4, 0.0, -0.4)):
    """(observations x sets) null ROI effects: random subject intercepts, period effects, noise.

    ``period_effects`` sum to zero, so every condition mean and condition
    difference is 0 (the sum-coded crossover model's condition coefficients are
    means over periods).
    """
    import numpy as np

    codes, subjects = pd.factorize(design["subject"])
    intercepts = rng.normal(0.0, subject_sd, size=(len(subjects), n_sets))
    period = np.asarray(period_effects)[design["period"].to_numpy() - 1]
    noise = rng.normal(0.0, residual_sd, size=(len(design), n_sets))
    return intercepts[codes] + period[:, None] + noise


def closed_form_reml(x, groups, y):
    """REML of the random-intercept model for balanced data with an orthogonal block structure.

    When every subject has the same number ``k`` of observations and the subject-mean
    projection of every design column lies in the design's span (complete crossover
    data; the within/between decomposition), GLS equals OLS and REML equals the
    ANOVA estimates (when the subject variance is positive): ``resid_var`` = within-
    subject residual mean square, ``group_var`` = (between-subject residual mean square
    - ``resid_var``) / k; at the boundary ``group_var`` = 0 and ``resid_var`` is the pooled
    residual mean square. Vectorised over the columns of ``y``.

    Returns
    -------
    dict with beta (p, sets), group_var, resid_var, msb, mse (sets,), df_within, df_between, k
    """
    import numpy as np

    x = np.asarray(x, dtype=float)
    codes, labels = pd.factorize(pd.Series(groups).astype(str))
    n_obs, n_subjects = len(codes), len(labels)
    counts = np.bincount(codes)
    assert (counts == counts[0]).all(), "closed form needs balanced data"
    k = counts[0]
    z = np.eye(n_subjects)[codes]
    between = z @ z.T / k
    within = np.eye(n_obs) - between
    beta = np.linalg.lstsq(x, y, rcond=None)[0]

    def residual_ms(proj):
        xs, ys = proj @ x, proj @ y
        resid = ys - xs @ np.linalg.lstsq(xs, ys, rcond=None)[0]
        return resid, np.linalg.matrix_rank(xs)

    rw, rank_w = residual_ms(within)
    rb, rank_b = residual_ms(between)
    df_w, df_b = n_obs - n_subjects - rank_w, n_subjects - rank_b
    mse = (rw ** 2).sum(axis=0) / df_w
    msb = (rb ** 2).sum(axis=0) / df_b
    group_var = (msb - mse) / k
    # at the boundary (MSB < MSE) REML sets the subject variance to 0: pooled residual variance
    pooled = ((rw ** 2).sum(axis=0) + (rb ** 2).sum(axis=0)) / (df_w + df_b)
    boundary = group_var <= 0
    return {"beta": beta, "group_var": np.where(boundary, 0.0, group_var),
            "resid_var": np.where(boundary, pooled, mse), "boundary": boundary, "msb": msb, "mse": mse,
            "df_within": df_w, "df_between": df_b, "k": int(k)}


def cube_masks(folder: Path, shape: tuple[int, int, int], affine, cubes: dict) -> dict[str, Path]:
    """``mask_<name>.nii.gz`` in ``folder`` for each ``name -> index slice`` of ``cubes``."""
    import nibabel as nib
    import numpy as np

    masks = {}
    for name, where in cubes.items():
        data = np.zeros(shape, np.uint8)
        data[where] = 1
        masks[name] = Path(folder) / f"mask_{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), masks[name])
    return masks
