"""Run a subject's preprocessing workflow and write fMRIPrep-named derivatives."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from fmri_pain.bids.derivatives import (
    SPACE,
    provenance,
    subject_dir,
    write_json,
    write_nifti,
    write_tsv,
)
from fmri_pain.bids.naming import bids_filename

from fmri_pain.config.preprocess import PreprocessSpec
from fmri_pain.preprocess.templates import TEMPLATE_DESCRIPTION
from fmri_pain.preprocess.workflows import ANAT_OUTPUT_SOURCES, FUNC_OUTPUT_SOURCES, init_preproc_wf, run_label

ROUTE_NOTES = {
    "T1w": f"EPI reference -> T1w (rigid, mutual information) -> {SPACE} (antspyx), composed",
    "EPI-template": (
        "no T1w for this subject: the mean EPI was normalized directly to nilearn's MNI152 T1 template "
        "(mutual information), as in SPM's EPI-template route"
    ),
}


def default_work_dir(output_dir: Path | str) -> Path:
    """``OUTPUT_DIR/../work``: Nipype's cache, reused by re-runs."""
    return Path(output_dir).resolve().parent / "work"


def _entities(run, **extra) -> dict:
    ents = {"sub": run.subject, "ses": run.session, "task": run.task,
            "run": None if run.run is None else str(run.run)}
    ents.update(extra)
    return ents


def output_paths(run, output_dir: Path | str) -> dict[str, Path]:
    """Where :func:`preprocess_subject` writes the outputs of ``run``."""
    func = subject_dir(output_dir, run.subject, run.session, "func")
    figs = Path(output_dir) / f"sub-{run.subject}" / "figures"
    return {
        "bold": func / bids_filename(_entities(run, space=SPACE, desc="preproc"), "bold", ".nii.gz"),
        "mask": func / bids_filename(_entities(run, space=SPACE, desc="brain"), "mask", ".nii.gz"),
        "boldref": func / bids_filename(_entities(run, space=SPACE), "boldref", ".nii.gz"),
        "confounds": func / bids_filename(_entities(run, desc="confounds"), "timeseries", ".tsv"),
        "tsnr": func / bids_filename(_entities(run, space=SPACE, stat="tsnr"), "boldmap", ".nii.gz"),
        "qc": func / bids_filename(_entities(run, desc="preproc"), "qc", ".json"),
        "motion": func / bids_filename(_entities(run, desc="motion"), "timeseries", ".tsv"),
        "xfm": func / bids_filename(_entities(run, desc="std2bold"), "xfm", ".json"),
        "carpet": figs / bids_filename(_entities(run, desc="carpetplot"), "bold", ".png"),
        "overlay": figs / bids_filename(_entities(run, desc="norm"), "bold", ".png"),
    }


def _outputs_by_run(exec_graph) -> dict[str, Any]:
    """Per sub-workflow, the outputnode fields read from the executed nodes.

    Nipype drops identity nodes (the outputnodes) from the executed graph, so
    the fields are looked up at their source nodes.
    """
    results: dict[tuple[str, str], Any] = {}
    for node in exec_graph.nodes():
        parts = node.fullname.split(".")
        if len(parts) >= 2:
            results[(parts[-2], parts[-1])] = node.result.outputs
    found: dict[str, Any] = {}
    parents = {p for p, _ in results}
    for parent in parents:
        if parent.startswith("func_preproc_"):
            sources = FUNC_OUTPUT_SOURCES
        elif parent == "anat_preproc_wf":
            sources = ANAT_OUTPUT_SOURCES
        else:
            continue
        found["anat" if parent == "anat_preproc_wf" else parent] = SimpleNamespace(**{
            field: getattr(results[(parent, node)], out) for field, (node, out) in sources.items()
        })
    return found


def process_budget(requested: int) -> int:
    """Nipype MultiProc processes allowed here: ``requested`` capped by the thread budget.

    The budget is the smallest of the CPUs this process may run on and the BLAS thread
    limit in force (a participant-level worker runs its subject under
    ``threadpool_limits(threads_per_worker)``, so with two workers on two cores each
    subject gets one process and the cores are not oversubscribed).
    """
    import os

    from threadpoolctl import threadpool_info

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limits = [int(p["num_threads"]) for p in threadpool_info() if p.get("num_threads")]
    return max(1, min([int(requested), cpus, *limits]))


def preprocess_subject(runs: list, output_dir: Path | str, work_dir: Path | str | None,
                       spec: PreprocessSpec | None = None) -> list:
    """Preprocess one subject's raw runs into MNI space with fMRIPrep-named outputs.

    Parameters
    ----------
    runs : list of Run
        Raw runs of one subject (``bold`` = raw BOLD, ``anat`` = raw T1w or None).
    output_dir : path
        Derivatives root (``OUTPUT_DIR``).
    work_dir : path or None
        Nipype working directory (default ``OUTPUT_DIR/../work``); a re-run reuses finished nodes.
    spec : PreprocessSpec

    Returns
    -------
    list of Run
        New records whose ``bold``, ``mask`` and ``confounds`` point to the outputs;
        ``metadata`` gains ``SliceTimingCorrected``/``StartTime``, ``NonSteadyStateVolumes``,
        ``SpatialReference`` and ``QC`` (the per-run QC dict, also written as JSON).
    """
    spec = spec or PreprocessSpec()
    output_dir = Path(output_dir)
    work_dir = Path(work_dir) if work_dir is not None else default_work_dir(output_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    runs = list(runs)
    if not runs:
        return []
    subject = runs[0].subject
    for r in runs:
        if not Path(r.bold).is_file():
            from fmri_pain.errors import InputError

            raise InputError("BOLD file not found", subject=r.subject, path=r.bold)
        if nib.load(r.bold).ndim != 4:
            from fmri_pain.errors import InputError

            raise InputError(f"BOLD must be 4D, got shape {nib.load(r.bold).shape}", subject=r.subject,
                             path=r.bold)
        if "RepetitionTime" not in r.metadata:
            from fmri_pain.errors import InputError

            raise InputError("no RepetitionTime in the BOLD sidecar", subject=r.subject, path=r.bold)
    wf = init_preproc_wf(runs, spec)
    wf.base_dir = str(work_dir)
    wf.config["execution"] = {"crashdump_dir": str(work_dir / "crash"), "stop_on_first_crash": "true",
                              "crashfile_format": "txt", "remove_unnecessary_outputs": "false",
                              # nipype's default (2 s) idles after every node of a run whose nodes take 1-4 s
                              "poll_sleep_duration": "0.05"}
    plugin_args = {}
    if spec.plugin == "MultiProc":
        plugin_args = {"n_procs": process_budget(spec.n_procs), "memory_gb": spec.memory_gb, "raise_insufficient": False}
    try:
        graph = wf.run(plugin=spec.plugin, plugin_args=plugin_args)
    except RuntimeError as err:
        raise RuntimeError(f"sub-{subject}: preprocessing failed ({err}); crash reports in {work_dir / 'crash'}") \
            from err
    outs = _outputs_by_run(graph)
    t1w = next((r.anat for r in runs if r.anat is not None), None)
    params = spec.to_dict()
    new_runs = []
    if "anat" in outs and t1w is not None:
        anat = outs["anat"]
        adir = subject_dir(output_dir, subject, None, "anat")
        write_nifti(nib.load(anat.t1w_std), adir / bids_filename({"sub": subject, "space": SPACE, "desc": "preproc"},
                                                                  "T1w", ".nii.gz"),
                    sidecar=provenance([t1w], params, SkullStripped=True, Resolution="2 mm",
                                       Description=f"brain-extracted T1w normalized to {SPACE}"))
    for r in runs:
        label = run_label(r)
        o = outs[f"func_preproc_{label.replace('-', '_')}_wf"]
        paths = output_paths(r, output_dir)
        route = o.route
        notes = [ROUTE_NOTES[route], o.stc_note]
        if o.n_dummy:
            notes.append(f"{o.n_dummy} non-steady-state volume(s) flagged (not removed)")
        sources = [r.bold] + ([t1w] if (t1w is not None and route == "T1w") else [])
        spatial = {"Space": SPACE, "Template": TEMPLATE_DESCRIPTION,
                   "NormalizationRoute": route, "Description": ROUTE_NOTES[route],
                   "Registration": spec.registration, "BoldToT1w": spec.bold_to_t1 if route == "T1w" else None,
                   "Interpolation": f"B-spline order {spec.interpolation_order}, one interpolation per volume",
                   "Resampling": (f"raw BOLD (native grid) -> {SPACE} at the BOLD resolution, motion, "
                                  "coregistration and normalization composed into one resampling"),
                   "TissueMasks": (f"nilearn's {SPACE} brain, GM and WM masks (same template), "
                                   "Gaussian-smoothed and linearly resampled to the output grid "
                                   "(partial-volume fractions, then thresholded)")}
        tr = float(r.metadata["RepetitionTime"])
        bold_side = provenance(sources, params, RepetitionTime=tr, TaskName=r.task, SkullStripped=False,
                               SliceTimingCorrected=o.stc_ref_time is not None,
                               NonSteadyStateVolumes=int(o.n_dummy), SpatialReference=spatial,
                               Notes=notes)
        if o.stc_ref_time is not None:
            bold_side["StartTime"] = float(o.stc_ref_time)
        bold_img = nib.load(o.bold_std)
        write_nifti(bold_img, paths["bold"], sidecar=bold_side)
        write_nifti(nib.load(o.mask_std), paths["mask"],
                    sidecar={"Type": "Brain", "RawSources": [str(r.bold)], "SpatialReference": spatial})
        write_nifti(nib.load(o.boldref_std), paths["boldref"], sidecar={"SpatialReference": spatial})
        conf = pd.read_csv(o.confounds, sep="\t", na_values="n/a", keep_default_na=False)
        write_tsv(conf, paths["confounds"])
        with open(o.confounds_json) as fh:
            write_json(json.load(fh), paths["confounds"].with_suffix(".json"))
        write_nifti(nib.load(o.tsnr), paths["tsnr"],
                    sidecar={"Description": "temporal SNR (mean / SD after quadratic detrending)",
                             "SpatialReference": spatial})
        write_tsv(pd.read_csv(o.motion_params, sep="\t"), paths["motion"])
        write_json(_transform_record(o, outs.get("anat"), route), paths["xfm"])
        for key, src in (("carpet", o.carpet), ("overlay", o.overlay)):
            paths[key].parent.mkdir(parents=True, exist_ok=True)
            tmp = paths[key].with_name("." + paths[key].name + ".tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(paths[key])
        with open(o.qc_metrics) as fh:
            metrics = json.load(fh)
        qc = {"run": label, "metrics": metrics, "carpet": str(paths["carpet"]),
              "overlay": str(paths["overlay"]), "route": route, "notes": notes}
        write_json(qc, paths["qc"])
        meta = dict(r.metadata)
        meta.update(SliceTimingCorrected=o.stc_ref_time is not None, NonSteadyStateVolumes=int(o.n_dummy),
                    SpatialReference=spatial, QC=qc)
        if o.stc_ref_time is not None:
            meta["StartTime"] = float(o.stc_ref_time)
        new_runs.append(replace(r, bold=paths["bold"], mask=paths["mask"], confounds=paths["confounds"],
                                metadata=meta))
    return new_runs


def _transform_record(o, anat, route: str) -> dict:
    """The composed chain MNI -> (T1w) -> EPI reference -> volume t, pull convention (RAS mm)."""
    with open(o.coreg_xfm) as fh:
        coreg = json.load(fh)
    motion = np.load(o.motion)
    record = {
        "Convention": ("pull transforms in RAS+ mm: a point p of the first space lies at M @ p in the second; "
                       "volume t's source location of MNI point p is motion[t] @ boldref_from_T1w @ T1w_from_MNI(p) "
                       "(T1w route) or motion[t] @ boldref_from_MNI(p) (EPI-template route)"),
        "NormalizationRoute": route,
        "motion": motion["matrices"].tolist(),
        "motion_center": motion["center"].tolist(),
    }
    if route == "T1w":
        with open(anat.std_xfm) as fh:
            std = json.load(fh)
        record["T1w_from_MNI"] = {"kind": std["kind"], "matrix": std["matrix"], "ants_transforms": std["transforms"]}
        record["boldref_from_T1w"] = {"kind": coreg["kind"], "matrix": coreg["matrix"]}
    else:
        record["boldref_from_MNI"] = {"kind": coreg["kind"], "matrix": coreg["matrix"],
                                      "ants_transforms": coreg["transforms"]}
    return record


def load_qc(runs: list) -> list[dict]:
    """The QC dicts of preprocessed runs (from ``metadata['QC']``), for :func:`.qc.preproc_report_section`."""
    return [r.metadata["QC"] for r in runs if "QC" in r.metadata]
