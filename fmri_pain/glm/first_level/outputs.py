"""Writing one subject's first level: statmaps with sidecars, design TSV / PNG, the maps table.

Names follow the output contract (``fmri_pain.bids.derivatives``); every sidecar
records provenance, the first-level parameters and the runs' model facts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.bids import derivatives as drv
from fmri_pain.bids.naming import bids_filename
from fmri_pain.bids.runs import Run
from fmri_pain.config.events import EventsSpec
from fmri_pain.config.first_level import FirstLevelSpec
from fmri_pain.glm.first_level.confounds import SCRUB_MIN_SEGMENT
from fmri_pain.glm.first_level.design_plot import design_png
from fmri_pain.glm.first_level.fit import RunFit
from fmri_pain.glm.first_level.fixed_effects import EffectMaps
from fmri_pain.glm.first_level.model import AR_BINS
from fmri_pain.glm.first_level.threads import budget, thread_map

STATS = ("effect", "variance", "z")
MAP_COLUMNS = ["subject", "session", "condition", "period", "contrast", "stat", "path",
               "level", "run", "dof"]
"""Columns of the maps table (``SubjectMaps.maps``)."""

RUN_MODEL_KEYS = ("ConfoundsStrategy", "Censoring", "HighPassBasis", "NuisanceRegressors",
                  "NuisanceDofFraction", "ResidualDegreesOfFreedom", "Warnings")
"""Per-run model facts repeated in every statmap sidecar (the design sidecar has them all)."""


def _plain(section: Any) -> dict[str, Any]:
    """A spec section as the JSON-able dict its sidecar key records."""
    return json.loads(json.dumps(dataclasses.asdict(section), default=str))


class SubjectWriter:
    """Writes maps and sidecars of one subject; collects the maps table.

    Parameters
    ----------
    output_dir : path
    first_level, events_spec : FirstLevelSpec, EventsSpec
        Recorded under ``Parameters`` in every sidecar.
    subject, task : str
    space : str or None
        Template space of the maps (the BOLD's).
    models : dict, optional
        Run -> :attr:`RunFit.model <fmri_pain.glm.first_level.fit.RunFit.model>`; the
        :data:`RUN_MODEL_KEYS` of a map's runs are repeated in its sidecar.
    threads : int
        Thread budget: the three maps of a contrast are compressed and written
        in this many threads (zlib releases the GIL); the same files as with 1.
    """

    def __init__(self, output_dir: Path, first_level: FirstLevelSpec, events_spec: EventsSpec,
                 subject: str, task: str, space: str | None,
                 models: Mapping[Run, dict[str, Any]] | None = None, threads: int = 1) -> None:
        self.output_dir, self.subject, self.task = Path(output_dir), subject, task
        self.space = space
        self.first_level, self.events_spec = first_level, events_spec
        self.rows: list[dict[str, Any]] = []
        self._prov: dict[Run, dict[str, Any]] = {}
        self.models: dict[Run, dict[str, Any]] = dict(models or {})
        self.threads = budget(threads)

    def provenance(self, runs: list[Run]) -> dict[str, Any]:
        """Provenance of a file made from ``runs`` (each run's inputs checksummed once)."""
        for run in runs:
            if run not in self._prov:
                inputs = {k: v for k, v in (("bold", run.bold), ("events", run.events),
                                            ("confounds", run.confounds), ("mask", run.mask))
                          if v is not None}
                self._prov[run] = drv.provenance(
                    {f"{k}[{run.label}]": v for k, v in inputs.items()}, dataset=self.output_dir)
        record = dict(self._prov[runs[0]])
        record["Sources"] = [s for r in runs for s in self._prov[r]["Sources"]]
        record["SourceChecksums"] = {k: v for r in runs for k, v in self._prov[r]["SourceChecksums"].items()}
        return record

    def parameters(self, weights: Mapping[str, float] | None = None) -> dict[str, Any]:
        """The ``Parameters`` of a sidecar: the spec sections, fixed model settings, contrast weights."""
        params = {"first_level": _plain(self.first_level), "events": _plain(self.events_spec),
                  "ar_bins": AR_BINS, "signal_scaling": "percent of the voxel mean",
                  "scrub_min_segment": SCRUB_MIN_SEGMENT}
        if weights is not None:
            params["weights"] = dict(weights)
        return params

    def write(self, maps: EffectMaps, mask: np.ndarray, affine: np.ndarray, *, contrast: str,
              level: str, runs: list[Run], session: str | None = None, run: int | None = None,
              condition: str | None = None, period: int | None = None,
              weights: Mapping[str, float] | None = None, description: str = "") -> None:
        """Write the effect, variance and z maps of one contrast, with sidecars, and add their rows."""
        sidecar = self.provenance(runs)
        sidecar.update({
            "Parameters": self.parameters(weights),
            "Contrast": contrast, "Level": level, "DegreesOfFreedom": maps.dof,
            "Runs": [r.label for r in runs], "Description": description,
            "SpatialReference": {"Space": self.space,
                                 "Resampling": "none: the maps are on the grid of the preprocessed BOLD "
                                               "(a brain mask on another grid is resampled to it, "
                                               "nearest neighbour, with a warning)"},
        })
        if any(r in self.models for r in runs):
            sidecar["RunModels"] = {r.label: {k: self.models[r][k] for k in RUN_MODEL_KEYS}
                                    for r in runs if r in self.models}
        jobs = []
        for stat, values in zip(STATS, maps):
            if run is None:
                path = drv.statmap_path(self.output_dir, contrast=contrast, stat=stat,
                                        subject=self.subject, session=session, task=self.task,
                                        space=self.space)
            else:
                name = bids_filename(
                    {"sub": self.subject, "ses": session, "task": self.task, "run": run,
                     "space": self.space, "contrast": contrast, "stat": stat},
                    "statmap", ".nii.gz")
                path = drv.subject_dir(self.output_dir, self.subject, session) / name
            jobs.append((stat, values, path))
            self.rows.append({"subject": self.subject, "session": session, "condition": condition,
                              "period": period, "contrast": contrast, "stat": stat, "path": path,
                              "level": level, "run": run, "dof": maps.dof})

        def save(job: tuple[str, np.ndarray, Path]) -> None:
            stat, values, path = job
            volume = np.zeros(mask.shape, dtype=np.float32)
            volume[mask] = values
            img = nib.Nifti1Image(volume, affine)
            img.header.set_xyzt_units("mm")
            drv.write_nifti(img, path, sidecar={**sidecar, "Stat": stat})

        thread_map(save, jobs, self.threads)

    def table(self) -> pd.DataFrame:
        """One row per map written (:data:`MAP_COLUMNS`)."""
        return pd.DataFrame(self.rows, columns=MAP_COLUMNS)



def write_design(fit: RunFit, output_dir: Path, writer: SubjectWriter, png: bool = True) -> list[Path]:
    """Design matrix TSV (rows kept after censoring) with sidecar, and its plot."""
    run = fit.run
    folder = drv.subject_dir(output_dir, run.subject, run.session)
    stem = bids_filename(dict(run.entities), "design", "")
    tsv = folder / f"{stem}.tsv"
    sidecar = writer.provenance([run])
    sidecar.update({"Parameters": writer.parameters(), "NumberOfVolumes": fit.n_volumes,
                    "CensoredVolumes": fit.n_censored, "DegreesOfFreedom": fit.dof,
                    "RepetitionTime": run.tr, **fit.model,
                    "Description": "Design matrix of the run (rows: volumes kept after censoring)"})
    drv.write_tsv(fit.design.reset_index(names="frame_time"), tsv, sidecar=sidecar)
    if not png:
        return [tsv]
    figure = folder / f"{stem}.png"
    drv.write_bytes(fit.design_plot.result() if fit.design_plot is not None else design_png(fit.design),
                    figure)
    return [tsv, figure]
