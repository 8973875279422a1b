"""Nipype workflows, niworkflows style: ``init_*_wf`` factories with inputnode / outputnode.

::

    init_preproc_wf (one subject)
    ├── init_anat_preproc_wf      T1w -> brain extraction + MNI normalization (if a T1w exists)
    └── init_func_preproc_wf x N  per run: non-steady -> realign -> slice timing -> coregistration
                                  -> one-shot resampling to MNI -> confounds -> QC
"""
from __future__ import annotations

from collections.abc import Sequence

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from fmri_pain.bids.runs import subject_of

from fmri_pain.preprocess.interfaces import (
    AnatNormalize,
    Confounds,
    Coregister,
    NonSteadyState,
    QualityControl,
    Realign,
    ResampleToStd,
    SliceTiming,
)
from fmri_pain.config.preprocess import PreprocessSpec

#: outputnode field -> (node, output) of the per-run workflow
FUNC_OUTPUT_SOURCES = {
    "bold_std": ("resample", "out_file"), "mask_std": ("resample", "out_mask"),
    "boldref_std": ("resample", "out_boldref"), "confounds": ("confounds", "out_file"),
    "confounds_json": ("confounds", "out_json"), "motion_params": ("hmc", "out_params"),
    "tsnr": ("qc", "out_tsnr"), "qc_metrics": ("qc", "out_metrics"), "carpet": ("qc", "out_carpet"),
    "overlay": ("qc", "out_overlay"), "n_dummy": ("nonsteady", "n_dummy"),
    "stc_ref_time": ("stc", "ref_time"), "stc_note": ("stc", "note"), "route": ("coreg", "route"),
    "coreg_xfm": ("coreg", "out_xfm"), "motion": ("hmc", "out_motion"),
}
FUNC_OUTPUTS = list(FUNC_OUTPUT_SOURCES)
#: outputnode field -> (node, output) of the anatomical workflow
ANAT_OUTPUT_SOURCES = {"t1w_brain": ("anat_norm", "out_brain"), "t1w_mask": ("anat_norm", "out_mask"),
                       "std_xfm": ("anat_norm", "out_xfm"), "t1w_std": ("anat_norm", "out_std")}
ANAT_OUTPUTS = list(ANAT_OUTPUT_SOURCES)


def init_anat_preproc_wf(spec: PreprocessSpec, name: str = "anat_preproc_wf") -> pe.Workflow:
    """T1w brain extraction and normalization to nilearn's MNI152 template (MNI152NLin2009aSym).

    Inputs: ``t1w``.  Outputs: ``t1w_brain``, ``t1w_mask``, ``std_xfm`` (MNI -> T1w), ``t1w_std``.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=ANAT_OUTPUTS), name="outputnode")
    norm = pe.Node(AnatNormalize(kind=spec.registration, resolution=float(spec.registration_resolution)),
                   name="anat_norm", n_procs=1, mem_gb=1.5)
    workflow.connect([
        (inputnode, norm, [("t1w", "in_file")]),
        (norm, outputnode, [("out_brain", "t1w_brain"), ("out_mask", "t1w_mask"),
                            ("out_xfm", "std_xfm"), ("out_std", "t1w_std")]),
    ])
    return workflow


def init_func_preproc_wf(
    spec: PreprocessSpec, has_t1w: bool, mem_gb: float = 1.0, name: str = "func_preproc_wf"
) -> pe.Workflow:
    """Per-run BOLD preprocessing.

    Inputs: ``bold_file``, ``metadata`` (dict), ``t1w_brain``, ``t1w_mask``, ``std_xfm``
    (the anatomical fields are ignored when ``has_t1w`` is False: the mean EPI
    is then normalized directly to the template, SPM's EPI-template route).
    Outputs: see ``FUNC_OUTPUTS``.
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["bold_file", "metadata", "tr", "t1w_brain",
                                                      "t1w_mask", "std_xfm"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=FUNC_OUTPUTS), name="outputnode")
    nonsteady = pe.Node(NonSteadyState(dummy_scans=spec.dummy_scans), name="nonsteady", mem_gb=mem_gb)
    hmc = pe.Node(Realign(n_iter=spec.realign_iterations), name="hmc", n_procs=1, mem_gb=3 * mem_gb)
    stc = pe.Node(SliceTiming(enabled=spec.slice_timing), name="stc", mem_gb=3 * mem_gb)
    coreg = pe.Node(Coregister(kind=spec.bold_to_t1, std_kind=spec.registration,
                               resolution=float(spec.registration_resolution)),
                    name="coreg", n_procs=1, mem_gb=1.0)
    resample = pe.Node(ResampleToStd(order=spec.interpolation_order), name="resample", mem_gb=4 * mem_gb)
    confounds = pe.Node(Confounds(n_acompcor=float(spec.n_acompcor), n_tcompcor=float(spec.n_tcompcor),
                                  high_pass=spec.high_pass_period, fd_threshold=spec.fd_threshold,
                                  dvars_threshold=spec.dvars_threshold),
                        name="confounds", mem_gb=3 * mem_gb)
    qc = pe.Node(QualityControl(), name="qc", mem_gb=2 * mem_gb)

    connections = [
        (inputnode, nonsteady, [("bold_file", "in_file")]),
        (inputnode, hmc, [("bold_file", "in_file")]),
        (nonsteady, hmc, [("n_dummy", "n_dummy")]),
        (inputnode, stc, [("bold_file", "in_file"), ("metadata", "metadata")]),
        (hmc, coreg, [("out_boldref", "boldref")]),
        (stc, resample, [("out_file", "in_file")]),
        (hmc, resample, [("out_motion", "motion"), ("out_boldref", "boldref"), ("out_mask", "boldref_mask")]),
        (coreg, resample, [("out_xfm", "coreg_xfm")]),
        (resample, confounds, [("out_file", "in_file"), ("out_mask", "mask")]),
        (hmc, confounds, [("out_motion", "motion")]),
        (inputnode, confounds, [("tr", "tr")]),
        (nonsteady, confounds, [("n_dummy", "n_dummy")]),
        (resample, qc, [("out_file", "in_file"), ("out_mask", "mask"), ("out_boldref", "boldref")]),
        (confounds, qc, [("out_file", "confounds")]),
        (inputnode, qc, [("tr", "tr")]),
        (nonsteady, qc, [("n_dummy", "n_dummy")]),
    ]
    nodes = {n.name: n for n in (nonsteady, hmc, stc, coreg, resample, confounds, qc)}
    for field, (node, out) in FUNC_OUTPUT_SOURCES.items():
        connections.append((nodes[node], outputnode, [(out, field)]))
    if has_t1w:
        connections += [
            (inputnode, coreg, [("t1w_brain", "t1w_brain"), ("t1w_mask", "t1w_mask")]),
            (inputnode, resample, [("std_xfm", "std_xfm")]),
        ]
    workflow.connect(connections)
    return workflow


def run_label(run) -> str:
    """Unique, node-name-safe label of a run: ``ses-X_task-Y_run-Z``."""
    parts = [f"ses-{run.session}" if run.session else None, f"task-{run.task}",
             f"run-{run.run}" if run.run is not None else None]
    return "_".join(p for p in parts if p)


def init_preproc_wf(runs: Sequence, spec: PreprocessSpec, name: str | None = None) -> pe.Workflow:
    """Preprocessing of one subject's runs (all runs must share the subject).

    The T1w used is the first run's ``anat`` (one T1w serves all sessions);
    subjects without any T1w take the EPI-template route.  Each run gets its
    own ``func_preproc_<label>_wf`` whose inputnode is filled from the Run.
    """
    subject = subject_of(runs)
    t1w = next((r.anat for r in runs if r.anat is not None), None)
    workflow = pe.Workflow(name=name or f"sub_{subject}_preproc_wf")
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=[f"{run_label(r)}" for r in runs]), name="outputnode")
    if t1w is not None:
        inputnode.inputs.t1w = str(t1w)
        anat_wf = init_anat_preproc_wf(spec)
        workflow.connect([(inputnode, anat_wf, [("t1w", "inputnode.t1w")])])
    labels = [run_label(r) for r in runs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"sub-{subject}: duplicate runs {labels}")
    for r, label in zip(runs, labels):
        fwf = init_func_preproc_wf(spec, has_t1w=t1w is not None,
                                   name=f"func_preproc_{label.replace('-', '_')}_wf")
        fwf.inputs.inputnode.bold_file = str(r.bold)
        fwf.inputs.inputnode.metadata = dict(r.metadata)
        fwf.inputs.inputnode.tr = float(r.metadata["RepetitionTime"])
        connections = []
        if t1w is not None:
            connections.append((anat_wf, fwf, [("outputnode.t1w_brain", "inputnode.t1w_brain"),
                                               ("outputnode.t1w_mask", "inputnode.t1w_mask"),
                                               ("outputnode.std_xfm", "inputnode.std_xfm")]))
        connections.append((fwf, outputnode, [("outputnode.bold_std", label)]))
        workflow.connect(connections)
    return workflow
