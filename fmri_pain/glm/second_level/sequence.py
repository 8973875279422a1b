"""The between-subject sequence test: subject-mean maps compared across treatment sequences.

Sequence is a between-subject factor of a crossover (confounded with subject in the
repeated-measures model), so it is tested on one map per subject: the mean of the
subject's condition maps. The design holds one indicator column per sequence
(cell means); ``sequenceF`` tests every difference between sequences. The
permutation stage permutes whole subjects across sequences (no exchangeability
blocks), the exchangeability of a between-subject effect.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.bids.derivatives import bids_filename, write_nifti
from fmri_pain.glm.second_level.models import GroupDesign

ROUTE = "sequence"
COLUMN_PREFIX = "sequence_"
"""Design columns: ``sequence_<SCS-DRGS-DUAL>``."""


def sequence_design(rows: pd.DataFrame) -> GroupDesign:
    """Cell-means design of one map per subject over its sequence, with ``sequenceF``.

    Parameters
    ----------
    rows : DataFrame
        One row per subject: ``subject``, ``sequence``.

    Returns
    -------
    GroupDesign
        Route ``sequence``; contrast ``sequenceF`` (each sequence minus the first,
        ``n_sequences - 1`` rows). No contrast (and a note) when fewer than two
        sequences are present.
    """
    rows = rows.reset_index(drop=True)
    sequences = sorted(rows["sequence"].astype(str).unique())
    design = pd.DataFrame({f"{COLUMN_PREFIX}{s}": (rows["sequence"].astype(str) == s).astype(float)
                           for s in sequences})
    notes: list[str] = []
    contrasts: dict[str, np.ndarray] = {}
    if len(sequences) >= 2:
        eye = np.eye(len(sequences))
        contrasts["sequenceF"] = eye[1:] - eye[:1]
    else:
        notes.append(f"sequence test not computed: every subject has sequence {sequences[0]}")
    return GroupDesign(ROUTE, design, contrasts, rows, notes)


def subject_sequences(maps: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One row per subject with its sequence (and its condition maps); subjects without one noted."""
    notes = []
    known = maps.dropna(subset=["sequence"]) if "sequence" in maps else maps.iloc[:0]
    missing = sorted(set(maps["subject"]) - set(known["subject"]))
    if missing:
        notes.append("sequence test without " + ", ".join(f"sub-{s}" for s in missing)
                     + ": no sequence in participants.tsv / sessions.tsv")
    return known, notes


def write_subject_means(maps: pd.DataFrame, images: dict[str, list[nib.Nifti1Image]], *,
                        output_dir: Path, task: str, space: str | None) -> pd.DataFrame:
    """Write each subject's mean condition map (as analysed, i.e. after any mirroring).

    Parameters
    ----------
    maps : DataFrame
        One row per subject: ``subject``, ``sequence``, ``n_conditions``.
    images : dict
        Subject -> its condition maps (already mirrored where asked).

    Returns
    -------
    DataFrame
        ``maps`` with ``effect`` (path of the mean map under ``group/sequence/``) and ``flip``
        (False: the mean is of the mirrored maps).
    """
    out = []
    folder = Path(output_dir) / "group" / ROUTE
    for row in maps.itertuples(index=False):
        imgs = images[row.subject]
        data = np.mean([np.asanyarray(i.dataobj, dtype=np.float32) for i in imgs], axis=0)
        path = folder / bids_filename({"sub": row.subject, "task": task, "space": space,
                                       "contrast": "conditionMean", "stat": "effect"},
                                      "statmap", ".nii.gz")
        write_nifti(nib.Nifti1Image(data.astype(np.float32), imgs[0].affine), path, {
            "Description": f"mean of the subject's {len(imgs)} condition effect maps (input of the "
                           "between-subject sequence test)"})
        out.append(path)
    return maps.assign(effect=out, flip=False)
