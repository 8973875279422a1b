"""Nuisance-model defaults on simulated short-slow and long-fast runs: z-map correlation with the truth.

Compares, per run, the pre-``auto`` default (motion24 + the TSV's cosines + nilearn's cosine
drift + censoring: two drift bases), motion24 and motion6 with one drift basis, and the
current default (``strategy: auto``), by the Pearson correlation of the run's ON > OFF z map
with the simulator's true amplitude map (sum of ROI masks x amplitude) inside the brain mask.

Usage::

    python benchmarks/nuisance_defaults.py OUT_DIR [--seeds 0 1]

Prints one line per acquisition and variant (mean and range over runs).
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.glm.first_level.bold import load_masked_bold
from fmri_pain.glm.first_level.design import contrast_vector, frame_times, slice_time_reference
from fmri_pain.glm.first_level.events import read_events
from fmri_pain.glm.first_level.fit import fit_run
from fmri_pain.glm.first_level.model import ar1_glm
from fmri_pain.bids.runs import Run
from fmri_pain.simulate.dataset import simulate_trial
from fmri_pain.config.spec import spec_from_dict

ACQUISITIONS = {"short-slow (96 x TR 7 s)": (96, 7.0), "long-fast (350 x TR 2 s)": (350, 2.0)}


def _runs(sim, n_volumes):
    deriv = sim.derivatives_dir
    for bold in sorted(deriv.rglob("*_desc-preproc_bold.nii.gz")):
        ses = bold.name.split("_ses-")[1].split("_")[0]
        stem = bold.name.split("_space-")[0]
        events = sim.bids_dir / "sub-01" / f"ses-{ses}" / "func" / f"{stem}_events.tsv"
        yield ses, Run(subject="01", session=ses, condition=ses.upper(), period=None, task="stim", run=1,
                       bold=bold, events=events,
                       mask=Path(str(bold).replace("desc-preproc_bold", "desc-brain_mask")),
                       confounds=bold.parent / f"{stem}_desc-confounds_timeseries.tsv",
                       metadata=dict(pd.read_json(str(bold).replace(".nii.gz", ".json"), typ="series")))


def _old_default_z(run: Run, spec) -> np.ndarray:
    """The pre-change default: load_confounds(motion full, high_pass, scrub) + cosine drift."""
    from nilearn.glm.first_level import make_first_level_design_matrix
    from nilearn.interfaces.fmriprep import load_confounds

    f = spec.first_level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conf, sample_mask = load_confounds(str(run.bold), strategy=("motion", "high_pass", "scrub"),
                                           motion="full", scrub=5, fd_threshold=0.5,
                                           std_dvars_threshold=1.5, demean=True)
    Y, mask, _ = load_masked_bold(run.bold, run.mask, f.smoothing_fwhm)
    tr = run.tr
    times = frame_times(Y.shape[0], tr, slice_time_reference(run.metadata, tr))
    design = make_first_level_design_matrix(times, read_events(run.events), hrf_model="spm",
                                            drift_model="cosine", high_pass=f.high_pass,
                                            add_regs=conf.to_numpy(), add_reg_names=list(conf.columns))
    assert any(c.startswith("cosine") for c in design) and any(c.startswith("drift") for c in design)
    if sample_mask is not None:
        design, Y = design.iloc[sample_mask], Y[sample_mask]
    res = ar1_glm(Y, design.to_numpy(), signal_scaling=True)
    z = np.zeros(mask.shape, np.float32)
    z[mask] = res.contrast(contrast_vector({"on": 1.0}, design.columns.tolist())).z
    return z


def _fit_z(run: Run, spec) -> tuple[np.ndarray, dict]:
    fit = fit_run(run, spec.first_level, spec.events, spec.min_volumes)
    z = np.zeros(fit.mask.shape, np.float32)
    z[fit.mask] = fit.contrasts["stim"].z
    return z, fit.model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args(argv)
    os.environ.setdefault("FMRI_PAIN_SIM_WORKERS", "1")
    variants = {
        "old default (motion24 + 2 drift bases + censoring)": None,
        "motion24 + censoring": {"strategy": "motion24"},
        "motion6 + censoring": {"strategy": "motion6"},
        "auto (new default)": {},
    }
    for label, (n_vol, tr) in ACQUISITIONS.items():
        scores: dict[str, list[float]] = {v: [] for v in variants}
        notes = []
        for seed in args.seeds:
            sim = simulate_trial(args.out / f"v{n_vol}-tr{tr:g}-s{seed}", n_subjects=1, seed=seed,
                                 n_volumes=n_vol, tr=tr, raw=False)
            rois = {r["name"]: np.asarray(nib.load(sim.truth_dir / r["mask"]).dataobj) > 0
                    for r in sim.truth["rois"]}
            for ses, run in _runs(sim, n_vol):
                amps = sim.truth["subjects"]["sub-01"]["sessions"][f"ses-{ses}"]["amplitudes"]
                truth = sum(a * rois[n] for n, a in amps.items())
                brain = np.asarray(nib.load(run.mask).dataobj) > 0
                for v, conf in variants.items():
                    spec = spec_from_dict({"first_level": {"confounds": conf or {}}})
                    if conf is None:
                        z = _old_default_z(run, spec)
                    else:
                        z, model = _fit_z(run, spec)
                        if v.startswith("auto"):
                            notes.append(f"{model['ConfoundsStrategy']} "
                                         f"nuisance {model['NuisanceDofFraction']:.2f} "
                                         f"resid dof {model['ResidualDegreesOfFreedom']:g}")
                    scores[v].append(float(np.corrcoef(z[brain], truth[brain])[0, 1]))
        print(f"{label}: {len(scores['auto (new default)'])} runs")
        for v, values in scores.items():
            print(f"  {v:55s} r = {np.mean(values):.3f} [{min(values):.3f}, {max(values):.3f}]")
        print(f"  auto chose: {'; '.join(sorted(set(notes)))}")


if __name__ == "__main__":
    main()
