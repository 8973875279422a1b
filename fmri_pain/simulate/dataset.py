"""A realistic simulated SCS / DRGS / DUAL crossover fMRI trial with known ground truth.

:func:`simulate_trial` writes three trees under ``OUT``:

``OUT/bids``
    A raw BIDS dataset: ``participants.tsv`` (with the treatment ``sequence`` and the ``pain_side``),
    per-subject ``sessions.tsv`` (condition, period, behaviour), one session per condition, a T1w in
    the first period's session, and one block-design run per session (``trial_type`` ``"on"``).
    The images are in each subject's own native space: the head sits a few mm and degrees away
    from MNI, which the NIfTI affine does *not* encode, so registration is needed. Head motion is
    applied by resampling each volume, and every slice is sampled at its own acquisition time.
``OUT/derivatives/fmriprep``
    What a perfect fMRIPrep would output: the raw data slice-time corrected and resampled to the
    MNI grid with the *true* motion and head position (one interpolation per volume), the brain
    mask, and an fMRIPrep-style confounds table (true motion parameters, FD, DVARS, CompCor ...).
``OUT/truth``
    ``truth.json`` (ROIs, amplitudes used for every session, period effect, transforms, motion,
    HRF, noise) and ``roi-<name>_mask.nii.gz`` on the derivatives' MNI grid.

The simulator shares no code with the analysis it is meant to test.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from fmri_pain._version import __version__
from fmri_pain.simulate import model as M
from fmri_pain.simulate.anatomy import tissue
from fmri_pain.simulate.files import write_json
from fmri_pain.simulate.plan import plan_subjects
from fmri_pain.simulate.responders import check_responder_effect, responder_truth
from fmri_pain.simulate.subject import simulate_subject
from fmri_pain.simulate.tables import write_dataset_files
from fmri_pain.simulate.truth import truth_record, write_roi_masks

__all__ = ["SimulatedTrial", "simulate_trial"]


@dataclass
class SimulatedTrial:
    """Paths of a simulated trial and its ground truth."""

    bids_dir: Path
    derivatives_dir: Path | None
    truth_dir: Path
    truth: dict[str, Any]


def simulate_trial(output_dir: str | Path, n_subjects: int = 6, seed: int = 0, *, voxel_size: float = 4.0,
                   n_volumes: int = 100, tr: float = 2.0, derivatives: bool = True, raw: bool = True,
                   null: bool = False, ppi: bool = False, effect_scale: float = 1.0,
                   dropout: bool = False,
                   carryover: dict[str, float] | None = None,
                   responder_effect: Mapping[str, Any] | None = None) -> SimulatedTrial:
    """Simulate the crossover trial and write raw BIDS, fMRIPrep-style derivatives and ground truth.

    Parameters
    ----------
    output_dir : str or Path
        ``OUT``; receives ``bids/``, ``derivatives/fmriprep/`` and ``truth/``.
    n_subjects : int
        Subjects; sequences follow the six Williams sequences of three treatments in a seeded order.
    seed : int
        Everything random derives from it: the same seed gives identical data.
    voxel_size : float
        Isotropic voxel size (mm) of the BOLD grids (MNI-like; nilearn's MNI152 grid for integers).
    n_volumes, tr : int, float
        Volumes per run and repetition time (s). Blocks: 20 s OFF, 20 s ON, ...
    derivatives, raw : bool
        Which images to write. ``raw=False`` skips the raw NIfTI images (BOLD, T1w) but still writes the
        BIDS tables and sidecars (participants, sessions, events), which the analysis reads; the ground
        truth is always written.
    null : bool
        No stimulus effect anywhere (amplitudes, period effect, random effects, PPI coupling all 0).
    ppi : bool
        Add intrinsic ROI fluctuations and a condition-dependent seed->target coupling during ON blocks.
    effect_scale : float
        Multiplies every effect (amplitudes, random effects, period effect, coupling).
    dropout : bool
        The last subject drops out before its last period (it has 2 sessions).
    carryover : dict of str to float, optional
        First-order carry-over, e.g. ``{"DUAL": 0.4}``: percent signal change added (times
        ``effect_scale``) to the amplitude of every ROI active in the session of the period right
        after that condition. Recorded in truth.json (``carryover`` and per session).
    responder_effect : mapping, optional
        ``{"roi": name, "delta": percent, "fraction": p, "conditions": [...]}``: sessions respond with
        probability ``fraction`` (pain_relief >= 50 %, non-responders < 50 %) and responders' amplitude in
        ``roi`` is higher by ``delta`` (:mod:`fmri_pain.simulate.responders`); recorded in truth.json.

    Returns
    -------
    SimulatedTrial

    Notes
    -----
    Subjects are simulated in up to two worker processes (``FMRI_PAIN_SIM_WORKERS`` overrides, 1 = in
    process); every random draw is keyed by (seed, subject, condition), so the output does not depend on
    the number of workers, and subject ``k`` is the same whatever ``n_subjects`` is.
    """
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
    if n_volumes < 4:
        raise ValueError(f"n_volumes must be >= 4, got {n_volumes}")
    if voxel_size <= 0 or tr <= 0:
        raise ValueError(f"voxel_size and tr must be positive, got {voxel_size}, {tr}")
    if not (raw or derivatives):
        raise ValueError("nothing to write: raw and derivatives are both False")
    if n_volumes * tr < 2 * M.BLOCK_S:
        raise ValueError(f"a run of {n_volumes} x {tr} s is shorter than one OFF+ON cycle ({2 * M.BLOCK_S} s)")
    start = time.perf_counter()
    out = Path(output_dir)
    bids_dir, deriv_dir, truth_dir = out / "bids", out / "derivatives" / "fmriprep", out / "truth"
    scale = float(effect_scale)
    carryover = {str(k): float(v) for k, v in (carryover or {}).items()}
    unknown = sorted(set(carryover) - set(M.CONDITIONS))
    if unknown:
        raise ValueError(f"carryover: conditions {unknown} are not among {list(M.CONDITIONS)}")
    responder_effect = check_responder_effect(responder_effect)
    subjects = plan_subjects(n_subjects, seed, scale, null, carryover, responder_effect)
    mni = tissue(float(voxel_size))
    tissue(2.0 if voxel_size >= 3 else 1.0)  # warm the cache before any worker forks

    jobs = []
    for subj in subjects:
        n_sess = 2 if (dropout and subj["index"] == n_subjects - 1) else 3
        jobs.append({"subject": subj, "out": out, "seed": seed, "voxel_size": float(voxel_size),
                     "n_volumes": n_volumes, "tr": float(tr), "raw": raw, "derivatives": derivatives,
                     "null": null, "ppi": ppi, "effect_scale": scale, "n_sessions": n_sess})
    n_workers = _n_workers(len(jobs))
    if n_workers > 1:
        import multiprocessing
        import threading

        # fork shares the cached tissue maps for free, but is unsafe once other threads run (dask, BLAS pools
        # started by a caller): then pay for fresh interpreters instead.
        method = "fork" if threading.active_count() == 1 else "spawn"
        with ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context(method)) as pool:
            results = list(pool.map(simulate_subject, jobs))
    else:
        results = [simulate_subject(job) for job in jobs]

    write_dataset_files(bids_dir, subjects, jobs)
    if derivatives:
        write_json({"Name": "fMRIPrep-style derivatives of the simulated trial", "BIDSVersion": "1.8.0",
                    "DatasetType": "derivative",
                    "GeneratedBy": [{"Name": "fmri-pain-simulator", "Version": __version__,
                                     "Description": "true-transform preprocessing of the simulated raw data"}]},
                   deriv_dir / "dataset_description.json")
    truth = truth_record(subjects, results, jobs, seed=seed, voxel_size=float(voxel_size),
                         n_volumes=n_volumes, tr=float(tr), null=null, ppi=ppi, scale=scale, dropout=dropout,
                         carryover=carryover)
    if responder_effect is not None:
        truth["responders"] = responder_truth(responder_effect, subjects)
    write_roi_masks(truth_dir, mni.shape, mni.affine)
    truth["generation_seconds"] = round(time.perf_counter() - start, 2)
    write_json(truth, truth_dir / "truth.json")
    return SimulatedTrial(bids_dir=bids_dir, derivatives_dir=deriv_dir if derivatives else None,
                          truth_dir=truth_dir, truth=truth)


def _n_workers(n_jobs: int) -> int:
    env = os.environ.get("FMRI_PAIN_SIM_WORKERS")
    if env:
        return max(1, min(int(env), n_jobs))
    return max(1, min(2, os.cpu_count() or 1, n_jobs))
