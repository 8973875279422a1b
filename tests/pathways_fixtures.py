"""Test fixtures of the pathway tests: a simulated trial through a plain nilearn first level.

The project's own first level is tested elsewhere; here a FirstLevelModel per run
(ON regressor, 6 motion parameters, cosine drifts) gives the effect/variance maps
the pathway analysis consumes, as the group level would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fmri_pain.layout import Run
from fmri_pain.simulate import SPACE as SIM_SPACE  # the template the simulator's derivatives are in

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
